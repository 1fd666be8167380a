"""What the twin sends down: desired state, commands (docs/PROTOCOL.md §20) and firmware
update offers and chunks (§21).

:class:`Downlinker` asks the store which downlink frames are due
(:meth:`~twinlink.store.TwinStore.downlink_due`: new desired versions and pending commands, and
resends of those the device has not reported after ``resend_after`` seconds; marked sent with
their PIVs drawn in one transaction, so several ingest workers never send one twice nor share a
PIV) and seals them under each device's current context. Transports carry the bytes:
:mod:`twinlink.ingest.mqtt` publishes them on ``<root>/<kid hex>/c``. Not thread-safe: one
caller thread (the ingest's).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from .. import downlink as _dl
from ..twin import Twin

__all__ = ["Downlinker", "PortDownlink"]

log = logging.getLogger("twinlink.ingest")

#: Seconds between looks for due frames while an update transfer is moving, and how long after
#: its last chunk the ingest keeps looking that often.
UPDATE_POLL, UPDATE_BUSY = 0.02, 2.0


class Downlinker:
    """Seals due downlink frames for ``twin``'s devices; :meth:`due` at most every ``poll``
    seconds (it is one short transaction)."""

    def __init__(self, twin: Twin, resend_after: float = 5.0, poll: float = 0.2) -> None:
        self.twin = twin
        self.resend_after = resend_after
        self.poll = poll
        self._next = 0.0
        self._busy_until = 0.0
        #: Frames sealed (first sends and resends).
        self.sent = 0

    def due(self, kids: Iterable[bytes] | None = None) -> list[tuple[bytes, bytes]]:
        """(device kid, downlink frame) pairs to send now (only for ``kids`` if given). Never
        raises: a failing store or a
        frame that cannot be sealed is logged (the store resends it later)."""
        now = time.monotonic()
        if now < self._next:
            return []
        # While an update's chunks flow, look again soon: the window refills as the device's
        # progress reports arrive, and a 0.2 s poll would cap the throughput.
        self._next = now + (min(self.poll, UPDATE_POLL) if now < self._busy_until else self.poll)
        try:
            jobs = self.twin.store.downlink_due(self.resend_after, kids=kids)
        except Exception:
            log.exception("ingest: reading the due downlink frames failed")
            return []
        out: list[tuple[bytes, bytes]] = []
        if any(job.kind == "chunk" for job in jobs):
            self._busy_until = now + UPDATE_BUSY
        for job in jobs:
            try:
                dev = self.twin.store.device(job.kid)
                if job.kind == "desired":
                    plaintext = _dl.encode_desired(job.version, dict(job.values or {}))
                elif job.kind == "offer":
                    plaintext = _dl.encode_offer(job.data)
                elif job.kind == "chunk":
                    plaintext = _dl.encode_chunk(job.transfer, job.offset, job.data)
                else:
                    plaintext = _dl.encode_command(job.command_id, job.method, job.args,
                                                   job.deadline)
                ctx = self.twin.ack_context(job.kid, _dl.DOWNLINK_SID, dev.id_context)
                out.append((job.kid, _dl.seal_downlink(ctx, job.kid, job.piv, plaintext,
                                                       dev.id_context)))
                self.sent += 1
            except Exception:
                log.exception("ingest: sealing a %s for device %s failed", job.kind,
                              job.kid.hex())
        return out


class PortDownlink:
    """Downlink over one serial port: a thread (``twinlink-downlink``) that every ``poll``
    seconds writes the due frames of the devices heard on this port (:meth:`heard`) with
    ``send`` (the port's thread-safe write). A write that fails is logged; the store resends
    it after ``resend_after`` seconds."""

    def __init__(self, twin: Twin, send: Callable[[bytes], None], *, resend_after: float = 5.0,
                 poll: float = 0.2) -> None:
        self.downlinker = Downlinker(twin, resend_after, poll=0.0)
        self.poll = poll
        self._send = send
        self._kids: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twinlink-downlink", daemon=True)
        self._thread.start()

    def heard(self, kids: Iterable[bytes]) -> None:
        """Devices whose frames arrived on this port (they can be reached on it)."""
        self._kids.update(kids)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            if not self._kids:
                continue
            for kid, frame in self.downlinker.due(set(self._kids)):
                try:
                    self._send(frame)
                except Exception as exc:
                    log.warning("serial ingest: writing a downlink frame to %s failed: %s",
                                kid.hex(), exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
