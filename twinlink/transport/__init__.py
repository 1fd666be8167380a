"""Transports: what moves frames between a device and the twin, chosen by URL.

- :mod:`twinlink.transport.serial`: :class:`SerialLink` over a pyserial port (device path,
  ``loop://``, ``socket://``, ``rfc2217://``), framed by :mod:`twinlink.transport.framing`.
- :mod:`twinlink.transport.mqtt`: :class:`MqttTransport`, bytes on MQTT topics. The device's
  durable MQTT link (outbox and end-to-end acks, :mod:`twinlink.delivery`) is
  :class:`twinlink.mqtt_link.MqttLink`.

:func:`open` picks the right one for a URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from ..errors import TransportError

if TYPE_CHECKING:  # pragma: no cover
    from ..device import Device
    from ..mqtt_link import MqttLink
    from ..serial_link import SerialAckLink
    from .serial import SerialLink

    DeviceLink = Union[SerialLink, MqttLink, SerialAckLink]

__all__ = ["MQTT_SCHEMES", "open"]

#: URL schemes that open the MQTT device link; anything else is a serial port or pyserial URL.
MQTT_SCHEMES = ("mqtt", "mqtts")


def open(url: str, *, device: Device | None = None, acks: bool = False,
         **options: Any) -> DeviceLink:
    """The device link for ``url``, connected (or connecting) in the background.

    ``mqtt://`` / ``mqtts://``: an :class:`~twinlink.mqtt_link.MqttLink`; with ``device`` it
    carries that device's frames with end-to-end acks and its outbox next to the device's
    sequence state, without it it forwards any device's frames (gateway mode). Anything else (a
    device path such as ``/dev/ttyUSB0``, or a pyserial URL such as ``loop://`` or
    ``socket://host:port``): a :class:`~twinlink.transport.serial.SerialLink`; with ``device``
    and ``acks=True`` a :class:`~twinlink.serial_link.SerialAckLink` instead (durable outbox,
    end-to-end acks written back by ``serve --serial --acks``).

    ``options`` go to the link's constructor (MQTT connection settings may be given flat, as a
    configuration file has them: ``ca=``, ``username=``, ``password_file=``, …). Raises TypeError
    for an option the link does not take, :class:`TransportError` if a serial port cannot be
    opened, ValueError for a malformed broker URL.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in MQTT_SCHEMES:
        try:
            from ..mqtt_link import for_device, open_url
        except ImportError as exc:
            raise TransportError(f"{url}: the MQTT transport is not available: {exc}") from None
        return for_device(device, url, **options) if device is not None else open_url(
            url, **options)
    if acks and device is not None:
        from ..serial_link import for_device as serial_for_device

        return serial_for_device(device, url, **options)
    from .serial import SerialLink

    return SerialLink(url, **options)
