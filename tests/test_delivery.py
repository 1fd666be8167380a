"""The delivery layer on its own: real frames, a real outbox and real acks sealed by a real twin,
over a loopback carrier instead of a broker, to pin down the contract any transport gets
(release, resend, flow control), not MQTT's."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from mosquitto import twin_rig, wait_until

from twinlink import Device, Twin, ack
from twinlink.delivery import AckOpener, Delivery
from twinlink.errors import TransportError
from twinlink.frame import parse
from twinlink.outbox import Outbox


class Loopback:
    """A carrier that records what it is handed; ``tokens`` decides whether it promises hop acks
    (MQTT-like) or not (serial-like); ``refuse`` makes it raise like a full transport."""

    def __init__(self, tokens: bool = True) -> None:
        self.tokens = tokens
        self.refuse = 0
        self.sent: list[int] = []  # seqs, in order handed over
        self.by_token: dict[int, int] = {}
        self._lock = threading.Lock()

    def send_frame(self, kid: bytes, frame: bytes) -> int | None:
        with self._lock:
            if self.refuse:
                self.refuse -= 1
                raise TransportError("transport busy")
            self.sent.append(parse(frame).seq)
            if not self.tokens:
                return None
            token = len(self.sent)
            self.by_token[token] = self.sent[-1]
            return token

    def count(self, seq: int) -> int:
        with self._lock:
            return self.sent.count(seq)


@pytest.fixture
def pump(tmp_path: Path):
    r = twin_rig(tmp_path)
    twin = Twin(r.db, r.twin_key)
    dev = Device.load(r.bundle("pump"), r.state)
    yield r, twin, dev
    dev.close()
    twin.close()


SID = bytes.fromhex("0123456789ab")
_pivs = itertools.count()


def _opener(dev: Device) -> AckOpener:
    return AckOpener(dev.bundle)


def _ack(twin: Twin, frames: list[bytes], refused: str = "") -> bytes:
    """The ack a twin would send for ``frames`` (all of one context): stored, or refused with
    reason ``refused``."""
    p = parse(frames[0])
    entries = [(parse(f).seq, ack.digest(f)) for f in frames]
    ctx = twin.ack_context(p.kid, SID, p.kid_context)
    if refused:
        return ack.seal_ack(ctx, p.kid, next(_pivs), (), [(s, d, refused) for s, d in entries],
                            p.kid_context)
    return ack.seal_ack(ctx, p.kid, next(_pivs), entries, (), p.kid_context)


def test_window_and_end_to_end_release(pump, tmp_path: Path) -> None:
    _, twin, dev = pump
    carrier = Loopback()
    d = Delivery(Outbox(tmp_path / "o.outbox"), carrier, kid=dev.kid, acks=_opener(dev),
                 window=4)
    d.start()
    try:
        frames = dev.seal_many([{"i": i} for i in range(10)])
        seqs = [parse(f).seq for f in frames]
        twin.open(frames[0])  # the twin learns the device's (fresh) context from a genuine frame
        d.put(frames)
        assert d.pending() == 10 and carrier.sent == []  # link down: nothing handed over
        d.link_up()
        wait_until(lambda: len(carrier.sent) == 4, 5, what="the first window")
        for token in list(carrier.by_token):
            d.hop_acked(token)  # the next hop has them: not a reason to release
        d.ack_arrived(dev.kid, _ack(twin, frames[0:2]))
        wait_until(lambda: d.pending() == 8 and len(carrier.sent) == 6, 5, what="window moves")
        assert carrier.sent == seqs[:6] and d.stats.acks == 1 and d.stats.hop_acks == 4
        d.ack_arrived(dev.kid, b"\xd0\x83junk")
        d.ack_arrived(dev.kid, _ack(twin, frames)[:-1] + b"\x00")
        wait_until(lambda: d.stats.forged_acks == 2, 5, what="forgeries counted")
        # A refusal for good moves the frame to the dead letters; the rest keeps flowing.
        d.ack_arrived(dev.kid, _ack(twin, frames[2:3], refused="bad_payload"))
        wait_until(lambda: d.stats.refused == 1 and len(carrier.sent) == 7, 5,
                   what="the dead letter to open the window")
        d.ack_arrived(dev.kid, _ack(twin, frames[3:]))
        assert d.flush(5) == 0
        assert d.stats.released == 9 and [x.seq for x in d.outbox.dead_letters()] == [seqs[2]]
    finally:
        d.close()


def test_reconnect_resends_what_only_the_next_hop_had(pump, tmp_path: Path) -> None:
    _, _, dev = pump
    carrier = Loopback()
    d = Delivery(Outbox(tmp_path / "o.outbox"), carrier, kid=dev.kid, acks=_opener(dev))
    d.start()
    try:
        frames = dev.seal_many([{"i": i} for i in range(3)])
        seqs = [parse(f).seq for f in frames]
        d.put(frames)
        d.link_up()
        wait_until(lambda: len(carrier.sent) == 3, 5, what="all three sent")
        tokens = sorted(carrier.by_token)
        d.hop_acked(tokens[0])  # the next hop confirmed seqs[0] only (handled in order)
        d.link_down()
        d.link_up()  # the next hop may have lost seqs[0]; the transport re-sends the others
        wait_until(lambda: carrier.count(seqs[0]) == 2, 5, what="the resend")
        assert carrier.count(seqs[1]) == carrier.count(seqs[2]) == 1 and d.stats.resent == 1
        assert d.stats.hop_acks == 1
    finally:
        d.close()


def test_unacknowledged_frames_are_sent_again_after_resend_after(pump, tmp_path: Path) -> None:
    _, _, dev = pump
    carrier = Loopback(tokens=False)
    d = Delivery(Outbox(tmp_path / "o.outbox"), carrier, kid=dev.kid, acks=_opener(dev),
                 resend_after=0.05)
    d.start()
    try:
        carrier.refuse = 2  # a busy transport first: tried again shortly
        d.link_up()
        frame = dev.seal({"i": 0})
        d.put([frame])
        wait_until(lambda: carrier.count(parse(frame).seq) >= 3, 5, what="resends")
        assert d.pending() == 1  # never released without the twin's ack
    finally:
        d.close()


def test_gateway_mode_releases_on_hop_ack_or_write(pump, tmp_path: Path) -> None:
    _, _, dev = pump
    frames = dev.seal_many([{"i": i} for i in range(4)])
    for tokens in (True, False):
        carrier = Loopback(tokens=tokens)
        d = Delivery(Outbox(tmp_path / f"gw-{tokens}.outbox"), carrier)  # no kid, no acks
        d.start()
        try:
            d.put(frames)
            d.link_up()
            wait_until(lambda c=carrier: len(c.sent) == 4, 5, what="all sent")
            for token in list(carrier.by_token):
                d.hop_acked(token)
            assert d.flush(5) == 0 and d.stats.released == 4
        finally:
            d.close()


def test_put_refuses_another_devices_frames_and_a_closed_link(pump, tmp_path: Path) -> None:
    _, _, dev = pump
    d = Delivery(Outbox(tmp_path / "o.outbox"), Loopback(), kid=b"\x02")
    with pytest.raises(ValueError, match="another device"):
        d.put([dev.seal({"i": 0})])
    assert d.pending() == 0
    d.close()
    with pytest.raises(TransportError, match="closed"):
        d.put([dev.seal({"i": 1})])


def test_conflicting_ack_releases_nothing_and_is_an_event(pump, tmp_path: Path) -> None:
    """An authentic ack naming a queued seq with another frame's digest (what a clone of this
    identity would be acknowledged for) releases nothing and raises ack.conflict."""
    _, twin, dev = pump
    mine = dev.seal({"i": 0})
    p = parse(mine)
    twin.open(mine)
    other = bytes(64)  # stands for another frame under the same seq: only its digest matters
    events: list[tuple[str, str]] = []
    d = Delivery(Outbox(tmp_path / "o.outbox"), Loopback(), kid=dev.kid, acks=_opener(dev),
                 on_event=lambda kind, detail: events.append((kind, detail)))
    d.start()
    try:
        d.put([mine])
        ctx = twin.ack_context(dev.kid, SID, p.kid_context)
        d.ack_arrived(dev.kid, ack.seal_ack(ctx, dev.kid, 0, [(p.seq, ack.digest(other))],
                                            kid_context=p.kid_context))
        wait_until(lambda: d.stats.conflicts == 1, 5, what="the conflict")
        assert d.pending() == 1 and d.stats.released == 0
        d.ack_arrived(dev.kid, b"\xd0\x83junk")
        wait_until(lambda: len(events) == 2, 5, what="both events")
        assert [k for k, _ in events] == ["ack.conflict", "ack.forged"]
        assert ack.digest(other).hex() in events[0][1]
        d.ack_arrived(dev.kid, _ack(twin, [mine]))
        assert d.flush(5) == 0
    finally:
        d.close()


def test_old_context_frames_go_first(tmp_path: Path) -> None:
    """After a context renewal, the new context's frames wait until the old context's are
    settled: the twin retires the old context on the new one's first frame."""
    r = twin_rig(tmp_path)
    twin = Twin(r.db, r.twin_key)
    first = Device.load(r.bundle("pump"), r.state)
    old = first.seal_many([{"old": i} for i in range(3)])
    first.close()
    for f in r.state.glob("*.seq.*"):
        f.unlink()
    dev = Device.load(r.bundle("pump"), r.state)
    carrier = Loopback(tokens=False)
    d = Delivery(Outbox(tmp_path / "o.outbox"), carrier, kid=dev.kid, acks=_opener(dev),
                 resend_after=60)
    d.start()
    try:
        new = dev.seal_many([{"new": i} for i in range(3)])
        d.put(old)
        d.put(new)
        d.link_up()
        wait_until(lambda: len(carrier.sent) == 3, 5, what="the old context's frames")
        d.ack_arrived(dev.kid, _ack(twin, old[:2]))
        wait_until(lambda: d.pending() == 4, 5, what="two released")
        assert len(carrier.sent) == 3  # one old frame still in flight: nothing new yet
        d.ack_arrived(dev.kid, _ack(twin, old[2:], refused="context_retired"))
        wait_until(lambda: len(carrier.sent) == 6, 5, what="the new context's frames")
        d.ack_arrived(dev.kid, _ack(twin, new))
        assert d.flush(5) == 0 and d.stats.refused == 1 and d.stats.released == 5
    finally:
        d.close()
        dev.close()
        twin.close()
