"""The twin's MQTT ingest service: exactly-once storage from an at-least-once broker.

``Ingest(url, twin).run(stop)`` subscribes with a persistent session (fixed client id,
``clean_start=False``, session expiry) to ``twinlink/+/t`` (or ``$share/<group>/twinlink/+/t``
so several ingest processes split the load), collects frames for a few milliseconds, opens the
batch with :meth:`Twin.open_many` (topic kid vs frame kid checked; one transaction), and only
then (1) publishes an authenticated end-to-end ack per device on ``twinlink/<kid hex>/a`` and
(2) acknowledges each PUBLISH to the broker (paho manual acks). A crash before the commit
leaves the PUBLISH unacknowledged, so the broker redelivers it; a crash after the commit makes
the redelivery a duplicate that the replay window refuses, and that duplicate is acknowledged
end to end again (the device must still release it). Exactly-once storage, no loss.

Threads: the paho callbacks (``on_connect``, ``on_disconnect``, ``on_message``,
``on_subscribe``, ``on_publish``) run in the session thread ``twinlink-ingest-mqtt``, which is
the only thread touching the paho client; ``on_message`` only queues the frame. The caller's
thread (``run``) opens batches and hands the resulting acks back to the session thread.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, TextIO

import paho.mqtt.client as mqtt

from . import frame as _frame
from .ack import MAX_RANGES, seal_ack, to_ranges
from .errors import ReplayError, TwinlinkError, WindowLost
from .transport.mqtt import MqttOptions, Session, topic, topic_kid
from .twin import Reading, Result, Twin, refusal_json

DEFAULT_CLIENT_ID = "twinlink-ingest"


class _Msg(NamedTuple):
    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0  # refused as replays but already stored: re-acknowledged
    refused: int = 0  # every other refusal (security events)
    batches: int = 0
    acks: int = 0  # end-to-end acks published
    commit_seconds: float = 0.0


class Ingest(Session):
    """One ingest process. ``run(stop)`` blocks until ``stop`` is set, then drains and returns."""

    poll = 0.005

    def __init__(self, url: str, twin: Twin, *, client_id: str = DEFAULT_CLIENT_ID,
                 options: MqttOptions | None = None, share: str | None = None,
                 session_expiry: int = 3600, receive_maximum: int = 2048,
                 batch_max: int = 1024, batch_wait: float = 0.005,
                 jsonl: TextIO | None = None,
                 on_results: Callable[[list[Result]], None] | None = None) -> None:
        super().__init__(url, client_id, options or MqttOptions(), clean_start=False,
                         session_expiry=session_expiry, manual_ack=True,
                         receive_maximum=receive_maximum, name="twinlink-ingest-mqtt")
        self.twin = twin
        self.sub_topic = f"$share/{share}/twinlink/+/t" if share else "twinlink/+/t"
        self.batch_max, self.batch_wait = batch_max, batch_wait
        self.jsonl = jsonl
        #: Called in the ``run`` thread with each committed batch's results, in order.
        self.on_results = on_results
        self.stats = IngestStats()
        self.subscribed = threading.Event()
        self._in: queue.SimpleQueue[_Msg] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()

    # -- session thread ------------------------------------------------------------------------

    def on_up(self) -> None:
        # Subscribing again on every connection is harmless with a kept session and required
        # after a broker that lost its state (no persistence) comes back.
        self.client.subscribe(self.sub_topic, qos=1)

    def on_down(self) -> None:
        self.subscribed.clear()

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any,
                     props: Any) -> None:
        self.subscribed.set()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._in.put(_Msg(self.gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    def on_tick(self) -> None:
        while True:
            try:
                item = self._out.get_nowait()
            except queue.Empty:
                return
            if item[0] == "pub":
                self.client.publish(item[1], item[2], qos=1)
            elif item[1] == self.gen and self.connected:
                # A packet id is only meaningful on the connection it arrived on; after a
                # reconnect the broker redelivers the message and it is acked then.
                self.client.ack(item[2], item[3])

    def on_stopping(self) -> None:
        self.on_tick()

    # -- worker (caller's thread) --------------------------------------------------------------

    def run(self, stop: threading.Event) -> IngestStats:
        """Serve until ``stop`` is set; then finish the batch in hand, flush acks, disconnect."""
        self.start()
        try:
            while not stop.is_set():
                batch = self._collect(0.1)
                if batch:
                    self.process(batch)
            while True:
                batch = self._collect(0.0)
                if not batch:
                    break
                self.process(batch)
        finally:
            self.stop(5.0)
        return self.stats

    def _collect(self, wait: float) -> list[_Msg]:
        try:
            first = self._in.get(timeout=wait) if wait > 0 else self._in.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._in.get(timeout=left) if left > 0 else self._in.get_nowait())
            except queue.Empty:
                break
        return batch

    def process(self, batch: list[_Msg]) -> None:
        """Open and commit one batch, then queue its end-to-end acks and broker acks."""
        t0 = time.perf_counter()
        kids = [topic_kid(m.topic, "t") or b"" for m in batch]  # b"" never matches: refused
        results = self.twin.open_many([m.payload for m in batch], expect_kids=kids,
                                      source="mqtt")
        self.stats.commit_seconds += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.received += len(batch)
        stored: dict[bytes, set[int]] = {}
        replays: dict[bytes, set[int]] = {}
        for m, r in zip(batch, results):
            if isinstance(r, Reading):
                stored.setdefault(r.kid, set()).add(r.seq)
                self.stats.stored += 1
            elif isinstance(r, ReplayError) and not isinstance(r, WindowLost):
                p = _frame.parse(m.payload)  # parsed fine once already, or it would not be a replay
                replays.setdefault(p.kid, set()).add(p.seq)
            else:
                self.stats.refused += 1
        for kid, seqs in replays.items():
            # Only what the database says is stored is acknowledged, never what a frame claims.
            known = self.twin.store.stored_seqs(kid, seqs)
            self.stats.duplicates += len(known)
            self.stats.refused += len(seqs) - len(known)
            if known:
                stored.setdefault(kid, set()).update(known)
        for kid, seqs in stored.items():
            for payload in self._acks(kid, seqs):
                self._out.put(("pub", topic(kid, "a"), payload))
                self.stats.acks += 1
        for m in batch:
            if m.qos:
                self._out.put(("ack", m.gen, m.mid, m.qos))
        if self.jsonl is not None:
            for r in results:
                obj = r.to_json() if isinstance(r, Reading) else refusal_json(r)
                self.jsonl.write(json.dumps(obj, separators=(",", ":")) + "\n")
            self.jsonl.flush()
        if self.on_results is not None:
            self.on_results(results)

    def _acks(self, kid: bytes, seqs: Iterable[int]) -> list[bytes]:
        ranges = to_ranges(seqs)
        ctx = self.twin.ack_context(kid)
        out = []
        for i in range(0, len(ranges), MAX_RANGES):
            out.append(seal_ack(ctx, kid, self.twin.store.take_ack_seq(kid),
                                ranges[i:i + MAX_RANGES]))
        return out


def serve(url: str, twin: Twin, stop: threading.Event, **kw: Any) -> IngestStats:
    """Run an :class:`Ingest` until ``stop`` is set (the ``twinlink serve`` body)."""
    return Ingest(url, twin, **kw).run(stop)


__all__ = ["DEFAULT_CLIENT_ID", "Ingest", "IngestStats", "TwinlinkError", "serve"]
