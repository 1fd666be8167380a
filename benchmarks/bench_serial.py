"""Serial link figures in one run: wire bytes per frame, frames/s via a pty, framing vs sealing.

    python -m pytest benchmarks/bench_serial.py --benchmark-only --benchmark-columns=median

- ``test_wire_bytes[N]``: a reading whose SenML/CBOR plaintext is N bytes (16/64/256), sealed as
  twinlink/1, then CRC + COBS + delimiter (and the optional flush prefix); the byte counts are
  in ``extra_info`` and printed.
- ``test_pty_throughput[…]``: frames through a real pty pair (SerialLink on the slave, a
  decoder reading the master) with pre-sealed frames and with sealing each frame on the way.
- ``test_cpu_per_frame[…]``: encode + decode of one record vs sealing the same reading, with
  the native (C) and the pure-Python backend.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from pathlib import Path

import cbor2
import pytest

from twinlink import backends, keys
from twinlink.device import Device
from twinlink.provision import provision
from twinlink.transport import framing
from twinlink.transport.serial import SerialLink

FRAMES = 2000


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("bench-serial")
    tk = keys.TwinKey.generate()
    keys.write_public(root / "twin.pub", tk.public_pem())
    provision("bench", root / "twin.pub", root / "keys", kid=b"\x01\x02")
    dev = Device.load(root / "keys" / "bench.device", root / "state")
    yield dev
    dev.close()


def _plaintext(n: int) -> bytes:
    """A CBOR item of exactly ``n`` bytes (a byte string of random, i.e. realistic, content)."""
    head = 1 if n - 1 < 24 else 2 if n - 2 < 256 else 3
    pt = cbor2.dumps(os.urandom(n - head))
    assert len(pt) == n
    return pt


@pytest.mark.parametrize("size", [16, 64, 256])
def test_wire_bytes(benchmark, device, size):
    frame = device.seal_raw(_plaintext(size))
    record = benchmark(framing.encode_record, frame)
    cobs_overhead = len(record) - 1 - len(frame) - 2
    info = {"reading_bytes": size, "frame_bytes": len(frame), "crc_bytes": 2,
            "cobs_overhead_bytes": cobs_overhead, "delimiter_bytes": 1,
            "wire_bytes": len(record), "wire_bytes_with_flush_prefix": len(record) + 1,
            "backend": backends.name()}
    benchmark.extra_info.update(info)
    print(f"\nreading {size} B -> frame {len(frame)} B -> wire {len(record)} B "
          f"(+1 with the flush prefix; COBS +{cobs_overhead}, CRC +2, delimiter +1)")


class _Sink:
    """The far end of a pty pair: reads the master and counts decoded frames."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        self.frames = 0
        self._stop = threading.Event()
        self._dec = framing.Decoder()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    data = os.read(self.master, 1 << 16)
                except OSError:
                    time.sleep(0.005)
                    continue
                self.frames += sum(1 for x in self._dec.feed(data) if isinstance(x, bytes))

    def wait(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.frames < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.frames}/{n} frames arrived")
            time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        os.close(self.master)


@pytest.mark.parametrize("sealing", ["presealed", "sealed"])
def test_pty_throughput(benchmark, device, sealing):
    sink = _Sink()
    link = SerialLink(sink.path)
    reading = {"temp": 21.5, "rpm": 1400, "ok": True}
    pre = device.seal_many([reading] * FRAMES)

    def run() -> None:
        start = sink.frames
        if sealing == "sealed":
            for _ in range(FRAMES):
                link.send(device.seal(reading))
        else:
            for f in pre:
                link.send(f)
        sink.wait(start + FRAMES)

    try:
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        link.close()
        sink.close()
    fps = FRAMES / benchmark.stats.stats.median
    benchmark.extra_info.update({"frames": FRAMES, "frame_bytes": len(pre[0]),
                                 "frames_per_s_median": round(fps), "backend": backends.name()})
    print(f"\npty pair, {sealing}: {fps:,.0f} frames/s ({len(pre[0])}-byte frames)")


@pytest.fixture
def backend_choice(request: pytest.FixtureRequest):
    previous = backends.name()
    want = request.param
    if want != "-":
        try:
            backends.use(want)
        except ImportError:
            pytest.skip(f"native backend not built: {backends.native_error()}")
    yield want
    backends.use(previous)


@pytest.mark.parametrize("work, backend_choice", [("framing", "-"), ("sealing", "native"),
                                                  ("sealing", "python")],
                         indirect=["backend_choice"], ids=["framing", "seal-native", "seal-python"])
def test_cpu_per_frame(benchmark, device, work, backend_choice):
    reading = {"temp": 21.5, "rpm": 1400, "ok": True}
    frame = device.seal(reading)
    dec = framing.Decoder()

    def framing_only() -> None:
        for _ in dec.feed(framing.wire(frame, flush_prefix=True)):
            pass

    fn = framing_only if work == "framing" else (lambda: device.seal(reading))
    t0 = time.process_time()
    benchmark.pedantic(fn, rounds=2000, iterations=5, warmup_rounds=50)
    cpu = (time.process_time() - t0) / (2050 * 5)
    benchmark.extra_info.update({"cpu_us_per_frame": round(cpu * 1e6, 2),
                                 "frame_bytes": len(frame), "backend": backends.name()})
    print(f"\n{work}: median {benchmark.stats.stats.median * 1e6:.1f} µs per frame "
          f"(process CPU {cpu * 1e6:.1f} µs), backend {backends.name()}")
