"""Replay window against a model, and the durable sender sequence store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinlink.errors import Replay, SequenceExhausted, StateError, StateLocked, TooOld
from twinlink.oscore import MAX_SEQ
from twinlink.replay import ReplayWindow, SequenceStore


@given(st.lists(st.integers(0, 300), max_size=200), st.sampled_from([8, 64, 128]))
@settings(max_examples=200, deadline=None)
def test_window_matches_model(seqs, size):
    w, seen, top = ReplayWindow(size), set(), -1
    for s in seqs:
        if s > top:
            expect = None
        elif top - s >= size:
            expect = TooOld
        elif s in seen:
            expect = Replay
        else:
            expect = None
        if expect is None:
            w.accept(s)
            seen.add(s)
            top = max(top, s)
        else:
            with pytest.raises(expect):
                w.accept(s)
        restored = ReplayWindow.from_state(size, w.top, w.to_bytes())
        assert (restored.top, restored.bits) == (w.top, w.bits)


def test_window_check_does_not_mutate():
    w = ReplayWindow()
    w.check(5)
    assert w.top == -1
    w.update(5)
    with pytest.raises(Replay):
        w.check(5)


def test_anchored_window():
    w = ReplayWindow.anchored(64, 100)
    with pytest.raises((Replay, TooOld)):
        w.check(99)
    w.check(100)


def test_sequence_store_restart_skips_a_chunk(tmp_path):
    p = tmp_path / "dev.seq"
    with SequenceStore(p, chunk=16) as s:
        used = [s.take() for _ in range(20)]
    assert used == list(range(20))
    with SequenceStore(p, chunk=16) as s:
        nxt = s.take()
    assert nxt == 16 + 16 + 1  # stored 16, restart at stored + K + F
    with SequenceStore(p, chunk=16) as s:
        assert s.take() == nxt + 16 + 1  # the restart value itself was stored before use


def test_batch_reservation_is_durable(tmp_path):
    p = tmp_path / "dev.seq"
    with SequenceStore(p, chunk=10) as s:
        first = s.take(35)
        assert first == 0 and s.next_seq == 35
    with SequenceStore(p, chunk=10) as s:
        assert s.take() > 34


def test_torn_slot_falls_back_to_the_other(tmp_path):
    """A crash while storing the next reservation leaves the older slot to restart from."""
    p = tmp_path / "dev.seq"
    with SequenceStore(p, chunk=4) as s:
        used = [s.take() for _ in range(8)]  # stores 0 (slot a) and 4 (slot b)
    assert used == list(range(8))
    assert (tmp_path / "dev.seq.b").read_text().split()[2] == "4"
    # The next store (of 8) would go to slot a; simulate it torn half-way.
    (tmp_path / "dev.seq.a").write_bytes(b"twinlink-seq/2 4 8")
    with SequenceStore(p, chunk=4) as s:
        assert s.take() == 4 + 4 + 1  # from slot b: above every number used (max 7)
        assert not s.renewed


def test_both_slots_corrupt_renew_the_context(tmp_path):
    """State that cannot be read is never guessed at: a fresh context, numbers from 0."""
    p = tmp_path / "dev.seq"
    with SequenceStore(p, chunk=4) as s:
        s.take(9)
        old = s.id_context
    for name in ("dev.seq.a", "dev.seq.b"):
        (tmp_path / name).write_text("garbage\n")
    with SequenceStore(p, chunk=4) as s:
        assert s.renewed and s.take() == 0
        assert s.id_context is not None and s.id_context != old


def test_missing_state_starts_a_fresh_random_context(tmp_path):
    with SequenceStore(tmp_path / "a.seq") as a, SequenceStore(tmp_path / "b.seq") as b:
        assert a.renewed == b.renewed == "no sequence state"
        assert len(a.id_context) == len(b.id_context) == 8 and a.id_context != b.id_context
        assert a.take() == b.take() == 0  # same numbers, different contexts: no shared nonce


def test_copied_or_restored_state_renews(tmp_path):
    import shutil

    src, dst = tmp_path / "src", tmp_path / "dst"
    with SequenceStore(src / "dev.seq", chunk=4) as s:
        s.take(10)
        ctx = s.id_context
    shutil.copytree(src, dst)  # a backup restored elsewhere, or a second state directory
    with SequenceStore(dst / "dev.seq", chunk=4) as copy:
        assert copy.renewed.startswith("sequence state was copied") and copy.take() == 0
        assert copy.id_context != ctx
    with SequenceStore(src / "dev.seq", chunk=4) as orig:  # the original still resumes
        assert not orig.renewed and orig.id_context == ctx and orig.take() > 9


def test_renew_always(tmp_path):
    p = tmp_path / "dev.seq"
    with SequenceStore(p) as s:
        first = s.id_context
    with SequenceStore(p, renew="always") as s:
        assert s.renewed and s.id_context != first and s.take() == 0


def test_lite_state_never_renews(tmp_path):
    p = tmp_path / "dev.seq"
    with SequenceStore(p, renewable=False, base_context=None, fresh=True) as s:
        assert s.id_context is None and s.take() == 0
    with SequenceStore(p, renewable=False) as s:
        assert s.take() > 0 and not s.renewed
    for name in ("dev.seq.a", "dev.seq.b"):
        (tmp_path / name).write_text("garbage\n")
    with pytest.raises(StateError):
        SequenceStore(p, renewable=False)
    with pytest.raises(StateError):  # no state, but the identity was used before
        SequenceStore(tmp_path / "other.seq", renewable=False, fresh=False)


def test_second_process_is_locked_out(tmp_path):
    p = tmp_path / "dev.seq"
    code = textwrap.dedent(f"""
        import sys, time
        from twinlink.replay import SequenceStore
        s = SequenceStore({str(p)!r})
        print("locked", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(StateLocked):
            SequenceStore(p)
    finally:
        child.stdin.close()
        child.wait(10)
    with SequenceStore(p) as s:  # released when the holder exits
        assert s.take() > 0


def test_exhaustion_refused(tmp_path):
    p = tmp_path / "dev.seq"
    with SequenceStore(p, chunk=1) as s:
        identity, ctx = s.identity, s.id_context
    (tmp_path / "dev.seq.a").write_bytes(_slot(MAX_SEQ - 3, ctx, identity))
    (tmp_path / "dev.seq.b").unlink(missing_ok=True)
    with SequenceStore(p, chunk=1) as s:
        assert s.take() == MAX_SEQ - 1
        assert s.take() == MAX_SEQ
        with pytest.raises(SequenceExhausted):
            s.take()


def _slot(value: int, ctx: bytes | None, identity: str) -> bytes:
    from twinlink.replay import _slot_text

    return _slot_text(99, value, ctx, identity)


def test_state_files_are_private(tmp_path):
    p = tmp_path / "dev.seq"
    with SequenceStore(p) as s:
        s.take()
    for f in tmp_path.iterdir():
        assert oct(os.stat(f).st_mode & 0o077) == "0o0", f
