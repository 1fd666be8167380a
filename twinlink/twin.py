"""The receiving side: verify, decrypt, refuse replays, store readings and keep twin state.

Order for every frame (DESIGN.md): parse → registry and window pre-check → verify signature →
decrypt → decode → one transaction that re-checks the window, stores the reading and advances
the window. A frame that fails anywhere leaves the window untouched and is logged as a security
event with its reason.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Union

from . import frame as _frame
from . import keys, oscore, senml
from .errors import BadSignature, RevokedDevice, TopicMismatch, TwinlinkError, WindowLost
from .frametypes import KIND_LITE
from .replay import ReplayWindow
from .store import PROFILE_LITE, Accepted, DeviceRecord, Event, SQLiteStore, TwinStore, to_json


@dataclass(frozen=True)
class Reading:
    """An accepted, stored reading."""

    device: str
    kid: bytes
    seq: int
    payload: Any
    records: Sequence[senml.Record] = ()
    time: float | None = None
    provenance: str = "signed"
    plaintext: bytes = field(default=b"", repr=False)

    def to_json(self) -> dict[str, Any]:
        """The ``twinlink open`` output object."""
        return {
            "ok": True,
            "device": self.device,
            "seq": self.seq,
            "payload": to_json(self.payload),
            "provenance": self.provenance,
            **({"time": self.time} if self.time is not None else {}),
        }


def refusal_json(err: TwinlinkError) -> dict[str, Any]:
    """The ``twinlink open`` output object for a refused frame."""
    return {"ok": False, "error": err.reason, "detail": str(err)}


Result = Union[Reading, TwinlinkError]


class _Job:
    """One frame between the pre-check and the commit."""

    __slots__ = ("ctx", "dev", "error", "index", "parsed", "plaintext")

    def __init__(self, index: int, parsed: Any, dev: DeviceRecord, ctx: oscore.Context) -> None:
        self.index, self.parsed, self.dev, self.ctx = index, parsed, dev, ctx
        self.plaintext = b""
        self.error: TwinlinkError | None = None


class Twin:
    """A digital twin's ingest: open frames from registered devices into a store.

    ``Twin("twin.db", twin_key="keys/twin.key")``. Methods are thread-safe (serialised).
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | TwinStore,
        twin_key: str | os.PathLike[str] | keys.TwinKey,
        *,
        cache_size: int = 4096,
        workers: int | None = None,
    ) -> None:
        self.store: TwinStore = db if isinstance(db, TwinStore) else SQLiteStore(os.fspath(db))
        self.key = twin_key if isinstance(twin_key, keys.TwinKey) else keys.load_twin_key(twin_key)
        self._contexts: OrderedDict[tuple[bytes, int, bytes], oscore.Context] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.RLock()
        # Threads that verify large batches in parallel; 1 disables (a Pi Zero has one core).
        self._workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"Twin(store={self.store!r}, key={self.key!r})"

    # -- contexts ---------------------------------------------------------------------------

    def _context(self, dev: DeviceRecord, sender_id: bytes | None = None) -> oscore.Context:
        sid = dev.kid if sender_id is None else sender_id
        ck = (dev.kid + b"/" + sid, dev.epoch, dev.public_key)
        ctx = self._contexts.get(ck)
        if ctx is None:
            secret = keys.master_secret_twin(self.key, dev.public_key)
            ctx = oscore.derive_context(secret, sid, dev.master_salt, dev.id_context)
            self._contexts[ck] = ctx
            if len(self._contexts) > self._cache_size:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(ck)
        return ctx

    def device_context(self, name_or_kid: str | bytes) -> oscore.Context:
        """The device→twin context of a registered device (for tools and tests)."""
        return self._context(self.store.device(name_or_kid))

    def ack_context(self, name_or_kid: str | bytes) -> oscore.Context:
        """The twin→device context (Sender ID h'') that authenticates acknowledgements."""
        return self._context(self.store.device(name_or_kid), b"")

    # -- ingest -----------------------------------------------------------------------------

    def open(self, frame: bytes, *, expect_kid: bytes | None = None, source: str = "") -> Reading:
        """Open, check and store one frame; return the :class:`Reading` or raise the refusal."""
        result = self.open_many(
            [frame], expect_kids=None if expect_kid is None else [expect_kid], source=source
        )[0]
        if isinstance(result, TwinlinkError):
            raise result
        return result

    def open_many(
        self,
        frames: Sequence[bytes],
        *,
        expect_kids: Sequence[bytes | None] | None = None,
        source: str = "",
    ) -> list[Result]:
        """Open a batch; store every accepted reading in one transaction.

        Returns one entry per frame, in order: a :class:`Reading` or the :class:`TwinlinkError`
        that refused it (never raised). ``expect_kids[i]`` is the kid the transport address
        claims (MQTT topic); a mismatch is refused as ``topic_mismatch``.
        """
        results: list[Result | None] = [None] * len(frames)
        events: list[tuple[int, Event]] = []
        # Per device, looked up once per batch: record, batch-local window copy, context.
        devices: dict[bytes, tuple[DeviceRecord, ReplayWindow, bool, oscore.Context]] = {}
        jobs: list[_Job] = []
        with self._lock:
            # 1. parse, registry and window pre-check (cheap, in order).
            for i, frame in enumerate(frames):
                kid: bytes | None = None
                seq: int | None = None
                try:
                    parsed = _frame.parse(frame)
                    kid, seq = parsed.kid, parsed.seq
                    if expect_kids is not None:
                        claimed = expect_kids[i]
                        if claimed is not None and claimed != kid:
                            raise TopicMismatch(
                                f"frame kid {kid.hex()} does not match the address's kid "
                                f"{claimed.hex()}"
                            )
                    entry = devices.get(kid)
                    if entry is None:
                        st = self.store.lookup(kid)
                        ctx = self._context(st.device)
                        entry = devices[kid] = (st.device, st.window, st.lost, ctx)
                    dev, win, lost, ctx = entry
                    if dev.status != "active":
                        raise RevokedDevice(f"device {dev.name} is revoked")
                    if lost:
                        raise WindowLost(
                            f"replay window of {dev.name} was lost; an operator must "
                            "re-anchor it (twinlink twin reanchor)"
                        )
                    if parsed.kind == KIND_LITE and dev.profile != PROFILE_LITE:
                        raise BadSignature(
                            f"unsigned (lite) frame from {dev.name}, which is "
                            "registered for signed frames"
                        )
                    win.check(seq)
                    jobs.append(_Job(i, parsed, dev, ctx))
                except TwinlinkError as exc:
                    results[i] = exc
                    events.append((i, Event(exc.reason, str(exc), kid, seq, source)))
            # 2. verify and decrypt: the cost floor; spread over cores for large batches
            # (cffi releases the GIL inside libsodium).
            self._crypto(jobs)
            # 3. decode and advance the batch-local windows in frame order; duplicates inside
            # the batch are caught here, after verification, as the window rules require.
            pending: list[tuple[int, Accepted, str]] = []
            for job in jobs:
                dev = job.dev
                try:
                    if job.error is not None:
                        raise job.error
                    win = devices[dev.kid][1]
                    win.check(job.parsed.seq)
                    payload, records, t = decode_payload(job.plaintext)
                    win.update(job.parsed.seq)
                    lite = job.parsed.kind == KIND_LITE
                    acc = Accepted(
                        dev.kid,
                        job.parsed.seq,
                        dev.epoch,
                        job.plaintext,
                        payload,
                        records,
                        t,
                        "aead-only" if lite else "signed",
                        source=source,
                    )
                    pending.append((job.index, acc, dev.name))
                except TwinlinkError as exc:
                    results[job.index] = exc
                    events.append(
                        (job.index, Event(exc.reason, str(exc), dev.kid, job.parsed.seq, source))
                    )
            events.sort(key=lambda e: e[0])
            outcomes = self.store.commit([p[1] for p in pending], [e for _, e in events])
        for (i, acc, name), err in zip(pending, outcomes):
            results[i] = (
                err
                if err is not None
                else Reading(
                    name,
                    acc.kid,
                    acc.seq,
                    acc.payload,
                    acc.records,
                    acc.time,
                    acc.provenance,
                    acc.plaintext,
                )
            )
        return results  # type: ignore[return-value]

    def _crypto(self, jobs: list[_Job]) -> None:
        def run(chunk: list[_Job]) -> None:
            telemetry = oscore.STREAM_TELEMETRY
            for job in chunk:
                try:
                    if job.parsed.kind != KIND_LITE:
                        _frame.verify(job.parsed, job.dev.public_key, telemetry)
                    job.plaintext = _frame.decrypt(job.parsed, job.ctx, telemetry)
                except TwinlinkError as exc:
                    job.error = exc

        workers = self._workers
        if workers < 2 or len(jobs) < 4 * workers:
            run(jobs)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="twinlink-verify")
        step = -(-len(jobs) // workers)
        futures = [self._pool.submit(run, jobs[k : k + step]) for k in range(0, len(jobs), step)]
        for f in futures:
            f.result()

    # -- registry shortcuts -----------------------------------------------------------------

    def register(
        self, name: str, public_key: bytes | str | os.PathLike[str], **kw: Any
    ) -> DeviceRecord:
        """Register a device by its Ed25519 public key (raw 32 bytes or a PEM file path)."""
        pk = public_key if isinstance(public_key, bytes) else keys.load_public(public_key)
        return self.store.register(name, pk, **kw)

    def revoke(self, name: str, why: str = "") -> None:
        self.store.revoke(name, why)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.store.close()

    def __enter__(self) -> Twin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_payload(plaintext: bytes) -> tuple[Any, tuple[senml.Record, ...], float | None]:
    """(payload, SenML records, time) of an opened plaintext; raise :class:`MalformedPayload`.

    A SenML pack gives ``{name: value}``; any other CBOR item is returned as decoded.
    """
    obj = senml.loads(plaintext)
    if not senml.is_pack(obj):
        return obj, (), None
    records = tuple(senml.resolve(obj))
    payload: dict[str, Any] = {}
    for r in records:
        payload[r.name] = r.value if r.value is not None else r.sum
    return payload, records, records[0].time


def open_lines(twin: Twin, lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Open hex frames one a line (the ``twinlink open`` filter); yield JSON-ready objects."""
    from .errors import MalformedFrame

    for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            frame = bytes.fromhex(text)
        except ValueError:
            err = MalformedFrame("line is not hex")
            twin.store.record_events([Event(err.reason, str(err))])
            yield refusal_json(err)
            continue
        result = twin.open_many([frame])[0]
        yield result.to_json() if isinstance(result, Reading) else refusal_json(result)
