"""The MQTT transport (paho-mqtt 2.x, callback API version 2, MQTT v5): bytes on topics, and state.

:class:`MqttTransport` owns one paho client and adds no delivery policy: it publishes, subscribes,
acknowledges (manual acks), hands received messages to a callback and reports the connection
going up and down. Policy sits above it: :mod:`twinlink.delivery` on the device side (outbox,
end-to-end acks, resends, flow control; composed with this transport in
:class:`twinlink.mqtt_link.MqttLink`) and :mod:`twinlink.ingest.mqtt` on the twin side.

Connection management is paho's own: :meth:`MqttTransport.start` calls ``connect_async`` and
``loop_start``, so paho's network thread connects, keeps the connection alive, reconnects after
its exponential delay (``reconnect_delay_set``: ``backoff_min`` doubling up to ``backoff_max``,
both scaled by a random factor in [0.5, 1] drawn once per client, so a fleet that lost its broker
does not reconnect in lockstep) and re-sends the QoS 1 messages that were awaiting a PUBACK when
the connection dropped.

Threads: every callback given to :class:`MqttTransport` (``on_message``, ``on_up``, ``on_down``,
``on_published``, ``on_subscribed``) runs on paho's network thread
(``paho-mqtt-client-<client id>``), one at a time, while paho holds its internal locks: a callback
must return quickly and must not wait for another thread that may itself be calling into paho
(queue the work instead). A callback that raises is logged (``twinlink.mqtt``) and the network
thread carries on. :meth:`~MqttTransport.publish`, :meth:`~MqttTransport.subscribe`,
:meth:`~MqttTransport.ack` and :meth:`~MqttTransport.stop` may be called from any thread.

Configuration is parsed here and only here: broker URLs (:func:`parse_url`), connection options
(:class:`MqttOptions`, :func:`connect_options`) and the flat keys of a configuration file such as
the bridge's ``[output]`` table (:func:`take_options`).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..errors import TransportError
from ..frame import MAX_FRAME
from .topics import TOPIC_ROOT, check_topic_root, presence_topic, topic, topic_kid

__all__ = ["MAX_PACKET", "TOPIC_ROOT", "BrokerUrl", "Message", "MqttOptions", "MqttTransport",
           "check_topic_root", "connect_options", "parse_url", "presence_topic", "take_options",
           "topic", "topic_kid"]

log = logging.getLogger("twinlink.mqtt")

#: The largest MQTT packet twinlink accepts from a broker (MQTT v5 CONNECT property Maximum Packet
#: Size, sent by the ingest and by the device link): the largest frame plus room for the fixed
#: header, the topic name, the packet id and properties. The broker never forwards a larger
#: PUBLISH to us; it drops it (MQTT v5 §3.1.2.11.4).
MAX_PACKET = MAX_FRAME + 1024


# -- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_url(url: str) -> BrokerUrl:
    """``mqtt://[user[:pass]@]host[:1883]`` or ``mqtts://…[:8883]`` (TLS); raise ValueError."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ValueError(f"not an MQTT broker URL: {url!r} (use mqtt://host:port or mqtts://…)")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError(f"bad port in broker URL {url!r}") from None
    return BrokerUrl(u.hostname, port, tls, unquote(u.username) if u.username else None,
                     unquote(u.password) if u.password else None)


@dataclass
class MqttOptions:
    """Connection settings shared by the device link and the ingest service."""

    ca: str | None = None  # CA file; implies TLS
    cert: str | None = None  # client certificate (PEM) for mutual TLS
    key: str | None = None  # its private key
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 30  # also bounds the wait for a CONNACK (paho drops a silent connection)
    connect_timeout: float = 5.0  # TCP connect and TLS handshake
    backoff_min: float = 0.25  # first reconnect delay; doubles per failed attempt
    backoff_max: float = 30.0  # longest reconnect delay


def connect_options(ca: str | None = None, cert: str | None = None, key: str | None = None,
                    username: str | None = None, password_file: str | None = None,
                    **kw: Any) -> MqttOptions:
    """Build :class:`MqttOptions`, reading the password from a file (never from argv).

    Raises :class:`TransportError` if the password file is not a readable regular file.
    """
    pw = None
    if password_file:
        path = Path(password_file)
        try:
            if not path.is_file():  # a FIFO or a device would block the read forever
                raise OSError("not a regular file")
            pw = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise TransportError(f"cannot read the broker password file {path}: "
                                 f"{exc.strerror or exc}") from None
    return MqttOptions(ca=ca, cert=cert, key=key, username=username, password=pw, **kw)


#: Connection settings a configuration file may give flat, next to a link's other settings.
FLAT_KEYS = ("ca", "cert", "key", "username", "password", "password_file", "keepalive",
             "connect_timeout", "reconnect_max")


def take_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Move flat connection settings (``ca=``, ``username=``, ``password_file=``,
    ``reconnect_max=``, …) out of ``kw`` into ``kw["options"]`` (an :class:`MqttOptions`).

    Raises ValueError if both flat settings and ``options=`` are given, TypeError (naming the
    key) for a value of the wrong type.
    """
    flat = {k: kw.pop(k) for k in FLAT_KEYS if k in kw}
    for k, v in flat.items():
        numeric = k in ("keepalive", "connect_timeout", "reconnect_max")
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 if numeric
              else isinstance(v, str))
        if not ok:
            raise TypeError(f"{k} must be {'a number >= 0' if numeric else 'a string'}, "
                            f"not {type(v).__name__}")
    if "keepalive" in flat:
        flat["keepalive"] = int(flat["keepalive"])
    if flat:
        if "options" in kw:
            raise ValueError("give either options=MqttOptions(...) or flat connection settings")
        if "reconnect_max" in flat:
            flat["backoff_max"] = float(flat.pop("reconnect_max"))
        pw = flat.pop("password", None)
        opts = connect_options(**flat)
        if pw is not None:
            opts.password = str(pw)
        kw["options"] = opts
    return kw


# -- the transport ------------------------------------------------------------------------------

class Message(NamedTuple):
    """A received PUBLISH."""

    topic: str  # "" if the broker sent a topic that is not UTF-8 (it matches nothing)
    payload: bytes
    qos: int
    retain: bool
    mid: int
    gen: int  # the connection it arrived on; see MqttTransport.ack
    dup: bool = False  # the broker delivers it again (MQTT DUP: an unacknowledged QoS 1)


class _Client(mqtt.Client):
    """paho's client, also telling us why a connection attempt failed (paho's loop only logs
    "Connection failed, retrying" and keeps the exception to itself)."""

    twinlink_on_connect_error: Callable[[BaseException], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # ssl.SSLError included
            if self.twinlink_on_connect_error is not None:
                self.twinlink_on_connect_error(exc)
            raise


class MqttTransport:
    """One MQTT v5 client connection run by paho's network thread; see the module docstring.

    ``clean_start=False`` with ``session_expiry`` keeps the broker-side session (subscriptions,
    queued QoS 1 messages) across reconnects. ``manual_ack=True`` leaves each received QoS 1
    message unacknowledged until :meth:`ack`. ``receive_maximum`` bounds the unacknowledged
    messages the broker sends us, ``max_packet_size`` the size of any packet it sends us.
    ``will`` = (topic, payload) is published retained by the broker if we vanish.
    """

    def __init__(self, url: str, client_id: str, options: MqttOptions | None = None, *,
                 clean_start: bool = True, session_expiry: int = 0, receive_maximum: int = 0,
                 max_packet_size: int = 0, manual_ack: bool = False, max_inflight: int = 20,
                 will: tuple[str, bytes] | None = None,
                 on_message: Callable[[Message], None] | None = None,
                 on_up: Callable[[bool], None] | None = None,
                 on_down: Callable[[], None] | None = None,
                 on_published: Callable[[int], None] | None = None,
                 on_subscribed: Callable[[int, bool], None] | None = None) -> None:
        self.url = parse_url(url)
        self.opts = opts = options or MqttOptions()
        self.client_id = client_id
        self.clean_start = clean_start
        self._cb_message, self._cb_up, self._cb_down = on_message, on_up, on_down
        self._cb_published, self._cb_subscribed = on_published, on_subscribed
        c = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                    manual_ack=manual_ack)
        c.suppress_exceptions = True  # our callbacks guard themselves; this is the backstop
        c.connect_timeout = opts.connect_timeout
        user = opts.username or self.url.username
        if user:
            c.username_pw_set(user, opts.password if opts.password is not None
                              else self.url.password)
        if self.url.tls or opts.ca or opts.cert:
            c.tls_set(ca_certs=opts.ca, certfile=opts.cert, keyfile=opts.key,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)  # unbounded: callers bound what they publish
        spread = random.uniform(0.5, 1.0)
        # paho annotates the delays as int but computes with float seconds.
        c.reconnect_delay_set(cast(int, opts.backoff_min * spread),
                              cast(int, max(opts.backoff_min, opts.backoff_max) * spread))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.twinlink_on_connect_error = self._on_connect_error
        self.client = c
        props = Properties(PacketTypes.CONNECT)
        if session_expiry:
            props.SessionExpiryInterval = session_expiry
        if receive_maximum:
            props.ReceiveMaximum = receive_maximum
        if max_packet_size:
            props.MaximumPacketSize = max_packet_size
        self._props = props
        self._lock = threading.Lock()  # orders ack() against a connection change
        self._connected = False
        self._started = self._stopped = False
        #: Successful connections so far; a packet id is only meaningful on its own connection.
        self.gen = 0
        #: Set while connected (CONNACK received, no disconnect since).
        self.up = threading.Event()
        #: The last connection problem, for humans ("" if none yet).
        self.last_error = ""

    def __repr__(self) -> str:
        return (f"MqttTransport({self.url.host}:{self.url.port}, client_id={self.client_id!r}, "
                f"{'connected' if self.connected else 'disconnected'})")

    @property
    def connected(self) -> bool:
        return self.up.is_set()

    # -- any thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in paho's network thread; returns at once."""
        if self._started:
            return
        self._started = True
        self.client.connect_async(self.url.host, self.url.port, self.opts.keepalive,
                                  clean_start=self.clean_start, properties=self._props)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.up.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Hand one message to paho; raise :class:`TransportError` if paho refuses it.

        While disconnected a QoS 1 message waits in paho and goes out after the reconnect; its
        PUBACK is reported to ``on_published(info.mid)``.
        """
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"MQTT publish on {topic} refused: {mqtt.error_string(info.rc)}")
        return info

    def subscribe(self, topic: str, qos: int = 1, *, retained: bool = False) -> int:
        """Subscribe; return the SUBSCRIBE's packet id (reported to ``on_subscribed``).

        Unless ``retained``, the broker is told never to send retained messages for it (MQTT v5
        Retain Handling 2), not even on a re-subscription after a reconnect.
        """
        handling = (SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE if retained
                    else SubscribeOptions.RETAIN_DO_NOT_SEND)
        _, mid = self.client.subscribe(topic, options=SubscribeOptions(
            qos=qos, retainHandling=handling))
        return int(mid or 0)

    def ack(self, msg: Message) -> bool:
        """Acknowledge a received QoS 1 message (``manual_ack=True``); True if sent.

        A message from an earlier connection is not acknowledged (its packet id may name another
        message now); with a kept session the broker sends it again and it is acknowledged then.
        """
        if not msg.qos:
            return True
        with self._lock:
            if msg.gen != self.gen or not self._connected:
                return False
            self.client.ack(msg.mid, msg.qos)
        return True

    def stop(self, timeout: float = 5.0, before: Callable[[], None] | None = None) -> None:
        """Disconnect cleanly and stop paho's thread, waiting at most ``timeout`` seconds.

        ``before`` runs first if the connection is up (e.g. to publish a last status message).
        If paho's thread is still busy after ``timeout`` (a TCP connect in progress), it ends on
        its own once that attempt returns.
        """
        if not self._started or self._stopped:
            return
        self._stopped = True
        if before is not None and self.connected:
            try:
                before()
            except Exception:
                log.exception("MQTT %s: last words before disconnecting failed", self.client_id)
        self.client.disconnect()
        # loop_stop() joins paho's thread without a timeout; bound the wait here instead.
        t = threading.Thread(target=self.client.loop_stop, name="twinlink-mqtt-stop",
                             daemon=True)
        t.start()
        t.join(timeout)

    # -- paho's network thread -------------------------------------------------------------------

    def _call(self, fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a callback bug must not kill the network thread
            log.exception("MQTT %s: callback %r failed", self.client_id, fn)

    def _on_connect_error(self, exc: BaseException) -> None:
        self.last_error = f"cannot reach broker {self.url.host}:{self.url.port}: {exc}"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any) -> None:
        if getattr(reason, "is_failure", bool(reason)):
            self.last_error = f"broker refused the connection: {reason}"
            return
        with self._lock:
            self.gen += 1
            self._connected = True
        self.up.set()
        self._call(self._cb_up, bool(getattr(flags, "session_present", False)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        self.up.clear()
        if was:
            if getattr(reason, "is_failure", False) and not self._stopped:
                self.last_error = f"connection lost: {reason}"
            self._call(self._cb_down)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            name = msg.topic
        except UnicodeDecodeError:  # brokers should refuse these; never trust that
            name = ""
        self._call(self._cb_message, Message(name, bytes(msg.payload), msg.qos, bool(msg.retain),
                                             msg.mid, self.gen, bool(msg.dup)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    props: Any) -> None:
        self._call(self._cb_published, mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      props: Any) -> None:
        granted = all(not getattr(r, "is_failure", False) for r in reasons)
        if not granted:
            self.last_error = f"broker refused a subscription: {[str(r) for r in reasons]}"
        self._call(self._cb_subscribed, mid, granted)
