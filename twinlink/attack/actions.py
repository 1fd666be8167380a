"""What each catalogued scenario does, by action name (the catalogue's ``action`` field).

An action drives a :class:`~twinlink.attack.runner.Session`: it seals genuine frames, delivers
genuine traffic or attacker bytes over the session's transport, and records what only it can
see (a device's refused acknowledgements, an eavesdropper's haul, invariants that broke). The
runner judges the twin from its store afterwards. Actions attack with what an attacker has:
captured frames and their own bytes, never a device's or the twin's keys (the one exception is
the cross-stream replay, which needs one of the twin's acknowledgements and takes it the way
the ingest makes it when no ingest runs).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

from .. import keys
from . import mutate as M
from .rig import MqttChannel, ScenarioError, SerialChannel, wait_for
from .runner import Session

__all__ = ["ACTIONS", "run"]

ACTIONS: dict[str, Callable[[Session], None]] = {}


def action(name: str) -> Callable[[Callable[[Session], None]], Callable[[Session], None]]:
    def register(fn: Callable[[Session], None]) -> Callable[[Session], None]:
        ACTIONS[name] = fn
        return fn
    return register


def run(name: str, s: Session) -> None:
    """Run action ``name`` on ``s``; KeyError for an action no module defines."""
    ACTIONS[name](s)


def _mqtt(s: Session) -> MqttChannel:
    s.require(isinstance(s.ch, MqttChannel), "this action needs the MQTT transport")
    return s.ch  # type: ignore[return-value]


def _relay(s: Session, frames: Sequence[bytes], role: str = "pump") -> None:
    """Genuine frames delivered as they are by something in between (a gateway that reorders,
    a relay): they must all be stored."""
    s.genuine_frames += frames
    s.ch.inject(frames, role=role)


# -- controls ---------------------------------------------------------------------------------

@action("control")
def control(s: Session) -> None:
    """``n`` genuine frames of the victim and a few of the second device; with ``shuffle``
    the victim's arrive permuted in blocks of that many (all inside the replay window)."""
    frames = s.seal(n=int(s.params.get("n", 40)))
    block = int(s.params.get("shuffle", 0))
    if block:
        order: list[bytes] = []
        for i in range(0, len(frames), block):
            chunk = frames[i:i + block]
            s.rng.shuffle(chunk)
            order += chunk
        s.require(order != frames, "the shuffle left the order unchanged")
        _relay(s, order)
    else:
        s.genuine(frames)
    if "valve" in s.rig.bundles:
        s.genuine(s.seal("valve", 5), "valve")


@action("qos1_duplicate")
def qos1_duplicate(s: Session) -> None:
    """The ingest stores a frame but dies before its PUBACK; the broker redelivers it (DUP)
    to the resumed session. Stored once, nothing to report."""
    ch = _mqtt(s)
    frames = s.seal(n=5)
    ch.withhold_ack(frames[0])
    s.genuine(frames[:1])
    ch.stop_ingest()
    ch.start_ingest()  # same client id: the broker resumes the session and redelivers
    wait_for(lambda: ch.ingest.stats.duplicates >= 1, 10,
             "the broker to redeliver the unacknowledged frame")
    s.genuine(frames[1:])


@action("line_noise")
def line_noise(s: Session) -> None:
    """Between genuine frames: a burst of random bytes, and a damaged copy of the next frame
    (one bit flipped, so its CRC fails). The receiver counts line errors; the twin sees none."""
    from ..transport import framing

    s.require(isinstance(s.ch, SerialChannel), "line noise needs the serial transport")
    ch: SerialChannel = s.ch  # type: ignore[assignment]
    frames = s.seal(n=int(s.params.get("n", 20)))
    before = ch.receiver.counts["line"]
    for f in frames:
        noise = bytes(s.rng.randrange(1, 256) for _ in range(s.rng.randrange(3, 40)))
        damaged = bytearray(framing.wire(f, flush_prefix=True))
        i = s.rng.randrange(2, len(damaged) - 2)
        damaged[i] ^= 0x10 if damaged[i] != 0x10 else 0x01
        ch.inject([noise + b"\x00" + bytes(damaged)], raw=True)
        s.genuine([f])
    s.require(ch.receiver.counts["line"] - before >= 2 * len(frames),
              "the receiver saw fewer line errors than noise bursts")


# -- replay -----------------------------------------------------------------------------------

@action("replay")
def replay(s: Session) -> None:
    """Capture frames as they are stored; replay them (``which="old"``: after the device moved
    its window past them)."""
    captured = s.seal(n=5)
    s.genuine(captured)
    if s.params.get("which") == "old":
        window = s.rig.store.device(s.rig.kid()).window_size
        s.genuine(s.seal(n=window + 6))
        captured = captured[:3]
    s.attack(captured)


def _twin_acks(s: Session, frames: Sequence[bytes], role: str = "pump") -> list[bytes]:
    """The twin's acknowledgements (acks v2) of genuine ``frames``, as an eavesdropper captures
    them: off the ack topic on MQTT, off the line on serial (the receiver answers there),
    in-process as the ingest's Acknowledger seals them."""
    s.genuine_frames += frames
    acks = s.ch.genuine_acked(role, frames)
    s.require(bool(acks), "the twin sent no acknowledgement to capture")
    return acks


@action("replay_ack_as_telemetry")
def replay_ack_as_telemetry(s: Session) -> None:
    """The twin's acknowledgement to the victim (an Encrypt0 keyed from the same pairwise
    secret, under the twin's Sender ID), injected on the telemetry path: not a Sign1, so the
    parser refuses it before any key is touched."""
    s.attack(_twin_acks(s, s.seal(n=3))[:1])


@action("replay_after_rekey")
def replay_after_rekey(s: Session) -> None:
    """Frames captured before an operator re-key (three stored, two never delivered) are
    replayed after the device moved to its new context."""
    captured = s.seal(n=5)
    s.genuine(captured[:3])
    name = s.rig.name()
    salt = os.urandom(8)
    s.rig.store.rekey(name, salt, None)
    bundle = s.rig.bundles["pump"]
    b = keys.Bundle.load(bundle)
    b.settings["master_salt"] = salt.hex()
    b.save(bundle, overwrite=True)
    if isinstance(s.ch, MqttChannel):
        s.ch.close_link("pump")
    s.rig.reload("pump")
    s.genuine(s.seal(n=3))  # the new context, adopted by the twin
    s.attack(captured)


@action("delayed_release")
def delayed_release(s: Session) -> None:
    """An attacker in the middle holds frames 1-3 back while the stream goes on, then releases
    them when the window has moved past."""
    frames = s.seal(n=5)
    held = frames[1:4]
    s.genuine([frames[0], frames[4]])
    window = s.rig.store.device(s.rig.kid()).window_size
    s.genuine(s.seal(n=window + 2))
    s.attack(held)


# -- integrity --------------------------------------------------------------------------------

def _oversize(frame: bytes) -> bytes:
    """A Sign1 shaped like ``frame`` whose Encrypt0 carries a 66 000-byte ciphertext: above the
    65 535-byte frame maximum, yet below the broker's Maximum Packet Size, so every transport
    delivers it to the twin's own size check."""
    from .. import cbor

    lay = M.layout(frame)
    prot = frame[slice(*lay.protected)]
    enc0 = (b"\xd0\x83\x44\xa1\x01\x18\x18\xa1\x06" + cbor.bstr(frame[slice(*lay.piv)])
            + cbor.bstr(bytes(66_000)))
    return (b"\xd2\x84" + cbor.bstr(prot) + b"\xa0" + cbor.bstr(enc0)
            + cbor.bstr(frame[slice(*lay.signature)]))


MUTATIONS: dict[str, Callable[[bytes, bytes], list[bytes]]] = {
    "flip_ciphertext": lambda f, kid: [M.flip_ciphertext(f)],
    "flip_signature": lambda f, kid: [M.flip_signature(f)],
    "truncations": lambda f, kid: M.truncations(f),
    "alg_es256": lambda f, kid: [M.rewrite_protected(f, {1: -7})],
    "alg_ed25519": lambda f, kid: [M.rewrite_protected(f, {1: -19})],
    "header_added": lambda f, kid: [M.rewrite_protected(f, {3: 60})],
    "header_unprotected": lambda f, kid: [M.rewrite_unprotected(f, {4: kid})],
    "header_removed": lambda f, kid: [M.rewrite_protected(f, drop=(4,))],
    "tag_wrong": lambda f, kid: [M.retag(f, 98)],
    "tag_missing": lambda f, kid: [M.untagged(f)],
    "bare_encrypt0": lambda f, kid: [M.bare_encrypt0(f)],
    "as_lite": lambda f, kid: [M.as_lite(f, kid)],
    "oversize": lambda f, kid: [_oversize(f)],
    "malformed_corpus": lambda f, kid: [b for _, b in M.malformed_corpus(f)],
}


@action("tamper")
def tamper(s: Session) -> None:
    """A fresh frame, altered on its way (``mutation``); afterwards the original goes through
    and must be stored: the refusal burned no sequence number."""
    frame = s.seal()[0]
    s.attack(MUTATIONS[s.params["mutation"]](frame, s.rig.kid()))
    s.genuine([frame])


@action("forge")
def forge(s: Session) -> None:
    """A reading without any COSE protection (``kind``: ``senml`` CBOR, or ``json``)."""
    if s.params["kind"] == "senml":
        payload = cbor2.dumps([{0: "temp", 1: "Cel", 2: 21.5, 6: time.time()}])
    else:
        payload = json.dumps({"temp": 21.5, "unit": "Cel"}).encode()
    s.attack([payload])
    s.genuine(s.seal())


# -- identity ---------------------------------------------------------------------------------

@action("kid_swap")
def kid_swap(s: Session) -> None:
    """The second device's frame relabelled with the victim's kid; then the second device's
    original goes through (its window was not touched either)."""
    v = s.seal("valve")[0]
    s.attack([M.swap_kid(v, s.rig.kid("pump"))])
    s.genuine([v], "valve")
    s.genuine(s.seal())


@action("unknown_kid")
def unknown_kid(s: Session) -> None:
    s.attack(s.seal("ghost", 2), role="ghost")
    s.genuine(s.seal())


@action("revoked")
def revoked(s: Session) -> None:
    s.attack(s.seal("old", 3), role="old")
    s.genuine(s.seal())


@action("topic_spoof")
def topic_spoof(s: Session) -> None:
    """The second device's frame published on the victim's topic, the victim's on a topic that
    names no kid; both originals then go through their own topics."""
    ch = _mqtt(s)
    v, p = s.seal("valve")[0], s.seal()[0]
    s.attack([v], topic=ch.telemetry_topic("pump"))
    s.attack([p], topic=f"{ch.rig.topic_root}/zz/t")
    s.genuine([v], "valve")
    s.genuine([p])


# -- MQTT abuse -------------------------------------------------------------------------------

@action("retained_telemetry")
def retained_telemetry(s: Session) -> None:
    """A forged frame published *retained* on the victim's topic: refused once, live; an ingest
    starting a new session afterwards never processes it again."""
    ch = _mqtt(s)
    frame = s.seal()[0]
    t = ch.telemetry_topic()
    s.attack([M.flip_signature(frame)], retain=True)
    probe = ch.sniff(t)
    wait_for(lambda: any(r for tt, _, r in probe.messages if tt == t), 10,
             "the poisoned message to sit retained on the broker")
    probe.stop()
    ch.stop_ingest()
    ch.start_ingest(client_id=f"{ch.ingest_client_id}-fresh")
    s.genuine([frame])
    if ch.ingest.stats.retained or ch.ingest.stats.received != 1:
        s.fail(f"the new session processed {ch.ingest.stats.received} message(s), "
               f"{ch.ingest.stats.retained} of them retained")


def _capture_acks(s: Session, role: str = "pump", n: int = 3) -> list[bytes]:
    """Sniff the twin's acks while ``role`` sends ``n`` frames; returns once the device has
    every frame released (no ack is still on its way) and the sniffer saw those acks."""
    ch = _mqtt(s)
    t = ch.ack_topic(role)
    lk = ch.link(role)
    # An ack published before the sniffer subscribed but reaching the device after ``acks0``
    # is read would be counted below and never sniffed: drain what is in flight first.
    s.require(lk.flush(10) == 0, f"the twin did not acknowledge {role}'s earlier frames")
    sniffer = ch.sniff(t)
    acks0 = lk.stats.acks
    s.genuine(s.seal(role, n), role)
    s.require(lk.flush(10) == 0, f"the twin did not acknowledge {role}'s frames")
    wait_for(lambda: len(sniffer.on(t)) >= lk.stats.acks - acks0 >= 1, 10,
             f"the eavesdropper to see {role}'s acks")
    sniffer.stop()
    return sniffer.on(t)


def _pending_frames(s: Session, n: int = 3) -> tuple[Any, list[bytes]]:
    """Stop the ingest; queue ``n`` frames on the victim's link (they wait at the broker)."""
    ch = _mqtt(s)
    ch.stop_ingest()
    lk = ch.link()
    frames = s.seal(n=n)
    lk.send_many(frames)
    wait_for(lambda: lk.stats.sent >= n, 10, "the device to publish its queued frames")
    return lk, frames


def _resume(s: Session, lk: Any, frames: list[bytes]) -> None:
    """The ingest comes back: the queued frames are stored and released by genuine acks."""
    ch = _mqtt(s)
    s.genuine_frames += frames
    ch.start_ingest()
    if lk.flush(15) != 0:
        s.fail(f"{lk.pending()} queued frame(s) not released once the twin was back")


@action("retained_ack")
def retained_ack(s: Session) -> None:
    """A forged ack published retained on the victim's ack topic, waiting for the device to
    (re)subscribe with frames pending. It must release nothing: whether the device's
    subscription never takes retained messages or it refuses the ack as forged."""
    ch = _mqtt(s)
    ack = _capture_acks(s)[0]
    ch.close_link("pump")
    t = ch.ack_topic()
    ch.publish(t, [M.flip(ack, len(ack) - 3)], retain=True)
    lk, frames = _pending_frames(s)
    # The broker sends retained messages right after a SUBACK: a probe that subscribes after
    # the device link and gets the poison proves the device had its chance at it too.
    probe = ch.sniff(t)
    wait_for(lambda: any(r for tt, _, r in probe.messages if tt == t), 10,
             "the poisoned ack to sit retained on the broker")
    probe.stop()
    if lk.stats.released or lk.stats.acks or lk.pending() != len(frames):
        s.fail(f"the poisoned ack released {lk.stats.released} frame(s)")
    s.device_event("ack.forged", lk.stats.forged_acks)
    _resume(s, lk, frames)


def _acks_against_pending(s: Session, acks: list[bytes], counter: str, kind: str) -> None:
    """Publish ``acks`` to the victim while it has frames pending (the ingest stopped): each
    must move the device's ``counter`` (its refusal) and none may release a frame; then the
    ingest comes back and the frames go through."""
    ch = _mqtt(s)
    lk, frames = _pending_frames(s)
    before, released0 = getattr(lk.stats, counter), lk.stats.released
    ev0 = ch.device_events[("pump", kind)]
    ch.publish(ch.ack_topic(), acks)
    wait_for(lambda: getattr(lk.stats, counter) - before >= len(acks), 10,
             f"the device to refuse {len(acks)} ack(s)")
    if lk.stats.released != released0 or lk.pending() != len(frames):
        s.fail(f"{len(acks)} bad ack(s) released {lk.stats.released - released0} frame(s)")
    try:  # the device raises the event right after it counts the refusal
        wait_for(lambda: ch.device_events[("pump", kind)] - ev0 >= len(acks), 5,
                 f"the device to raise {kind}")
    except ScenarioError:
        pass  # fewer events than refusals: the verdict below says how many
    s.device_event(kind, ch.device_events[("pump", kind)] - ev0)
    _resume(s, lk, frames)


@action("ack_forged")
def ack_forged(s: Session) -> None:
    """Acks no twin sent, to a device with frames pending: a captured ack with a flipped bit,
    the second device's ack re-addressed, a truncated ack and junk."""
    ack = _capture_acks(s)[0]
    other = _capture_acks(s, "valve", 1)[0]
    forgeries = [M.flip(ack, len(ack) - 3), other, ack[:-5], b"\xd0\x83junk"]
    _acks_against_pending(s, forgeries, "forged_acks", "ack.forged")


@action("ack_replayed")
def ack_replayed(s: Session) -> None:
    """Genuine acks captured earlier, replayed while the device has other frames pending.

    Acks v2 name frames by (seq, digest) and keep no replay window (docs/PROTOCOL.md §15): a
    replayed ack authenticates and is accepted as the true claim it is, and it names only
    frames already released. So the device must open every one (``acks`` counts them: they
    reached it and were not mistaken for forgeries), release nothing, see no conflict, and
    has nothing to record."""
    ch = _mqtt(s)
    acks = _capture_acks(s)
    lk, frames = _pending_frames(s)
    st = lk.stats
    before = (st.acks, st.released, st.refused, st.forged_acks, st.conflicts)
    # A junk ack after them: the device handles its acks in order, one at a time, so once it
    # has refused the junk it has finished with every replayed one (releases included).
    ch.publish(ch.ack_topic(), [*acks, b"\xd0\x83junk"])
    wait_for(lambda: st.forged_acks > before[3], 10,
             f"the device to handle {len(acks)} replayed ack(s) and the junk after them")
    after = (st.acks - len(acks), st.released, st.refused, st.forged_acks - 1, st.conflicts)
    if after != before or lk.pending() != len(frames):
        s.fail(f"{len(acks)} replayed ack(s) changed the device's state: (acks, released, "
               f"refused, forged, conflicts) {before} -> {after}, {lk.pending()} of "
               f"{len(frames)} frame(s) pending")
    _resume(s, lk, frames)


@action("rival_twin")
def rival_twin(s: Session) -> None:
    """A second twin (its own key and database) is started on the topic root this twin serves.
    It must refuse to serve before it subscribes (``TopicRootTaken``, exit 7 from ``serve``):
    the serving twin's retained presence names another key. The serving twin's presence stays
    its own, and the victim's frames are all still stored by it."""
    from ..ingest.mqtt import PRESENCE_PREFIX, MqttIngest, TopicRootTaken
    from ..store import open_store
    from ..twin import Twin

    ch = _mqtt(s)
    assert s.rig.twin is not None
    ours = PRESENCE_PREFIX + keys.fingerprint(s.rig.twin.key.public).encode()
    rival = Twin(open_store(s.rig.root / "rival.db"), keys.TwinKey.generate())
    ing = MqttIngest(ch.url, rival, client_id=f"twinlink-attack-rival-{os.urandom(3).hex()}",
                     topic_root=s.rig.topic_root)
    stop = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        try:
            box["stats"] = ing.run(stop)
        except BaseException as exc:  # reported below, whatever it is
            box["exc"] = exc

    worker = threading.Thread(target=serve, name="twinlink-attack-rival", daemon=True)
    worker.start()
    try:
        wait_for(lambda: not worker.is_alive() or ing.subscribed.is_set(), 20,
                 "the rival twin to refuse the topic root or to serve it")
    finally:
        stop.set()
        worker.join(10)
        rival.close()
    exc = box.get("exc")
    if not isinstance(exc, TopicRootTaken):
        s.fail("the rival twin served the topic root" if exc is None
               else f"the rival twin failed otherwise: {type(exc).__name__}: {exc}")
    elif ing.stats.received:
        s.fail(f"the rival twin processed {ing.stats.received} message(s) before refusing")
    probe = ch.sniff(ch.presence_topic())
    wait_for(lambda: bool(probe.on(ch.presence_topic())), 10, "the retained presence")
    probe.stop()
    if probe.on(ch.presence_topic())[-1] != ours:
        s.fail("the presence on the topic root no longer names the serving twin")
    s.genuine(s.seal(n=3))


@action("takeover")
def takeover(s: Session) -> None:
    """An attacker connects again and again with the ingest's client id (MQTT 5 reason 0x8E,
    session taken over: the ingest is thrown off and its session discarded) while the victim
    sends. Every genuine frame must still be stored (the device resends what was not acked)."""
    ch = _mqtt(s)
    ch.close_link("pump")
    ch.resend_after = 0.5
    lk = ch.link()
    kicked = threading.Event()
    stop = threading.Event()

    def war() -> None:
        while not stop.is_set():
            c = ch.client(ch.ingest_client_id)
            end = time.monotonic() + 0.3
            while time.monotonic() < end and not stop.is_set():
                if not ch.ingest.subscribed.is_set():
                    kicked.set()
                time.sleep(0.01)
            c.disconnect()
            c.loop_stop()

    attacker = threading.Thread(target=war, name="twinlink-attack-takeover", daemon=True)
    attacker.start()
    frames = s.seal(n=int(s.params.get("n", 30)))
    try:
        for i in range(0, len(frames), 5):
            lk.send_many(frames[i:i + 5])
            time.sleep(0.1)
    finally:
        stop.set()
        attacker.join(10)
    s.require(kicked.is_set() and ch.ingest.transport.gen >= 2,
              "the takeover never threw the ingest off its session")
    s.genuine_frames += frames
    wait_for(lambda: all(s.rig.stored(frames)), 30, "every genuine frame to be stored")


@action("eavesdrop")
def eavesdrop(s: Session) -> None:
    """A '#' subscriber records everything while the victim sends readings with a distinctive
    name, unit and values; none of them may show in any message."""
    ch = _mqtt(s)
    sniffer = ch.sniff("#")
    values = [4242.4242 + k for k in range(int(s.params.get("n", 10)))]
    frames = s.rig.seal("pump", values, name="tlprobe_secret", unit="Cel")
    s.genuine(frames)
    t = ch.telemetry_topic()
    wait_for(lambda: len(sniffer.on(t)) >= len(frames), 10, "the eavesdropper to see frames")
    sniffer.stop()
    markers = [b"tlprobe_secret", b"\x63Cel"]  # the name, the unit as a CBOR text string
    for v in values:
        markers += [cbor2.dumps(v, canonical=True), repr(v).encode()]
    for topic, payload, _ in sniffer.messages:
        for m in markers:
            if m in payload:
                s.fail(f"plaintext {m!r} visible on {topic}")
    if not sniffer.on(ch.ack_topic()):
        s.fail("the eavesdropper saw no acknowledgement (were the frames stored?)")


@action("flood")
def flood(s: Session) -> None:
    """``n`` attack payloads (``kind``: random ``garbage``, or ``forgery`` under the victim's
    kid: a captured frame with a random signature and ciphertext) while the victim sends
    ``genuine`` frames."""
    n = int(s.params.get("n", 500))
    if s.params["kind"] == "garbage":
        payload = [bytes(s.rng.randrange(256) for _ in range(s.rng.randrange(1, 120)))
                   for _ in range(n)]
        payload = [p if p[:1] != b"\xd2" else b"\x00" + p for p in payload]
    else:
        model = s.seal()[0]
        s.genuine([model])
        lay = M.layout(model)
        payload = []
        for _ in range(n):
            f = bytearray(model)
            lo, hi = lay.signature
            f[lo:hi] = s.rng.randbytes(hi - lo)
            lo, hi = lay.ciphertext
            f[lo:hi] = s.rng.randbytes(hi - lo)
            payload.append(bytes(f))
    s.mixed(payload, s.seal(n=int(s.params.get("genuine", 20))))


# -- availability and authentic lies ------------------------------------------------------------

@action("silence")
def silence(s: Session) -> None:
    s.genuine(s.seal(n=10))
    assert s.rig.clock is not None
    s.sweep(10 * s.rig.clock.step)


@action("selective_drop")
def selective_drop(s: Session) -> None:
    frames = s.seal(n=20)
    s.genuine(frames[:8] + frames[11:])  # 8, 9 and 10 never arrive
    assert s.rig.clock is not None
    s.sweep(5 * s.rig.clock.step)


@action("lie")
def lie(s: Session) -> None:
    """Authentic frames of a compromised victim: ``values`` (``"normal"`` continues its usual
    series), SenML time shifted by ``time_offset``, arriving ``step`` seconds apart."""
    clock = s.rig.clock
    assert clock is not None
    if "step" in s.params:
        clock.step = float(s.params["step"])
    values = list(s.params["values"])
    times = [clock.arrival(k) + float(s.params.get("time_offset", 0.0))
             for k in range(len(values))]
    s.lie(s.seal(values=values, times=times))


@action("drift")
def drift(s: Session) -> None:
    """4.5 days of a daily temperature cycle every 10 minutes, then the same cycle drifting up
    by 1 K an hour for 8 hours."""
    clock = s.rig.clock
    assert clock is not None
    clock.step = 600.0

    def cycle(k: int) -> float:
        t = clock.arrival(k)
        return round(20.0 + 3.0 * math.sin(2 * math.pi * t / 86400.0)
                     + s.rng.gauss(0.0, 0.05), 3)

    for _ in range(9):  # half days, so each batch's SenML times stay on the clock
        s.genuine(s.seal(values=[cycle(k) for k in range(72)]))
    ramp = [cycle(k) + k * 600.0 / 3600.0 for k in range(48)]
    s.lie(s.seal(values=ramp))


@action("seq_jump")
def seq_jump(s: Session) -> None:
    """A compromised device skips a million sequence numbers (burning the window for the
    honest frames it would send)."""
    s.rig.device().seq.take(1_000_000)
    s.lie(s.seal())
