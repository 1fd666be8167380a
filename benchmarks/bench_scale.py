"""Scaling the ingest: frames/s for 1, 2 and 4 workers on SQLite (1 worker) and PostgreSQL, and
the CPU seconds each process spends per 1 000 frames, read from /proc.

    python benchmarks/bench_scale.py [--frames 20000] [--devices 50] [--workers 1,2,4]
                                     [--stores sqlite,postgres] [--profile DIR] [--json]

Every run is the deployed path end to end: a publisher process holding one durable outbox per
device (``MqttLink``: sealed frames, SQLite outbox, end-to-end acks) → mosquitto →
``twinlink serve --workers N`` (N processes on ``$share/…``) → the store; the clock stops when
every device's outbox is empty, i.e. the twin acknowledged every frame as stored. PostgreSQL is
a private server started for the run with durable settings (fsync on, synchronous_commit on).

CPU per process comes from /proc/<pid>/stat (utime + stime; for PostgreSQL the postmaster, its
live children and its reaped children), so the split can be read on a machine with more cores
than this one: the frames/s one core of each kind sustains is 1000 / (its CPU s per 1 000).
``--profile DIR`` samples the single-worker runs with py-spy (if installed) and prints where
the worker's time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Broker, env, wait_until  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


# -- /proc accounting ---------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of ``pid`` (plus its reaped children's with ``reaped``), in seconds."""
    try:
        s = _stat(pid)
    except OSError:
        return 0.0
    ticks = int(s[11]) + int(s[12]) + ((int(s[13]) + int(s[14])) if reaped else 0)
    return ticks / TICK


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree_cpu(pid: int) -> float:
    """CPU of a process, its live children and everything it reaped (a postmaster)."""
    return cpu_seconds(pid, reaped=True) + sum(cpu_seconds(c) for c in children(pid))


# -- the fleet and the publisher ----------------------------------------------------------------


def make_fleet(root: Path, db: str, devices: int, window: int) -> Path:
    from twinlink import keys
    from twinlink.provision import provision
    from twinlink.store import open_store

    tk = keys.TwinKey.generate()
    keys.write_private(root / "twin.key", tk.to_pem())
    keys.write_public(root / "twin.pub", tk.public_pem())
    with open_store(db) as store:
        for i in range(1, devices + 1):
            name = f"dev{i:03d}"
            pk = provision(name, root / "twin.pub", root / "keys", kid=i.to_bytes(2, "big"))
            assert pk.device_key is not None
            store.register(name, pk.device_key.public, i.to_bytes(2, "big"), window=window)
    return root / "twin.key"


READING = {"temp": 21.5, "hum": 40.25, "pressure": 1013.2, "tag": "ab"}


def publisher_main(root: Path, url: str, per_device: int, window: int) -> None:
    """The publisher process: seal, say ready, wait for 'go', publish through the outboxes,
    report its CPU seconds of the publishing phase (sealing excluded) as JSON."""
    from twinlink import Device, transport

    devices = [Device.load(p, root / "state") for p in sorted((root / "keys").glob("*.device"))]
    frames = [d.seal_many([READING] * (per_device + 1)) for d in devices]
    links = [transport.open(url, device=d, window=window, timeout=600, capacity=10**6,
                            resend_after=30) for d in devices]
    for link in links:
        assert link.wait_connected(30) and link.ack_subscribed.wait(30)  # type: ignore[attr-defined]
    # Warm-up, not measured: each device's first frame starts its security context on the
    # twin (a context renewal); the run measures the steady state after it.
    for link, fs in zip(links, frames):
        link.send_many(fs[:1])
    assert sum(link.flush(120) for link in links) == 0
    frames = [fs[1:] for fs in frames]
    print("ready", flush=True)
    sys.stdin.readline()
    c0, t0 = time.process_time(), time.perf_counter()
    for link, fs in zip(links, frames):
        link.send_many(fs)
    left = sum(link.flush(600) for link in links)
    out = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "left": left,
           "resent": sum(link.stats.resent for link in links)}  # type: ignore[attr-defined]
    for d in devices:
        d.close()
    print(json.dumps(out), flush=True)


# -- one run ------------------------------------------------------------------------------------


def run_one(store: str, workers: int, frames: int, devices: int, window: int,
            profile: Path | None = None) -> dict[str, Any]:
    from pg import PgServer

    work = Path(tempfile.mkdtemp(prefix=f"twinlink-scale-{store}-{workers}-"))
    pg = None
    if store == "postgres":
        pg = PgServer(fsync=True)
        pg.start()
        db = pg.new_database()
    else:
        db = str(work / "twin.db")
    broker = Broker(work / "broker", persistence=True)
    broker.start()
    key = make_fleet(work, db, devices, window)
    per_device = frames // devices
    serve = subprocess.Popen(
        [sys.executable, "-m", "twinlink", "serve", "--mqtt", broker.url, "--db", db,
         "--twin-key", str(key), "--workers", str(workers), "--reconnect-max", "0.5"],
        env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    lines: list[str] = []
    import threading

    def drain() -> None:
        assert serve.stderr is not None
        for line in serve.stderr:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    pub = None
    spy = None
    try:
        wait_until(lambda: sum("serving" in x for x in lines) >= workers, 120,
                   what=f"workers to subscribe: {''.join(lines)}")
        wpids = [serve.pid] if workers == 1 else children(serve.pid)
        pub = subprocess.Popen([sys.executable, __file__, "_publish", str(work), broker.url,
                                str(per_device), str(min(window, 1024))], env=env(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert pub.stdout is not None and pub.stdin is not None
        assert pub.stdout.readline().strip() == "ready"
        if profile is not None and workers == 1:
            spy = _start_spy(serve.pid, profile / f"{store}-1.txt")
        before = {"broker": cpu_seconds(broker.proc.pid),  # type: ignore[union-attr]
                  "workers": sum(cpu_seconds(p) for p in wpids),
                  "postgres": tree_cpu(_postmaster(pg)) if pg else 0.0}
        pub.stdin.write("go\n")
        pub.stdin.flush()
        result = json.loads(pub.stdout.readline())
        after = {"broker": cpu_seconds(broker.proc.pid),  # type: ignore[union-attr]
                 "workers": sum(cpu_seconds(p) for p in wpids),
                 "postgres": tree_cpu(_postmaster(pg)) if pg else 0.0}
    finally:
        if pub is not None:
            try:
                pub.wait(60)
            except subprocess.TimeoutExpired:
                pub.kill()
                pub.wait(10)
        serve.terminate()
        serve.wait(60)
        if spy is not None:
            spy.wait(60)  # py-spy writes its profile when the process it samples has ended
        broker.kill()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    assert result["left"] == 0, result
    n = per_device * devices
    k = 1000.0 / n
    cpu = {"publisher": result["cpu"] * k,
           **{name: (after[name] - before[name]) * k for name in after}}
    cpu["total"] = sum(cpu.values())
    return {"store": store, "workers": workers, "frames": n, "devices": devices,
            "seconds": result["seconds"], "fps": n / result["seconds"],
            "cpu_per_1000": cpu, "device_resends": result["resent"]}


def _postmaster(pg: Any) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


# -- profiling ---------------------------------------------------------------------------------


def _start_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        print("(py-spy not installed: no profile)", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--format", "raw",
                             "--output", str(out), "--rate", "250", "--nonblocking",
                             "--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 18) -> str:
    """Where the sampled CPU time went, from py-spy's collapsed stacks: the functions with the
    most samples on top of the stack (self), and the twinlink/paho functions by inclusive
    share. Samples of threads waiting (queue, select, lock) are left out."""
    incl: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    idle = ("wait (threading", "select (selectors", "_wait_for_tstate_lock", "get (queue",
            "acquire", "sleep", "poll (selectors")
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith("thread (")]
        if not frames or any(i in frames[-1] for i in idle):
            continue
        count = int(n)
        total += count
        own[_short(frames[-1])] += count
        for f in {_short(x) for x in frames if "twinlink/" in x or "paho/" in x
                  or "psycopg/" in x}:
            incl[f] += count
    if not total:
        return "no samples"
    out = [f"{total} samples on the CPU; self:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out.append("inclusive (twinlink, paho, psycopg):")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "open_many (twinlink/twin.py:275)" -> "open_many (twin.py)"
    name, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


# -- main ---------------------------------------------------------------------------------------


def _print(r: dict[str, Any]) -> None:
    c = r["cpu_per_1000"]
    print(f"{r['store']:8} {r['workers']} worker(s): {r['fps']:7.0f} frames/s "
          f"({r['frames']} frames, {r['seconds']:.1f}s) | CPU s per 1000 frames: publisher "
          f"{c['publisher']:.3f}, broker {c['broker']:.3f}, workers {c['workers']:.3f}, "
          f"postgres {c['postgres']:.3f}, total {c['total']:.3f} | resends "
          f"{r['device_resends']}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_publish":
        publisher_main(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--profile", type=Path, help="py-spy the 1-worker runs into DIR")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    for store in a.stores.split(","):
        for w in (int(x) for x in a.workers.split(",")):
            if store == "sqlite" and w > 1:
                continue  # one writer: more SQLite workers only queue on its lock
            r = run_one(store, w, a.frames, a.devices, a.window, a.profile)
            results.append(r)
            _print(r)
            if a.profile is not None and w == 1 and (a.profile / f"{store}-1.txt").exists():
                print(summarize_profile(a.profile / f"{store}-1.txt"))
    if a.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
