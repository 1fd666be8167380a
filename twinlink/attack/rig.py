"""The stage of one scenario run: a twin, its devices, and the transport between them.

:class:`Rig` holds the twin (or, against an existing setup, its database), the device roles
the catalogue speaks of (``pump`` the victim, ``valve`` a second device, ``old`` a revoked one,
``ghost`` an identity the twin never registered) and, for a fresh twin, the simulated clock of
its detectors. A :class:`Channel` carries frames over one transport and waits until the twin
has processed them: in-process (:class:`InprocChannel`), a pty serial line
(:class:`SerialChannel`), a mosquitto broker (:class:`MqttChannel`).

Every wait has a deadline; running out raises :class:`ScenarioError`, which the scorecard
shows as ``ERROR``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .. import frame as _frame
from .. import keys, senml
from ..detect import DetectConfig, Detector
from ..device import Device
from ..errors import TwinlinkError, UnknownDevice
from ..ingest.acks import Acknowledger
from ..provision import provision
from ..store import SQLiteStore, TwinStore, open_store
from ..transport import framing
from ..transport.mqtt import MAX_PACKET
from ..transport.topics import PRESENCE_LEVEL, TOPIC_ROOT, check_topic_root
from ..twin import Twin, frame_digest

__all__ = ["Channel", "InprocChannel", "MqttChannel", "PacedDetector", "Rig", "ScenarioError",
           "SerialChannel", "SimClock", "wait_for"]

log = logging.getLogger("twinlink.attack")

#: Seconds a channel waits for the twin to process what it delivered.
DELIVERY_TIMEOUT = 20.0


class ScenarioError(TwinlinkError):
    """A scenario could not run as written (a wait ran out, a precondition failed)."""

    reason = "scenario_error"


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.005) -> None:
    """Poll ``pred`` until true; raise :class:`ScenarioError` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


# -- the detectors' clock --------------------------------------------------------------------

class SimClock:
    """The detectors' time in a scenario: each accepted frame arrives ``step`` seconds after the
    one before, whatever the wall clock says, so hours of behaviour fit in a second and the
    verdicts do not depend on how loaded the machine is."""

    def __init__(self, start: float, step: float = 1.0) -> None:
        self.now, self.step = float(start), float(step)
        self._lock = threading.Lock()

    def tick(self) -> float:
        with self._lock:
            self.now += self.step
            return self.now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.now += seconds
            return self.now

    def arrival(self, k: int) -> float:
        """When the ``k``-th next accepted frame (0 = the next) will arrive."""
        return self.now + (k + 1) * self.step


class PacedDetector(Detector):
    """The twin's detectors, fed the :class:`SimClock` instead of the wall clock."""

    def __init__(self, config: DetectConfig, clock: SimClock) -> None:
        super().__init__(config)
        self.clock = clock

    def observe(self, device: str, seq: int, records: Sequence[Any], arrival: float,
                frame_size: int, context_epoch: int = 0) -> Any:
        return super().observe(device, seq, records, self.clock.tick(), frame_size,
                               context_epoch)

    def sweep(self, now: float | None = None) -> Any:
        return super().sweep(self.clock.now if now is None else now)


# -- the rig ---------------------------------------------------------------------------------

#: Roles a fresh rig registers (with their kid suffix); ``ghost`` is provisioned, never
#: registered.
ROLES = {"pump": 1, "valve": 2, "old": 3, "ghost": 9}


class Rig:
    """A twin and its devices for one scenario run (see the module docstring).

    Build with :meth:`fresh` (a new twin in ``root``) or :meth:`existing` (someone's twin).
    ``capabilities`` says which catalogue ``needs`` this rig satisfies; ``topic_root`` is the
    MQTT topic root the twin's devices publish under and its ingest serves.
    """

    def __init__(self, root: Path, store: TwinStore, twin: Twin | None,
                 bundles: dict[str, Path], clock: SimClock | None,
                 capabilities: frozenset[str], topic_root: str = TOPIC_ROOT) -> None:
        self.root, self.store, self.twin = root, store, twin
        self.bundles, self.clock, self.capabilities = bundles, clock, capabilities
        self.topic_root = check_topic_root(topic_root)
        self.state_dir = root / "state"
        self._devices: dict[str, Device] = {}
        self._names: dict[str, str] = {}
        self._series = 0

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def fresh(cls, root: Path, twin_key: keys.TwinKey, twin_pub: Path, kid_prefix: bytes,
              qc: dict[str, Any] | None = None, topic_root: str = TOPIC_ROOT) -> Rig:
        """A new twin database in ``root`` with the four roles provisioned (kids
        ``kid_prefix + n``) under the MQTT topic root ``topic_root`` (recorded in the database
        and the bundles, as ``provision --topic-root`` does), the QC configuration ``qc`` set as
        an operator would, detectors on a simulated clock."""
        root.mkdir(parents=True, exist_ok=True)
        store = open_store(root / "twin.db")
        try:
            bundles = {}
            for role, n in ROLES.items():
                provision(role, twin_pub, root / "keys", db=None if role == "ghost" else store,
                          kid=kid_prefix + bytes([n]), topic_root=topic_root)
                bundles[role] = root / "keys" / f"{role}.device"
            if qc:
                store.set_qc_config(qc, why="attack scenario: bounds an operator would set")
            clock = SimClock(time.time())
            detector = PacedDetector(DetectConfig.from_json(store.qc_config()), clock)
            twin = Twin(store, twin_key, detect=detector)
        except BaseException:
            store.close()
            raise
        caps = frozenset({"second_device", "operator", "clock", "own_ingest"})
        return cls(root, store, twin, bundles, clock, caps, topic_root)

    @classmethod
    def existing(cls, root: Path, db: str, twin_key: str | None, devices: Sequence[str],
                 in_process: bool, topic_root: str | None = None) -> Rig:
        """Someone's twin: its database ``db``, its key (needed ``in_process``: the frames are
        opened here; otherwise its own ingest opens them and the database is only read) and
        one or two device bundles (the victim, then a second device). A fresh identity the
        twin does not know plays ``ghost``. Its MQTT topic root is ``topic_root``, else the one
        ``db`` records, else the victim bundle's, else ``twinlink`` (what ``serve`` and
        ``send`` would use)."""
        root.mkdir(parents=True, exist_ok=True)
        twin: Twin | None = None
        store: TwinStore
        if in_process:
            if twin_key is None:
                raise ScenarioError("--twin-key is needed to open frames in-process")
            twin = Twin(db, twin_key, bind_key=False)
            store = twin.store
        else:
            store = SQLiteStore(db, readonly=True)
        try:
            bundles = {"pump": Path(devices[0])}
            if len(devices) > 1:
                bundles["valve"] = Path(devices[1])
            victim = keys.Bundle.load(bundles["pump"])
            for _ in range(16):
                kid = os.urandom(6)
                try:
                    store.device(kid)
                except UnknownDevice:
                    break
            mqtt_root = (topic_root or store.topic_root()
                     or str(victim.settings.get("topic_root") or TOPIC_ROOT))
            provision("ghost", victim.twin_public, root / "keys", kid=kid, force=True,
                      topic_root=mqtt_root)
            bundles["ghost"] = root / "keys" / "ghost.device"
        except BaseException:
            if twin is not None:
                twin.close()
            else:
                store.close()
            raise
        caps = frozenset({"second_device"} if "valve" in bundles else set())
        return cls(root, store, twin, bundles, None, caps, mqtt_root)

    # -- roles -----------------------------------------------------------------------------

    def device(self, role: str = "pump") -> Device:
        """The device playing ``role``, its sequence state in this rig's state directory."""
        dev = self._devices.get(role)
        if dev is None:
            if role not in self.bundles:
                raise ScenarioError(f"this target has no device for the role {role!r}")
            dev = self._devices[role] = Device.load(self.bundles[role], self.state_dir)
        return dev

    def reload(self, role: str) -> Device:
        """Close the device playing ``role`` and load its bundle again (after a re-key)."""
        dev = self._devices.pop(role, None)
        if dev is not None:
            dev.close()
        return self.device(role)

    def kid(self, role: str = "pump") -> bytes:
        return self.device(role).kid

    def name(self, role: str = "pump") -> str:
        """The registry name of the device playing ``role``."""
        if role not in self._names:
            self._names[role] = self.store.device(self.kid(role)).name
        return self._names[role]

    def now(self) -> float:
        return self.clock.now if self.clock is not None else time.time()

    def seal(self, role: str = "pump", values: Sequence[float] = (21.0,), *, name: str = "temp",
             unit: str | None = "Cel", times: Sequence[float | None] | None = None) -> list[bytes]:
        """Genuine frames of ``role``, one per value, SenML-stamped with the time each will
        arrive at (on the simulated clock when there is one)."""
        dev = self.device(role)
        out = []
        for k, v in enumerate(values):
            t = times[k] if times is not None else (
                self.clock.arrival(k) if self.clock is not None else time.time())
            out.append(dev.seal_raw(senml.encode({name: v}, t, units={name: unit} if unit
                                                 else None)))
        return out

    def window(self) -> dict[str, tuple[int, int]]:
        """(epoch, window top) of every registered device this rig plays."""
        out = {}
        for role in self.bundles:
            if role == "ghost":
                continue
            st = self.store.status(self.name(role))
            out[role] = (st["epoch"], st["window_top"])
        return out

    def stored(self, frames: Sequence[bytes]) -> list[bool]:
        """For each frame, whether the twin stored exactly these bytes (by digest)."""
        out = []
        epochs: dict[bytes, int] = {}
        for f in frames:
            try:
                p = _frame.parse(f)
                if p.kid not in epochs:
                    epochs[p.kid] = self.store.device(p.kid).epoch
            except TwinlinkError:
                out.append(False)
                continue
            digest = frame_digest(f)
            out.append(any(self.store.stored(p.kid, e, [p.seq]).get(p.seq) == digest
                           for e in range(epochs[p.kid] + 1)))
        return out

    def readings(self) -> int:
        """Readings stored for the devices this rig plays (others may share the twin)."""
        return sum(self.store.count_readings(self.name(r)) for r in self.bundles if r != "ghost")

    def activity(self) -> int:
        """Readings stored plus events recorded (counts of aggregated rows included)."""
        evs = self.store.events(limit=1 << 30, audit=False)
        return self.store.count_readings() + sum(e["count"] for e in evs)

    def close(self) -> None:
        for dev in self._devices.values():
            try:
                dev.close()
            except Exception:  # a device that fails to close must not keep the others open
                log.warning("closing device %s failed", dev.name, exc_info=True)
        self._devices.clear()
        if self.twin is not None:
            self.twin.close()
        else:
            self.store.close()


# -- channels --------------------------------------------------------------------------------

class Channel:
    """Carries frames to the twin over one transport; every method returns once the twin has
    processed what it sent (or raises :class:`ScenarioError`)."""

    name = "?"

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    def start(self) -> None:
        """Open the transport."""

    def close(self) -> None:
        """Close what :meth:`start` opened."""

    def genuine(self, role: str, frames: Sequence[bytes]) -> None:
        """Send frames the way device ``role`` does (its own link)."""
        raise NotImplementedError

    def inject(self, payloads: Sequence[bytes], *, topic: str | None = None,
               role: str = "pump", raw: bool = False) -> int:
        """Put attacker bytes on the wire (MQTT: on ``topic``, default the telemetry topic of
        ``role``; serial: each payload framed with a valid CRC unless ``raw``); return how
        many reached the twin."""
        raise NotImplementedError

    def mixed(self, role: str, attack: Sequence[bytes], genuine: Sequence[bytes]) -> int:
        """Attack payloads and genuine frames of ``role`` at the same time; return how many
        attack payloads reached the twin."""
        raise NotImplementedError

    def genuine_acked(self, role: str, frames: Sequence[bytes]) -> list[bytes]:
        """Send genuine frames of ``role`` and return the end-to-end acks (acks v2) the twin
        answered them with, as bytes an eavesdropper on the link would capture."""
        raise NotImplementedError

    def _wait_activity(self, before: int, n: int, what: str) -> None:
        """Against a twin whose ingest is not ours: wait until ``n`` more readings or events
        show, or nothing changed for two seconds."""
        last, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            now = self.rig.activity()
            if now >= before + n:
                return
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since > 2.0:
                return  # the twin did what it does with them; the verdict says whether enough
            if time.monotonic() > deadline:
                raise ScenarioError(f"timed out waiting for the twin to process {what}")
            time.sleep(0.02)


def _interleave(attack: Sequence[bytes], genuine: Sequence[bytes]) -> list[tuple[bool, bytes]]:
    """Genuine frames spread evenly through the attack payloads, in order: (is_attack, bytes)."""
    out: list[tuple[bool, bytes]] = []
    every = max(1, len(attack) // (len(genuine) + 1))
    g = iter(genuine)
    for i, a in enumerate(attack):
        if i % every == every - 1:
            nxt = next(g, None)
            if nxt is not None:
                out.append((False, nxt))
        out.append((True, a))
    out += [(False, f) for f in g]
    return out


class InprocChannel(Channel):
    """Frames handed straight to ``Twin.open_many`` (the API an embedding ingest uses)."""

    name = "inproc"
    source = "api:attack"

    def __init__(self, rig: Rig) -> None:
        super().__init__(rig)
        self.acknowledger: Acknowledger | None = None

    def _open(self, frames: Sequence[bytes]) -> list[Any]:
        twin = self.rig.twin
        if twin is None:
            raise ScenarioError("no twin in this process")
        results: list[Any] = []
        for i in range(0, len(frames), 512):
            results += twin.open_many(list(frames[i:i + 512]), source=self.source)
        return results

    def genuine_acked(self, role: str, frames: Sequence[bytes]) -> list[bytes]:
        # In-process there is no wire: the acks are what an ingest's Acknowledger seals for
        # these results (its own random twin Sender ID, as every ingest process has).
        results = self._open(frames)
        if self.acknowledger is None:
            assert self.rig.twin is not None
            self.acknowledger = Acknowledger(self.rig.twin)
        return [data for _, data in self.acknowledger.answer(results).acks]

    def genuine(self, role: str, frames: Sequence[bytes]) -> None:
        self._open(frames)

    def inject(self, payloads: Sequence[bytes], *, topic: str | None = None,
               role: str = "pump", raw: bool = False) -> int:
        self._open(payloads)
        return len(payloads)

    def mixed(self, role: str, attack: Sequence[bytes], genuine: Sequence[bytes]) -> int:
        self._open([b for _, b in _interleave(attack, genuine)])
        return len(attack)


class SerialChannel(Channel):
    """A pty pair (:class:`~twinlink.testing.VirtualCable`): the devices' side is a
    :class:`~twinlink.transport.serial.SerialLink`, the twin's a
    :class:`~twinlink.ingest.SerialReceiver`; attacker bytes are written into the line."""

    name = "serial"

    def start(self) -> None:
        from ..ingest.serial import SerialReceiver
        from ..testing import VirtualCable
        from ..transport.serial import SerialLink

        if self.rig.twin is None:
            raise ScenarioError("the serial transport needs the twin in this process")
        self.cable = VirtualCable()
        #: What the twin wrote back on the line (its acks), as a tap on the line sees it.
        self.heard: list[bytes] = []
        self._heard_lock = threading.Lock()
        try:
            # acks=True: the twin answers on the line, as ``serve --serial --acks`` does.
            self.receiver = SerialReceiver(self.cable.b, self.rig.twin, acks=True)
            self.link = SerialLink(self.cable.a, on_frame=self._hear)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for part in ("link", "receiver", "cable"):
            obj = getattr(self, part, None)
            if obj is not None:
                obj.close()
                setattr(self, part, None)

    def _wait(self, before: int, n: int, what: str) -> None:
        if not self.receiver.wait_for(before + n, DELIVERY_TIMEOUT):
            raise ScenarioError(f"timed out waiting for the serial receiver to see {what}")

    def _hear(self, data: bytes) -> None:
        with self._heard_lock:  # the link's I/O thread
            self.heard.append(data)

    def genuine_acked(self, role: str, frames: Sequence[bytes]) -> list[bytes]:
        with self._heard_lock:
            h0 = len(self.heard)
        a0 = self.receiver.acks_sent
        self.genuine(role, frames)
        # The receiver writes a batch's acks before it counts the batch's results: once
        # genuine() returns, acks_sent is final for these frames; wait until all came back.
        sent = self.receiver.acks_sent - a0

        def back() -> bool:
            with self._heard_lock:
                return len(self.heard) - h0 >= max(1, sent)

        wait_for(back, DELIVERY_TIMEOUT, f"{max(1, sent)} ack(s) back on the serial line")
        with self._heard_lock:
            return self.heard[h0:]

    def genuine(self, role: str, frames: Sequence[bytes]) -> None:
        before = self.receiver.total
        for f in frames:
            self.link.send(f)
        self._wait(before, len(frames), f"{len(frames)} genuine frame(s)")

    def _put(self, data: bytes) -> int:
        items = list(framing.Decoder().feed(data))  # what the receiver will make of it
        before = self.receiver.total
        self.cable.inject(data, "b")
        self._wait(before, len(items), f"{len(items)} record(s)")
        return sum(1 for it in items if isinstance(it, bytes))

    def inject(self, payloads: Sequence[bytes], *, topic: str | None = None,
               role: str = "pump", raw: bool = False) -> int:
        if raw:
            return self._put(b"".join(payloads) + framing.DELIMITER)
        return self._put(b"".join(framing.wire(p, flush_prefix=True) for p in payloads))

    def mixed(self, role: str, attack: Sequence[bytes], genuine: Sequence[bytes]) -> int:
        data = b"".join(framing.wire(b, flush_prefix=True) for _, b in _interleave(attack,
                                                                                   genuine))
        return self._put(data) - len(genuine)


class Sniffer:
    """An attacker's MQTT subscription: every message on ``pattern`` is kept. Returns once
    the broker has confirmed the subscription (SUBACK), so nothing published after is missed."""

    def __init__(self, client: mqtt.Client, pattern: str, subacks: _Subacks) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        client.message_callback_add(pattern, self._on)
        self.client, self.pattern = client, pattern
        _rc, mid = client.subscribe(pattern, qos=1)
        if mid is None:
            raise ScenarioError(f"could not subscribe to {pattern}")
        subacks.wait(mid, f"the broker to confirm the subscription to {pattern}")

    def _on(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def stop(self) -> None:
        self.client.unsubscribe(self.pattern)
        self.client.message_callback_remove(self.pattern)


class _Subacks:
    """SUBACKs the attacker's client received, by packet id (paho's network thread adds)."""

    def __init__(self) -> None:
        self._mids: set[int] = set()
        self._cond = threading.Condition()

    def on_subscribe(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with self._cond:
            self._mids.add(mid)
            self._cond.notify_all()

    def wait(self, mid: int, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._mids, 10):
                raise ScenarioError(f"timed out waiting for {what}")
            self._mids.discard(mid)


class MqttChannel(Channel):
    """A broker between the devices (each its own :class:`~twinlink.mqtt_link.MqttLink`, with
    its outbox and end-to-end acks) and the twin (an :class:`~twinlink.ingest.MqttIngest` this
    channel runs, or, against an existing setup, the operator's own ingest)."""

    name = "mqtt"

    def __init__(self, rig: Rig, url: str, own_ingest: bool = True) -> None:
        super().__init__(rig)
        self.url = url
        self.own_ingest = own_ingest
        self.ingest_client_id = f"twinlink-attack-ingest-{os.urandom(4).hex()}"
        self.ingest: Any = None
        self._ingest_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._withhold: set[bytes] = set()
        self.links: dict[str, Any] = {}
        self._generation: dict[str, int] = {}
        self.resend_after = 10.0
        self._retained: set[str] = set()
        self.attacker: mqtt.Client | None = None
        #: Device security events (``ack.forged``, ``ack.conflict``) by (role, type).
        self.device_events: Counter[tuple[str, str]] = Counter()
        self._events_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._subacks = _Subacks()
        self.attacker = self.client(f"twinlink-attacker-{os.urandom(4).hex()}")
        self.attacker.on_subscribe = self._subacks.on_subscribe
        if self.own_ingest:
            self.start_ingest()

    def client(self, client_id: str, clean_start: bool = True) -> mqtt.Client:
        """A plain MQTT v5 client on the broker, connected, its loop running."""
        from ..transport.mqtt import parse_url

        u = parse_url(self.url)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        connected = threading.Event()
        c.on_connect = lambda *a: connected.set()
        c.connect(u.host, u.port, clean_start=clean_start)
        c.loop_start()
        if not connected.wait(10):
            c.loop_stop()
            raise ScenarioError(f"could not connect to {self.url}")
        return c

    def start_ingest(self, client_id: str | None = None) -> None:
        """Start (again) the ingest; the same client id resumes its broker session."""
        from ..ingest.mqtt import MqttIngest

        if self.rig.twin is None:
            raise ScenarioError("no twin in this process to run an ingest for")
        if client_id is not None:
            self.ingest_client_id = client_id
        ing = MqttIngest(self.url, self.rig.twin, client_id=self.ingest_client_id,
                         batch_wait=0.002, topic_root=self.rig.topic_root)
        real_ack = ing.transport.ack

        def ack(msg: Any) -> bool:
            # Fault injection: an ingest that dies between its commit and its PUBACK.
            if msg.payload in self._withhold:
                self._withhold.discard(msg.payload)
                return False
            return real_ack(msg)  # type: ignore[no-any-return]

        ing.transport.ack = ack  # type: ignore[method-assign]
        self._stop = threading.Event()
        self.ingest = ing
        self._ingest_thread = threading.Thread(target=ing.run, args=(self._stop,),
                                               name="twinlink-attack-ingest", daemon=True)
        self._ingest_thread.start()
        wait_for(ing.subscribed.is_set, 10, f"the ingest to subscribe ({ing.last_error})")

    def stop_ingest(self) -> None:
        if self._ingest_thread is not None:
            self._stop.set()
            self._ingest_thread.join(20)
            self._ingest_thread = None

    def withhold_ack(self, payload: bytes) -> None:
        """The ingest's broker acknowledgement of the message carrying ``payload`` is not sent
        (a crash between the database commit and the PUBACK): the broker redelivers it."""
        self._withhold.add(payload)

    def close(self) -> None:
        for link in self.links.values():
            link.close(2.0)
        self.links.clear()
        self.stop_ingest()
        if self.attacker is not None:
            for t in self._retained:  # leave the broker as we found it
                self.attacker.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
            self.attacker.disconnect()
            self.attacker.loop_stop()
            self.attacker = None

    # -- devices ---------------------------------------------------------------------------

    def link(self, role: str = "pump") -> Any:
        """The device's own MQTT link (outbox, end-to-end acks), connected and subscribed."""
        from ..mqtt_link import for_device

        lk = self.links.get(role)
        if lk is None:
            dev = self.rig.device(role)
            gen = self._generation.get(role, 0)
            lk = for_device(dev, self.url, outbox=self.rig.root / f"{role}-{gen}.outbox",
                            resend_after=self.resend_after, timeout=10.0,
                            topic_root=self.rig.topic_root,
                            on_event=lambda kind, detail, role=role: self._device_event(
                                role, kind, detail),
                            client_id=f"twinlink-attack-{role}-{os.urandom(3).hex()}")
            self.links[role] = lk
            wait_for(lk.ack_subscribed.is_set, 10, f"the {role} link to subscribe")
        return lk

    def _device_event(self, role: str, kind: str, detail: str) -> None:
        # The scenario scores device events from the link's counters; logged at debug level
        # only, so the attacks a run makes on purpose do not clutter the scorecard.
        with self._events_lock:
            self.device_events[(role, kind)] += 1
        log.debug("device %s: %s: %s", role, kind, detail)

    def close_link(self, role: str) -> None:
        lk = self.links.pop(role, None)
        if lk is not None:
            lk.close(2.0)
            self._generation[role] = self._generation.get(role, 0) + 1

    # -- delivery --------------------------------------------------------------------------

    def received(self) -> int:
        return int(self.ingest.stats.received) if self.ingest is not None else 0

    def _wait(self, before_rx: int, before_act: int, n: int, what: str) -> None:
        if self.own_ingest:
            wait_for(lambda: self.received() >= before_rx + n, DELIVERY_TIMEOUT, what)
        else:
            self._wait_activity(before_act, n, what)

    def _marks(self) -> tuple[int, int]:
        return self.received(), (0 if self.own_ingest else self.rig.activity())

    def genuine(self, role: str, frames: Sequence[bytes]) -> None:
        lk = self.link(role)
        rx, act = self._marks()
        lk.send_many(list(frames))
        self._wait(rx, act, len(frames), f"{len(frames)} genuine frame(s) of {role}")

    def telemetry_topic(self, role: str = "pump") -> str:
        from ..transport.mqtt import topic

        return topic(self.rig.kid(role), "t", self.rig.topic_root)

    def ack_topic(self, role: str = "pump") -> str:
        from ..transport.mqtt import topic

        return topic(self.rig.kid(role), "a", self.rig.topic_root)

    def presence_topic(self) -> str:
        """``<root>/_twin``: where the serving twin announces itself (retained)."""
        from ..transport.mqtt import presence_topic

        return presence_topic(self.rig.topic_root)

    def publish(self, topic: str, payloads: Sequence[bytes], retain: bool = False) -> None:
        """Publish at QoS 1 as the attacker and wait for the broker to have them."""
        assert self.attacker is not None
        if retain:
            self._retained.add(topic)
        infos = [self.attacker.publish(topic, p, qos=1, retain=retain) for p in payloads]
        for info in infos:
            info.wait_for_publish(DELIVERY_TIMEOUT)

    def reaches_ingest(self, topic: str, payload: bytes) -> bool:
        """Whether the ingest processes this PUBLISH: the broker forwards it (the ingest's
        subscription ``<root>/+/t``, its Maximum Packet Size) and it is not on the presence
        level (``<root>/_twin/...``, which the ingest treats as presence, never as a frame)."""
        return (_telemetry_shaped(topic, self.rig.topic_root)
                and len(payload) + len(topic) + 16 <= MAX_PACKET)

    def inject(self, payloads: Sequence[bytes], *, topic: str | None = None,
               role: str = "pump", raw: bool = False, retain: bool = False) -> int:
        t = topic or self.telemetry_topic(role)
        n = sum(1 for p in payloads if self.reaches_ingest(t, p))
        rx, act = self._marks()
        self.publish(t, payloads, retain)
        self._wait(rx, act, n, f"{n} injected message(s)")
        return n

    def mixed(self, role: str, attack: Sequence[bytes], genuine: Sequence[bytes]) -> int:
        lk = self.link(role)
        t = self.telemetry_topic(role)
        rx, act = self._marks()
        flood = threading.Thread(target=self.publish, args=(t, attack), daemon=True)
        flood.start()
        lk.send_many(list(genuine))
        flood.join(DELIVERY_TIMEOUT)
        self._wait(rx, act, len(attack) + len(genuine), "the flood and the genuine frames")
        return len(attack)

    def genuine_acked(self, role: str, frames: Sequence[bytes]) -> list[bytes]:
        t = self.ack_topic(role)
        sniffer = self.sniff(t)
        try:
            a0 = self.ingest.stats.acks if self.ingest is not None else 0
            self.genuine(role, frames)

            def want() -> int:  # the acks our ingest has published so far (at least one)
                return max(1, self.ingest.stats.acks - a0) if self.ingest is not None else 1

            wait_for(lambda: len(sniffer.on(t)) >= want(), DELIVERY_TIMEOUT,
                     f"the twin's ack(s) on {t}")
        finally:
            sniffer.stop()
        return sniffer.on(t)

    def sniff(self, pattern: str) -> Sniffer:
        """Subscribe the attacker to ``pattern`` (e.g. ``#``)."""
        assert self.attacker is not None
        return Sniffer(self.attacker, pattern, self._subacks)


def _telemetry_shaped(topic: str, root: str) -> bool:
    """Whether ``topic`` matches the ingest's subscription ``<root>/+/t`` (any middle level,
    even an empty one) other than ``<root>/_twin/t``."""
    prefix = root + "/"
    if not topic.startswith(prefix) or "+" in topic or "#" in topic:
        return False
    parts = topic[len(prefix):].split("/")
    return len(parts) == 2 and parts[1] == "t" and parts[0] != PRESENCE_LEVEL
