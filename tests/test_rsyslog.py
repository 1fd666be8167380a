"""A real rsyslogd receives the forwarder's RFC 5424 events over TCP, UDP and TLS, parses
them (mmpstrucdata) and writes every field as JSON: every catalogue type, hostile details,
names and sources; and a collector stopped and restarted mid-stream loses nothing."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mosquitto import make_tls, wait_until
from rsyslog import Rsyslog, requires_rsyslog, requires_rsyslog_tls

from twinlink import events, keys, siem
from twinlink.forward import Forwarder
from twinlink.store import Event, SQLiteStore

pytestmark = [requires_rsyslog]

OPTS = siem.Options(hostname="twin-1", procid="777")
PER_TYPE = 200
HOSTILE = ['plain', 'quote " here', "back\\slash", "bracket ] here", 'end"] [x@1 a="b"]',
           "line\nbreak", "cr\rlf\r\n", "nul\x00", "é ü 温度", "bidi \u202e x", "eq=|pipe",
           "\n<13>1 - fake - - - -"]
SOURCES = ["twinlink/01/t", "serial:/dev/ttyUSB0", 'weird "]\\ src é', ""]


def visible(text: str) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x20 or 0x7f <= o <= 0x9f or ch in "\u2028\u2029\u200e\u200f" or (
                0x202a <= o <= 0x202e) or 0x2066 <= o <= 0x2069:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def populate(store: SQLiteStore, kid: bytes) -> None:
    """PER_TYPE events of every catalogue type (through its legacy reason, as today's store
    records them), with hostile details and sources, known/unknown/no kid."""
    kids = [kid, b"\xee\x01", None]
    batch = []
    for t in events.types():
        for i in range(PER_TYPE):
            batch.append(Event(t.reason, f"{HOSTILE[i % len(HOSTILE)]} #{i}",
                               kids[i % 3], i if i % 4 else None, SOURCES[i % len(SOURCES)]))
    store.record_events(batch, aggregate=False)


def check(rec: dict[str, Any], row: dict[str, Any]) -> None:
    ev = events.normalise(row)
    assert rec["_msgid"] == ev["type"]
    assert int(rec["_pri"]) == 10 * 8 + events.syslog_severity(ev["severity"])
    assert (rec["_app"], rec["_host"], rec["_procid"]) == ("twinlink", "twin-1", "777")
    assert rec["_ts"].startswith(siem.rfc3339(ev["time"])[:19])
    assert rec["_msg"].startswith("\ufeff" + ev["type"])
    assert rec["id"] == str(ev["id"]) and rec["type"] == ev["type"]
    assert rec["reason"] == ev["reason"] and rec["rule"] == ev["rule"]
    assert rec["outcome"] == ev["outcome"] and rec["count"] == "1"
    assert rec["detail"] == visible(ev["detail"])
    assert rec.get("source", "") == visible(ev["source"])
    assert rec.get("device") == ev["device"] and rec.get("kid") == ev["kid"]
    assert rec.get("seq") == (None if ev["seq"] is None else str(ev["seq"]))


@pytest.fixture
def rig(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "twin.db"))
    dev = store.register("pump-17", keys.DeviceKey.generate().public, kid=b"\x01")
    populate(store, dev.kid)
    rows = {r["id"]: dict(r) for r in store.events(None, 100_000, after_id=0)}
    yield store, rows
    store.close()


@requires_rsyslog_tls
def test_rsyslog_parses_every_type_over_tcp_udp_and_tls(rig, tmp_path):
    store, rows = rig
    n = len(rows)
    assert n == PER_TYPE * len(events.types()) + 1  # + the registration
    tls = make_tls(tmp_path / "tls")
    rs = Rsyslog(tmp_path / "rsyslog", tls=tls)
    rs.start()
    try:
        with Forwarder(store, f"tcp://127.0.0.1:{rs.tcp_port}", "rfc5424",
                       options=OPTS) as f:
            assert f.run(until_idle=True).forwarded == n
        wait_until(lambda: len(rs.records()) >= n, 60, what="rsyslog to write every event")
        got = rs.sd()
        assert len(got) == n
        assert Counter(r["_input"] for r in got) == {"imtcp": n}
        for rec in got:
            check(rec, rows[int(rec["id"])])
        assert {r["type"] for r in got} == {t.name for t in events.types()}
        per_type = Counter(r["_msgid"] for r in got)
        assert min(per_type.values()) >= PER_TYPE

        # UDP and TLS: the last 240 events again (UDP is fire and forget: small batches,
        # a big receive buffer on loopback)
        tail = sorted(rows)[-240:]
        with Forwarder(store, f"udp://127.0.0.1:{rs.udp_port}", "rfc5424", options=OPTS,
                       start_after=tail[0] - 1, batch=20) as f:
            f.run(until_idle=True)
        with Forwarder(store, f"tls://localhost:{rs.tls_port}", "rfc5424", options=OPTS,
                       ca=str(tls.ca), start_after=tail[0] - 1) as f:
            f.run(until_idle=True)
        wait_until(lambda: len(rs.records()) >= n + 480, 60, what="UDP and TLS events")
        got = rs.sd()
        for inp in ("imudp", "imtcp-tls"):
            recs = [r for r in got if r["_input"] == inp]
            assert sorted(int(r["id"]) for r in recs) == tail, inp
            for rec in recs:
                check(rec, rows[int(rec["id"])])
    finally:
        rs.stop()


@pytest.mark.slow
def test_collector_restart_mid_stream_loses_nothing(tmp_path):
    store = SQLiteStore(str(tmp_path / "twin.db"))
    rs = Rsyslog(tmp_path / "rsyslog")
    rs.start()
    fwd = Forwarder(store, f"tcp://127.0.0.1:{rs.tcp_port}", "rfc5424", batch=25,
                    backoff=(0.05, 0.2), options=OPTS)
    stop = threading.Event()
    t = threading.Thread(target=fwd.run, args=(stop,), daemon=True)
    t.start()
    chunk, total = 50, 0

    def add(n_chunks: int, wait_forwarded: bool) -> None:
        nonlocal total
        for _ in range(n_chunks):
            store.record_events([Event("bad_signature", f'forged "]\\ #{total + i}', b"\x01",
                                       total + i, "twinlink/01/t") for i in range(chunk)],
                                aggregate=False)
            total += chunk
            if wait_forwarded:
                wait_until(lambda want=total: fwd.after_id >= want, 30, what="forwarding")

    try:
        add(10, True)
        reconnects = fwd.stats.reconnects
        rs.stop()  # SIGTERM to the rsyslogd this test started
        add(10, False)
        wait_until(lambda: fwd.stats.reconnects > reconnects, 30,
                   what="the forwarder to notice the collector is gone")
        rs.start()
        add(10, False)
        wait_until(lambda: {int(r["id"]) for r in rs.sd()} >= set(range(1, total + 1)), 60,
                   what="every event after the restart")
        ids = [int(r["id"]) for r in rs.sd()]
        assert set(ids) == set(range(1, total + 1))  # nothing lost
        dupes = len(ids) - len(set(ids))
        assert dupes <= fwd.stats.resent  # duplicates only from resends after a reset
        print(f"restart: {total} events, {dupes} duplicates, {fwd.stats.reconnects} "
              f"reconnects, {fwd.stats.resent} resent")
    finally:
        stop.set()
        t.join(20)
        fwd.close()
        rs.stop()
        store.close()
