"""MQTT transport (paho-mqtt 2.x, callback API version 2, MQTT v5): the device's durable link.

``MqttLink(url, bundle=..., outbox=...)`` is a :class:`twinlink.device.Link`: ``send(frame)``
durably queues the sealed frame in an :class:`~twinlink.outbox.Outbox` and returns; one
background thread (``twinlink-mqtt``) owns the paho client and publishes queued frames at QoS 1
on ``twinlink/<kid hex>/t``. A frame leaves the outbox only when the twin's authenticated
end-to-end ack (``twinlink/<kid hex>/a``, :mod:`twinlink.ack`) says it is *stored*; without a
device key (a forwarding gateway, a lite bundle) it leaves on the broker's PUBACK instead.

Threads: every paho callback (``on_connect``, ``on_disconnect``, ``on_message``, ``on_publish``,
``on_subscribe``) runs in the link's own ``twinlink-mqtt`` thread, the only thread that touches
the paho client; callers' threads only write to the outbox (SQLite) and wait on a condition.
So ``send`` never waits for the network: with the broker down it returns as soon as the frame is
on disk, or raises :class:`~twinlink.outbox.OutboxFull` (``when_full="block"``: after at most
``timeout`` seconds).

Flow control: per device, only frames with ``seq < lowest unacked seq + window`` are in flight,
so no unacked frame can fall below the twin's replay window (``window`` must not exceed the
window the device is registered with; the default 64 is the twin's default). Reconnects use
exponential backoff with jitter. On every new connection, frames the broker had acknowledged
(PUBACK) but the twin has not are published again (the broker may have lost them); paho itself
re-sends frames still awaiting a PUBACK. Frames unacknowledged for ``resend_after`` seconds are
published again. Resending is always the same bytes; the twin's window drops duplicates and
acknowledges them again.
"""

from __future__ import annotations

import os
import random
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .. import ack as _ack
from ..errors import TransportError, TwinlinkError
from ..keys import Bundle
from ..outbox import DEFAULT_CAPACITY, Outbox, OutboxFull

__all__ = ["BrokerUrl", "MqttLink", "MqttOptions", "OutboxFull", "Session", "open_url",
           "parse_url", "topic", "topic_kid"]

TOPIC_ROOT = "twinlink"


def topic(kid: bytes, stream: str) -> str:
    """``twinlink/<kid hex>/<stream>``: ``t`` telemetry, ``a`` acks, ``status`` liveness."""
    return f"{TOPIC_ROOT}/{kid.hex()}/{stream}"


def topic_kid(name: str, stream: str = "t") -> bytes | None:
    """The kid a ``twinlink/<kid hex>/<stream>`` topic names, or None if it names none."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != TOPIC_ROOT or parts[2] != stream:
        return None
    h = parts[1]
    if not 2 <= len(h) <= 12 or len(h) % 2 or h != h.lower():
        return None
    try:
        return bytes.fromhex(h)
    except ValueError:
        return None


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_url(url: str) -> BrokerUrl:
    """``mqtt://[user[:pass]@]host[:1883]`` or ``mqtts://…[:8883]`` (TLS)."""
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
    keepalive: int = 30
    connect_timeout: float = 5.0
    backoff_min: float = 0.25
    backoff_max: float = 30.0


class Backoff:
    """Exponential backoff with "equal jitter": delay in [d/2, d], d = min(max, min * 2**n)."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi, self.n = lo, hi, 0

    def next(self) -> float:
        d = min(self.hi, self.lo * (2 ** min(self.n, 30)))
        self.n += 1
        return d / 2 + random.uniform(0, d / 2)

    def reset(self) -> None:
        self.n = 0


def _ok(rc: Any) -> bool:
    return not getattr(rc, "is_failure", bool(rc))


class Session:
    """A paho client driven by one thread that connects, reconnects (backoff + jitter) and loops.

    Subclass hooks ``on_up``, ``on_down``, ``on_tick`` and the paho callbacks all run in that
    thread. ``gen`` counts successful connections (packet ids are only valid within one).
    """

    poll = 0.01

    def __init__(self, url: str, client_id: str, opts: MqttOptions, *, clean_start: bool,
                 session_expiry: int = 0, manual_ack: bool = False, receive_maximum: int = 0,
                 will: tuple[str, bytes] | None = None, name: str = "twinlink-mqtt") -> None:
        self.url = parse_url(url)
        self.opts = opts
        self.client_id = client_id
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv5, manual_ack=manual_ack)
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
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self.on_message
        c.on_publish = self.on_publish
        c.on_subscribe = self.on_subscribe
        self.client = c
        self.connected = False
        self.gen = 0
        self.last_error = ""
        self._backoff = Backoff(opts.backoff_min, opts.backoff_max)
        self._next_attempt = 0.0
        self._connecting_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.up = threading.Event()

    def start(self) -> None:
        self._thread.start()

    # -- hooks (run in the session thread) ------------------------------------------------------

    def on_up(self) -> None: ...

    def on_down(self) -> None: ...

    def on_tick(self) -> None: ...

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None: ...

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                   props: Any) -> None: ...

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any,
                     props: Any) -> None: ...

    # -- connection management -----------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any) -> None:
        self._connecting_since = None
        if not _ok(rc):
            self.last_error = f"broker refused the connection: {rc}"
            self._drop()
            return
        self.connected = True
        self.gen += 1
        self._backoff.reset()
        self.up.set()
        self.on_up()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any) -> None:
        was = self.connected
        self.connected = False
        self.up.clear()
        self._connecting_since = None
        if not self._stop.is_set():
            self._next_attempt = time.monotonic() + self._backoff.next()
        if was:
            self.on_down()

    def _drop(self) -> None:
        self.connected = False
        self.up.clear()
        try:
            self.client.disconnect()
        except Exception:  # noqa: S110 - the socket may already be gone
            pass
        self._sock_close()
        self._next_attempt = time.monotonic() + self._backoff.next()

    def _sock_close(self) -> None:
        # paho has no public "abort": close its socket so the next attempt starts clean.
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
            self.client._sock = None

    def _attempt(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        if self.session_expiry:
            props.SessionExpiryInterval = self.session_expiry
        if self.receive_maximum:
            props.ReceiveMaximum = self.receive_maximum
        try:
            self.client.connect(self.url.host, self.url.port, self.opts.keepalive,
                                clean_start=self.clean_start, properties=props)
            self._connecting_since = time.monotonic()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"cannot reach broker {self.url.host}:{self.url.port}: {exc}"
            self._sock_close()
            self._next_attempt = time.monotonic() + self._backoff.next()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if self.client.socket() is None:
                if now >= self._next_attempt:
                    self._attempt()
                else:
                    self._stop.wait(min(0.05, self._next_attempt - now))
            else:
                rc = self.client.loop(self.poll)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self.client.socket() is None \
                        and self.connected:
                    self._on_disconnect(self.client, None, None, rc, None)
                elif (self._connecting_since is not None
                      and now - self._connecting_since > self.opts.connect_timeout):
                    self.last_error = "no CONNACK from the broker in time"
                    self._drop()
            try:
                self.on_tick()
            except Exception as exc:  # keep the link alive; surface the error to callers
                self.last_error = f"{type(exc).__name__}: {exc}"
        if self.connected:
            self.on_stopping()
            try:
                self.client.disconnect()
                for _ in range(20):
                    if self.client.socket() is None:
                        break
                    self.client.loop(0.01)
            except Exception:  # noqa: S110
                pass
        self._sock_close()

    def on_stopping(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly and stop the thread (waits at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)


@dataclass
class LinkStats:
    published: int = 0  # PUBLISH packets handed to the broker connection (resends included)
    resent: int = 0
    pubacks: int = 0
    acks: int = 0  # end-to-end acks accepted
    released: int = 0
    forged_acks: int = 0  # acks that failed to parse or authenticate
    replayed_acks: int = 0  # authentic acks whose PIV was seen before


class MqttLink(Session):
    """A durable device→twin link over MQTT; ``send(frame)`` queues, a thread publishes.

    ``bundle``: the device's bundle; its twin→device context authenticates end-to-end acks and
    only its frames may be sent. Without it (a gateway forwarding other devices' frames, or a
    lite bundle) frames are released on the broker's PUBACK: durable at the broker, not proven
    stored. ``when_full``: ``"refuse"`` raises :class:`OutboxFull` at once, ``"block"`` waits up
    to ``timeout`` seconds for room then raises it. Nothing queued is ever dropped.
    """

    def __init__(self, url: str, *, bundle: Bundle | None = None,
                 outbox: str | os.PathLike[str] | Outbox | None = None,
                 client_id: str | None = None, options: MqttOptions | None = None,
                 timeout: float = 10.0, capacity: int = DEFAULT_CAPACITY,
                 when_full: str = "refuse", window: int = 64, resend_after: float = 10.0,
                 start: bool = True) -> None:
        if when_full not in ("refuse", "block"):
            raise ValueError("when_full must be 'refuse' or 'block'")
        if window < 1:
            raise ValueError("window must be at least 1")
        self.bundle = bundle
        self.kid = bundle.kid if bundle is not None else None
        self._ack_ctx = (bundle.ack_context() if bundle is not None
                         and bundle.device_key is not None else None)
        self.e2e = self._ack_ctx is not None
        if isinstance(outbox, Outbox):
            self.outbox = outbox
        else:
            path = Path(outbox) if outbox is not None else _default_outbox(url, bundle)
            self.outbox = Outbox(path, capacity)
        self.timeout = timeout
        self.when_full = when_full
        self.window = window
        self.resend_after = resend_after
        self.stats = LinkStats()
        cid = client_id or (f"twinlink-{self.kid.hex()}-{os.urandom(3).hex()}" if self.kid
                            else f"twinlink-gw-{os.urandom(4).hex()}")
        self.status_topic = (topic(self.kid, "status") if self.kid is not None
                             else f"{TOPIC_ROOT}/gw/{cid}/status")
        super().__init__(url, cid, options or MqttOptions(), clean_start=True,
                         will=(self.status_topic, b"offline"), name="twinlink-mqtt")
        self.client.max_inflight_messages_set(max(20, window))
        self.client.max_queued_messages_set(0)
        self._cond = threading.Condition()
        # (kid, seq) -> [connection gen, monotonic time sent, mid awaiting PUBACK or None]
        self._sent: dict[tuple[bytes, int], list[Any]] = {}
        self._mids: dict[int, tuple[bytes, int]] = {}
        self._pubacked: list[tuple[bytes, int]] = []
        self._dirty = True
        self._next_due = float("inf")
        self._closed = False
        #: Set once the broker confirmed the subscription to this device's ack topic.
        self.ack_subscribed = threading.Event()
        if start:
            self.start()

    def __repr__(self) -> str:
        kid = self.kid.hex() if self.kid else None
        return (f"MqttLink({self.url.host}:{self.url.port}, kid={kid},"
                f" pending={len(self.outbox)}, connected={self.connected})")

    # -- caller side (any thread) --------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Durably queue one sealed frame; it is published in the background."""
        self.send_many([frame])

    def send_many(self, frames: Sequence[bytes]) -> None:
        """Durably queue sealed frames (all or none); see the class doc for a full outbox."""
        if self._closed:
            raise TransportError("the MQTT link is closed")
        frames = [bytes(f) for f in frames]
        if self.kid is not None:
            from .. import frame
            for f in frames:
                if frame.parse(f).kid != self.kid:
                    raise ValueError("frame belongs to another device than this link's bundle")
        if len(frames) > self.outbox.capacity:
            raise OutboxFull(f"{len(frames)} frames exceed the outbox capacity "
                             f"{self.outbox.capacity}")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.outbox.put(frames)
                break
            except OutboxFull:
                left = deadline - time.monotonic()
                if self.when_full == "refuse" or left <= 0:
                    raise
                with self._cond:
                    self._cond.wait_for(lambda: self.outbox.room() >= len(frames),
                                        min(left, 0.5))
        self._dirty = True

    def pending(self) -> int:
        """Frames queued and not yet acknowledged."""
        return len(self.outbox)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued frame is acknowledged or ``timeout`` passes (default: the
        link's timeout); return how many are still pending (0 = all acknowledged)."""
        t = self.timeout if timeout is None else timeout
        with self._cond:
            self._cond.wait_for(lambda: len(self.outbox) == 0, t)
        return len(self.outbox)

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.up.wait(self.timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop publishing and close the outbox; queued frames stay for the next run."""
        if self._closed:
            return
        self._closed = True
        self.stop(self.timeout if timeout is None else timeout)
        self.outbox.close()

    def __enter__(self) -> MqttLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- session thread ------------------------------------------------------------------------

    def on_down(self) -> None:
        self.ack_subscribed.clear()

    def on_up(self) -> None:
        c = self.client
        c.publish(self.status_topic, b"online", qos=1, retain=True)
        if self.kid is not None and self.e2e:
            c.subscribe(topic(self.kid, "a"), qos=1)
        # Frames paho still holds (no PUBACK yet) are re-sent by paho itself; everything the
        # broker had acknowledged may be lost with it, so it becomes due again now.
        for rec in self._sent.values():
            if rec[2] is not None:
                rec[0] = self.gen
        self._dirty = True

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any,
                     props: Any) -> None:
        self.ack_subscribed.set()

    def on_stopping(self) -> None:
        info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
        try:
            info.wait_for_publish(1.0)
        except (RuntimeError, ValueError):
            pass

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                   props: Any) -> None:
        key = self._mids.pop(mid, None)
        if key is None:
            return
        self.stats.pubacks += 1
        rec = self._sent.get(key)
        if rec is not None:
            rec[2] = None
        if not self.e2e:
            self._pubacked.append(key)

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kid = topic_kid(msg.topic, "a")
        if kid is None or kid != self.kid or self._ack_ctx is None:
            return
        try:
            a = _ack.open_ack(self._ack_ctx, kid, bytes(msg.payload))
        except TwinlinkError:
            self.stats.forged_acks += 1
            return
        try:
            n = self.outbox.release(kid, a.ranges, a.seq)
        except TwinlinkError:  # Replay / TooOld: an ack PIV seen before
            self.stats.replayed_acks += 1
            return
        self.stats.acks += 1
        self.stats.released += n
        for lo, hi in a.ranges:
            if hi - lo < 4096:
                for s in range(lo, hi + 1):
                    self._forget((kid, s))
            else:
                for key in [k for k in self._sent if k[0] == kid and lo <= k[1] <= hi]:
                    self._forget(key)
        self._dirty = True
        with self._cond:
            self._cond.notify_all()

    def _forget(self, key: tuple[bytes, int]) -> None:
        rec = self._sent.pop(key, None)
        if rec is not None and rec[2] is not None:
            self._mids.pop(rec[2], None)

    def on_tick(self) -> None:
        if self._pubacked:
            done, self._pubacked = self._pubacked, []
            by_kid: dict[bytes, list[int]] = {}
            for kid, seq in done:
                by_kid.setdefault(kid, []).append(seq)
            for kid, seqs in by_kid.items():
                self.stats.released += self.outbox.release(kid, _ack.to_ranges(seqs))
                for s in seqs:
                    self._sent.pop((kid, s), None)
            self._dirty = True
            with self._cond:
                self._cond.notify_all()
        if not self.connected:
            return
        now = time.monotonic()
        if not self._dirty and now < self._next_due:
            return
        self._dirty = False
        self._pump(now)

    def _pump(self, now: float) -> None:
        kids = [self.kid] if self.kid is not None else self.outbox.kids()
        next_due = float("inf")
        for kid in kids:
            for seq, frame in self.outbox.head(kid, self.window):
                key = (kid, seq)
                rec = self._sent.get(key)
                if rec is not None and rec[0] == self.gen:
                    if rec[2] is not None or now - rec[1] < self.resend_after:
                        next_due = min(next_due, rec[1] + self.resend_after)
                        continue
                info = self.client.publish(topic(kid, "t"), frame, qos=1)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._dirty = True
                    return
                if rec is not None:
                    self.stats.resent += 1
                    if rec[2] is not None:
                        self._mids.pop(rec[2], None)
                self.stats.published += 1
                self._sent[key] = [self.gen, now, info.mid]
                self._mids[info.mid] = key
                next_due = min(next_due, now + self.resend_after)
        self._next_due = next_due


def _default_outbox(url: str, bundle: Bundle | None) -> Path:
    from ..device import default_state_dir

    b = parse_url(url)
    stem = f"{bundle.name}-{bundle.kid.hex()}" if bundle is not None else "gateway"
    return default_state_dir() / f"{stem}-{b.host}-{b.port}.outbox"


_CONN_KEYS = ("ca", "cert", "key", "username", "password", "password_file", "keepalive",
              "connect_timeout", "reconnect_max")


def _split_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Accept flat connection settings (as a config file gives them) next to ``options=``."""
    flat = {k: kw.pop(k) for k in _CONN_KEYS if k in kw}
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


def for_device(device: Any, url: str, **kw: Any) -> MqttLink:
    """An :class:`MqttLink` for a :class:`~twinlink.device.Device`, its outbox next to the
    device's sequence state; attach it with ``device.link = link``. Connection settings may be
    given flat (``ca=``, ``cert=``, ``key=``, ``username=``, ``password_file=``, …)."""
    kw.setdefault("outbox", Path(device.state_path).with_suffix(".outbox"))
    return MqttLink(url, bundle=device.bundle, **_split_options(kw))


def open_url(url: str, **kw: Any) -> MqttLink:
    """The link for an ``mqtt://``/``mqtts://`` URL without a device key (gateway mode)."""
    return MqttLink(url, **_split_options(kw))


def connect_options(ca: str | None = None, cert: str | None = None, key: str | None = None,
                    username: str | None = None, password_file: str | None = None,
                    **kw: Any) -> MqttOptions:
    """Build :class:`MqttOptions`, reading the password from a file (never from argv)."""
    pw = None
    if password_file:
        pw = Path(password_file).read_text().rstrip("\r\n")
    return MqttOptions(ca=ca, cert=cert, key=key, username=username, password=pw, **kw)
