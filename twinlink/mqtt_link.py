"""The device's durable link over MQTT: the MQTT transport composed with the delivery layer.

``MqttLink(url, bundle=..., outbox=...)`` is a :class:`twinlink.device.Link`: ``send(frame)``
durably queues the sealed frame in an :class:`~twinlink.outbox.Outbox` and returns; the
:class:`~twinlink.delivery.Delivery` thread publishes queued frames at QoS 1 on
``<root>/<kid hex>/t`` through a :class:`~twinlink.transport.mqtt.MqttTransport`, and a frame
leaves the outbox only when the twin's authenticated end-to-end ack (``<root>/<kid hex>/a``,
:mod:`twinlink.ack`) names it by its digest: stored (released) or refused for good (moved to the
outbox's dead letters). Without a device key (a forwarding gateway, a lite bundle) it leaves on
the broker's PUBACK instead. Release, resend and flow-control rules: :mod:`twinlink.delivery`.
The topic root is the bundle's ``topic_root`` setting (default ``twinlink``) unless given.

Threads: paho's network thread runs the transport's callbacks, which only hand events to the
delivery thread (``twinlink-delivery``); that thread verifies acks, releases frames and publishes.
Callers' threads only write to the outbox (SQLite) and wait on a condition, so ``send`` never
waits for the network: with the broker down it returns as soon as the frame is on disk, or raises
:class:`~twinlink.outbox.OutboxFull` (``when_full="block"``: after at most ``timeout`` seconds).

Usually opened with :func:`twinlink.transport.open` (``mqtt://`` or ``mqtts://``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .delivery import AckOpener, Delivery, DeliveryLink
from .downlink import Dispatcher
from .keys import Bundle
from .outbox import DEFAULT_CAPACITY, Outbox, OutboxFull
from .transport.mqtt import (
    MAX_PACKET,
    TOPIC_ROOT,
    BrokerUrl,
    Message,
    MqttOptions,
    MqttTransport,
    check_topic_root,
    parse_url,
    take_options,
    topic,
    topic_kid,
)

__all__ = ["MqttLink", "OutboxFull", "for_device", "open_url"]


class MqttLink(DeliveryLink):
    """A durable device→twin link over MQTT; ``send(frame)`` queues, a thread publishes.

    ``bundle``: the device's bundle; only its frames may be sent, and its key authenticates the
    twin's end-to-end acks (of whichever of its security contexts the queued frames were sealed
    under). Without a bundle (a gateway forwarding other devices' frames) or with a lite one,
    frames are released on the broker's PUBACK: durable at the broker, not proven stored.
    ``when_full``: ``"refuse"`` raises :class:`OutboxFull` at once, ``"block"`` waits up to
    ``timeout`` seconds for room then raises it. Nothing queued is ever dropped. ``topic_root``:
    the deployment's topic root (default: the bundle's ``topic_root`` setting, else
    ``twinlink``); ValueError if it is not a valid root. ``on_event(type, detail)``: device
    security events (``ack.forged``, ``ack.conflict``), on the delivery thread.
    """

    def __init__(self, url: str, *, bundle: Bundle | None = None,
                 outbox: str | os.PathLike[str] | Outbox | None = None,
                 client_id: str | None = None, options: MqttOptions | None = None,
                 timeout: float = 10.0, capacity: int = DEFAULT_CAPACITY,
                 when_full: str = "refuse", window: int = 64, resend_after: float = 10.0,
                 start: bool = True, topic_root: str | None = None,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        parse_url(url)  # a bad URL fails here, before any file is opened
        if topic_root is None:
            topic_root = (str(bundle.settings.get("topic_root") or TOPIC_ROOT)
                          if bundle is not None else TOPIC_ROOT)
        self.root = check_topic_root(topic_root)
        self.bundle = bundle
        self.kid = bundle.kid if bundle is not None else None
        acks: AckOpener | None = None
        if bundle is not None and bundle.device_key is not None:
            acks = AckOpener(bundle)
        if not isinstance(outbox, Outbox):
            path = Path(outbox) if outbox is not None else _default_outbox(url, bundle)
            outbox = Outbox(path, capacity)
        try:
            self.delivery = Delivery(outbox, self, kid=self.kid, acks=acks, window=window,
                                     resend_after=resend_after, timeout=timeout,
                                     when_full=when_full, on_event=on_event)
        except ValueError:
            outbox.close()
            raise
        cid = client_id or (f"twinlink-{self.kid.hex()}-{os.urandom(3).hex()}" if self.kid
                            else f"twinlink-gw-{os.urandom(4).hex()}")
        self.status_topic = (topic(self.kid, "status", self.root) if self.kid is not None
                             else f"{self.root}/gw/{cid}/status")
        self.transport = MqttTransport(
            url, cid, options, clean_start=True, max_packet_size=MAX_PACKET,
            max_inflight=max(20, window), will=(self.status_topic, b"offline"),
            on_message=self._on_message, on_up=self._on_up, on_down=self._on_down,
            on_published=self.delivery.hop_acked, on_subscribed=self._on_subscribed)
        self._downlink = Dispatcher()
        self._downlink_mid = -1
        self._sub_lock = threading.Lock()  # a SUBACK may beat subscribe()'s return
        #: Set once the broker confirmed the subscription to this device's downlink topic.
        self.downlink_subscribed = threading.Event()
        #: Set once the broker confirmed the subscription to this device's ack topic.
        self.ack_subscribed = threading.Event()
        if start:
            self.start()

    def __repr__(self) -> str:
        kid = self.kid.hex() if self.kid else None
        return (f"MqttLink({self.url.host}:{self.url.port}, kid={kid},"
                f" pending={self.pending()}, connected={self.connected})")

    # -- state -----------------------------------------------------------------------------------

    @property
    def url(self) -> BrokerUrl:
        return self.transport.url

    @property
    def opts(self) -> MqttOptions:
        return self.transport.opts

    @property
    def connected(self) -> bool:
        return self.transport.connected

    @property
    def up(self) -> threading.Event:
        return self.transport.up

    @property
    def last_error(self) -> str:
        return self.transport.last_error or self.delivery.last_error

    # -- callers' threads ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread and connect (the constructor does, unless ``start=False``)."""
        self.delivery.start()
        self.transport.start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.transport.wait_connected(self.timeout if timeout is None else timeout)

    def set_downlink(self, handler: Callable[[bytes], Any]) -> None:
        """Subscribe to this device's downlink topic ``<root>/<kid hex>/c`` and pass each frame
        to ``handler`` on a thread of its own (``twinlink-downlink``), one at a time; an
        exception from it is logged (the device's receiver raises for refused frames)."""
        if self.kid is None:
            raise ValueError("a downlink needs the device's bundle")
        self._downlink.set(handler)
        if self.transport.connected:
            self._subscribe_downlink()

    def _subscribe_downlink(self) -> None:
        assert self.kid is not None
        with self._sub_lock:
            self._downlink_mid = self.transport.subscribe(topic(self.kid, "c", self.root), qos=1)

    def close(self, timeout: float | None = None) -> None:
        """Stop publishing, say ``offline``, disconnect and close the outbox; queued frames stay
        for the next run. Waits at most about ``timeout`` seconds (default: the link's)."""
        t = self.timeout if timeout is None else timeout
        self._downlink.close(t)
        self.delivery.close(t)
        self.transport.stop(t, before=self._last_words)

    # -- the Carrier interface (delivery thread) -------------------------------------------------

    def send_frame(self, kid: bytes, frame: bytes) -> int | None:
        return int(self.transport.publish(topic(kid, "t", self.root), frame, qos=1).mid)

    # -- paho's network thread -------------------------------------------------------------------

    def _on_up(self, session_present: bool) -> None:
        # Subscribe before any frame goes out, or the first acks could precede the subscription.
        if self.kid is not None and self.e2e:
            self.transport.subscribe(topic(self.kid, "a", self.root), qos=1)
        if self.kid is not None and self._downlink.handler is not None:
            self._subscribe_downlink()
        self.delivery.link_up()
        self.transport.publish(self.status_topic, b"online", qos=1, retain=True)

    def _on_down(self) -> None:
        self.ack_subscribed.clear()
        self.downlink_subscribed.clear()
        self.delivery.link_down()

    def _on_subscribed(self, mid: int, granted: bool) -> None:
        with self._sub_lock:
            downlink = mid == self._downlink_mid
        if granted and downlink:
            self.downlink_subscribed.set()
        elif granted:
            self.ack_subscribed.set()

    def _on_message(self, msg: Message) -> None:
        kid = topic_kid(msg.topic, "a", self.root)
        if kid is not None and kid == self.kid:
            self.delivery.ack_arrived(kid, msg.payload)
        elif topic_kid(msg.topic, "c", self.root) == self.kid:
            self._downlink.put(msg.payload)

    def _last_words(self) -> None:
        info = self.transport.publish(self.status_topic, b"offline", qos=1, retain=True)
        try:
            info.wait_for_publish(1.0)
        except (RuntimeError, ValueError):
            pass


def _default_outbox(url: str, bundle: Bundle | None) -> Path:
    from .device import default_state_dir

    b = parse_url(url)
    stem = f"{bundle.name}-{bundle.kid.hex()}" if bundle is not None else "gateway"
    return default_state_dir() / f"{stem}-{b.host}-{b.port}.outbox"


def for_device(device: Any, url: str, **kw: Any) -> MqttLink:
    """An :class:`MqttLink` for a :class:`~twinlink.device.Device`, its outbox next to the
    device's sequence state; attach it with ``device.link = link``. Connection settings may be
    given flat (``ca=``, ``cert=``, ``key=``, ``username=``, ``password_file=``, …)."""
    kw.setdefault("outbox", Path(device.state_path).with_suffix(".outbox"))
    return MqttLink(url, bundle=device.bundle, **take_options(kw))


def open_url(url: str, **kw: Any) -> MqttLink:
    """The link for an ``mqtt://``/``mqtts://`` URL without a device key (gateway mode)."""
    return MqttLink(url, **take_options(kw))
