"""Device-side delivery: durable outbox, verified acknowledgements, release, resends, flow control.

:class:`Delivery` is the policy between ``Device.send`` and a transport, written against the
small :class:`Carrier` interface so that it works over any transport that can carry the twin's
acknowledgements back (MQTT today, through :class:`twinlink.mqtt_link.MqttLink`)::

    put(frames) ──► Outbox (SQLite, durable before put returns)
                        │  the delivery thread
                        ▼
    Carrier.send_frame(kid, frame) ──► transport ──► twin
    link_up() / link_down() / hop_acked(token) / ack_arrived(kid, ack) ◄── transport

Release policy: with an :class:`AckOpener` (the device holds its own key), a frame leaves the
outbox only when an authenticated end-to-end acknowledgement (:mod:`twinlink.ack`, version 2)
names it by its digest: *stored* releases it, *refused* (a permanent refusal of an authentic
frame: bad payload, too old, …) moves it to the outbox's dead letters, so the readings after it
keep flowing. An entry whose sequence number is queued with another digest releases nothing and
raises the device event ``ack.conflict`` (another sender uses this identity, or this device lost
its state); an ack that does not authenticate raises ``ack.forged``. Acks are idempotent claims
bound to digests, so a replayed ack can only release frames that really were stored: there is no
ack replay window. Without an opener (a gateway forwarding other devices' frames, a lite bundle)
a frame leaves on the transport's hop acknowledgement (MQTT: the broker's PUBACK): durable at
the next hop, not proven stored.

Resend policy: always the same bytes, never re-sealed, so the twin's replay window drops a
duplicate and acknowledges it again. (1) When the link comes up again, frames whose hop ack
arrived but whose end-to-end ack did not are due at once (the next hop may have lost them with a
restart); frames still awaiting a hop ack are the transport's to re-send (paho does so on
reconnect). (2) A frame unacknowledged ``resend_after`` seconds after it was sent is sent again.

Flow control, per device: only the frames of the *oldest* security context with queued frames
are sent (a renewed device's old-context frames first: the twin retires the old context when the
new one's first frame arrives), and within it only those with ``seq < lowest queued seq +
window``, so no unacknowledged frame can fall below the twin's replay window (``window`` must not
exceed the window the device is registered with).

Threads: one thread per :class:`Delivery` (``twinlink-delivery``) owns the in-flight table,
verifies acknowledgements, releases frames and calls :meth:`Carrier.send_frame`; it sleeps until
an event arrives or the next resend is due. The transport's notifications (``link_up``,
``link_down``, ``hop_acked``, ``ack_arrived``) only queue an event and return, so they are safe
to call from a transport's network thread. Callers' threads only write to the outbox (:meth:`put`)
and wait (:meth:`flush`, a blocking :meth:`put`). ``on_event`` runs on the delivery thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from . import ack as _ack
from . import keys, metrics, oscore
from .errors import TransportError, TwinlinkError
from .outbox import Outbox, OutboxFull

__all__ = ["AckOpener", "Carrier", "Delivery", "DeliveryLink", "DeliveryStats", "OutboxFull"]

log = logging.getLogger("twinlink.delivery")

Key = tuple[bytes, bytes, int]  # (kid, ID Context or b'', seq)


class Carrier(Protocol):
    """What delivery needs from a transport: hand over one frame.

    The transport reports back to :class:`Delivery` through ``link_up``, ``link_down``,
    ``hop_acked(token)`` and ``ack_arrived(kid, data)``.
    """

    def send_frame(self, kid: bytes, frame: bytes) -> int | None:
        """Hand one frame of device ``kid`` to the transport; return quickly.

        Return a token if the transport will later report ``hop_acked(token)`` for it and, until
        then, re-sends it by itself across reconnects (MQTT QoS 1: the packet id); return None if
        no such report will come (the frame was written). Raise :class:`TransportError` if the
        frame cannot be taken now (it is tried again shortly).
        """
        ...


class AckOpener:
    """Opens the end-to-end acknowledgements addressed to device ``kid`` (:mod:`twinlink.ack`).

    An ack names the twin process's Sender ID and the device context (kid context) of the
    frames it covers; the opener derives the matching twin→device key from the device's own
    key, the twin's public key and the bundle's Master Salt, and caches the last few contexts
    (one X25519 per opener, an HKDF per new (Sender ID, context)).
    """

    CACHE = 8

    def __init__(self, bundle: keys.Bundle) -> None:
        if bundle.device_key is None:
            raise ValueError("end-to-end acks need the device's own key (not a lite bundle)")
        self.kid = bundle.kid
        self._salt = bundle.master_salt
        self._secret = keys.master_secret_device(bundle.device_key, bundle.twin_public)
        self._cache: OrderedDict[tuple[bytes, bytes | None], oscore.Context] = OrderedDict()

    @classmethod
    def for_bundle(cls, bundle: keys.Bundle) -> AckOpener:
        """The opener for a bundle; raise ValueError for a lite bundle."""
        return cls(bundle)

    def __repr__(self) -> str:
        return f"AckOpener(kid={self.kid.hex()})"

    def context(self, sender_id: bytes, kid_context: bytes | None) -> oscore.Context:
        """The twin→device context of twin Sender ID ``sender_id`` under the device context
        whose ID Context is ``kid_context``."""
        ck = (sender_id, kid_context)
        ctx = self._cache.get(ck)
        if ctx is None:
            ctx = oscore.derive_context(self._secret, sender_id, self._salt, kid_context)
            self._cache[ck] = ctx
            if len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(ck)
        return ctx

    def open(self, data: bytes) -> _ack.Ack:
        """Parse and authenticate one ack; raise a :class:`TwinlinkError` if it is not genuine."""
        env = _ack.parse_ack(data)
        return _ack.open_ack(self.context(env.sender_id, env.kid_context), self.kid, data, env)


@dataclass
class DeliveryStats:
    sent: int = 0  # frames handed to the transport (resends included)
    resent: int = 0
    hop_acks: int = 0  # transport-level confirmations (MQTT: PUBACK)
    acks: int = 0  # end-to-end acks accepted
    released: int = 0  # frames removed from the outbox as stored (or hop-acked, gateway mode)
    refused: int = 0  # frames the twin refused for good: moved to the dead letters
    forged_acks: int = 0  # acks that failed to parse or authenticate (ack.forged)
    stale_acks: int = 0  # authentic acks naming nothing queued (duplicate or replayed)
    conflicts: int = 0  # ack entries naming a queued seq with another digest (ack.conflict)


class _InFlight:
    __slots__ = ("at", "gen", "token")

    def __init__(self, gen: int, at: float, token: int | None) -> None:
        self.gen, self.at, self.token = gen, at, token


class Delivery:
    """Delivers the frames queued in ``outbox`` over ``carrier``; see the module docstring.

    ``kid``: the only device whose frames may be queued (None: any, gateway mode). ``acks``:
    release on verified end-to-end acks (None: on hop acks). ``when_full``: ``"refuse"`` makes
    :meth:`put` raise :class:`OutboxFull` at once, ``"block"`` waits up to ``timeout`` seconds
    for room first. Nothing queued is ever dropped. ``on_event(type, detail)`` is told about
    device security events (``ack.forged``, ``ack.conflict``; default: logged as a warning).
    """

    def __init__(self, outbox: Outbox, carrier: Carrier, *, kid: bytes | None = None,
                 acks: AckOpener | None = None, window: int = 64, resend_after: float = 10.0,
                 timeout: float = 10.0, when_full: str = "refuse",
                 name: str = "twinlink-delivery",
                 on_event: Callable[[str, str], None] | None = None) -> None:
        if when_full not in ("refuse", "block"):
            raise ValueError("when_full must be 'refuse' or 'block'")
        if window < 1:
            raise ValueError("window must be at least 1")
        if acks is not None and acks.kid != kid:
            raise ValueError("the ack opener belongs to another device")
        self.outbox, self.carrier, self.kid, self.acks = outbox, carrier, kid, acks
        self.window, self.resend_after = window, resend_after
        self.timeout, self.when_full = timeout, when_full
        self.on_event = on_event
        self.stats = DeliveryStats()
        #: The last error of the delivery thread ("" if none), for humans.
        self.last_error = ""
        self._wake = threading.Condition()  # events for the delivery thread
        self._events: list[tuple[Any, ...]] = []
        self._urgent = False  # an event that needs the thread now (not just a hop ack)
        self._stopping = False
        self._changed = threading.Condition()  # the outbox shrank (flush, blocking put)
        self._closed = False
        # Owned by the delivery thread:
        self._up = False
        self._gen = 0  # link generations seen; a frame sent in an older one may be lost
        self._sent: dict[Key, _InFlight] = {}
        self._tokens: dict[int, Key] = {}
        self._dirty = True  # the outbox head may hold frames not yet sent
        self._next_due = float("inf")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        metrics.track_sender(self)

    @property
    def e2e(self) -> bool:
        """True if frames are released only on the twin's end-to-end acknowledgement."""
        return self.acks is not None

    def start(self) -> None:
        if not self._thread.is_alive() and not self._closed:
            self._thread.start()

    # -- callers' threads ------------------------------------------------------------------------

    def put(self, frames: Sequence[bytes]) -> None:
        """Durably queue sealed frames (all or none); they are sent in the background.

        Raises :class:`OutboxFull` (see ``when_full``), ValueError for a frame of another device
        than ``kid``, :class:`MalformedFrame` for bytes that are not a frame, and
        :class:`TransportError` once closed.
        """
        if self._closed:
            raise TransportError("the link is closed")
        frames = [bytes(f) for f in frames]
        if len(frames) > self.outbox.capacity:
            raise OutboxFull(f"{len(frames)} frames exceed the outbox capacity "
                             f"{self.outbox.capacity}")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.outbox.put(frames, kid=self.kid)
                break
            except OutboxFull:
                left = deadline - time.monotonic()
                if self.when_full == "refuse" or left <= 0 or self._closed:
                    raise
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._closed or self.outbox.room() >= len(frames), left)
        self._post(("queued",))

    def pending(self) -> int:
        """Frames queued and not yet released."""
        return len(self.outbox)

    def metrics_snapshot(self) -> dict[str, Any] | None:
        """What :mod:`twinlink.metrics` exposes for this sender (None once closed): outbox
        depth, oldest queued time, dead letters, delivery counters and acks by result
        (``accepted`` = authentic acks that settled something). Reads the outbox; any thread."""
        if self._closed:
            return None
        st = self.stats
        return {"frames": len(self.outbox), "oldest": self.outbox.oldest_added(),
                "dead_letters": self.outbox.count_dead_letters(), "sent": st.sent,
                "resent": st.resent, "released": st.released, "refused": st.refused,
                "conflicts": st.conflicts,
                "acks": {"accepted": st.acks - st.stale_acks, "stale": st.stale_acks,
                         "forged": st.forged_acks}}

    def flush(self, timeout: float | None = None) -> int:
        """Wait until the outbox is empty or ``timeout`` passes (default: ``self.timeout``);
        return how many frames are still pending (0 = all released)."""
        t = self.timeout if timeout is None else timeout
        with self._changed:
            self._changed.wait_for(lambda: self._closed or len(self.outbox) == 0, t)
        return len(self.outbox)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread (waiting at most ``timeout``) and close the outbox; what is
        still queued stays on disk for the next run."""
        if self._closed:
            return
        self._closed = True
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._changed:
            self._changed.notify_all()
        self.outbox.close()

    # -- the transport's notifications (any thread, never block) ---------------------------------

    def link_up(self) -> None:
        """The transport (re)connected: a new link generation starts."""
        self._post(("up",))

    def link_down(self) -> None:
        self._post(("down",))

    def hop_acked(self, token: int) -> None:
        """The next hop confirmed the frame sent with ``token`` (MQTT: PUBACK)."""
        # With end-to-end acks a hop ack changes nothing urgent (it only marks the frame as
        # the transport's no longer): queue it without waking the thread, which takes it with
        # the next event or due resend. In gateway mode it releases the frame: wake up.
        self._post(("hop", token), wake=not self.e2e)

    def ack_arrived(self, kid: bytes, data: bytes) -> None:
        """An end-to-end acknowledgement for device ``kid`` arrived (not yet verified)."""
        self._post(("ack", kid, data))

    def _post(self, event: tuple[Any, ...], wake: bool = True) -> None:
        with self._wake:
            self._events.append(event)
            if wake:
                self._urgent = True
                self._wake.notify()

    # -- the delivery thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._urgent and not self._stopping:
                    self._wake.wait(self._sleep())
                if self._stopping:
                    return
                events, self._events, self._urgent = self._events, [], False
            try:
                self._handle(events)
                now = time.monotonic()
                if self._up and (self._dirty or now >= self._next_due):
                    self._pump(now)
            except Exception as exc:  # e.g. the outbox's disk failed: keep the link alive
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("delivery: handling link events failed; retrying in 1 s")
                self._dirty, self._next_due = False, time.monotonic() + 1.0

    def _sleep(self) -> float | None:
        if not self._up:
            return None  # nothing to do until the link is up or an ack arrives
        if self._dirty:
            return 0.0
        if self._next_due == float("inf"):
            return None
        return max(0.0, self._next_due - time.monotonic())

    def _handle(self, events: list[tuple[Any, ...]]) -> None:
        hopped: list[Key] = []
        for ev in events:
            kind = ev[0]
            if kind == "up":
                self._gen += 1
                self._up = self._dirty = True
                # Frames awaiting a hop ack are re-sent by the transport itself; those already
                # hop-acked (e.g. by a broker that restarted since) are due again now.
                for rec in self._sent.values():
                    if rec.token is not None:
                        rec.gen = self._gen
            elif kind == "down":
                self._up = False
            elif kind == "queued":
                self._dirty = True
            elif kind == "hop":
                key = self._tokens.pop(ev[1], None)
                if key is None:
                    continue
                self.stats.hop_acks += 1
                hop = self._sent.get(key)
                if hop is not None:
                    hop.token = None
                if not self.e2e:
                    hopped.append(key)
            elif kind == "ack":
                self._on_ack(ev[1], ev[2])
        if hopped:
            self._release_keys(hopped)

    def _on_ack(self, kid: bytes, data: bytes) -> None:
        if self.acks is None or kid != self.kid:
            return
        try:
            a = self.acks.open(data)
        except TwinlinkError as exc:
            self.stats.forged_acks += 1
            self._event("ack.forged", f"an acknowledgement for {kid.hex()} does not "
                                      f"authenticate ({exc.reason}); it changed nothing")
            return
        ctx = b"" if a.kid_context is None else a.kid_context
        done = self.outbox.settle(kid, a.kid_context, a.stored, a.refused)
        if not (done.released or done.dead or done.conflicts):
            self.stats.stale_acks += 1
        self.stats.acks += 1
        self.stats.released += len(done.released)
        self.stats.refused += len(done.dead)
        for seq in done.released + done.dead:
            self._forget((kid, ctx, seq))
        if done.dead:
            reasons = {s: r for s, _, r in a.refused}
            log.warning("the twin refused %d frame(s) of %s for good (%s); moved to the outbox's "
                        "dead letters", len(done.dead), kid.hex(),
                        ", ".join(f"seq {s}: {reasons[s]}" for s in done.dead[:5]))
        for seq, have, said in done.conflicts:
            self.stats.conflicts += 1
            self._event("ack.conflict", f"an authentic acknowledgement names seq {seq} of "
                        f"{kid.hex()} (context {ctx.hex() or 'base'}) with digest {said.hex()}, "
                        f"but the queued frame's is {have.hex()}: another sender uses this "
                        "identity, or the device lost its state; nothing released")
        if done.released or done.dead:
            self._released()

    def _event(self, kind: str, detail: str) -> None:
        if self.on_event is None:
            log.warning("%s: %s", kind, detail)
            return
        try:
            self.on_event(kind, detail)
        except Exception:
            log.exception("delivery: the on_event callback failed")

    def _release_keys(self, keys: list[Key]) -> None:
        self.stats.released += self.outbox.release(keys)
        for key in keys:
            self._forget(key)
        self._released()

    def _released(self) -> None:
        self._dirty = True  # the window moved: frames beyond it may go now
        with self._changed:
            self._changed.notify_all()

    def _forget(self, key: Key) -> None:
        rec = self._sent.pop(key, None)
        if rec is not None and rec.token is not None:
            self._tokens.pop(rec.token, None)

    def _pump(self, now: float) -> None:
        """Send what flow control allows and what is due; schedule the next resend."""
        self._dirty = False
        kids = [self.kid] if self.kid is not None else self.outbox.kids()
        next_due = float("inf")
        written: list[Key] = []
        try:
            for kid in kids:
                for ctx, seq, frame in self.outbox.head(kid, self.window):
                    key = (kid, ctx, seq)
                    rec = self._sent.get(key)
                    if rec is not None and rec.gen == self._gen:
                        if rec.token is not None or now - rec.at < self.resend_after:
                            next_due = min(next_due, rec.at + self.resend_after)
                            continue
                    try:
                        token = self.carrier.send_frame(kid, frame)
                    except TransportError as exc:
                        self.last_error = str(exc)
                        next_due = min(next_due, now + 0.05)  # try again shortly
                        return
                    if rec is not None:
                        self.stats.resent += 1
                        if rec.token is not None:
                            self._tokens.pop(rec.token, None)
                    self.stats.sent += 1
                    self._sent[key] = _InFlight(self._gen, now, token)
                    if token is not None:
                        self._tokens[token] = key
                    elif not self.e2e:
                        written.append(key)  # no hop ack will come: written is delivered
                    next_due = min(next_due, now + self.resend_after)
        finally:
            self._next_due = next_due
            if written:
                self._release_keys(written)


class DeliveryLink:
    """What a device link built on :class:`Delivery` offers its callers (the
    :class:`twinlink.device.Link` surface and more); a transport's link sets ``delivery`` and
    implements :meth:`close` (:class:`~twinlink.mqtt_link.MqttLink`,
    :class:`~twinlink.serial_link.SerialAckLink`)."""

    delivery: Delivery

    @property
    def outbox(self) -> Outbox:
        return self.delivery.outbox

    @property
    def e2e(self) -> bool:
        """True if frames leave the outbox only on the twin's end-to-end acknowledgement."""
        return self.delivery.e2e

    @property
    def stats(self) -> DeliveryStats:
        return self.delivery.stats

    @property
    def timeout(self) -> float:
        """Default wait of :meth:`flush`, :meth:`close` and a blocking :meth:`send`."""
        return self.delivery.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.delivery.timeout = value

    def send(self, frame: bytes) -> None:
        """Durably queue one sealed frame; it goes out in the background."""
        self.delivery.put([frame])

    def send_many(self, frames: Sequence[bytes]) -> None:
        """Durably queue sealed frames (all or none); a full outbox: see :meth:`Delivery.put`."""
        self.delivery.put(frames)

    def pending(self) -> int:
        """Frames queued and not yet acknowledged."""
        return self.delivery.pending()

    def dead_letters(self) -> int:
        """Frames the twin refused for good, kept in the outbox's dead letters (all runs)."""
        return self.outbox.count_dead_letters()

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued frame is acknowledged or ``timeout`` passes (default: the
        link's timeout); return how many are still pending (0 = all acknowledged)."""
        return self.delivery.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> DeliveryLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
