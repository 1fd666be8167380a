"""The device's durable link over serial with end-to-end acknowledgements: a
:class:`~twinlink.transport.serial.SerialLink` composed with the delivery layer.

``SerialAckLink(url, bundle=..., outbox=...)`` is the serial counterpart of
:class:`twinlink.mqtt_link.MqttLink`: ``send(frame)`` durably queues the sealed frame in an
:class:`~twinlink.outbox.Outbox` and returns; the :class:`~twinlink.delivery.Delivery` thread
writes queued frames to the port, and the twin's ingest (``twinlink serve --serial PORT
--acks``, :class:`twinlink.ingest.SerialReceiver` with ``acks=True``) writes its acks
(:mod:`twinlink.ack`) back on the same line, as records of their own. A frame leaves the outbox
only when an ack names it by its digest: stored (released) or refused for good (dead letters).
Serial gives no hop acknowledgement, so a frame unacknowledged ``resend_after`` seconds after it
was written, or written before the port went down and came back, is written again.

Threads: the serial link's I/O thread runs ``on_frame`` (an ack arrived) and ``on_state``, which
only hand events to the delivery thread (``twinlink-delivery``); that thread verifies acks,
releases frames and writes to the port. Both ends must speak acks: a twin that does not write
them back leaves every frame pending (``flush`` times out) — use a plain
:class:`~twinlink.transport.serial.SerialLink` for such a receiver.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .delivery import AckOpener, Delivery, DeliveryLink
from .downlink import Dispatcher, is_downlink
from .keys import Bundle
from .outbox import DEFAULT_CAPACITY, Outbox, OutboxFull
from .transport.serial import SerialLink

__all__ = ["OutboxFull", "SerialAckLink", "for_device"]


class SerialAckLink(DeliveryLink):
    """A durable device→twin serial link; ``send(frame)`` queues, a thread writes.

    ``bundle``: the device's bundle (with its own key: acks are opened with it; ValueError for
    a lite bundle). ``when_full``, ``window``, ``resend_after``, ``timeout`` and ``on_event`` as
    for :class:`~twinlink.mqtt_link.MqttLink`; other keyword arguments go to the
    :class:`~twinlink.transport.serial.SerialLink` (``baudrate``, ``write_timeout``, …), which is
    opened with ``require_open=False`` unless given: frames wait in the outbox until the port
    appears.
    """

    def __init__(self, url: str, *, bundle: Bundle, outbox: str | os.PathLike[str] | Outbox,
                 timeout: float = 10.0, capacity: int = DEFAULT_CAPACITY,
                 when_full: str = "refuse", window: int = 64, resend_after: float = 10.0,
                 on_event: Callable[[str, str], None] | None = None, **serial_kw: Any) -> None:
        acks = AckOpener(bundle)
        self._downlink = Dispatcher()
        self.bundle, self.kid, self.url = bundle, bundle.kid, url
        box = outbox if isinstance(outbox, Outbox) else Outbox(Path(outbox), capacity)
        try:
            self.delivery = Delivery(box, self, kid=self.kid, acks=acks, window=window,
                                     resend_after=resend_after, timeout=timeout,
                                     when_full=when_full, on_event=on_event)
            self.delivery.start()
            serial_kw.setdefault("require_open", False)
            self.serial = SerialLink(url, on_frame=self._on_frame, on_state=self._on_state,
                                     **serial_kw)
        except BaseException:
            if hasattr(self, "delivery"):
                self.delivery.close()
            else:
                box.close()
            raise

    def __repr__(self) -> str:
        return f"SerialAckLink({self.url!r}, kid={self.kid.hex()}, pending={self.pending()})"

    @property
    def connected(self) -> bool:
        return self.serial.connected

    @property
    def last_error(self) -> str:
        return self.serial.last_error or self.delivery.last_error

    def close(self, timeout: float | None = None) -> None:
        """Stop writing, close the port and the outbox; queued frames stay for the next run."""
        self.delivery.close(self.delivery.timeout if timeout is None else timeout)
        self.serial.close()
        self._downlink.close(1.0)

    # -- the Carrier interface (delivery thread) -------------------------------------------------

    def send_frame(self, kid: bytes, frame: bytes) -> int | None:
        self.serial.send(frame)  # TransportError: the delivery thread tries again shortly
        return None

    # -- the serial link's I/O thread ------------------------------------------------------------

    def set_downlink(self, handler: Callable[[bytes], Any]) -> None:
        """Pass the twin's downlink frames (desired state, commands: :mod:`twinlink.downlink`),
        which arrive on the same line as its acks, to ``handler`` on a thread of its own."""
        self._downlink.set(handler)

    def _on_frame(self, data: bytes) -> None:
        if self._downlink.handler is not None and is_downlink(data):
            self._downlink.put(data)
            return
        self.delivery.ack_arrived(self.kid, data)

    def _on_state(self, state: str) -> None:
        if state == "connected":
            self.delivery.link_up()
        else:
            self.delivery.link_down()


def for_device(device: Any, url: str, **kw: Any) -> SerialAckLink:
    """A :class:`SerialAckLink` for a :class:`~twinlink.device.Device`, its outbox next to the
    device's sequence state (the same file the MQTT link uses); attach it with
    ``device.link = link``."""
    kw.setdefault("outbox", Path(device.state_path).with_suffix(".outbox"))
    return SerialAckLink(url, bundle=device.bundle, **kw)
