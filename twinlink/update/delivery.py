"""The device side of update delivery over the downlink (docs/PROTOCOL.md §21).

The twin offers an update (``{1: "update", 2: manifest}``) and then sends the image in chunks
(``{1: "chunk", 2: transfer, 3: offset, 4: data}``) a window ahead of what the device last
reported. :class:`UpdateDelivery` is the device's handler for both:

- an **offer** is checked with :func:`~twinlink.update.check_manifest` (signature by a trusted
  update key, vendor, class, size, seq against the install record) *before* anything is
  written: a forged, rolled-back or foreign manifest is reported ``rejected <reason>`` and
  changes nothing on the device — not the record, not a staging file already in progress;
- a **chunk** goes into a resumable :class:`~twinlink.update.ImageStaging` through its
  streaming verifier: a duplicate is ignored, a chunk past the staged offset (reordered, or
  after a lost one) is refused and reported ``gap`` so the twin resends from the staged offset,
  a chunk past the signed size is refused before it touches the disk. A corrupted chunk never
  gets here: the downlink's AEAD refuses it (``downlink.forged``);
- when the staged size reaches the manifest's, the image is checked (SHA-256) and handed to
  :func:`~twinlink.update.verify_and_record`, which persists the new seq *before* it runs the
  installer; the outcome is reported ``applied`` or ``rejected <reason>``.

The staging file (``<state>/<name>-<kid hex>.staging``, its manifest beside it) survives a
process restart: :meth:`UpdateDelivery.resume` re-hashes what is staged and reports ``resume
<offset>``, and the twin continues from there instead of from 0. Reports travel as
``tl:update`` telemetry (:func:`twinlink.downlink.update_report`).

Not thread-safe: :class:`~twinlink.downlink.DownlinkReceiver` calls it under its state lock, on
the device's downlink thread; the installer runs there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..downlink import UPDATE_CHUNK, Chunk, Offer, transfer_id, update_report
from ..errors import TwinlinkError
from ..keys import Bundle
from .errors import ChunkGap, ImageSizeMismatch
from .image import ImageStaging, discard_staged, staged_manifest
from .manifest import Manifest
from .record import RecordStore
from .trust import trust_from_bundle
from .verify import Installer, UpdateResult, check_manifest, verify_and_record

__all__ = ["REPORT_EVERY", "UpdateDelivery", "staging_path"]

log = logging.getLogger("twinlink.update")

#: The device reports its staged offset after every this many bytes (and at a gap, a resume and
#: the end): the twin keeps a window of chunks in flight ahead of the last report.
REPORT_EVERY = 2 * UPDATE_CHUNK


def staging_path(bundle: Bundle, state_dir: str | os.PathLike[str]) -> Path:
    """Where a device stages an arriving image: ``<state_dir>/<name>-<kid hex>.staging`` (its
    manifest in ``<that>.manifest``)."""
    return Path(state_dir) / f"{bundle.name}-{bundle.kid.hex()}.staging"


class UpdateDelivery:
    """Handles update offers and chunks for one device (see the module docstring).

    ``installer(image_path, manifest)`` installs a verified image (it must copy or move the
    file before it returns: the staging file is removed afterwards); None records the update
    as accepted and leaves installing to the application. ``on_event(type, detail)`` gets
    ``update.offered``, ``update.applied`` and ``update.rejected`` as they happen on the device.
    """

    def __init__(self, bundle: Bundle, state_dir: str | os.PathLike[str],
                 installer: Installer | None = None,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.bundle = bundle
        self.state_dir = Path(state_dir)
        self.installer = installer
        self.on_event = on_event
        self.path = staging_path(bundle, state_dir)
        self._staging: ImageStaging | None = None
        self._transfer = b""
        self._reported = -1  # offset of the last progress report
        self._gap_at = -1  # staged offset a gap was last reported at (once per offset)
        self._unknown: set[bytes] = set()
        #: The last outcome: an :class:`~twinlink.update.UpdateResult` or the refusal's reason.
        self.result: UpdateResult | str | None = None
        #: Counts: chunks staged, duplicates ignored, gaps refused, offers, applied, rejected.
        self.counts: dict[str, int] = {}

    # -- events and counts ----------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _event(self, kind: str, detail: str) -> None:
        self._count(kind)
        if self.on_event is not None:
            try:
                self.on_event(kind, detail)
            except Exception:  # a callback must not stop the delivery
                log.exception("update: the on_event callback failed")

    def _reject(self, transfer: bytes, reason: str, detail: str) -> dict[str, str]:
        self.result = reason
        self._event("update.rejected", f"{reason}: {detail}")
        return update_report(transfer, "rejected", 0, reason)

    # -- the staged transfer --------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Bytes staged of the current transfer (0 if none)."""
        return self._staging.offset if self._staging is not None else 0

    def _check(self, raw: bytes) -> tuple[Manifest, bool, bool]:
        """(manifest, same seq, already installed) or an UpdateRefused / TwinlinkError."""
        trust = trust_from_bundle(self.bundle)
        record = RecordStore(self.state_dir, self.bundle).load()
        m, same = check_manifest(trust, record, raw)
        return m, same, bool(same and record is not None and record.installed)

    def _open(self, m: Manifest) -> None:
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._staging = ImageStaging(self.path, m)  # resumes if it staged this manifest
        self._transfer = transfer_id(m.raw)
        self._reported = self._gap_at = -1

    def resume(self) -> dict[str, str]:
        """At start: reopen a transfer an earlier run left staged (re-checking its manifest,
        re-hashing its bytes) and return its ``resume <offset>`` report; finish it at once if
        it is complete. Returns {} if nothing is staged; a staged manifest no longer acceptable
        (another update was installed meanwhile) is discarded and reported rejected."""
        raw = staged_manifest(self.path)
        if raw is None or not self.path.exists():
            return {}
        tid = transfer_id(raw)
        try:
            m, _same, installed = self._check(raw)
            if installed:  # a crash after the install, before the staging file went
                discard_staged(self.path)
                return update_report(tid, "applied", m.size)
            self._open(m)
        except TwinlinkError as exc:
            discard_staged(self.path)
            return self._reject(tid, getattr(exc, "reason", "update_refused"), str(exc))
        assert self._staging is not None
        log.info("update: resuming transfer %s at %d of %d bytes", tid.hex(),
                 self._staging.offset, m.size)
        if self._staging.offset >= m.size:
            return self._install()
        self._reported = self._staging.offset
        return update_report(tid, "resume", self._staging.offset)

    def __call__(self, msg: Offer | Chunk) -> dict[str, str]:
        """Handle one authentic offer or chunk; return the reports to send (maybe none)."""
        if isinstance(msg, Offer):
            return self.offer(msg.manifest)
        return self.chunk(msg.transfer, msg.offset, msg.data)

    def offer(self, raw: bytes) -> dict[str, str]:
        """Check an offered manifest; on success stage (or keep staging) its image and report
        the staged offset. A refusal changes nothing on the device."""
        tid = transfer_id(raw)
        self._unknown.discard(tid)
        if tid == self._transfer and self._staging is not None:  # the twin offered again
            self._reported = self._staging.offset
            return update_report(tid, "staging", self._staging.offset)
        try:
            m, _same, installed = self._check(raw)
        except TwinlinkError as exc:  # forged, rolled back, foreign, or no trust: nothing done
            return self._reject(tid, getattr(exc, "reason", "update_refused"), str(exc))
        if installed:
            self._event("update.applied", f"seq {m.seq} is installed already")
            return update_report(tid, "applied", m.size)
        self._open(m)
        assert self._staging is not None
        self._event("update.offered", f"seq {m.seq}, {m.size} bytes; "
                                      f"{self._staging.offset} staged")
        if self._staging.offset >= m.size:
            return self._install()
        self._reported = self._staging.offset
        return update_report(tid, "staging", self._staging.offset)

    def chunk(self, tid: bytes, offset: int, data: bytes) -> dict[str, str]:
        """Stage one chunk of transfer ``tid``: a duplicate is ignored, a gap refused (and
        reported once), the last one triggers verification and install."""
        if tid != self._transfer or self._staging is None:
            raw = staged_manifest(self.path)
            if raw is None or transfer_id(raw) != tid:
                if tid in self._unknown:
                    return {}
                self._unknown.add(tid)  # ask for the offer once; the twin sends it again
                return update_report(tid, "resume", 0, "unknown_transfer")
            reports = self.resume()  # a restart lost the in-memory transfer: reopen it
            if self._staging is None or self._transfer != tid:
                return reports
        st = self._staging
        try:
            new = st.write(offset, data)
        except ChunkGap:
            self._count("gaps")
            if self._gap_at == st.offset:  # the rest of the window behind one loss: quiet
                return {}
            self._gap_at = self._reported = st.offset
            return update_report(tid, "gap", st.offset)
        except ImageSizeMismatch as exc:  # the twin sent bytes past the signed size
            self._drop()
            return self._reject(tid, exc.reason, str(exc))
        if not new:
            self._count("duplicates")
            return {}
        self._count("chunks")
        if st.offset >= st.manifest.size:
            return self._install()
        if st.offset - max(self._reported, 0) >= REPORT_EVERY:
            self._reported = st.offset
            return update_report(tid, "staging", st.offset)
        return {}

    def _drop(self) -> None:
        if self._staging is not None:
            self._staging.discard()
        self._staging, self._transfer, self._reported, self._gap_at = None, b"", -1, -1

    def _install(self) -> dict[str, str]:
        st = self._staging
        assert st is not None
        m, tid = st.manifest, self._transfer
        try:
            path = st.finish()
            st.close()
            result = verify_and_record(self.bundle, self.state_dir, m.raw, path,
                                       self.installer)
        except (TwinlinkError, OSError) as exc:
            self._drop()  # a wrong image is not resumed: the twin would have to offer again
            return self._reject(tid, getattr(exc, "reason", "io_error"), str(exc))
        self._drop()
        self.result = result
        self._event("update.applied", f"seq {m.seq} {result.status}")
        return update_report(tid, "applied", m.size)
