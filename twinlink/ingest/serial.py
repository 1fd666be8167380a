"""The twin's serial ingest: frames from a serial port, opened and stored by the twin.

``SerialReceiver(url, twin, on_result=...)`` runs a :class:`~twinlink.transport.serial.SerialLink`
on the port (path or pyserial URL) and opens the frames of each read as one batch with
:meth:`Twin.open_many`: one database transaction per read, not per frame.

With ``acks=True`` the receiver writes the twin's end-to-end acks (:mod:`twinlink.ack`: stored,
and refused for good) back on the same port after each batch commits, for a device that keeps
its frames in a durable outbox until then (:class:`twinlink.serial_link.SerialAckLink`, ``send
--serial PORT --acks``). Off by default: a sender that never reads its port (a plain firmware)
would let the writes back fill the line and stall this reader for ``write_timeout`` each.

Threads: everything runs on the link's I/O thread (``twinlink-serial <url>``), ``on_result``
and the ack writes included, in wire order (see :mod:`twinlink.transport.serial`). If the twin
raises for a whole batch (its database failed), that read's frames are logged as not delivered
and reading goes on; serial has no redelivery, so a sender that must not lose them keeps them
(the durable outbox of :class:`~twinlink.serial_link.SerialAckLink` or MQTT's does).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

from ..errors import FrameTooLarge, LineError, RecordTooLong, TwinlinkError
from ..transport.serial import Item, SerialLink
from .acks import Acknowledger
from .downlink import PortDownlink

if TYPE_CHECKING:  # pragma: no cover
    from ..twin import Reading, Twin

__all__ = ["SERIAL_ACK_ENTRIES", "Result", "SerialReceiver"]

log = logging.getLogger("twinlink.serial")

#: Entries per ack written on a serial line: the largest such ack (64 refusals with long
#: reasons, about 3.4 KB) stays below the default maximum frame of 4096 bytes.
SERIAL_ACK_ENTRIES = 64

Result = Union["Reading", TwinlinkError, LineError]


class SerialReceiver:
    """The twin's serial ingest (see the module docstring); ``link_kw`` go to the link.

    ``on_result`` gets, on the link's I/O thread and in wire order, a :class:`Reading` for each
    stored frame, the :class:`TwinlinkError` that refused a frame (a security rejection), and a
    :class:`LineError` for each damaged record (line noise, never shown to the twin), and
    :class:`FrameTooLarge` for a record longer than the maximum frame (a ``frame.oversize``
    security event, counted as ``too_large``).
    ``counts`` tallies them by reason (``"ok"``, ``"line"``, ``"replay"``, …). ``acks``: write
    end-to-end acks back on the port (see the module docstring); ``acks_sent`` counts them.
    """

    def __init__(self, url: str, twin: Twin, *, on_result: Callable[[Result], None] | None = None,
                 source: str | None = None, acks: bool = False, **link_kw: Any) -> None:
        self.twin = twin
        self.url = url
        self.on_result = on_result
        self.source = source if source is not None else f"serial:{url}"
        self.counts: collections.Counter[str] = collections.Counter()
        self.acknowledger = Acknowledger(twin, SERIAL_ACK_ENTRIES) if acks else None
        self.acks_sent = 0
        self._cond = threading.Condition()
        self.link = SerialLink(url, on_batch=self._deliver, **link_kw)
        #: With acks, desired state and commands go down this port too (PROTOCOL.md §20).
        self.downlink = PortDownlink(twin, self.link.send) if acks else None

    def __repr__(self) -> str:
        return f"SerialReceiver({self.url!r}, {self.total} results)"

    def _deliver(self, items: Sequence[Item]) -> None:
        oversize = self._refuse_oversize(items)
        frames = [it for it in items if isinstance(it, bytes)]
        results = self.twin.open_many(frames, source=self.source) if frames else []
        if self.acknowledger is not None and results:
            self._write_acks(results)
        if self.downlink is not None:
            self.downlink.heard(r.kid for r in results if getattr(r, "kid", None) and not
                                isinstance(r, TwinlinkError))
        opened = iter(results)
        for it in items:
            res: Result = (oversize[id(it)] if id(it) in oversize
                           else it if isinstance(it, LineError) else next(opened))
            with self._cond:
                self.counts[_reason(res)] += 1
                self._cond.notify_all()
            if self.on_result is not None:
                try:
                    self.on_result(res)
                except Exception:  # a callback bug must not kill the port's only reader
                    log.exception("serial ingest %s: on_result failed", self.url)

    def _refuse_oversize(self, items: Sequence[Item]) -> dict[int, FrameTooLarge]:
        """Refuse the records longer than the link's maximum frame as ``too_large`` security
        events (``frame.oversize``: nothing sane sends them, so they are not line noise);
        recorded in one transaction (aggregated by the store like every refusal). Returns the
        refusal per item (by ``id``). Raises :class:`~twinlink.store.StorageError` as
        :meth:`Twin.open_many` does."""
        long = [it for it in items if isinstance(it, RecordTooLong)]
        if not long:
            return {}
        out = {id(it): FrameTooLarge(str(it)) for it in long}
        self.twin.refuse_unread(list(out.values()), self.source)
        return out

    def _write_acks(self, results: Sequence[Result]) -> None:
        assert self.acknowledger is not None
        for kid, data in self.acknowledger.answer(results).acks:
            try:
                self.link.send(data)
            except TwinlinkError as exc:  # the device resends; its duplicate is acked then
                log.warning("serial ingest %s: writing an ack to %s failed: %s", self.url,
                            kid.hex(), exc)
                return
            self.acks_sent += 1

    @property
    def total(self) -> int:
        """Results delivered so far (readings, refusals and line errors)."""
        with self._cond:
            return sum(self.counts.values())

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until ``n`` results (of any kind) have been delivered; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(self.counts.values()) >= n, timeout)

    def close(self) -> None:
        if self.downlink is not None:
            self.downlink.close()
        self.link.close()

    def __enter__(self) -> SerialReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(res: Result) -> str:
    """``"ok"`` for a stored reading, else the refusal reason (``"line"`` for line damage)."""
    return res.reason if isinstance(res, TwinlinkError) else "ok"
