"""The twin store interface: what the twin, the CLI and the tools need from a database.

:class:`TwinStore` is the seam a second implementation fills (SQLite today, PostgreSQL next):
its docstrings state the contract — what is atomic, what each method raises. The records it
returns are plain data classes and typed dicts, JSON-friendly where the CLI prints them.

Invariants every implementation keeps:

- A device's replay window changes *only* inside :meth:`TwinStore.commit`, in the same
  transaction that stores the readings, after the window is re-checked under the write lock,
  so two ingest processes can never both accept one sequence number.
- Every operator action (register, revoke, rekey, reanchor, mark lost) commits together with
  its audit event, or not at all.
- Expected refusals are :class:`~twinlink.errors.TwinlinkError` subclasses; a database that
  cannot be read or written raises :class:`StorageError`.
"""

from __future__ import annotations

import time as _time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, TypedDict

from .. import keys as _keys
from ..errors import TransportError, TwinlinkError, UnknownDevice
from ..replay import DEFAULT_WINDOW, ReplayWindow

PROFILE_SIGNED = "twinlink/1"
PROFILE_LITE = "lite"

#: Schema version this program reads and writes (SQLite ``PRAGMA user_version``).
SCHEMA_VERSION = 6

#: Repeats of one refusal (same device, or same source for frames of no known device, and
#: same type) within this many seconds are aggregated into one event row with a count.
AGGREGATION_WINDOW = 10.0


class StorageError(TwinlinkError):
    """The twin database cannot be opened, read or written (disk full, permissions, locked,
    or a schema this program does not know). Nothing of the failed operation was stored."""

    reason = "storage_failure"


class StoreUnavailable(StorageError, TransportError):
    """The database server cannot be reached or refuses us (down, wrong address, wrong
    credentials). The CLI reports it as "link unavailable" (exit 5); an ingest waits it out."""


class ClientIdInUse(TwinlinkError):
    """Another live ingest process holds this MQTT client id on this database (two processes
    with one client id would take the broker session from each other in turn)."""

    reason = "client_id_in_use"


class RegistryError(TwinlinkError, ValueError):
    """An operator action conflicts with the registry (duplicate name or kid, reused context,
    an invalid floor)."""

    reason = "registry"


class TwinKeyMismatch(TwinlinkError, ValueError):
    """The twin key given to an ingest is not the key this database was created for."""

    reason = "twin_key_mismatch"


@dataclass(frozen=True)
class DeviceRecord:
    """A registered device as the registry holds it (public data only).

    ``master_salt``/``id_context``/``epoch`` describe the device's *current* security context;
    ``epoch`` counts its contexts (0 for the first). ``pending_salt`` is a Master Salt an
    operator re-key has announced but no frame has used yet (see :meth:`TwinStore.rekey`).
    """

    name: str
    kid: bytes
    public_key: bytes = field(repr=False)
    profile: str = PROFILE_SIGNED
    status: str = "active"
    master_salt: bytes = b""
    id_context: bytes | None = None
    epoch: int = 0
    window_size: int = DEFAULT_WINDOW
    registered_at: float = 0.0
    pending_salt: bytes | None = None

    @property
    def fingerprint(self) -> str:
        return _keys.fingerprint(self.public_key)


@dataclass
class WindowState:
    """A device and the replay window of its current context, as read (not locked)."""

    device: DeviceRecord
    window: ReplayWindow
    lost: bool


@dataclass
class Accepted:
    """A verified, decrypted, decoded frame ready to be committed.

    ``master_salt``/``id_context`` name the context the frame was sealed under; when they differ
    from the device's current context, committing it *renews* the context (the current one is
    retired, the new one starts with a fresh window) — the twin asks for that only for a frame
    whose signature verified under a context it has never seen.
    """

    kid: bytes
    seq: int
    epoch: int
    plaintext: bytes
    payload: Any
    records: Sequence[Any]  # (name, value, unit, time, ...) tuples, e.g. senml.Record
    time: float | None
    provenance: str
    received_at: float = field(default_factory=_time.time)
    source: str = ""
    digest: bytes = b""
    payload_json: str = ""
    master_salt: bytes | None = None
    id_context: bytes | None = None
    renew: bool = False
    #: QARTOD flags per series name and the tests that tripped (twinlink.detect), if checked.
    flags: dict[str, int] | None = None
    qc_tests: dict[str, list[str]] | None = None


@dataclass
class Event:
    """A security event: a refused frame, a detection or an operator action.

    ``reason`` is the legacy short name (``replay``) or, for types without one, the dotted
    catalogue type (:mod:`twinlink.events`); the store fills type, outcome, severity and rule
    from the catalogue. ``source`` says where the frame came from (``mqtt:<topic>``,
    ``serial:<port>``, ``stdin``); its prefix is the transport. ``count`` > 1 records repeats
    already aggregated by the caller.
    """

    reason: str
    detail: str
    kid: bytes | None = None
    seq: int | None = None
    source: str = ""
    at: float = field(default_factory=_time.time)
    count: int = 1


@dataclass(frozen=True)
class Stored:
    """What the store holds for one (kid, epoch, seq): the frame digest, to tell a duplicate
    (same frame again) from a conflict (another frame under the same sequence number)."""

    seq: int
    digest: bytes


class ReadingRow(TypedDict):
    """One stored reading (``readings``): ``payload`` is the decoded value as JSON data."""

    id: int
    device: str
    seq: int
    epoch: int
    received_at: float
    time: Optional[float]
    provenance: str
    source: str
    payload: Any
    flags: Optional[dict[str, int]]
    qc_tests: Optional[dict[str, list[str]]]


class EventRow(TypedDict):
    """One security event (``events``), in the catalogue's record shape (docs/EVENTS.md):
    ``at`` is kept as the legacy name of ``time`` (= ``last_time``). An aggregated row may
    still grow until ``final_after`` (epoch seconds, None for rows final from the start)."""

    id: int
    at: float
    time: float
    first_time: float
    last_time: float
    count: int
    type: str
    outcome: str
    severity: int
    rule: str
    transport: Optional[str]
    kid: Optional[str]
    device: Optional[str]
    seq: Optional[int]
    reason: str
    detail: str
    source: str
    final_after: Optional[float]


class Retention(TypedDict):
    """How long readings and security events are kept, in days (None: forever)."""

    readings_days: Optional[float]
    events_days: Optional[float]


class SeriesState(TypedDict):
    value: Any
    unit: Optional[str]
    time: Optional[float]
    seq: int
    epoch: int


class DeviceStatus(TypedDict):
    """Registry entry, counters and the latest value per series of one device (``status``)."""

    name: str
    kid: str
    profile: str
    status: str
    fingerprint: str
    registered_at: float
    last_seen: Optional[float]
    last_seq: Optional[int]
    accepted: int
    refused: int
    window_top: int
    window_lost: bool
    epoch: int
    id_context: Optional[str]
    state: dict[str, SeriesState]
    qc: dict[str, Any]


#: Reasons of audit events (operator actions and context changes), as opposed to refusals.
AUDIT_REASONS = frozenset({"registered", "revoked_by_operator", "reanchored",
                           "window_marked_lost", "rekey_announced", "rekeyed",
                           "context_renewed", "context_started", "qc_configured"})


def context_key(master_salt: bytes, id_context: bytes | None) -> str:
    """A stable text key of a security context (Master Salt, ID Context) of one device."""
    return master_salt.hex() + "|" + ("-" if id_context is None else id_context.hex())


class TwinStore(ABC):
    """What the twin needs from a store.

    Every method may be called from several threads (implementations serialise internally)
    and, for shared databases, from several processes. Methods raise :class:`StorageError`
    when the database itself fails; the other exceptions are listed per method.
    """

    # -- registry -----------------------------------------------------------------------------

    @abstractmethod
    def register(
        self,
        name: str,
        public_key: bytes,
        kid: bytes | None = None,
        profile: str = PROFILE_SIGNED,
        master_salt: bytes = b"",
        id_context: bytes | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> DeviceRecord:
        """Register a device, atomically with its ``registered`` audit event.

        ``kid`` defaults to the next free one. Raises :class:`~twinlink.naming.InvalidName`,
        :class:`~twinlink.keys.InvalidPublicKey` (not a valid Ed25519 point, or a small-order
        one: such a key must never reach the ingest), :class:`RegistryError` (name or kid
        taken), ValueError for a bad profile, kid length or window size.
        """

    @abstractmethod
    def next_kid(self) -> bytes:
        """The smallest kid (1..6 bytes, big-endian integer) not yet registered."""

    @abstractmethod
    def device(self, name_or_kid: str | bytes) -> DeviceRecord:
        """The device by name (str) or kid (bytes); raises :class:`UnknownDevice`."""

    @abstractmethod
    def devices(self) -> list[DeviceRecord]:
        """Every registered device, ordered by name."""

    @abstractmethod
    def revoke(self, name: str, why: str = "") -> None:
        """Refuse the device's frames from now on; atomic with its audit event.
        Raises :class:`UnknownDevice`."""

    @abstractmethod
    def reanchor(self, name: str, floor: int, force: bool = False, why: str = "") -> int:
        """Accept only sequence numbers >= ``floor`` from now on (after window state was lost).

        ``floor`` must lie in 0..2**40-1 and, unless ``force``, above every sequence number the
        current context has accepted (a lower floor would re-open numbers already used).
        Atomic with its audit event (``why``, e.g. who asked, is appended to its detail);
        returns the previous window top. Raises
        :class:`RegistryError` for a refused floor, :class:`UnknownDevice`.
        """

    @abstractmethod
    def mark_window_lost(self, name: str) -> None:
        """Refuse the device until re-anchored; atomic with its audit event."""

    @abstractmethod
    def announce_rekey(self, name: str, master_salt: bytes) -> DeviceRecord:
        """First step of an operator re-key: record ``master_salt`` as pending.

        While pending, a frame that verifies under the new salt completes the re-key by itself
        (so a crash between this step, rewriting the bundle and :meth:`rekey` never strands the
        device). Raises :class:`RegistryError` if that salt was used before by this device.
        """

    @abstractmethod
    def rekey(self, name: str, master_salt: bytes, id_context: bytes | None, *,
              announced: bool = False) -> DeviceRecord:
        """Switch the device to a new security context; history stays, the window restarts.

        Atomic: the old context is retired, the new one installed with a fresh window, and the
        audit event recorded, together. Raises :class:`RegistryError` when the (salt, ID
        Context) pair was used before (its old frames would be accepted again).
        ``announced=True`` completes :meth:`announce_rekey`: if the device already switched to
        ``master_salt`` by itself (its first frame under the announced salt renewed the
        context, under the ID Context it chose), nothing changes — retiring that context now
        would strand the device.
        """

    @abstractmethod
    def context_status(self, kid: bytes, master_salt: bytes, id_context: bytes | None) -> str:
        """``"current"``, ``"pending"`` (announced re-key salt), ``"retired"`` or ``"unknown"``
        for one context of a device (``"unknown"`` also for an unknown kid)."""

    # -- twin key binding ---------------------------------------------------------------------

    @abstractmethod
    def bind_twin_key(self, fingerprint: str) -> None:
        """Record the twin public key's fingerprint on first use; afterwards require it.

        Raises :class:`TwinKeyMismatch` (one line, with the fingerprint it expected) when the
        database was created for another twin key.
        """

    @abstractmethod
    def twin_fingerprint(self) -> str | None:
        """The twin key fingerprint this database is bound to, if any."""

    # -- deployment settings ------------------------------------------------------------------

    @abstractmethod
    def topic_root(self) -> str | None:
        """The deployment's MQTT topic root (docs/MQTT.md), None if none was recorded (then
        MQTT commands use ``twinlink``)."""

    @abstractmethod
    def set_topic_root(self, root: str) -> None:
        """Record the deployment's MQTT topic root; a no-op if that root is recorded already.

        Raises ValueError for an invalid root (:func:`twinlink.transport.topics.check_topic_root`)
        and :class:`RegistryError` if another root is recorded: every provisioned bundle names
        the recorded one, so changing it would strand them.
        """

    # -- ingest -------------------------------------------------------------------------------

    @abstractmethod
    def lookup(self, kid: bytes) -> WindowState:
        """The device and its current window, read without locking (the commit re-checks).
        Raises :class:`UnknownDevice`."""

    @abstractmethod
    def commit(
        self, accepted: Sequence[Accepted], events: Sequence[Event]
    ) -> list[TwinlinkError | None]:
        """Atomically: re-check each window, store accepted readings, advance windows, renew
        contexts where asked, update twin state and counters, record events.

        Returns one entry per ``accepted`` item: None if stored, else the refusal (a replay that
        raced in from another ingest, a revocation or re-key that landed meanwhile); refusals
        are recorded as events in the same transaction. A reading whose (kid, epoch, seq) is
        already stored is refused as :class:`~twinlink.errors.Replay`, never an integrity
        error. Each stored item's ``epoch`` is set to the epoch it was stored under (one more
        than before when it renewed the context). Raises :class:`StorageError` if the
        transaction cannot commit: then nothing of it was stored.
        """

    @abstractmethod
    def record_events(self, events: Iterable[Event], *, aggregate: bool = True) -> None:
        """Store events on their own (refusals outside a commit); atomic. ``aggregate=False``
        stores every event as its own row (an import, a test fixture); the ingest path always
        aggregates floods of one refusal (see :data:`AGGREGATION_WINDOW`)."""

    @abstractmethod
    def stored(self, kid: bytes, epoch: int, seqs: Iterable[int]) -> dict[int, bytes]:
        """For the given seqs of one context (kid, epoch): seq -> digest of the stored frame,
        for those stored. Used to re-acknowledge duplicates and detect conflicts."""

    def stored_seqs(self, kid: bytes, seqs: Iterable[int]) -> set[int]:
        """Which of ``seqs`` are stored for ``kid`` in its current context (empty for an
        unknown kid)."""
        try:
            epoch = self.device(kid).epoch
        except UnknownDevice:
            return set()
        return set(self.stored(kid, epoch, seqs))

    @abstractmethod
    def claim_ingest(self, client_id: str) -> None:
        """Claim ``client_id`` for this process's ingest until :meth:`close` (or the process
        ends). Raises :class:`ClientIdInUse` while another live process holds it."""

    # -- retention ----------------------------------------------------------------------------

    @abstractmethod
    def set_retention(self, readings_days: float | None, events_days: float | None) -> None:
        """Keep readings (by ``received_at``) and security events (by their last time) this
        many days; None keeps them forever. Stored in the database, so every process sharing
        it applies the same limits. Raises ValueError for a limit that is not > 0."""

    @abstractmethod
    def retention(self) -> Retention:
        """The limits :meth:`set_retention` stored (both None on a new database)."""

    @abstractmethod
    def prune(self, now: float | None = None) -> tuple[int, int]:
        """Delete readings and events older than the retention limits; returns how many of
        each. Runs in short transactions so that an ingest keeps committing meanwhile. Audit
        events (:data:`AUDIT_REASONS`), the registry, the windows and the latest values
        (``status``) are never pruned. An ingest calls it periodically."""

    # -- detection (twinlink.detect) ---------------------------------------------------------

    @abstractmethod
    def qc_config(self) -> dict[str, Any]:
        """The detection configuration document (DetectConfig JSON; ``{}``: the defaults)."""

    @abstractmethod
    def set_qc_config(self, config: dict[str, Any], why: str = "",
                      device: str | None = None) -> None:
        """Replace the detection configuration, atomically with its audit event. The caller
        validates it (``DetectConfig.from_json``); ingests pick it up on their next sweep.
        With ``device`` the audit event names that device; :class:`UnknownDevice` (and nothing
        stored) if it is not registered."""

    @abstractmethod
    def save_detect_state(self, learned: dict[str, Any] | None,
                          views: dict[str, dict[str, Any]]) -> None:
        """Persist what the detectors learned (``learned``, for a restart; None keeps the
        stored one) and per-device views (QC state and open detections, shown by ``status``)."""

    @abstractmethod
    def detect_state(self) -> dict[str, Any] | None:
        """What :meth:`save_detect_state` stored as ``learned`` (None if nothing)."""

    # -- downlink: desired state and commands (twinlink.store.downlink) -------------------------

    def set_desired(self, name: str, values: Mapping[str, Any], now: float | None = None) -> int:
        """Record a new desired-state version of device ``name``; return the version."""
        raise NotImplementedError

    def queue_command(self, name: str, method: str, args: Any, deadline: int,
                      now: float | None = None) -> int:
        """Queue a command for device ``name``; return its id."""
        raise NotImplementedError

    def command(self, command_id: int) -> dict[str, Any]:
        """One command's record and status; KeyError if there is none."""
        raise NotImplementedError

    def desired_view(self, name: str) -> list[dict[str, Any]]:
        """Desired vs reported state per key of device ``name``."""
        raise NotImplementedError

    def downlink_due(self, resend_after: float, now: float | None = None,
                     limit: int = 256, kids: Iterable[bytes] | None = None) -> list[Any]:
        """Downlink frames due now (marked sent, PIVs drawn, in one transaction)."""
        raise NotImplementedError

    def offer_update(self, name: str, manifest: bytes, image: bytes,
                     now: float | None = None) -> dict[str, Any]:
        """Offer device ``name`` a firmware update (docs/PROTOCOL.md §21); return its view."""
        raise NotImplementedError

    def update_view(self, name: str) -> dict[str, Any] | None:
        """Device ``name``'s latest update transfer, or None."""
        raise NotImplementedError

    # -- queries ------------------------------------------------------------------------------

    @abstractmethod
    def status(self, name: str) -> DeviceStatus:
        """Registry entry, counters and latest values of one device; :class:`UnknownDevice`."""

    @abstractmethod
    def readings(
        self,
        name: str | None = None,
        limit: int = 100,
        *,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
    ) -> list[ReadingRow]:
        """Stored readings, oldest first: the newest ``limit`` of one device (or all) received
        in [since, until), or with ``after_id`` the first ``limit`` with a larger id (paging
        forward, e.g. to follow a live store)."""

    @abstractmethod
    def events(
        self, name: str | None = None, limit: int = 100, *, after_id: int | None = None,
        audit: bool = True,
    ) -> list[EventRow]:
        """Security events, oldest first: the newest ``limit`` (of one device or all), or with
        ``after_id`` the first ``limit`` with a larger id. ``audit=False`` leaves out the audit
        events (:data:`AUDIT_REASONS`: operator actions, context changes)."""

    @abstractmethod
    def count_readings(self, name: str | None = None) -> int:
        """How many readings are stored (of one device, or all)."""

    @abstractmethod
    def count_events(self, name: str | None = None) -> int:
        """How many security events are stored (of one device, or all)."""

    @abstractmethod
    def close(self) -> None:
        """Release the database; further calls raise :class:`StorageError`."""

    def __enter__(self) -> TwinStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
