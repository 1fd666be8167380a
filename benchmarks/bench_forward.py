"""Forwarder throughput to a real rsyslogd, per transport and format: events/s from the
first send until rsyslog has written the last event to its output file (parsing the
structured data with mmpstrucdata on the way), plus rendering alone.

    pytest benchmarks/bench_forward.py --benchmark-only -s
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mosquitto import make_tls, wait_until  # noqa: E402
from rsyslog import Rsyslog, has_module, requires_rsyslog  # noqa: E402

from twinlink import events, siem  # noqa: E402
from twinlink.forward import Forwarder  # noqa: E402
from twinlink.store import Event, SQLiteStore  # noqa: E402

N = 10_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("fwd")
    s = SQLiteStore(str(d / "twin.db"))
    reasons = [t.reason for t in events.types()]
    s.record_events([Event(reasons[i % len(reasons)], f'detail "{i}" ]\\ é', b"\x01", i,
                           "twinlink/01/t") for i in range(N)])
    yield s
    s.close()


@requires_rsyslog
@pytest.mark.parametrize("scheme,fmt", [("tcp", "rfc5424"), ("tls", "rfc5424"),
                                        ("tcp", "cef"), ("tcp", "ecs")])
def test_forward_to_rsyslog(benchmark, store, tmp_path, scheme, fmt):
    if scheme == "tls" and not has_module("lmnsd_ossl"):
        pytest.skip("rsyslog-openssl not installed")
    tls = make_tls(tmp_path / "tls") if scheme == "tls" else None
    rs = Rsyslog(tmp_path / "rs", tls=tls)
    rs.start()
    port = rs.tls_port if tls else rs.tcp_port
    host = "localhost" if tls else "127.0.0.1"
    rounds = []

    def run() -> None:
        # count, never unlink: rsyslog keeps the file open
        before = rs.out.read_bytes().count(b"\n") if rs.out.exists() else 0
        t0 = time.perf_counter()
        with Forwarder(store, f"{scheme}://{host}:{port}", fmt,
                       ca=str(tls.ca) if tls else None) as f:
            f.run(until_idle=True)
        sent = time.perf_counter() - t0

        def written() -> bool:
            return rs.out.exists() and rs.out.read_bytes().count(b"\n") >= before + N

        wait_until(written, 120, step=0.01, what="rsyslog to write every event")
        rounds.append((sent, time.perf_counter() - t0))

    try:
        benchmark.pedantic(run, rounds=3, iterations=1)
    finally:
        rs.stop()
    best_sent = min(r[0] for r in rounds)
    best_total = min(r[1] for r in rounds)
    benchmark.extra_info.update({"events": N, "sent_events_per_s": round(N / best_sent),
                                 "written_events_per_s": round(N / best_total)})
    print(f"\n{scheme} {fmt}: {N / best_sent:,.0f} events/s sent and confirmed, "
          f"{N / best_total:,.0f} events/s written by rsyslog")


@pytest.mark.parametrize("fmt", siem.FORMATS)
def test_render(benchmark, fmt):
    ev = events.normalise({"id": 1, "at": 1714564800.0, "kid": "01", "device": "pump-17",
                           "seq": 5, "reason": "replay", "detail": 'seq 5 "again" ]',
                           "source": "twinlink/01/t"})
    render = siem.renderer(fmt)
    opts = siem.Options()
    benchmark(render, ev, opts)
