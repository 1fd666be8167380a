"""The twin: replay window semantics, refusals by reason, state, events, re-key, concurrency."""

from __future__ import annotations

import sqlite3

import pytest

import twinlink
from twinlink import keys
from twinlink.errors import (
    BadSignature,
    DecryptionFailed,
    MalformedFrame,
    Replay,
    RevokedDevice,
    TooOld,
    TopicMismatch,
    UnknownDevice,
    WindowLost,
)


def _window_top(rig, name):
    with sqlite3.connect(rig.db) as db:
        return db.execute("SELECT win_top FROM devices WHERE name=?", (name,)).fetchone()[0]


def test_open_returns_reading_and_keeps_state(rig, backend_name):
    dev = rig.device("pump")
    twin = rig.twin()
    r = twin.open(dev.seal({"temp": 21.5, "door": "open", "ok": True}, time=1700000000.25))
    assert (r.device, r.seq, r.provenance) == ("pump", 0, "signed")
    assert r.payload == {"temp": 21.5, "door": "open", "ok": True}
    assert r.time == 1700000000.25
    st = twin.store.status("pump")
    assert st["accepted"] == 1 and st["last_seq"] == 0
    assert st["state"]["temp"]["value"] == 21.5 and st["state"]["door"]["value"] == "open"
    assert twin.store.readings("pump")[0]["payload"] == r.payload


def test_replay_is_refused_and_logged(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    f = dev.seal({"v": 1})
    twin.open(f)
    with pytest.raises(Replay):
        twin.open(f)
    ev = twin.store.events("pump", audit=False)
    assert [e["reason"] for e in ev] == ["replay"] and ev[0]["seq"] == 0
    assert twin.store.count_readings("pump") == 1


def test_reorder_within_window_accepted_exactly_once(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    frames = dev.seal_many([{"i": i} for i in range(40)])
    order = list(range(39, -1, -1))  # fully reversed: all within the 64 window
    for i in order:
        assert twin.open(frames[i]).seq == i
    for i in order:
        with pytest.raises(Replay):
            twin.open(frames[i])
    assert twin.store.count_readings("pump") == 40


def test_too_old_below_window(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    frames = dev.seal_many([{"i": i} for i in range(70)])
    twin.open(frames[69])
    with pytest.raises(TooOld):
        twin.open(frames[5])  # 69 - 5 = 64 >= window
    assert twin.open(frames[6]).seq == 6  # 63 below the top: still inside


def test_failed_frames_never_touch_the_window(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    twin.open(dev.seal({"v": 0}))
    good = dev.seal({"v": 1})
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(BadSignature):
        twin.open(bytes(bad))
    assert _window_top(rig, "pump") == 0
    assert twin.open(good).seq == 1  # the genuine frame with that seq still gets in


def test_kid_swap_is_refused(rig, backend_name):
    pump, valve, twin = rig.device("pump"), rig.device("valve"), rig.twin()
    f = bytearray(valve.seal({"v": 1}))
    assert f[7] == 0x41 and pump.kid != valve.kid and len(pump.kid) == 1
    f[8] = pump.kid[0]
    with pytest.raises(BadSignature):
        twin.open(bytes(f))


def test_unknown_and_revoked_devices(rig, backend_name):
    pump, twin = rig.device("pump"), rig.twin()
    stranger = keys.DeviceKey.generate()
    bundle = keys.Bundle("x", b"\x77\x77", rig.twin_key.public, stranger, {})
    bundle.save(rig.root / "x.device")
    with twinlink.Device.load(rig.root / "x.device", rig.root / "st2") as x:
        with pytest.raises(UnknownDevice):
            twin.open(x.seal({"v": 1}))
    twin.revoke("pump", "stolen")
    with pytest.raises(RevokedDevice):
        twin.open(pump.seal({"v": 1}))
    reasons = [e["reason"] for e in twin.store.events()
               if e["reason"] not in ("registered", "context_started")]
    assert reasons == ["unknown_device", "revoked_by_operator", "revoked"]


def test_topic_mismatch(rig, backend_name):
    pump, twin = rig.device("pump"), rig.twin()
    with pytest.raises(TopicMismatch):
        twin.open(pump.seal({"v": 1}), expect_kid=b"\x99")
    assert twin.open(pump.seal({"v": 2}), expect_kid=pump.kid).seq == 1


def test_lite_frame_from_signed_device_refused(rig, backend_name):
    from twinlink import frame

    _pump, twin = rig.device("pump"), rig.twin()
    ctx = twin.device_context("pump")
    with pytest.raises(BadSignature):
        twin.open(frame.seal_lite(ctx, 0, b"\x01"))


def test_lite_device(rig, backend_name):
    bundle_path = rig.provision("mote", lite=True)
    b = keys.Bundle.load(bundle_path)
    assert b.device_key is None and b.profile == "lite"
    dev, twin = twinlink.Device.load(bundle_path, rig.root / "state"), rig.twin()
    r = twin.open(dev.seal({"t": 1}))
    assert r.provenance == "aead-only" and r.payload == {"t": 1}


def test_open_many_mixed_batch(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    frames = dev.seal_many([{"i": i} for i in range(5)])
    batch = [frames[0], b"\x00garbage", frames[1], frames[0], frames[4], frames[4]]
    out = twin.open_many(batch)
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["Reading", "MalformedFrame", "Reading", "Replay", "Reading", "Replay"]
    assert twin.store.count_readings() == 3


def test_window_lost_then_reanchor(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    twin.open(dev.seal({"v": 0}))
    twin.store.mark_window_lost("pump")
    f = dev.seal({"v": 1})
    with pytest.raises(WindowLost):
        twin.open(f)
    twin.store.reanchor("pump", 2)
    with pytest.raises((Replay, TooOld)):
        twin.open(f)  # seq 1 < floor 2
    assert twin.open(dev.seal({"v": 2})).seq == 2


def test_rekey_keeps_history(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    twin.open(dev.seal({"v": 0}))
    stale = dev.seal({"v": 99})  # sealed under the old context, delivered after the re-key
    dev.close()
    twin.store.rekey("pump", b"\x01\x02", None)
    b = keys.Bundle.load(rig.root / "keys" / "pump.device")
    b.settings["master_salt"] = "0102"
    b.save(rig.root / "keys" / "pump.device", overwrite=True)
    dev2 = twinlink.Device.load(rig.root / "keys" / "pump.device", rig.root / "state")
    r = twin.open(dev2.seal({"v": 1}))
    assert r.seq == 0  # fresh counter in the new context, accepted
    assert twin.store.count_readings("pump") == 2
    with pytest.raises(DecryptionFailed):
        twin.open(stale)


def test_two_twins_on_one_database_accept_once(rig, backend_name):
    dev = rig.device("pump")
    t1, t2 = rig.twin(), rig.twin()
    f = dev.seal({"v": 1})
    t1.open(f)
    with pytest.raises(Replay):
        t2.open(f)


def test_commit_rechecks_window_under_the_write_lock(rig, backend_name):
    """Two ingests that both pre-checked a frame: only the first commit stores it."""
    from twinlink.store import Accepted

    dev, twin = rig.device("pump"), rig.twin()
    kid = dev.kid
    a = Accepted(kid, 3, 0, b"\xa0", {}, [], None, "signed")
    assert twin.store.commit([a], []) == [None]
    res = twin.store.commit([a], [])
    assert isinstance(res[0], Replay)
    assert twin.store.count_readings() == 1


def test_garbage_is_malformed_and_logged(rig, backend_name):
    twin = rig.twin()
    rig.provision("pump")
    with pytest.raises(MalformedFrame):
        twin.open(b"\xd2\x84")
    assert twin.store.events()[-1]["reason"] == "malformed"


def test_repr_hides_secrets(rig):
    dev, twin = rig.device("pump"), rig.twin()
    secret_hex = dev.bundle.device_key.seed.hex()
    for obj in (dev, dev.bundle, dev.bundle.device_key, twin, twin.key, dev._ctx):
        text = repr(obj)
        assert secret_hex not in text and rig.twin_key.secret.hex() not in text
        assert dev._ctx.key.hex() not in text


def test_hostile_frames_only_raise_twinlink_errors_and_leave_the_window(rig, backend_name):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from twinlink.errors import TwinlinkError

    dev, twin = rig.device("pump"), rig.twin()
    twin.open(dev.seal({"v": 0}))
    good = dev.seal({"v": 1})

    @given(
        st.one_of(
            st.binary(max_size=300),
            st.tuples(st.integers(0, len(good) - 1), st.binary(min_size=1, max_size=8)).map(
                lambda m: good[: m[0]] + m[1] + good[m[0] + len(m[1]) :]
            ),
        )
    )
    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    def check(data):
        if data == good:
            return
        with pytest.raises(TwinlinkError):
            twin.open(data)

    check()
    assert _window_top(rig, "pump") == 0
    assert twin.open(good).seq == 1


def test_rekey_refuses_a_context_used_before(rig):
    from twinlink.errors import TwinlinkError

    rig.provision("pump")
    twin = rig.twin()
    with pytest.raises(TwinlinkError, match="already used"):
        twin.store.rekey("pump", b"", None)  # the current context
    twin.store.rekey("pump", b"\x01", None)
    twin.store.rekey("pump", b"\x01", b"\x02")
    for salt, ctx in ((b"", None), (b"\x01", None)):
        with pytest.raises(TwinlinkError, match="already used"):
            twin.store.rekey("pump", salt, ctx)
    assert twin.store.device("pump").epoch == 2


def test_refusal_counters_count_once_and_events_are_capped(rig):
    from twinlink.store import Accepted, Event, SQLiteStore

    rig.provision("pump")
    store = SQLiteStore(str(rig.db), max_events=10)
    kid = store.device("pump").kid
    a = Accepted(kid, 3, 0, b"\xa0", {}, [], None, "signed")
    assert store.commit([a], []) == [None]
    assert store.commit([a], [])[0].reason == "replay"  # raced in from another ingest
    assert (store.status("pump")["accepted"], store.status("pump")["refused"]) == (1, 1)
    store.record_events([Event("malformed", f"garbage {i}", kid) for i in range(25)],
                        aggregate=False)
    kept = store.events(limit=100)
    assert len(kept) == 10 and kept[-2]["detail"] == "garbage 24"  # the newest are kept
    assert kept[-1]["type"] == "ingest.storage_full"  # reaching the cap is said, once
    store.record_events([Event("malformed", "more", kid)], aggregate=False)
    assert [e["type"] for e in store.events(limit=100)].count("ingest.storage_full") == 1
    assert store.status("pump")["refused"] == 27  # the counter keeps the total
