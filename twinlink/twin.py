"""The receiving side: verify, decrypt, refuse replays, store readings and keep twin state.

Order for every frame (DESIGN.md, PROTOCOL.md §10): parse → registry, context and window
pre-check → verify signature → decrypt → decode → one transaction that re-checks the window,
stores the reading and advances the window. A frame that fails anywhere leaves the window
untouched and is recorded as a security event with its reason.

Containment: every per-frame step runs under its own guard. A frame whose processing raises
anything unexpected — even after its signature verified, since a compromised device signs its
lies — is refused as ``internal_error`` (logged with its traceback, counted, recorded as an
event); the rest of the batch is processed and committed. Only a database that cannot store
anything makes :meth:`Twin.open_many` raise (:class:`~twinlink.store.StorageError`): then
nothing of the batch is acknowledged and the caller retries.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time as _time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from . import frame as _frame
from . import keys, metrics, oscore, senml
from .detect import DetectConfig, DetectionEvent, Detector
from .errors import (
    BadSignature,
    Conflict,
    ContextRetired,
    DecryptionFailed,
    FrameTooLarge,
    InternalError,
    MalformedFrame,
    MalformedPayload,
    Replay,
    ReplayError,
    RevokedDevice,
    TopicMismatch,
    TwinlinkError,
    UnknownDevice,
    WindowLost,
)
from .frametypes import KIND_LITE, MAX_FRAME
from .replay import ReplayWindow
from .store import (
    PROFILE_LITE,
    Accepted,
    DeviceRecord,
    Event,
    StorageError,
    TwinStore,
    open_store,
)
from .values import dumps_json, to_json

log = logging.getLogger("twinlink.twin")

#: Digest of a frame as acknowledgements name it: the first 8 bytes of SHA-256(frame).
DIGEST_LEN = 8


def frame_digest(frame: bytes) -> bytes:
    """The 8-byte digest that names one frame in acknowledgements and in the store."""
    return hashlib.sha256(frame).digest()[:DIGEST_LEN]


@dataclass(frozen=True)
class Reading:
    """An accepted, stored reading (or, from :meth:`Twin.check`, one that would be)."""

    device: str
    kid: bytes
    seq: int
    payload: Any
    records: Sequence[senml.Record] = ()
    time: float | None = None
    provenance: str = "signed"
    plaintext: bytes = field(default=b"", repr=False)
    epoch: int = 0
    id_context: bytes | None = None
    digest: bytes = b""
    #: QARTOD flag per series (1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing), when
    #: the twin's detectors checked the reading.
    flags: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the reading (``time`` as epoch seconds).

        Deprecated: what the CLI prints is shaped by ``twinlink.cli.output`` (ISO times); this
        stays for ``demo.py``, ``monitor.py`` and ``serve.py``'s ``jsonl`` until they move."""
        return {
            "ok": True,
            "device": self.device,
            "seq": self.seq,
            "payload": to_json(self.payload),
            "provenance": self.provenance,
            **({"time": self.time} if self.time is not None else {}),
        }


def refusal_json(err: TwinlinkError) -> dict[str, Any]:
    """A refused frame as JSON (``open``, ``monitor --jsonl``, ``serve --jsonl``): the reason,
    the device, kid and sequence number where the frame named them, and a human ``detail``."""
    out: dict[str, Any] = {"ok": False, "error": err.reason}
    info = getattr(err, "frame", None)
    if isinstance(info, FrameInfo):
        if info.device is not None:
            out["device"] = info.device
        if info.kid is not None:
            out["kid"] = info.kid.hex()
        if info.seq is not None:
            out["seq"] = info.seq
    out["detail"] = str(err)
    return out


@dataclass
class FrameInfo:
    """What the twin learned about a refused frame, attached to the refusal as ``.frame``.

    ``authenticated`` is true when the frame's signature (or, lite, its AEAD tag) verified under
    the device's key: only such refusals may be negatively acknowledged to the device.
    ``duplicate`` marks a byte-identical copy of a stored frame (safe to acknowledge again).
    """

    kid: bytes | None = None
    seq: int | None = None
    device: str | None = None
    id_context: bytes | None = None
    epoch: int | None = None
    digest: bytes = b""
    authenticated: bool = False
    duplicate: bool = False


Result = Union[Reading, TwinlinkError]

_CURRENT: Any = object()


def _kid_context(parsed: Any) -> bytes | None:
    return parsed.kid_context  # type: ignore[no-any-return]


def _info(err: TwinlinkError) -> FrameInfo:
    info = getattr(err, "frame", None)
    if not isinstance(info, FrameInfo):
        info = FrameInfo()
        err.frame = info  # type: ignore[attr-defined]
    return info


class _Job:
    """One frame on its way through the pipeline."""

    __slots__ = ("ctx", "dev", "digest", "error", "frame", "held", "index", "parsed",
                 "plaintext", "renew", "salt", "verify_only")

    def __init__(self, index: int, frame: bytes) -> None:
        self.index, self.frame = index, frame
        self.parsed: Any = None
        self.dev: DeviceRecord | None = None
        self.ctx: oscore.Context | None = None
        self.salt: bytes = b""
        self.renew = False
        self.verify_only = False
        self.plaintext = b""
        self.digest = b""
        self.error: TwinlinkError | None = None
        #: A refusal decided before crypto that stands once the frame authenticates (a
        #: conflict, a stale number not stored); the frame is verified only to label it.
        self.held: TwinlinkError | None = None


class Twin:
    """A digital twin's ingest: open frames from registered devices into a store.

    ``Twin("twin.db", twin_key="keys/twin.key")``; ``db`` may also be a
    :class:`~twinlink.store.TwinStore`. The store is bound to the twin key's fingerprint on
    first use; a different key is refused at once (:class:`~twinlink.store.TwinKeyMismatch`)
    instead of logging every genuine frame as ``decrypt_failed``. Methods are thread-safe.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | TwinStore,
        twin_key: str | os.PathLike[str] | keys.TwinKey,
        *,
        cache_size: int = 4096,
        workers: int | None = None,
        detect: bool | Detector = True,
        bind_key: bool = True,
        clock: Callable[[], float] = _time.time,
    ) -> None:
        self.key = twin_key if isinstance(twin_key, keys.TwinKey) else keys.load_twin_key(twin_key)
        self.store: TwinStore = db if isinstance(db, TwinStore) else open_store(db)
        try:
            fp = keys.fingerprint(self.key.public)
            if bind_key:
                self.store.bind_twin_key(fp)
            elif self.store.twin_fingerprint() not in (None, fp):
                self.store.bind_twin_key(fp)  # raises TwinKeyMismatch
        except BaseException:
            if not isinstance(db, TwinStore):
                self.store.close()
            raise
        self._contexts: OrderedDict[tuple[Any, ...], oscore.Context] = OrderedDict()
        self._secrets: dict[bytes, bytes] = {}
        self._batch_devices: dict[bytes, DeviceRecord] = {}
        self._batch_lost: set[bytes] = set()
        self._cache_size = cache_size
        self._lock = threading.RLock()
        # Threads that verify large batches in parallel; 1 disables (a Pi Zero has one core).
        self._workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        #: Refusals by reason and internal errors since start (for monitoring).
        self.counts: Counter[str] = Counter()
        #: The twin's clock (arrival times, detection): the wall clock unless a replay of
        #: recorded traffic or a benchmark gives its own.
        self.clock = clock
        #: The detectors of authentic lies (value QC, stream, liveness); None if disabled.
        self.detector: Detector | None = None
        self._batch_events: list[tuple[int, Event]] = []
        self._touched: set[str] = set()
        self._saved_at = self._configured_at = 0.0
        self._sweeper: threading.Thread | None = None
        self._stop_sweeping = threading.Event()
        if detect is not False:
            try:
                self.detector = detect if isinstance(detect, Detector) else Detector(
                    DetectConfig.from_json(self.store.qc_config()))
                learned = self.store.detect_state()
                if learned:
                    self.detector.import_state(learned)
            except BaseException:
                if not isinstance(db, TwinStore):
                    self.store.close()
                raise

    def __repr__(self) -> str:
        return f"Twin(store={self.store!r}, key={self.key!r})"

    # -- contexts ---------------------------------------------------------------------------

    def _context(self, dev: DeviceRecord, sender_id: bytes | None = None,
                 master_salt: bytes | None = None, id_context: Any = _CURRENT
                 ) -> oscore.Context:
        """The context of ``dev``: its current one, or the given Master Salt / ID Context."""
        sid = dev.kid if sender_id is None else sender_id
        salt = dev.master_salt if master_salt is None else master_salt
        idc: bytes | None = dev.id_context if id_context is _CURRENT else id_context
        ck = (dev.kid, sid, salt, idc, dev.public_key)
        ctx = self._contexts.get(ck)
        if ctx is None:
            secret = self._secrets.get(dev.public_key)
            if secret is None:  # one X25519 per device key, not per context
                secret = keys.master_secret_twin(self.key, dev.public_key)
                if len(self._secrets) >= self._cache_size:
                    self._secrets.pop(next(iter(self._secrets)))
                self._secrets[dev.public_key] = secret
            ctx = oscore.derive_context(secret, sid, salt, idc)
            self._contexts[ck] = ctx
            if len(self._contexts) > self._cache_size:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(ck)
        return ctx

    def device_context(self, name_or_kid: str | bytes) -> oscore.Context:
        """The device→twin context of a registered device (for tools and tests)."""
        return self._context(self.store.device(name_or_kid))

    def ack_context(self, name_or_kid: str | bytes, sender_id: bytes = b"",
                    id_context: Any = _CURRENT) -> oscore.Context:
        """A twin→device context of a registered device: Sender ID ``sender_id`` (an ingest
        process's twin Sender ID, :mod:`twinlink.ack`) under the device's Master Salt and
        ``id_context`` (the kid context of the frames being acknowledged; None: the base
        context; default: the device's current one)."""
        return self._context(self.store.device(name_or_kid), sender_id, id_context=id_context)

    # -- ingest -----------------------------------------------------------------------------

    def open(self, frame: bytes, *, expect_kid: bytes | None = None, source: str = "") -> Reading:
        """Open, check and store one frame; return the :class:`Reading` or raise the refusal."""
        result = self.open_many(
            [frame], expect_kids=None if expect_kid is None else [expect_kid], source=source
        )[0]
        if isinstance(result, TwinlinkError):
            raise result
        return result

    def check(self, frame: bytes, *, expect_kid: bytes | None = None) -> Result:
        """A dry run of :meth:`open`: the same rules (registry, revocation, profile, context,
        window, signature, decryption, payload), nothing stored, no event, no window change."""
        return self.open_many([frame], expect_kids=None if expect_kid is None else [expect_kid],
                              dry_run=True)[0]

    def open_many(
        self,
        frames: Sequence[bytes],
        *,
        expect_kids: Sequence[bytes | None] | None = None,
        source: str = "",
        dry_run: bool = False,
        redelivered: Sequence[bool] | None = None,
    ) -> list[Result]:
        """Open a batch; store every accepted reading in one transaction.

        Returns one entry per frame, in order: a :class:`Reading` or the
        :class:`~twinlink.errors.TwinlinkError` that refused it (never raised; its ``.frame``
        is a :class:`FrameInfo`). ``expect_kids[i]`` is the kid the transport address claims
        (MQTT topic); a mismatch is refused as ``topic_mismatch``. ``redelivered[i]`` says the
        transport itself delivered frame ``i`` again (MQTT DUP from the broker): if it is a
        byte-identical copy of a stored frame, that is at-least-once delivery, not a security
        event, and none is recorded. Raises :class:`~twinlink.store.StorageError` only when
        the database cannot store the batch.
        """
        started = _time.perf_counter()
        results: list[Result | None] = [None] * len(frames)
        events: list[tuple[int, Event]] = []
        jobs = [_Job(i, f) for i, f in enumerate(frames)]

        def refuse(job: _Job, exc: TwinlinkError) -> None:
            job.error = exc
            info = _info(exc)
            p = job.parsed
            if p is not None:
                info.kid, info.seq = p.kid, p.seq
                info.id_context = _kid_context(p)
            if job.dev is not None:
                info.device, info.epoch = job.dev.name, job.dev.epoch
            info.digest = job.digest
            results[job.index] = exc
            self.counts[exc.reason] += 1
            if info.duplicate and redelivered is not None and redelivered[job.index]:
                return
            events.append((job.index, Event(exc.reason, str(exc), info.kid, info.seq, source)))

        with self._lock:
            # Per device, looked up once per batch: its record, and batch-local copies of the
            # windows of its contexts (key: kid, Master Salt, ID Context).
            self._batch_devices, self._batch_lost = {}, set()
            windows: dict[tuple[bytes, bytes, bytes | None], ReplayWindow] = {}
            replays: list[_Job] = []
            crypto: list[_Job] = []
            # 1. parse, registry, context and window pre-check (cheap, in order).
            for job in jobs:
                self._guard(job, refuse, self._precheck, job, expect_kids, windows,
                            replays, crypto)
            # 2. a replayed sequence number: a byte-identical copy of a stored frame is a
            # duplicate (safe to acknowledge again); anything else must authenticate before
            # it is called a conflict or an authentic stale frame.
            self._classify_replays(replays, crypto, refuse)
            # 3. verify and decrypt: the cost floor; spread over cores for large batches
            # (cffi releases the GIL inside libsodium).
            self._crypto(crypto)
            # 4. decode and advance the batch-local windows in frame order; duplicates inside
            # the batch are caught here, after verification, as the window rules require.
            pending: list[tuple[int, Accepted, DeviceRecord]] = []
            for job in sorted(crypto, key=lambda j: j.index):
                self._guard(job, refuse, self._decode, job, windows, pending, source)
            if dry_run:
                for i, acc, dev in pending:
                    results[i] = _reading(dev, acc)
                return results  # type: ignore[return-value]
            if self.detector is not None:
                for i, acc, dev in pending:
                    self._guard_detect(i, acc, dev, len(frames[i]), events)
            events.sort(key=lambda e: e[0])
            stored_events = [e for _, e in events]
            self._commit(pending, stored_events, results)
        if metrics.enabled() is not None:
            self._count(results, stored_events, started)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    @staticmethod
    def _count(results: list[Result], events: list[Event], started: float) -> None:
        """Prometheus counters for one batch (only when metrics are enabled)."""
        from .events import type_for_reason

        stored = 0
        for r in results:
            if isinstance(r, Reading):
                stored += 1
                metrics.device_seen(r.device, _time.time())
            else:
                metrics.frame(r.reason)
        if stored:
            metrics.frame("stored", stored)
            metrics.readings_stored(stored)
        for e in events:
            name = e.reason if "." in e.reason else type_for_reason(e.reason).name
            metrics.event(name, e.count)
        metrics.ingest_latency(_time.perf_counter() - started)

    def _guard(self, job: _Job, refuse: Callable[[_Job, TwinlinkError], None],
               step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except StorageError:
            raise  # not this frame's fault: the whole batch waits for the database
        except TwinlinkError as exc:
            refuse(job, exc)
        except Exception as exc:  # a bug or resource failure: this frame only
            refuse(job, self._internal(exc, job))

    def _guard_detect(self, index: int, acc: Accepted, dev: DeviceRecord, size: int,
                      events: list[tuple[int, Event]]) -> None:
        """Run the detectors on one accepted frame (in frame order): flags go with the reading,
        detection events into the same transaction. A detector failure costs the flags of that
        one reading (logged), never the reading."""
        assert self.detector is not None
        try:
            verdict = self.detector.observe(dev.name, acc.seq, acc.records, acc.received_at,
                                            size, dev.epoch + 1 if acc.renew else dev.epoch)
        except Exception as exc:
            log.error("detection failed for %s seq %d", dev.name, acc.seq, exc_info=exc)
            self.counts["detect_error"] += 1
            return
        self._touched.add(dev.name)
        if acc.records:
            flags: dict[str, int] = {}
            tests: dict[str, list[str]] = {}
            for rec, flag, tripped in zip(acc.records, verdict.flags, verdict.tests):
                name = rec[0]
                if _FLAG_RANK.get(flag, 0) >= _FLAG_RANK.get(flags.get(name, 0), -1):
                    flags[name] = flag
                if tripped:
                    tests.setdefault(name, []).extend(t for t in tripped
                                                      if t not in tests.get(name, ()))
            acc.flags, acc.qc_tests = flags, tests or None
        for ev in verdict.events:
            events.append((index, _detection_event(ev, acc.kid, acc.source)))

    def refuse_unread(self, errors: Sequence[TwinlinkError], source: str = "") -> None:
        """Record refusals made before a frame could reach :meth:`open_many` (a serial record
        above the maximum frame, a line of ``twinlink open`` that is no frame): counted, stored
        as security events in one transaction (aggregated like every refusal) and counted in
        the metrics. Raises :class:`~twinlink.store.StorageError` as :meth:`open_many` does."""
        if not errors:
            return
        from .events import type_for_reason

        with self._lock:
            self.store.record_events([Event(e.reason, str(e), source=source) for e in errors])
            for e in errors:
                self.counts[e.reason] += 1
                metrics.frame(e.reason)
                metrics.event(type_for_reason(e.reason).name)

    def sweep(self, now: float | None = None) -> list[Event]:
        """Liveness and held-back stream checks (``device.silent``, folded gaps): run the
        detectors' sweep, store its events, and now and then persist what they learned and the
        per-device QC views ``status`` shows (and pick up a changed QC configuration). The
        running ingests call it about once a second (:meth:`start_sweeper`); library users may
        call it themselves. Returns the events stored."""
        if self.detector is None:
            return []
        with self._lock:
            found = self.detector.sweep(self.clock() if now is None else now)
            self._touched.update(ev.device for ev in found)
            out = [_detection_event(ev, self._kid_of(ev.device), "") for ev in found]
            if out:
                self.store.record_events(out)
            clock = _time.monotonic()
            if clock - self._configured_at >= 5.0:
                self._configured_at = clock
                config = DetectConfig.from_json(self.store.qc_config())
                if config != self.detector.config:
                    self.detector.configure(config)
            if self._touched and clock - self._saved_at >= 5.0:
                self.flush_detections(learned=clock - self._saved_at >= 300.0)
            if metrics.enabled() is not None:
                metrics.devices(metrics.device_counts(self.store))
                for e in out:
                    metrics.event(e.reason, e.count)
            return out

    def flush_detections(self, learned: bool = True) -> None:
        """Persist the per-device QC views (and, with ``learned``, the baselines)."""
        if self.detector is None:
            return
        with self._lock:
            det = self.detector
            views = {name: det.state(name) for name in self._touched}
            self.store.save_detect_state(det.export_state() if learned else None, views)
            self._touched.clear()
            self._saved_at = _time.monotonic()

    def _kid_of(self, name: str) -> bytes | None:
        try:
            return self.store.device(name).kid
        except TwinlinkError:
            return None

    def start_sweeper(self, interval: float = 1.0) -> None:
        """Sweep every ``interval`` seconds on a thread (``twinlink-sweep``) until :meth:`close`.
        A failing sweep is logged and retried at the next tick."""
        if self.detector is None or self._sweeper is not None:
            return

        def run() -> None:
            while not self._stop_sweeping.wait(interval):
                try:
                    self.sweep()
                except Exception:
                    log.exception("detection sweep failed; retrying in %.1f s", interval)

        self._sweeper = threading.Thread(target=run, name="twinlink-sweep", daemon=True)
        self._sweeper.start()

    def _internal(self, exc: BaseException, job: _Job | None, where: str = "") -> InternalError:
        where = ""
        if job is not None and job.parsed is not None:
            where = f" (kid {job.parsed.kid.hex()}, seq {job.parsed.seq})"
        log.error("internal error while processing a frame%s", where, exc_info=exc)
        self.counts["internal_error_logged"] += 1
        return InternalError(f"unexpected {type(exc).__name__} while processing the frame; "
                             "see the twin's log")

    def _oversize(self, job: _Job, expect_kids: Sequence[bytes | None] | None) -> None:
        """Refuse a frame above MAX_FRAME as ``too_large`` (``frame.oversize``) unparsed. The
        kid its address (MQTT topic) claims is named only if it is a registered device, so a
        flood on made-up topics aggregates per source, not per made-up kid."""
        err = FrameTooLarge(f"frame of {len(job.frame)} bytes exceeds the maximum of "
                            f"{MAX_FRAME}")
        claimed = expect_kids[job.index] if expect_kids is not None else None
        if claimed is not None:
            try:
                job.dev = self.store.lookup(claimed).device  # not cached: no window is read
            except UnknownDevice:
                pass
            else:
                _info(err).kid = claimed
        raise err

    def _precheck(self, job: _Job, expect_kids: Sequence[bytes | None] | None,
                  windows: dict[tuple[bytes, bytes, bytes | None], ReplayWindow],
                  replays: list[_Job], crypto: list[_Job]) -> None:
        job.digest = frame_digest(job.frame) if isinstance(job.frame, (bytes, bytearray)) \
            else b""
        if isinstance(job.frame, (bytes, bytearray)) and len(job.frame) > MAX_FRAME:
            self._oversize(job, expect_kids)
        parsed = job.parsed = _frame.parse(job.frame)
        kid = parsed.kid
        if expect_kids is not None:
            claimed = expect_kids[job.index]
            if claimed is not None and claimed != kid:
                raise TopicMismatch(
                    f"frame kid {kid.hex()} does not match the address's kid {claimed.hex()}")
        dev = self._batch_devices.get(kid)
        if dev is None:
            st = self.store.lookup(kid)
            dev = self._batch_devices[kid] = st.device
            windows[(kid, dev.master_salt, dev.id_context)] = st.window
            if st.lost:
                self._batch_lost.add(kid)
        job.dev = dev
        if dev.status != "active":
            raise RevokedDevice(f"device {dev.name} is revoked")
        if parsed.kind == KIND_LITE:
            if dev.profile != PROFILE_LITE:
                raise BadSignature(f"unsigned (lite) frame from {dev.name}, which is "
                                   "registered for signed frames")
        elif _kid_context(parsed) != dev.id_context:
            # Another context than the current one: it may renew the device's context, or be
            # a retired one; either way nothing is derived or looked up before the signature
            # verifies (an unauthenticated frame must not cost a key agreement).
            job.renew = True
            crypto.append(job)
            return
        if kid in self._batch_lost:
            raise WindowLost(f"replay window of {dev.name} was lost; an operator must "
                             "re-anchor it (twinlink twin reanchor)")
        job.salt, job.ctx = dev.master_salt, self._context(dev)
        try:
            windows[(kid, dev.master_salt, dev.id_context)].check(parsed.seq)
        except ReplayError as exc:
            job.held = exc
            replays.append(job)
            return
        crypto.append(job)

    def _classify_replays(self, replays: list[_Job], crypto: list[_Job],
                          refuse: Callable[[_Job, TwinlinkError], None]) -> None:
        by_ctx: dict[tuple[bytes, int], list[_Job]] = {}
        for job in replays:
            assert job.dev is not None
            by_ctx.setdefault((job.dev.kid, job.dev.epoch), []).append(job)
        for (kid, epoch), group in by_ctx.items():
            try:
                stored = self.store.stored(kid, epoch, [j.parsed.seq for j in group])
            except StorageError:
                raise
            except Exception as exc:
                for job in group:
                    job.held = None
                    refuse(job, self._internal(exc, job))
                continue
            for job in group:
                assert job.held is not None
                if stored.get(job.parsed.seq) == job.digest:
                    err, job.held = job.held, None
                    info = _info(err)
                    info.duplicate = info.authenticated = True
                    refuse(job, err)
                else:
                    if job.parsed.seq in stored:
                        job.held = Conflict(
                            f"sequence number {job.parsed.seq} of {job.dev.name} "  # type: ignore[union-attr]
                            "was stored before with different content")
                    job.verify_only = True
                    crypto.append(job)

    def _crypto(self, jobs: list[_Job]) -> None:
        def run(chunk: list[_Job]) -> None:
            telemetry = oscore.STREAM_TELEMETRY
            for job in chunk:
                try:
                    signed = job.parsed.kind != KIND_LITE
                    if signed:
                        _frame.verify(job.parsed, job.dev.public_key, telemetry)  # type: ignore[union-attr]
                    if job.renew:
                        continue  # decrypted once its context is settled
                    if job.verify_only and signed:
                        # A stale or conflicting number in the current context, or the first
                        # frames of an announced re-key (a new counter starts at 0).
                        self._try_pending(job)
                        continue
                    ctx = job.ctx if job.ctx is not None else self._context(job.dev)  # type: ignore[arg-type]
                    try:
                        job.plaintext = _frame.decrypt(job.parsed, ctx, telemetry)
                    except DecryptionFailed:
                        if not self._try_pending(job):
                            raise
                except TwinlinkError as exc:
                    job.error = exc
                except Exception as exc:  # never lose the thread's other frames
                    job.error = self._internal(exc, job)

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

    def _try_pending(self, job: _Job) -> bool:
        """Whether a verified frame that the current context cannot open decrypts under the
        device's announced re-key salt; if so it is taken as the first frame of that context
        (the operator's ``twin rekey`` gave the device its new bundle but was interrupted
        before the store switched): its earlier verdict is dropped and it renews the context
        when committed, like a frame under a new ID Context."""
        dev = job.dev
        if dev is None or dev.pending_salt is None or job.parsed.kind == KIND_LITE:
            return False
        ctx = self._context(dev, master_salt=dev.pending_salt, id_context=_kid_context(job.parsed))
        try:
            job.plaintext = _frame.decrypt(job.parsed, ctx, oscore.STREAM_TELEMETRY)
        except TwinlinkError:
            return False
        job.salt, job.ctx, job.renew = dev.pending_salt, ctx, True
        job.held, job.verify_only = None, False
        return True

    def _settle_context(self, job: _Job) -> None:
        """A verified frame under a context that is not the device's current one: refuse a
        retired context; otherwise decrypt under the current salt (or an announced re-key's)
        and mark the frame as renewing the context when it commits."""
        dev, parsed = job.dev, job.parsed
        assert dev is not None
        kid_context = _kid_context(parsed)
        state = self.store.context_status(dev.kid, dev.master_salt, kid_context)
        if state == "retired":
            err = ContextRetired(f"frame of {dev.name} was sealed under a security context "
                                 "the twin has retired")
            _info(err).authenticated = True
            raise err
        salts = [dev.master_salt]
        if dev.pending_salt is not None:
            salts.append(dev.pending_salt)
        last: TwinlinkError | None = None
        for salt in salts:
            ctx = self._context(dev, master_salt=salt, id_context=kid_context)
            try:
                job.plaintext = _frame.decrypt(parsed, ctx, oscore.STREAM_TELEMETRY)
            except TwinlinkError as exc:
                last = exc
                continue
            job.salt, job.ctx = salt, ctx
            return
        assert last is not None
        raise last

    def _decode(self, job: _Job,
                windows: dict[tuple[bytes, bytes, bytes | None], ReplayWindow],
                pending: list[tuple[int, Accepted, DeviceRecord]], source: str) -> None:
        dev, parsed = job.dev, job.parsed
        assert dev is not None
        if job.error is not None:
            raise job.error
        if job.held is not None:
            # It authenticated, but stays refused for the reason found before (a conflict, a
            # stale or replayed number not stored).
            _info(job.held).authenticated = True
            raise job.held
        if job.renew and job.ctx is None:  # not yet decrypted under a settled context
            self._settle_context(job)
        kid_context = dev.id_context if parsed.kind == KIND_LITE else _kid_context(parsed)
        key = (dev.kid, job.salt, kid_context)
        win = windows.get(key)
        if win is None:  # a context new to the twin starts with an empty window
            win = windows[key] = ReplayWindow(dev.window_size)
        try:
            win.check(parsed.seq)
        except ReplayError as exc:  # a duplicate inside this batch
            _info(exc).authenticated = True
            raise
        try:
            payload, records, t = decode_payload(job.plaintext)
            payload_json = dumps_json(payload)
        except TwinlinkError as exc:
            _info(exc).authenticated = True
            raise
        win.update(parsed.seq)
        lite = parsed.kind == KIND_LITE
        pending.append((job.index, Accepted(
            dev.kid, parsed.seq, dev.epoch, job.plaintext, payload, records, t,
            "aead-only" if lite else "signed", received_at=self.clock(), source=source,
            digest=job.digest,
            payload_json=payload_json, master_salt=job.salt, id_context=kid_context,
            renew=job.renew), dev))

    def _commit(self, pending: list[tuple[int, Accepted, DeviceRecord]], events: list[Event],
                results: list[Result | None]) -> None:
        """Commit; if the commit fails for a reason one reading may cause, isolate it."""
        outcomes = self._commit_isolating(pending, events)
        for (i, acc, dev), err in zip(pending, outcomes):
            if err is None:
                results[i] = _reading(dev, acc)
            else:
                info = _info(err)
                info.kid, info.seq, info.device = acc.kid, acc.seq, dev.name
                info.digest, info.id_context = acc.digest, acc.id_context
                info.epoch = acc.epoch
                info.authenticated = True
                # Another writer stored this number first (a race between workers, or a
                # redelivery). A *candidate* duplicate only: whoever acknowledges it compares
                # the stored digest for this epoch first (a different frame is a conflict).
                info.duplicate = type(err) is Replay
                self.counts[err.reason] += 1
                results[i] = err

    def _commit_isolating(self, pending: list[tuple[int, Accepted, DeviceRecord]],
                          events: list[Event]) -> list[TwinlinkError | None]:
        accepted = [p[1] for p in pending]
        try:
            return self.store.commit(accepted, events)
        except StorageError:
            # The database refuses (down, disk full, permission, constraint): no reading can be
            # refused for that and acknowledged; the caller retries the whole batch.
            raise
        except Exception as exc:
            if len(pending) == 0:
                raise
            first = exc
        # The batch failed. Is the database down (then nothing can be stored: raise, the
        # caller retries the whole batch), or does one reading break the commit?
        try:
            self.store.commit([], events)
        except Exception:
            raise first from None
        if len(pending) == 1:
            # This reading alone breaks the commit: refuse it like any other internal error
            # (logged with its traceback, counted, and recorded as a security event).
            acc = pending[0][1]
            err = self._internal(first, None, f" (kid {acc.kid.hex()}, seq {acc.seq})")
            self.store.record_events([Event(err.reason, str(err), acc.kid, acc.seq, acc.source)])
            return [err]
        half = len(pending) // 2
        return (self._commit_isolating(pending[:half], [])
                + self._commit_isolating(pending[half:], []))

    # -- registry shortcuts -----------------------------------------------------------------

    def register(
        self, name: str, public_key: bytes | str | os.PathLike[str], **kw: Any
    ) -> DeviceRecord:
        """Register a device by its Ed25519 public key (raw 32 bytes or a PEM file path)."""
        pk = (public_key if isinstance(public_key, bytes)
              else keys.load_public(public_key, "ed25519"))
        return self.store.register(name, pk, **kw)

    def revoke(self, name: str, why: str = "") -> None:
        self.store.revoke(name, why)

    def close(self) -> None:
        self._stop_sweeping.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
            self._sweeper = None
        if self.detector is not None and (self._touched or self._saved_at):
            try:
                self.flush_detections()
            except TwinlinkError:
                log.exception("could not persist the detectors' state on close")
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.store.close()

    def __enter__(self) -> Twin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PLAINTEXT_KEYS = frozenset({"value", "values", "last", "previous", "median"})

#: Which of two QARTOD flags a series keeps when a pack names it twice: the worst.
_FLAG_RANK = {4: 5, 3: 4, 9: 3, 2: 2, 1: 1}


def _detection_event(ev: DetectionEvent, kid: bytes | None, source: str) -> Event:
    """A detector's event as a stored event (its catalogue type is the reason)."""
    from .events import DETECTION_NAMES

    parts = [] if ev.series is None else [f"series {ev.series}"]
    # Event details leave the twin (SIEM, syslog): no plaintext values in them, only the
    # finding's parameters (bounds, factors, counts).
    detail = {k: v for k, v in ev.detail.items() if k not in _PLAINTEXT_KEYS}
    if detail:
        parts.append(dumps_json(detail))
    return Event(DETECTION_NAMES.get(ev.type, ev.type), "; ".join(parts) or ev.type, kid, ev.seq,
                 source, at=ev.time if ev.time is not None else _time.time(),
                 count=max(1, ev.count))


def _reading(dev: DeviceRecord, acc: Accepted) -> Reading:
    return Reading(dev.name, acc.kid, acc.seq, acc.payload, acc.records, acc.time,
                   acc.provenance, acc.plaintext, acc.epoch, acc.id_context, acc.digest,
                   acc.flags)


def decode_payload(plaintext: bytes) -> tuple[Any, tuple[senml.Record, ...], float | None]:
    """(payload, SenML records, time) of an opened plaintext; raise :class:`MalformedPayload`.

    A SenML pack gives ``{name: value}``; any other CBOR item is returned as decoded. The
    plaintext must first pass :func:`twinlink.frame.check_payload` (no tags or shared
    references, integers within 64 bits, finite floats, bounded nesting): a compromised device
    must not reach the general CBOR decoder, JSON or the store with anything else.
    """
    _frame.check_payload(plaintext)
    obj = senml.loads(plaintext)
    if not senml.is_pack(obj):
        return obj, (), None
    records = tuple(senml.resolve(obj))
    payload: dict[str, Any] = {}
    for r in records:
        # Resolving adds base values and times: two numbers the validator let through may sum
        # to one the store and JSON cannot hold (beyond int64, or a float overflowing to inf).
        if not (_storable(r.value) and _storable(r.time) and _storable(r.sum)):
            raise MalformedPayload("a SenML record's value, sum or time overflows once its base "
                                   "is added")
        payload[r.name] = r.value if r.value is not None else r.sum
    return payload, records, records[0].time


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _storable(v: Any) -> bool:
    if type(v) is float:
        return math.isfinite(v)
    if type(v) is int:
        return _INT64_MIN <= v <= _INT64_MAX
    return True


#: Longest line ``twinlink open`` reads (a hex frame of MAX_FRAME bytes is 131 070 characters).
MAX_LINE = 2 * 65535 + 2


def open_lines(twin: Twin, lines: Iterable[str]) -> Iterable[Result]:
    """Open hex frames one a line (the ``twinlink open`` filter); yield each frame's result:
    the :class:`Reading`, or the :class:`~twinlink.errors.TwinlinkError` that refused it.

    A line that is not hex is refused as ``malformed``, one longer than :data:`MAX_LINE` (or
    a frame above MAX_FRAME) as ``too_large``; either is recorded and the next line processed.
    """
    for line in lines:
        text = line.strip()
        if not text:
            continue
        err: TwinlinkError
        if len(text) > MAX_LINE:
            err = FrameTooLarge(f"line of {len(text)} characters exceeds the longest frame")
        else:
            try:
                frame = bytes.fromhex(text)
            except ValueError:
                err = MalformedFrame("line is not hex")
            else:
                yield twin.open_many([frame])[0]
                continue
        twin.refuse_unread([err])
        yield err
