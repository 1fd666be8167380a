"""The live stream: new readings and events as Server-Sent Events, resumable without loss.

Readings and events have separate id spaces in the store, so a stream position is a pair, the
**cursor** ``r<R>.e<E>``: "every reading with id <= R and every event with id <= E that this
stream selects has been sent". Every message carries the cursor reached *after* it as its SSE
``id:``; a browser's ``EventSource`` sends the last one back as ``Last-Event-ID`` when it
reconnects, and the stream resumes right after it: nothing lost, nothing twice. Within one
poll, readings are sent before events (ids ascending in each).

One :class:`Hub` per dashboard process polls the store (``after_id`` on both tables, every
``interval`` seconds) from its own thread and its own store object, and hands each batch to
every subscriber; a batch is encoded once per distinct filter, not once per client, so 200
clients cost 200 socket writes per poll, not 200 JSON encodings per row. A subscriber that
falls too far behind is disconnected (it reconnects and catches up from the store), so one slow
client never holds memory for the others. A client that (re)connects with an older cursor
first catches up from the store, then joins the live batches; items at or below its cursor
are skipped, so the switch-over neither loses nor repeats anything.

Store ids must become visible in increasing order (SQLite's single writer guarantees it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from ..errors import TwinlinkError
from ..store import TwinStore
from . import model

log = logging.getLogger("twinlink.dashboard")

KINDS = frozenset({"readings", "events"})
#: Rows fetched per store query (poll and catch-up).
BATCH = 1000
#: Batches a subscriber may have queued before it is cut off (it then resumes by itself).
MAX_QUEUED = 64
_CURSOR = re.compile(r"r(\d{1,18})\.e(\d{1,18})")


class BadCursor(TwinlinkError, ValueError):
    """A stream position (``Last-Event-ID`` or ``after``) that is not ``r<N>.e<N>``."""

    reason = "bad_cursor"


class Cursor(NamedTuple):
    """A stream position: the last reading id and the last event id sent."""

    r: int
    e: int

    def __str__(self) -> str:
        return f"r{self.r}.e{self.e}"

    def max(self, other: Cursor) -> Cursor:
        return Cursor(max(self.r, other.r), max(self.e, other.e))


def parse_cursor(text: str) -> Cursor:
    """``r123.e45`` -> Cursor(123, 45); raise :class:`BadCursor`."""
    m = _CURSOR.fullmatch(text.strip())
    if m is None:
        raise BadCursor("a stream position looks like r123.e45 (last reading id, last event "
                        "id)")
    return Cursor(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class StreamFilter:
    """What one stream sends: which kinds, one device or all, and (events) types/outcomes."""

    kinds: frozenset[str] = KINDS
    device: Optional[str] = None
    types: frozenset[str] = frozenset()
    outcomes: frozenset[str] = frozenset()
    audit: bool = True

    def wants_reading(self, r: dict[str, Any]) -> bool:
        return "readings" in self.kinds and (self.device is None or r["device"] == self.device)

    def wants_event(self, e: dict[str, Any]) -> bool:
        return ("events" in self.kinds
                and (self.device is None or e["device"] == self.device)
                and (not self.types or e["type"] in self.types)
                and (not self.outcomes or e["outcome"] in self.outcomes)
                and (self.audit or not e["audit"]))


def _message(kind: str, cursor: Cursor, item: dict[str, Any]) -> str:
    # json.dumps escapes CR and LF inside strings, so data is always one SSE line
    return f"event: {kind}\nid: {cursor}\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"


@dataclass
class Batch:
    """Rows that arrived between two cursors (``start`` exclusive, ``end`` inclusive)."""

    start: Cursor
    end: Cursor
    readings: list[dict[str, Any]]
    events: list[dict[str, Any]]
    _encoded: dict[StreamFilter, bytes] = field(default_factory=dict)

    def encode(self, flt: StreamFilter, cursor: Cursor) -> tuple[bytes, Cursor]:
        """The SSE text for a client at ``cursor`` and the cursor after it. Items at or below
        ``cursor`` are skipped; the common case (cursor == start) is encoded once per filter."""
        if cursor == self.start:
            cached = self._encoded.get(flt)
            if cached is None:
                cached = self._encoded[flt] = encode_items(
                    flt, cursor, self.readings, self.events).encode()
            return cached, self.end
        text = encode_items(flt, cursor, self.readings, self.events)
        return text.encode(), cursor.max(self.end)


def encode_items(flt: StreamFilter, cursor: Cursor, readings: Iterable[dict[str, Any]],
                 events: Iterable[dict[str, Any]]) -> str:
    """SSE messages for the items above ``cursor`` that ``flt`` selects: readings first."""
    out: list[str] = []
    r_top, e_top = cursor
    for r in readings:
        if r["id"] > r_top:
            r_top = r["id"]
            if flt.wants_reading(r):
                out.append(_message("reading", Cursor(r_top, e_top), r))
    for e in events:
        if e["id"] > e_top:
            e_top = e["id"]
            if flt.wants_event(e):
                out.append(_message("event", Cursor(r_top, e_top), e))
    return "".join(out)


def fetch(store: TwinStore, cursor: Cursor, device: Optional[str], kinds: frozenset[str],
          limit: int = BATCH) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Readings and events above ``cursor`` (one device's, or all), at most ``limit`` each."""
    readings = ([model.reading(r) for r in store.readings(device, limit, after_id=cursor.r)]
                if "readings" in kinds else [])
    events = ([model.event(e) for e in store.events(device, limit, after_id=cursor.e)]
              if "events" in kinds else [])
    return readings, events


def _fetch_all(store: TwinStore, cursor: Cursor) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    return fetch(store, cursor, None, KINDS)


def _fetch_for(store: TwinStore, cursor: Cursor, flt: StreamFilter
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return fetch(store, cursor, flt.device, flt.kinds)


class Subscriber:
    """One stream's queue of batches; ``overflowed`` once it fell too far behind."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.overflowed = False

    def put(self, batch: Batch) -> None:
        if self.queue.qsize() >= MAX_QUEUED:
            self.overflowed = True
            self.queue.put_nowait(batch)  # wakes the writer, which sees the flag and stops
            return
        self.queue.put_nowait(batch)


class Hub:
    """Polls the store for new rows and fans them out to the subscribed streams.

    ``open_store`` makes the hub's own store object (used only from the hub's thread).
    """

    def __init__(self, open_store: Callable[[], TwinStore], interval: float = 0.25) -> None:
        self._open_store = open_store
        self.interval = interval
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="twinlink-dashboard-poll")
        self._store: Optional[TwinStore] = None
        self.cursor = Cursor(0, 0)
        self._subs: set[Subscriber] = set()
        self._task: Optional[asyncio.Task[None]] = None
        self.polls = 0
        self.healthy = False

    def _run(self, fn: Callable[[TwinStore], Any]) -> Any:
        if self._store is None:
            self._store = self._open_store()
        return fn(self._store)

    async def call(self, fn: Callable[[TwinStore], Any]) -> Any:
        """Run ``fn(store)`` on the hub's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn)

    async def start(self) -> None:
        r, e = await self.call(model.newest_ids)
        self.cursor = Cursor(r, e)
        self.healthy = True
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None
        self._pool.submit(self._close).result(10)
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def clients(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store hiccup must not end the stream for everyone
                self.healthy = False
                log.warning("dashboard poll failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """Fetch everything new (in pages) and broadcast it, one batch per page."""
        while True:
            start = self.cursor
            readings, events = await self.call(functools.partial(
                _fetch_all, cursor=start))
            if not readings and not events:
                return
            end = Cursor(readings[-1]["id"] if readings else start.r,
                         events[-1]["id"] if events else start.e)
            batch = Batch(start, end, readings, events)
            self.cursor = end
            self.polls += 1
            for sub in list(self._subs):
                sub.put(batch)
            if len(readings) < BATCH and len(events) < BATCH:
                return


async def serve_client(hub: Hub, flt: StreamFilter, cursor: Cursor,
                       write: Callable[[bytes], Any], keepalive: float,
                       call: Optional[Callable[[Callable[[TwinStore], Any]], Any]] = None
                       ) -> None:
    """Feed one stream from ``cursor`` on until the client goes away or falls behind.

    ``write`` is the response's awaitable write; ``call`` runs a store query off the event
    loop for the catch-up (default: on the hub's thread). Returns when the subscriber
    overflowed (the client reconnects with its ``Last-Event-ID``); a vanished client ends it
    with the transport's exception.
    """
    sub = hub.subscribe()
    try:
        # 1. catch up from the store (subscribed first, so nothing slips between the two)
        while True:
            snapshot = hub.cursor
            start = cursor
            readings, events = await (call or hub.call)(functools.partial(
                _fetch_for, cursor=start, flt=flt))
            if readings or events:
                await write(encode_items(flt, cursor, readings, events).encode())
                cursor = Cursor(readings[-1]["id"] if readings else cursor.r,
                                events[-1]["id"] if events else cursor.e)
            if len(readings) < BATCH and len(events) < BATCH:
                # that query began after ``snapshot`` was read, so it saw every row up to it
                cursor = cursor.max(snapshot)
                break
        # 2. live batches; a quiet stream gets a comment now and then so proxies keep it open
        while True:
            try:
                batch = await asyncio.wait_for(sub.queue.get(), keepalive)
            except asyncio.TimeoutError:
                await write(b": keep-alive\n\n")
                continue
            if sub.overflowed:
                log.info("a stream fell %d batches behind; closed it (it resumes by itself)",
                         MAX_QUEUED)
                return
            if batch.end.r <= cursor.r and batch.end.e <= cursor.e:
                continue
            data, cursor = batch.encode(flt, cursor)
            if data:
                await write(data)
    finally:
        hub.unsubscribe(sub)
