"""The twin's MQTT ingest service: exactly-once storage from an at-least-once broker.

``MqttIngest(url, twin).run(stop)`` subscribes with a persistent session (fixed client id,
``clean_start=False``, session expiry) to ``<root>/+/t`` (or ``$share/<group>/<root>/+/t`` so
several ingest processes split the load; ``<root>`` is the deployment's topic root, default
``twinlink``), collects frames for a few milliseconds, opens the batch with
:meth:`Twin.open_many` (topic kid vs frame kid checked; one transaction), and only then
(1) publishes authenticated end-to-end acks (:mod:`twinlink.ack`, version 2) per device and
context on ``<root>/<kid hex>/a`` and (2) acknowledges each PUBLISH to the broker (manual acks).
A crash before the commit leaves the PUBLISH unacknowledged, so the broker redelivers it; a crash
after the commit makes the redelivery a duplicate that the replay window refuses, and that
duplicate — once the store confirms it holds that very frame (same digest) — is acknowledged end
to end again (the device must still release it). Exactly-once storage, no loss.

Acks name each frame by (seq, digest) under the context it was sealed in: *stored* for new
readings and confirmed duplicates; *refused* (a NACK, with the reason) for frames that
authenticated (signature, or lite AEAD) but will never be stored — ``bad_payload``,
``too_old``, ``context_retired``, ``revoked``, ``conflict`` — so the device moves them to its
dead letters instead of resending them forever. Nothing that failed to authenticate is ever
answered. Each ingest process seals its acks with its own random 6-byte twin Sender ID and
counts their Partial IVs in memory (per device context): no database counter, no nonce reuse
across processes, workers or a restored database.

Presence: before it connects its session, the ingest reads the retained message on
``<root>/_twin`` over a short-lived connection of its own (subscribe, then a probe message that
arrives after any retained one) and refuses to serve (:class:`TopicRootTaken`) if another twin
key's fingerprint is there: two deployments on one root would each log the other's devices as
forgeries. Then it publishes its own fingerprint there, retained. A foreign presence seen later
(on the session's own subscription to it) is logged as an error.

Never crash-looping on a message:

- A frame the twin refuses (any reason, recorded by the twin as a security event) is
  acknowledged to the broker like a stored one: it is processed for good. Nothing between
  ``open_many`` and the broker acks can raise for one message (end-to-end acks are contained;
  ``on_results``, e.g. the CLI's JSON output, runs after the acks and is contained too).
- If ``open_many`` itself raises (the database is unavailable, …) the batch is *not* acknowledged:
  the failure is logged once with its traceback and counted (``stats.failed_batches``), and the
  batch is retried after a backoff (``retry_min`` doubling to ``retry_max``), one message at a
  time; if the ingest stops meanwhile, the broker redelivers the batch to the next session.
  :class:`~twinlink.store.StorageError` (the store cannot store anything) is only ever waited
  out. Any other exception is a bug the twin failed to contain to one frame: a message that
  keeps failing alone right after other messages went in (``POISON_STRIKES`` times) is its
  cause, recorded as an ``internal_error`` security event, acknowledged and set aside
  (``stats.poisoned``), and the rest flows on.
- Retained messages are never ingested: the subscription asks the broker not to send them (MQTT v5
  Retain Handling 2, also on every re-subscription), and any PUBLISH still flagged retained is
  acknowledged and dropped (``stats.retained``). A retained frame stays on the broker and is never
  processed on a reconnect or restart.
- The broker never forwards a PUBLISH larger than :data:`~twinlink.transport.mqtt.MAX_PACKET`
  (CONNECT Maximum Packet Size), and sends at most ``receive_maximum`` unacknowledged messages.

Threads: paho's network thread runs the transport callbacks; ``on_message`` only queues the
message. The caller's thread (:meth:`MqttIngest.run`) opens batches, publishes the acks and
acknowledges to the broker (paho's publish and ack are thread-safe; an ack is only sent on the
connection the message arrived on, see :meth:`MqttTransport.ack`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from .. import frame as _frame
from .. import keys, metrics
from ..backoff import Backoff
from ..errors import TwinlinkError
from ..store import Event, StorageError
from ..transport.mqtt import (
    MAX_PACKET,
    TOPIC_ROOT,
    Message,
    MqttOptions,
    MqttTransport,
    check_topic_root,
    presence_topic,
    topic,
    topic_kid,
)
from ..twin import Result, Twin
from .acks import Acknowledger
from .downlink import Downlinker

__all__ = ["DEFAULT_CLIENT_ID", "IngestStats", "MqttIngest", "TopicRootTaken",
           "default_client_id", "serve"]

log = logging.getLogger("twinlink.ingest")

DEFAULT_CLIENT_ID = "twinlink-ingest"


def default_client_id(root: str = TOPIC_ROOT) -> str:
    """The ingest's client id (its persistent session) for a topic root: ``twinlink-ingest``
    for the default root, ``twinlink-ingest-<12 hex of SHA-256(root)>`` otherwise, so the twins
    of two deployments sharing a broker never take over each other's session."""
    if root == TOPIC_ROOT:
        return DEFAULT_CLIENT_ID
    return f"{DEFAULT_CLIENT_ID}-{hashlib.sha256(root.encode()).hexdigest()[:12]}"


#: Times a message must fail alone, each right after another message went in, to be set aside.
POISON_STRIKES = 2
#: Presence payload: this prefix, then the twin public key's fingerprint.
PRESENCE_PREFIX = b"twinlink-twin/1 "
#: Seconds to wait for the presence probe before serving without the check (logged).
PRESENCE_TIMEOUT = 15.0


class TopicRootTaken(TwinlinkError):
    """Another twin (another twin key) already serves this topic root on this broker."""

    reason = "topic_root_taken"



@dataclass
class IngestStats:
    received: int = 0  # messages processed (stored, duplicate or refused)
    stored: int = 0
    duplicates: int = 0  # byte-identical copies of stored frames: re-acknowledged
    refused: int = 0  # every other refusal (security events)
    nacks: int = 0  # refused frames negatively acknowledged (authenticated, permanent)
    batches: int = 0  # batches fully handled (stored, acks published, broker acked)
    acks: int = 0  # end-to-end ack messages published
    commit_seconds: float = 0.0
    retained: int = 0  # retained messages dropped unprocessed
    failed_batches: int = 0  # open_many raised: nothing acknowledged, retried
    poisoned: int = 0  # messages that failed alone: recorded, acknowledged, set aside


class _Suspect:
    """A message that failed alone; maybe the cause, maybe a store that failed just then."""

    __slots__ = ("exc", "msg", "strikes")

    def __init__(self, msg: Message, exc: BaseException) -> None:
        self.msg, self.exc, self.strikes = msg, exc, 0


class MqttIngest:
    """One ingest process. ``run(stop)`` blocks until ``stop`` is set, then drains and returns."""

    def __init__(self, url: str, twin: Twin, *, client_id: str | None = None,
                 options: MqttOptions | None = None, share: str | None = None,
                 session_expiry: int = 3600, receive_maximum: int = 2048,
                 max_packet_size: int = MAX_PACKET, batch_max: int = 1024,
                 batch_wait: float = 0.005, retry_min: float = 0.5, retry_max: float = 30.0,
                 on_results: Callable[[list[Result]], None] | None = None,
                 topic_root: str = TOPIC_ROOT, presence: bool = True,
                 prune_every: float = 3600.0) -> None:
        self.twin = twin
        self.root = check_topic_root(topic_root)
        self.client_id = client_id = client_id or default_client_id(self.root)
        #: Seconds between two applications of the store's retention limits (0: never).
        self.prune_every = prune_every
        self.sub_topic = (f"$share/{share}/{self.root}/+/t" if share else f"{self.root}/+/t")
        #: Seals this process's acks (its own random twin Sender ID, PIVs in memory).
        self.acknowledger = Acknowledger(twin)
        #: Seals due desired state and commands, sent on ``<root>/<kid hex>/c`` (§20).
        self.downlinker = Downlinker(twin)
        self.fingerprint = keys.fingerprint(twin.key.public)
        self.presence_topic = presence_topic(self.root)
        self._presence = presence
        self._url, self._options = url, options
        self._check: _PresenceCheck | None = None  # the start-up check, while it runs
        #: What a foreign presence message on the topic root said (None: none seen).
        self.foreign_presence: str | None = None
        self.batch_max, self.batch_wait = batch_max, batch_wait
        #: Called in the ``run`` thread with each committed batch's results, in order, after
        #: the batch was acknowledged; an exception from it is logged, never stops the ingest.
        self.on_results = on_results
        self.stats = IngestStats()
        #: Set while the broker has confirmed our subscription on the current connection.
        self.subscribed = threading.Event()
        self._sub_mid = -1  # packet id of the telemetry SUBSCRIBE on this connection
        self.transport = MqttTransport(
            url, client_id, options, clean_start=False, session_expiry=session_expiry,
            receive_maximum=receive_maximum, max_packet_size=max_packet_size, manual_ack=True,
            on_message=self._on_message, on_up=self._on_up, on_down=self.subscribed.clear,
            on_subscribed=self._on_subscribed)
        # queue.Queue, not SimpleQueue: the C SimpleQueue.get(timeout) of CPython 3.9 and 3.11
        # recomputes the time left after each lock acquire (or signal), and a thread descheduled
        # past its deadline then waits with a negative timeout, i.e. for ever. Seen under load:
        # once the messages stopped, serve sat in get() and SIGTERM could not end it.
        self._in: queue.Queue[Message] = queue.Queue()
        self._retry = Backoff(retry_min, retry_max)
        self._held: list[Message] = []  # a failed batch, retried one message at a time
        self._suspect: _Suspect | None = None  # failed alone; kept out of _held
        self._cleared = False  # the last attempt stored another message
        self._streak = 0  # consecutive failed attempts
        self._last_exc: BaseException = RuntimeError("no failure yet")
        self._unconfirmed: deque[mqtt.MQTTMessageInfo] = deque()  # acks not yet PUBACKed
        self._next_prune = time.monotonic() + min(60.0, prune_every)
        self._outage: tuple[float, str] | None = None  # storage failing since, first error

    def __repr__(self) -> str:
        return f"MqttIngest({self.transport!r}, {self.sub_topic!r})"

    @property
    def last_error(self) -> str:
        check = self._check
        return self.transport.last_error or (check.transport.last_error if check else "")

    # -- paho's network thread -------------------------------------------------------------------

    def _on_up(self, session_present: bool) -> None:
        # Subscribing again on every connection is harmless with a kept session and required
        # after a broker that lost its state (no persistence) comes back.
        if self._presence:  # watch it: another twin announcing itself here later is logged
            self.transport.subscribe(self.presence_topic, qos=1, retained=True)
        self._sub_mid = self.transport.subscribe(self.sub_topic, qos=1)

    def _on_subscribed(self, mid: int, granted: bool) -> None:
        if granted and mid == self._sub_mid:  # the telemetry subscription, not the presence one
            self.subscribed.set()

    def _on_presence(self, msg: Message) -> None:
        self.transport.ack(msg)
        theirs = _presence_of(msg.payload)
        if msg.topic == self.presence_topic and theirs not in (None, self.fingerprint):
            if self.foreign_presence != theirs:
                log.error("ingest: another twin (%s) announced itself on %s, served by this twin "
                          "(key %s): two deployments share this topic root", theirs,
                          self.presence_topic, self.fingerprint)
            self.foreign_presence = theirs

    def _on_message(self, msg: Message) -> None:
        if msg.topic == self.presence_topic or msg.topic.startswith(self.presence_topic + "/"):
            self._on_presence(msg)
            return
        if msg.retain:
            # Retained telemetry would come back on every subscription: drop it, once.
            self.stats.retained += 1
            self.transport.ack(msg)
            return
        self._in.put(msg)

    # -- the caller's thread ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> IngestStats:
        """Serve until ``stop`` is set; then finish the messages in hand (one attempt each, no
        retries), let the last acks go out, disconnect. Never raises for a message or a
        failing database. Raises :class:`TopicRootTaken` (before anything is processed)
        if another twin serves this topic root, and
        :class:`~twinlink.store.ClientIdInUse` if another live ingest on this database has
        the same client id (they would take the broker session from each other in turn)."""
        self.twin.store.claim_ingest(self.client_id)
        if self._presence:
            self._claim_presence(stop)
        self.transport.start()
        try:
            while not stop.is_set():
                try:
                    self._step(stop)
                    self._maintain()
                    self._send_downlink()
                except Exception as exc:  # a bug of ours: log it, never die on it
                    log.exception("ingest: unexpected error; carrying on")
                    self._last_exc = exc
                    stop.wait(self._retry.next())
            self._drain()
        finally:
            self._confirm_acks(2.0)
            self.transport.stop(5.0)
        return self.stats

    def _claim_presence(self, stop: threading.Event) -> None:
        """Check the topic root before anything is received: raise :class:`TopicRootTaken` if
        another twin holds it, else announce this twin there (retained). Uses a connection of
        its own (random client id, clean start), so a misconfigured second twin never touches
        the serving twin's session."""
        check = self._check = _PresenceCheck(self._url, self._options, self.presence_topic)
        try:
            theirs = check.run(stop)
            if theirs is not None and theirs != self.fingerprint:
                raise TopicRootTaken(
                    f"another twin ({theirs}) serves topic root {self.root!r} on this broker "
                    f"(this twin's key is {self.fingerprint}); give this deployment its own "
                    f"--topic-root, or clear {self.presence_topic} if that twin is gone")
            if not stop.is_set():
                check.announce(PRESENCE_PREFIX + self.fingerprint.encode())
        finally:
            check.transport.stop(2.0)
            self._check = None

    def _step(self, stop: threading.Event) -> None:
        if not self._held and self._suspect is None:
            batch = self._collect(0.1)
            if batch and not self.process(batch):
                self._held = batch  # not acknowledged: retry it, one message at a time
                self._wait(stop)
            return
        if not self._held:  # only the suspect left: wait a little for one to compare with
            self._held = self._collect(0.1, 1)
        if self._suspect is not None and (self._cleared or not self._held):
            self._try_suspect(stop)
            return
        m = self._held[0]
        if self.process([m]):
            self._held.pop(0)
            self._cleared = True  # the store took a message just now
            self._succeeded()
            return
        self._cleared = False
        if self._suspect is not None:
            # A second message failed too: the store is failing, not one message.
            self._held.insert(0, self._suspect.msg)
            self._suspect = None
        elif not isinstance(self._last_exc, StorageError):
            # A bug, not the store's "cannot store": before blaming this message, see whether
            # the next one alone goes in.
            self._suspect = _Suspect(self._held.pop(0), self._last_exc)
            return
        self._wait(stop)

    def _try_suspect(self, stop: threading.Event) -> None:
        """Retry the suspect alone. Failing right after another message went in counts as a
        strike; at ``POISON_STRIKES`` it is set aside (a store that fails and recovers in step
        with these attempts that often is not a plausible alternative)."""
        sus = self._suspect
        assert sus is not None
        cleared, self._cleared = self._cleared, False
        if self.process([sus.msg]):
            self._suspect = None
            self._succeeded()
            return
        sus.exc = self._last_exc
        if not cleared or isinstance(sus.exc, StorageError):
            self._wait(stop)  # nothing to compare with yet, or the store itself failing
            return
        sus.strikes += 1
        if sus.strikes >= POISON_STRIKES:
            self._suspect = None
            if not self._set_aside(sus.msg, sus.exc):
                self._held.insert(0, sus.msg)
                self._wait(stop)

    def _succeeded(self) -> None:
        if self._streak:
            log.warning("ingest: the twin accepts messages again after %d failed attempt(s)",
                        self._streak)
        if self._outage is not None:
            since, first = self._outage
            self._outage = None
            self._record(Event("ingest.storage_failure",
                               f"the twin database refused to store for {time.time() - since:.1f}"
                               f" s ({self._streak} attempt(s), first: {first}); nothing was "
                               "acknowledged meanwhile", source="mqtt", at=since))
        self._streak = 0
        self._retry.reset()

    def _record(self, event: Event) -> None:
        try:
            self.twin.store.record_events([event])
        except Exception:
            log.exception("ingest: recording %s failed", event.reason)

    def _maintain(self) -> None:
        """Apply the store's retention limits every ``prune_every`` seconds."""
        if not self.prune_every or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.prune_every
        try:
            readings, events = self.twin.store.prune()
        except Exception:
            log.exception("ingest: applying the retention limits failed; next try in %.0f s",
                          self.prune_every)
            return
        if readings or events:
            log.info("ingest: retention removed %d reading(s) and %d event(s)", readings, events)

    def _send_downlink(self) -> None:
        """Publish the due downlink frames (QoS 1, not retained); the store resends what the
        device has not reported, so a frame lost here is only late."""
        for kid, frame in self.downlinker.due():
            try:
                self.transport.publish(topic(kid, "c", self.root), frame, qos=1)
            except Exception:
                log.exception("ingest: publishing a downlink frame to %s failed", kid.hex())

    def _wait(self, stop: threading.Event) -> None:
        delay = self._retry.next()
        if self._streak > 1:
            log.warning("ingest: still failing (%s: %s); %d message(s) held, not acknowledged; "
                        "retrying in %.1f s", type(self._last_exc).__name__, self._last_exc,
                        len(self._held), delay)
        stop.wait(delay)

    def _drain(self) -> None:
        batch = ([self._suspect.msg] if self._suspect else []) + self._held + self._collect(0.0)
        self._held, self._suspect = [], None
        while batch:
            chunk, batch = batch[:self.batch_max], batch[self.batch_max:]
            if not self.process(chunk):
                return  # not acknowledged: the broker keeps them for the next session
            batch += self._collect(0.0, self.batch_max)

    def _collect(self, wait: float, most: int | None = None) -> list[Message]:
        most = self.batch_max if most is None else most
        try:
            first = self._in.get(timeout=wait) if wait > 0 else self._in.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < most:
            left = deadline - time.monotonic()
            try:
                batch.append(self._in.get(timeout=left) if left > 0 else self._in.get_nowait())
            except queue.Empty:
                break
        return batch

    def process(self, batch: Sequence[Message]) -> bool:
        """Open and commit one batch, then publish its end-to-end acks and acknowledge it to the
        broker; True if done. False if :meth:`Twin.open_many` raised: then nothing of the batch
        is acknowledged (logged with a traceback on the first failure of a streak, counted)."""
        # b"" never matches a frame's kid: a topic naming none is refused as topic_mismatch.
        kids = [topic_kid(m.topic, "t", self.root) or b"" for m in batch]
        t0 = time.perf_counter()
        try:
            results = self.twin.open_many([m.payload for m in batch], expect_kids=kids,
                                          source="mqtt", redelivered=[m.dup for m in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"open_many returned {len(results)} results for "
                                   f"{len(batch)} frames")
        except Exception as exc:
            self._failed(exc, len(batch))
            return False
        self.stats.commit_seconds += time.perf_counter() - t0
        self._settle(batch, results)
        return True

    def _failed(self, exc: BaseException, n: int) -> None:
        self.stats.failed_batches += 1
        self._last_exc = exc
        self._streak += 1
        if isinstance(exc, StorageError) and self._outage is None:
            # ingest.storage_failure: logged and counted now, stored once the database is back.
            self._outage = (time.time(), str(exc))
            metrics.event("ingest.storage_failure")
            log.error("ingest.storage_failure: %s; nothing is acknowledged until it stores "
                      "again", exc)
        if self._streak == 1:
            log.error("ingest: opening a batch of %d message(s) failed; not acknowledged to the "
                      "broker, retrying one by one with backoff", n, exc_info=exc)

    def _settle(self, batch: Sequence[Message], results: Sequence[Result]) -> None:
        """Everything after the commit; contained so that no single message can make it raise."""
        self.stats.received += len(batch)
        ans = self.acknowledger.answer(results)  # never raises
        self.stats.stored += ans.stored
        self.stats.duplicates += ans.duplicates
        self.stats.refused += ans.refused
        self.stats.nacks += ans.nacks
        for kid, data in ans.acks:
            try:
                self._unconfirmed.append(
                    self.transport.publish(topic(kid, "a", self.root), data, qos=1))
                self.stats.acks += 1
            except Exception:
                log.exception("ingest: publishing an ack to %s failed", kid.hex())
        while self._unconfirmed and _settled(self._unconfirmed[0]):
            self._unconfirmed.popleft()
        for m in batch:
            self.transport.ack(m)
        self.stats.batches += 1  # last: a batch counted here is fully handled
        if self.on_results is not None:
            try:
                self.on_results(list(results))
            except Exception:
                log.exception("ingest: the on_results callback failed; carrying on")

    def _confirm_acks(self, timeout: float) -> None:
        """Give the last end-to-end acks up to ``timeout`` seconds to reach the broker."""
        deadline = time.monotonic() + timeout
        for info in self._unconfirmed:
            left = deadline - time.monotonic()
            if left <= 0 or not self.transport.connected:
                return
            if not _settled(info):
                info.wait_for_publish(left)

    def _set_aside(self, m: Message, exc: BaseException) -> bool:
        """Record a message that makes ``open_many`` raise as a security event, then acknowledge
        it to the broker; False (nothing acknowledged) if even the record fails."""
        ks = _kid_seq(m.payload)
        detail = (f"processing this message raised {type(exc).__name__} while other messages "
                  "went in; acknowledged and set aside")
        try:
            self.twin.store.record_events([Event("internal_error", detail, ks[0] if ks else None,
                                                 ks[1] if ks else None, "mqtt")])
        except Exception:
            log.exception("ingest: recording a poisonous message failed; it stays held")
            return False
        log.error("ingest: message on %r (%d bytes) fails alone; recorded as internal_error, "
                  "acknowledged and set aside", m.topic, len(m.payload), exc_info=exc)
        self.transport.ack(m)
        self.stats.poisoned += 1
        return True


def _presence_of(payload: bytes) -> str | None:
    """Who a presence message names: a fingerprint, a note that it is not twinlink's, or None
    for an empty (cleared) one."""
    if not payload:
        return None
    if payload.startswith(PRESENCE_PREFIX):
        return payload[len(PRESENCE_PREFIX):].decode("ascii", "replace")[:64]
    return f"an unrecognised message of {len(payload)} bytes"


class _PresenceCheck:
    """One short-lived connection that reads the retained presence message of a topic root.

    It subscribes to the presence topic (retained messages sent) and to a probe topic of its
    own, then publishes a random token on the probe topic: the broker queues a retained message
    for a subscription when it takes the SUBSCRIBE, so once the token comes back any retained
    presence has come too. Callbacks run on paho's thread; :meth:`run` waits on the caller's.
    """

    def __init__(self, url: str, options: MqttOptions | None, topic_name: str) -> None:
        self.topic = topic_name
        self.token = os.urandom(8).hex().encode()
        self.probe = f"{topic_name}/probe/{self.token.decode()}"
        self.done = threading.Event()
        self.seen: str | None = None
        self._subs: set[int] = set()
        self.transport = MqttTransport(
            url, f"twinlink-presence-{os.urandom(4).hex()}", options, clean_start=True,
            on_message=self._on_message, on_up=self._on_up, on_subscribed=self._on_subscribed)

    def _on_up(self, session_present: bool) -> None:
        self._subs = {self.transport.subscribe(self.topic, qos=1, retained=True),
                      self.transport.subscribe(self.probe, qos=1)}

    def _on_subscribed(self, mid: int, granted: bool) -> None:
        self._subs.discard(mid)
        if not self._subs:
            self.transport.publish(self.probe, self.token, qos=1)

    def _on_message(self, msg: Message) -> None:
        if msg.topic == self.probe and msg.payload == self.token:
            self.done.set()
        elif msg.topic == self.topic:
            self.seen = _presence_of(msg.payload)

    def run(self, stop: threading.Event) -> str | None:
        """Connect (as long as it takes, until ``stop``), probe, and return what the retained
        presence names (None: nothing there). If the probe is not answered within
        :data:`PRESENCE_TIMEOUT` seconds of connecting, log it and return what was seen."""
        self.transport.start()
        deadline = None
        while not stop.is_set() and not self.done.is_set():
            if deadline is None and self.transport.connected:
                deadline = time.monotonic() + PRESENCE_TIMEOUT
            if deadline is not None and time.monotonic() > deadline:
                log.warning("ingest: no answer to the presence probe on %s within %.0f s (may "
                            "this client publish there?); serving without the topic-root "
                            "check", self.probe, PRESENCE_TIMEOUT)
                break
            self.done.wait(0.05)
        return self.seen

    def announce(self, payload: bytes) -> None:
        """Publish ``payload`` retained on the presence topic (waiting briefly for the broker).
        The caller stops :attr:`transport` afterwards."""
        try:
            info = self.transport.publish(self.topic, payload, qos=1, retain=True)
            info.wait_for_publish(5.0)
        except (RuntimeError, ValueError, TwinlinkError):
            log.warning("ingest: announcing this twin on %s failed", self.topic)


def _settled(info: mqtt.MQTTMessageInfo) -> bool:
    """True once the broker has the message, or if paho cannot tell any more (it was queued
    while disconnected: paho sends it after the reconnect but its info keeps the error)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True


def _kid_seq(payload: bytes) -> tuple[bytes, int] | None:
    try:
        p = _frame.parse(payload)
        return p.kid, p.seq
    except Exception:
        return None


def serve(url: str, twin: Twin, stop: threading.Event, **kw: Any) -> IngestStats:
    """Run an :class:`MqttIngest` until ``stop`` is set (the ``twinlink serve`` body)."""
    return MqttIngest(url, twin, **kw).run(stop)
