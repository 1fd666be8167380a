"""The twin's serial ingest: frames from a serial port, opened and stored by the twin.

``SerialReceiver(url, twin, on_result=...)`` runs a :class:`~twinlink.transport.serial.SerialLink`
on the port (path or pyserial URL) and opens the frames of each read as one batch with
:meth:`Twin.open_many`: one database transaction per read, not per frame.

Threads: everything runs on the link's I/O thread (``twinlink-serial <url>``), ``on_result``
included, in wire order (see :mod:`twinlink.transport.serial`). If the twin raises for a whole
batch (its database failed), that read's frames are logged as not delivered and reading goes on;
serial has no redelivery, so a sender that must not lose them keeps them (MQTT's outbox does).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

from ..errors import LineError, TwinlinkError
from ..transport.serial import Item, SerialLink

if TYPE_CHECKING:  # pragma: no cover
    from ..twin import Reading, Twin

__all__ = ["Result", "SerialReceiver"]

log = logging.getLogger("twinlink.serial")

Result = Union["Reading", TwinlinkError, LineError]


class SerialReceiver:
    """The twin's serial ingest (see the module docstring); ``link_kw`` go to the link.

    ``on_result`` gets, on the link's I/O thread and in wire order, a :class:`Reading` for each
    stored frame, the :class:`TwinlinkError` that refused a frame (a security rejection), and a
    :class:`LineError` for each damaged record (line noise, never shown to the twin).
    ``counts`` tallies them by reason (``"ok"``, ``"line"``, ``"replay"``, …).
    """

    def __init__(self, url: str, twin: Twin, *, on_result: Callable[[Result], None] | None = None,
                 source: str | None = None, **link_kw: Any) -> None:
        self.twin = twin
        self.url = url
        self.on_result = on_result
        self.source = source if source is not None else f"serial:{url}"
        self.counts: collections.Counter[str] = collections.Counter()
        self._cond = threading.Condition()
        self.link = SerialLink(url, on_batch=self._deliver, **link_kw)

    def __repr__(self) -> str:
        return f"SerialReceiver({self.url!r}, {self.total} results)"

    def _deliver(self, items: Sequence[Item]) -> None:
        frames = [it for it in items if isinstance(it, bytes)]
        opened = iter(self.twin.open_many(frames, source=self.source) if frames else [])
        for it in items:
            res: Result = it if isinstance(it, LineError) else next(opened)
            with self._cond:
                self.counts[_reason(res)] += 1
                self._cond.notify_all()
            if self.on_result is not None:
                try:
                    self.on_result(res)
                except Exception:  # a callback bug must not kill the port's only reader
                    log.exception("serial ingest %s: on_result failed", self.url)

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
        self.link.close()

    def __enter__(self) -> SerialReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(res: Result) -> str:
    """``"ok"`` for a stored reading, else the refusal reason (``"line"`` for line damage)."""
    return res.reason if isinstance(res, TwinlinkError) else "ok"
