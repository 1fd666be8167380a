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
outbox only when an authenticated end-to-end acknowledgement (:mod:`twinlink.ack`) says the twin
*stored* it; a replayed acknowledgement releases nothing (the outbox keeps a persistent window
over the twin's ack sequence numbers). Without one (a gateway forwarding other devices' frames,
a lite bundle) a frame leaves on the transport's hop acknowledgement (MQTT: the broker's PUBACK):
durable at the next hop, not proven stored.

Resend policy: always the same bytes, never re-sealed, so the twin's replay window drops a
duplicate and acknowledges it again. (1) When the link comes up again, frames whose hop ack
arrived but whose end-to-end ack did not are due at once (the next hop may have lost them with a
restart); frames still awaiting a hop ack are the transport's to re-send (paho does so on
reconnect). (2) A frame unacknowledged ``resend_after`` seconds after it was sent is sent again.

Flow control: per device, only frames with ``seq < lowest queued seq + window`` are in flight,
so no unacknowledged frame can fall below the twin's replay window (``window`` must not exceed
the window the device is registered with).

Threads: one thread per :class:`Delivery` (``twinlink-delivery``) owns the in-flight table,
verifies acknowledgements, releases frames and calls :meth:`Carrier.send_frame`; it sleeps until
an event arrives or the next resend is due. The transport's notifications (``link_up``,
``link_down``, ``hop_acked``, ``ack_arrived``) only queue an event and return, so they are safe
to call from a transport's network thread. Callers' threads only write to the outbox (:meth:`put`)
and wait (:meth:`flush`, a blocking :meth:`put`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import ack as _ack
from . import oscore
from .errors import ReplayError, TransportError, TwinlinkError
from .keys import Bundle
from .outbox import Outbox, OutboxFull

__all__ = ["AckOpener", "Carrier", "Delivery", "DeliveryStats", "OutboxFull"]

log = logging.getLogger("twinlink.delivery")

Key = tuple[bytes, int]  # (kid, seq)


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
    """Opens the end-to-end acknowledgements addressed to device ``kid`` (:mod:`twinlink.ack`),
    with the twin→device context of the security context the device seals under
    (``Device.ack_context()``)."""

    def __init__(self, kid: bytes, ctx: oscore.Context) -> None:
        self.kid = kid
        self._ctx = ctx

    @classmethod
    def for_bundle(cls, bundle: Bundle) -> AckOpener:
        """The opener for a bundle's base context; raise ValueError for a lite bundle."""
        if bundle.device_key is None:
            raise ValueError("end-to-end acks need the device's own key (not a lite bundle)")
        return cls(bundle.kid, bundle.ack_context())

    def __repr__(self) -> str:
        return f"AckOpener(kid={self.kid.hex()})"

    def open(self, data: bytes) -> _ack.Ack:
        """Parse and authenticate one ack; raise a :class:`TwinlinkError` if it is not genuine."""
        return _ack.open_ack(self._ctx, self.kid, data)


@dataclass
class DeliveryStats:
    sent: int = 0  # frames handed to the transport (resends included)
    resent: int = 0
    hop_acks: int = 0  # transport-level confirmations (MQTT: PUBACK)
    acks: int = 0  # end-to-end acks accepted
    released: int = 0  # frames removed from the outbox
    forged_acks: int = 0  # acks that failed to parse or authenticate
    replayed_acks: int = 0  # authentic acks whose sequence number was seen before


class _InFlight:
    __slots__ = ("at", "gen", "token")

    def __init__(self, gen: int, at: float, token: int | None) -> None:
        self.gen, self.at, self.token = gen, at, token


class Delivery:
    """Delivers the frames queued in ``outbox`` over ``carrier``; see the module docstring.

    ``kid``: the only device whose frames may be queued (None: any, gateway mode). ``acks``:
    release on verified end-to-end acks (None: on hop acks). ``when_full``: ``"refuse"`` makes
    :meth:`put` raise :class:`OutboxFull` at once, ``"block"`` waits up to ``timeout`` seconds
    for room first. Nothing queued is ever dropped.
    """

    def __init__(self, outbox: Outbox, carrier: Carrier, *, kid: bytes | None = None,
                 acks: AckOpener | None = None, window: int = 64, resend_after: float = 10.0,
                 timeout: float = 10.0, when_full: str = "refuse",
                 name: str = "twinlink-delivery") -> None:
        if when_full not in ("refuse", "block"):
            raise ValueError("when_full must be 'refuse' or 'block'")
        if window < 1:
            raise ValueError("window must be at least 1")
        if acks is not None and acks.kid != kid:
            raise ValueError("the ack opener belongs to another device")
        self.outbox, self.carrier, self.kid, self.acks = outbox, carrier, kid, acks
        self.window, self.resend_after = window, resend_after
        self.timeout, self.when_full = timeout, when_full
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
        except TwinlinkError:
            self.stats.forged_acks += 1
            return
        try:
            n = self.outbox.release(kid, a.ranges, a.seq)
        except ReplayError:  # Replay / TooOld: an ack sequence number seen before
            self.stats.replayed_acks += 1
            return
        self.stats.acks += 1
        self.stats.released += n
        for lo, hi in a.ranges:
            if hi - lo < 4096:
                for s in range(lo, hi + 1):
                    self._forget((kid, s))
            else:
                for key in [k for k in self._sent if k[0] == kid and lo <= k[1] <= hi]:
                    self._forget(key)
        self._released()

    def _release_keys(self, keys: list[Key]) -> None:
        by_kid: dict[bytes, list[int]] = {}
        for kid, seq in keys:
            by_kid.setdefault(kid, []).append(seq)
        for kid, seqs in by_kid.items():
            self.stats.released += self.outbox.release(kid, _ack.to_ranges(seqs))
            for s in seqs:
                self._forget((kid, s))
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
                for seq, frame in self.outbox.head(kid, self.window):
                    key = (kid, seq)
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
