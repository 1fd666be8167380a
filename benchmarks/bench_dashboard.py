"""Dashboard benchmark: the issue 14 targets, measured on this machine (not timed tests).

- the fleet page of 1 000 devices renders in <= 1 s (server response, and in chromium when
  Playwright and /usr/bin/chromium are there: navigation to the load event);
- the API serves >= 500 device-page requests/s (``wrk`` when installed, else an asyncio
  load generator in a second process), for the JSON (/api/v1/devices/NAME) and the HTML page;
- one dashboard process holds >= 200 open SSE clients while an ingest (a third process, a real
  Twin on its own store object) writes 1 000 readings/s, and every client receives every
  reading (ids compared with the store's).

Script mode (about a minute)::

    python -m benchmarks.bench_dashboard [--devices 1000] [--clients 200] [--rate 1000]
                                         [--seconds 10] [--json]

Every process is started here and stopped here; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"fleet_render_s": 1.0, "device_api_rps": 500, "sse_clients": 200}


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


# -- fixture: a twin with many devices ----------------------------------------------------------


def make_twin(work: Path, devices: int, senders: int) -> dict[str, Any]:
    """A twin database with ``devices`` registered devices (one reading each) and bundles for
    the first ``senders`` (the ingest's devices)."""
    import twinlink
    from twinlink import keys
    from twinlink.provision import provision
    from twinlink.store import open_store

    tk = keys.TwinKey.generate()
    keys.write_private(work / "twin.key", tk.to_pem())
    keys.write_public(work / "twin.pub", tk.public_pem())
    db = work / "twin.db"
    store = open_store(db)
    names = [f"dev-{i:04d}" for i in range(devices)]
    for name in names:
        provision(name, work / "twin.pub", work / "keys", db=store)
    twin = twinlink.Twin(store, work / "twin.key")
    frames = []
    for name in names:
        dev = twinlink.Device.load(work / "keys" / f"{name}.device", work / "state")
        frames.append(dev.seal({"temp": 20.0, "rpm": 1200, "mode": "auto"}))
        dev.close()
    for i in range(0, len(frames), 200):
        twin.open_many(frames[i:i + 200])
    twin.close()
    return {"db": str(db), "key": str(work / "twin.key"), "names": names,
            "senders": names[:senders]}


class Dashboard:
    def __init__(self, db: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twinlink", "dashboard", "--db", db, "--listen",
             "127.0.0.1:0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env=_env())
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = re.search(r"dashboard on (http://\S+/)", line)
            if m:
                self.url = m.group(1)
                break
        else:
            raise RuntimeError("the dashboard did not start")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- 1. fleet page ------------------------------------------------------------------------------


def bench_fleet(url: str, rounds: int = 7) -> dict[str, Any]:
    import urllib.request

    times = []
    size = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            size = len(r.read())
        times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"fleet_server_median_s": round(statistics.median(times), 4),
                           "fleet_server_max_s": round(max(times), 4), "fleet_bytes": size}
    chromium = "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return out
    if not os.path.exists(chromium):
        return out
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium,
                              args=["--headless=new", "--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            page.goto(url, wait_until="load")
            loads.append(time.perf_counter() - t0)
        rows = page.locator("#fleet tbody tr").count()
        b.close()
    out["fleet_browser_load_median_s"] = round(statistics.median(loads), 4)
    out["fleet_browser_rows"] = rows
    return out


# -- 2. request rate ----------------------------------------------------------------------------


def bench_rate(url: str, seconds: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk:
        p = subprocess.run([wrk, "-t2", "-c32", f"-d{seconds}s", "--latency", url],
                           capture_output=True, text=True, timeout=seconds + 60)
        m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", p.stdout)
        p50 = re.search(r"50%\s+([\d.]+\w+)", p.stdout)
        p99 = re.search(r"99%\s+([\d.]+\w+)", p.stdout)
        return {"tool": "wrk -t2 -c32", "rps": float(m.group(1)) if m else 0.0,
                "errors": int(non2xx.group(1)) if non2xx else 0,
                "p50": p50.group(1) if p50 else None, "p99": p99.group(1) if p99 else None}
    p = subprocess.run([sys.executable, "-m", "benchmarks.bench_dashboard", "--load", url,
                        "--seconds", str(seconds)], capture_output=True, text=True,
                       env=_env(), cwd=ROOT, timeout=seconds + 60)
    return {"tool": "asyncio client, 32 connections", **json.loads(p.stdout)}


async def _load(url: str, seconds: float, conns: int = 32) -> dict[str, Any]:
    import aiohttp

    done = 0
    errors = 0
    end = time.monotonic() + seconds

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.monotonic() < end:
            async with s.get(url) as r:
                await r.read()
                if r.status == 200:
                    done += 1
                else:
                    errors += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(s) for _ in range(conns)))
        took = time.monotonic() - t0
    return {"rps": round(done / took, 1), "errors": errors}


# -- 3. SSE fan-out under ingest -----------------------------------------------------------------

_ID = re.compile(rb"^id: r(\d+)\.", re.M)


async def _sse_clients(url: str, clients: int, ready_file: str) -> dict[str, Any]:
    """``clients`` streams; the last reading id to expect arrives on stdin; report per-client
    id lists as (count, sha of ids, first, last)."""
    import hashlib

    import aiohttp

    got: list[list[int]] = [[] for _ in range(clients)]
    target: dict[str, int] = {}
    opened = 0
    finished = asyncio.Event()

    async def client(i: int, s: aiohttp.ClientSession) -> None:
        nonlocal opened
        async with s.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
            assert r.status == 200
            opened += 1
            if opened == clients:
                Path(ready_file).write_text("ready")
            carry = b""
            ids = got[i]
            async for chunk in r.content.iter_any():
                buf = carry + chunk
                cut = buf.rfind(b"\n")
                whole, carry = buf[:cut + 1], buf[cut + 1:]
                ids.extend(int(x) for x in _ID.findall(whole))
                if "last" in target and ids and ids[-1] >= target["last"]:
                    return

    async def read_target() -> None:
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        target["last"] = int(line)
        finished.set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        tasks = [asyncio.ensure_future(client(i, s)) for i in range(clients)]
        await read_target()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(t.done() for t in tasks):
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
    return {"clients": [
        {"n": len(ids), "sha": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
         "first": ids[0] if ids else None, "last": ids[-1] if ids else None}
        for ids in got]}


def _ingest(db: str, key: str, work: str, senders: list[str], rate: int,
            seconds: float) -> dict[str, Any]:
    """A real ingest at ``rate`` readings/s for ``seconds``: frames sealed first, then opened
    in batches of rate/10 every 100 ms (a Twin on its own store object)."""
    import twinlink

    total = int(rate * seconds)
    devs = [twinlink.Device.load(Path(work) / "keys" / f"{n}.device", Path(work) / "state")
            for n in senders]
    frames = []
    for i in range(total):
        frames.append(devs[i % len(devs)].seal({"temp": 20.0 + (i % 50) / 10, "rpm": i}))
    for d in devs:
        d.close()
    twin = twinlink.Twin(db, key)
    per = max(1, rate // 10)
    t0 = time.monotonic()
    stored = 0
    for k, i in enumerate(range(0, total, per)):
        due = t0 + k * per / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        res = twin.open_many(frames[i:i + per])
        stored += sum(not isinstance(r, Exception) for r in res)
    took = time.monotonic() - t0
    twin.close()
    return {"stored": stored, "seconds": round(took, 2), "rate": round(stored / took, 1)}


def bench_sse(dash: Dashboard, twin: dict[str, Any], work: Path, clients: int, rate: int,
              seconds: float) -> dict[str, Any]:
    import hashlib

    from twinlink.store import open_store

    store = open_store(twin["db"], readonly=True)
    start_id = store.readings(None, 1)[-1]["id"]
    ready = work / "sse-ready"
    url = dash.url + "api/v1/stream?kinds=readings&" + f"after=r{start_id}.e0"
    cp = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_dashboard", "--sse-client",
                           url, "--clients", str(clients), "--ready-file", str(ready)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=_env(), cwd=ROOT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if time.monotonic() > deadline or cp.poll() is not None:
            cp.kill()
            raise RuntimeError("SSE clients did not connect")
        time.sleep(0.1)
    cpu0 = dash.cpu_s()
    ing = subprocess.run([sys.executable, "-m", "benchmarks.bench_dashboard", "--ingest",
                          twin["db"], "--key", twin["key"], "--work", str(work), "--rate",
                          str(rate), "--seconds", str(seconds), "--senders",
                          ",".join(twin["senders"])], capture_output=True, text=True,
                         env=_env(), cwd=ROOT, timeout=seconds * 10 + 300)
    if ing.returncode != 0:
        cp.kill()
        raise RuntimeError(ing.stderr)
    ingest = json.loads(ing.stdout)
    rows = store.readings(None, 10 ** 7, after_id=start_id)
    expected = [r["id"] for r in rows]
    store.close()
    t_end = time.monotonic()
    out, _ = cp.communicate(f"{expected[-1]}\n", timeout=300)
    drained = time.monotonic() - t_end
    cpu = dash.cpu_s() - cpu0
    result = json.loads(out)["clients"]
    want = hashlib.sha256(json.dumps(expected).encode()).hexdigest()
    complete = sum(c["sha"] == want for c in result)
    return {"clients": len(result), "clients_with_every_reading": complete,
            "readings": len(expected), "ingest": ingest,
            "drain_after_ingest_s": round(drained, 2),
            "dashboard_cpu_s": round(cpu, 1), "dashboard_rss_mib": round(dash.rss_mib(), 1),
            "short_clients": [c for c in result if c["sha"] != want][:3]}


# -- main -----------------------------------------------------------------------------------------


def run(devices: int, clients: int, rate: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="twinlink-bench-dash-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        twin = make_twin(work, devices, 10)
        setup = time.monotonic() - t0
        dash = Dashboard(twin["db"])
        try:
            res: dict[str, Any] = {"devices": devices, "setup_s": round(setup, 1)}
            res.update(bench_fleet(dash.url))
            name = twin["names"][1]
            res["device_api"] = bench_rate(dash.url + f"api/v1/devices/{name}", 10)
            res["device_page"] = bench_rate(dash.url + f"devices/{name}", 10)
            res["sse"] = bench_sse(dash, twin, work, clients, rate, seconds)
            res["dashboard_rss_mib"] = round(dash.rss_mib(), 1)
        finally:
            dash.stop()
    res["targets"] = TARGETS
    res["met"] = {
        "fleet_render": res.get("fleet_browser_load_median_s", res["fleet_server_median_s"])
        <= TARGETS["fleet_render_s"],
        "device_api_rps": res["device_api"]["rps"] >= TARGETS["device_api_rps"],
        "sse": res["sse"]["clients_with_every_reading"] >= TARGETS["sse_clients"]
        and res["sse"]["ingest"]["rate"] >= rate * 0.95,
    }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--json", action="store_true")
    # internal roles (the benchmark's other processes)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--sse-client", help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", help=argparse.SUPPRESS)
    ap.add_argument("--ingest", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--senders", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.load:
        print(json.dumps(asyncio.run(_load(a.load, a.seconds))))
        return 0
    if a.sse_client:
        print(json.dumps(asyncio.run(_sse_clients(a.sse_client, a.clients, a.ready_file))))
        return 0
    if a.ingest:
        print(json.dumps(_ingest(a.ingest, a.key, a.work, a.senders.split(","), a.rate,
                                 a.seconds)))
        return 0
    res = run(a.devices, a.clients, a.rate, a.seconds)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        s = res["sse"]
        print(f"fleet page, {res['devices']} devices: server {res['fleet_server_median_s']} s "
              f"median ({res['fleet_bytes']} bytes), browser load "
              f"{res.get('fleet_browser_load_median_s', 'n/a')} s (target <= 1 s)")
        for k in ("device_api", "device_page"):
            r = res[k]
            print(f"{k}: {r['rps']:.0f} requests/s, {r['errors']} errors, {r['tool']} "
                  f"(p50 {r.get('p50')}, p99 {r.get('p99')}; target >= 500/s)")
        print(f"SSE: {s['clients_with_every_reading']}/{s['clients']} clients got every one of "
              f"{s['readings']} readings; ingest {s['ingest']['rate']}/s; drained "
              f"{s['drain_after_ingest_s']} s after the ingest ended; dashboard CPU "
              f"{s['dashboard_cpu_s']} s, RSS {s['dashboard_rss_mib']} MiB (target 200 "
              "clients at 1000 readings/s)")
        print("targets met:", res["met"])
    return 0 if all(res["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
