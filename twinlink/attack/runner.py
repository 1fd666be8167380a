"""Run scenarios against a twin and mark each on the scorecard.

:func:`run` builds, for every (scenario, transport), a :class:`~twinlink.attack.rig.Rig` (a
fresh twin in a temporary workspace, or the existing one given), opens the transport, warms
the devices up, runs the scenario's action through a :class:`Session` and judges what the twin
did from its store (readings by frame digest, event counts by type, replay windows) and, for
device-side defences, from the device link's counters.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import keys
from .broker import LocalBroker, find_mosquitto
from .model import (
    ACCEPTED,
    BLOCKED,
    DETECTED,
    ERROR,
    FALSE_POSITIVE,
    MISSED,
    OK,
    SKIPPED,
    TRANSPORTS,
    Result,
    Scenario,
)
from .rig import Channel, InprocChannel, MqttChannel, Rig, ScenarioError, SerialChannel

__all__ = ["Session", "Target", "run", "select"]

#: Seconds one scenario run may take before it is marked ERROR (hung).
SCENARIO_TIMEOUT = 60.0


@dataclass
class Target:
    """What to attack. By default a fresh twin per scenario in ``workdir`` (and a private
    mosquitto for MQTT); with ``db`` an existing twin: its database, its key (for in-process
    runs), one or two device bundles and, for MQTT, the broker its ingest listens on.
    ``topic_root``: the MQTT topic root; for an existing twin default the one its database
    records (else the victim bundle's, else ``twinlink``), for fresh twins a two-level root of
    this run's own (so the catalogue also proves that nothing assumes ``twinlink``)."""

    workdir: Path
    db: str | None = None
    twin_key: str | None = None
    devices: Sequence[str] = ()
    mqtt_url: str | None = None
    topic_root: str | None = None

    @property
    def existing(self) -> bool:
        return self.db is not None

    def capabilities(self) -> frozenset[str]:
        if not self.existing:
            return frozenset({"second_device", "operator", "clock", "own_ingest"})
        return frozenset({"second_device"} if len(self.devices) > 1 else set())


def select(scenarios: Iterable[Scenario], only: Sequence[str] = (),
           transports: Sequence[str] = TRANSPORTS) -> list[tuple[Scenario, str]]:
    """The (scenario, transport) runs: ``only`` ids (all if empty; ValueError naming an
    unknown id), each over the given transports it supports, in catalogue order."""
    scs = list(scenarios)
    known = {sc.id for sc in scs}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise ValueError(f"unknown scenario id(s): {', '.join(unknown)}")
    return [(sc, t) for sc in scs if not only or sc.id in only
            for t in sc.transports if t in transports]


# -- what an action sees -----------------------------------------------------------------------

class Session:
    """One scenario over one transport, as its action drives it.

    The action sends genuine traffic (:meth:`genuine`), attacker bytes (:meth:`attack`),
    authentic frames of a compromised device (:meth:`lie`) or both at once (:meth:`mixed`);
    records what a device noticed (:meth:`device_event`) and invariants that broke
    (:meth:`fail`). :class:`ScenarioError` (:meth:`require`) means it could not run as written.
    """

    def __init__(self, scenario: Scenario, transport: str, rig: Rig, channel: Channel) -> None:
        self.scenario, self.transport, self.rig, self.ch = scenario, transport, rig, channel
        self.params: dict[str, Any] = dict(scenario.params)
        self.attack_payloads: list[bytes] = []
        self.lies: list[bytes] = []
        self.genuine_frames: list[bytes] = []
        self.delivered = 0
        #: Events the expected type must reach (default: one per attack payload delivered).
        self.expect_events: int | None = None
        self.device_events: Counter[str] = Counter()
        self.failures: list[str] = []
        self.window_moves: list[str] = []
        self.rng = random.Random(f"{scenario.id}@{transport}")
        self._series: dict[str, int] = {}
        self.readings0 = 0

    # -- genuine readings ------------------------------------------------------------------

    def normal(self, role: str = "pump", n: int = 1) -> list[float]:
        """The next ``n`` values of the role's normal series: a slow wave with sensor noise."""
        k0 = self._series.get(role, 0)
        self._series[role] = k0 + n
        return [round(21.0 + 0.4 * math.sin((k0 + k) / 9.0) + self.rng.gauss(0.0, 0.05), 3)
                for k in range(n)]

    def seal(self, role: str = "pump", n: int = 1, values: Sequence[Any] | None = None,
             **kw: Any) -> list[bytes]:
        """Genuine frames of ``role``: ``values`` (``"normal"`` entries continue the normal
        series), else ``n`` normal values."""
        vals = [self.normal(role)[0] if v == "normal" else v for v in values] \
            if values is not None else self.normal(role, n)
        return self.rig.seal(role, vals, **kw)

    def genuine(self, frames: Sequence[bytes], role: str = "pump") -> None:
        """Send genuine frames over the device's own link; they must all be stored."""
        self.genuine_frames += frames
        self.ch.genuine(role, frames)

    def lie(self, frames: Sequence[bytes], role: str = "pump") -> None:
        """Authentic frames of a compromised ``role``: expected stored, and flagged."""
        self.lies += frames
        self.ch.genuine(role, frames)

    # -- attacks -----------------------------------------------------------------------------

    def attack(self, payloads: Sequence[bytes], *, role: str = "pump", topic: str | None = None,
               raw: bool = False, **kw: Any) -> int:
        """Put attacker bytes on the wire; none may be stored and no window may move."""
        before = self.rig.window()
        n = self.ch.inject(payloads, role=role, topic=topic, raw=raw, **kw)
        self._windows(before, {})
        if not raw:
            self.attack_payloads += payloads
        self.delivered += n
        return n

    def mixed(self, attack: Sequence[bytes], genuine: Sequence[bytes],
              role: str = "pump") -> int:
        """Attack payloads while ``role`` sends genuine frames: the genuine ones all stored,
        no attack payload stored, the window moved by the genuine ones only."""
        from ..frame import parse

        before = self.rig.window()
        n = self.ch.mixed(role, attack, genuine)
        tops = {role: max(parse(f).seq for f in genuine)} if genuine else {}
        self._windows(before, tops)
        self.attack_payloads += attack
        self.genuine_frames += genuine
        self.delivered += n
        return n

    def _windows(self, before: dict[str, tuple[int, int]], tops: dict[str, int]) -> None:
        after = self.rig.window()
        for role, (epoch, top) in before.items():
            want = (epoch, max(top, tops.get(role, -1)))
            if after.get(role) != want:
                self.window_moves.append(f"{role} window {before[role]} -> {after.get(role)}")

    def sweep(self, advance: float) -> None:
        """Let ``advance`` seconds pass on the detectors' clock, then run the twin's sweep."""
        if self.rig.clock is None or self.rig.twin is None:
            raise ScenarioError("sweeping needs the twin's detectors on a simulated clock")
        self.rig.twin.sweep(self.rig.clock.advance(advance))

    # -- findings ----------------------------------------------------------------------------

    def device_event(self, kind: str, n: int = 1) -> None:
        """A device-side defence fired ``n`` times (e.g. ``ack.forged``)."""
        if n > 0:
            self.device_events[kind] += n

    def fail(self, message: str) -> None:
        """An invariant of the scenario broke (the scorecard shows it as a miss)."""
        self.failures.append(message)

    def require(self, cond: bool, message: str) -> None:
        """A precondition of the attack itself; raise :class:`ScenarioError` if it fails."""
        if not cond:
            raise ScenarioError(message)


# -- judging --------------------------------------------------------------------------------

def event_counts(rig: Rig) -> Counter[str]:
    """Security events (audit events left out) by type, aggregated counts included."""
    out: Counter[str] = Counter()
    for e in rig.store.events(limit=1 << 30, audit=False):
        out[e["type"]] += e["count"]
    return out


def _fmt(events: Counter[str]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(events.items())) or "no event"


def judge(s: Session, events: Counter[str]) -> tuple[str, str, str, int]:
    """(mark, observed verdict, detail, attack frames stored) for a finished session."""
    sc = s.scenario
    seen = events + s.device_events
    genuine = list(dict.fromkeys(s.genuine_frames))
    lies = list(dict.fromkeys(s.lies))
    stored_genuine = sum(s.rig.stored(genuine)) if genuine else 0
    stored_lies = sum(s.rig.stored(lies)) if lies else 0
    lost = len(genuine) - stored_genuine
    # Readings nothing genuine explains: stored attack payloads (a replay's bytes are a
    # genuine frame's, so they are counted, not looked up).
    stored_attack = s.rig.readings() - s.readings0 - stored_genuine - stored_lies
    if stored_attack > 0 or stored_lies:
        observed = DETECTED if sc.event is not None and seen[sc.event] else ACCEPTED
    elif s.attack_payloads or s.delivered:
        observed = BLOCKED
    elif sc.event is not None and seen[sc.event]:
        observed = DETECTED
    else:
        observed = ACCEPTED if not seen else ""
    problems: list[str] = []
    if sc.verdict == ACCEPTED:
        if seen:
            problems.append(f"raised {_fmt(seen)}")
        if lost:
            problems.append(f"{lost} of {len(genuine)} genuine frame(s) not stored")
        problems += s.failures
        if problems:
            return FALSE_POSITIVE, observed, "; ".join(problems), 0
        return OK, ACCEPTED, f"{len(genuine)} genuine stored, no event", 0
    if stored_attack > 0:
        problems.append(f"{stored_attack} of {len(s.attack_payloads)} attack frame(s) stored")
    if lies and stored_lies < len(lies):
        problems.append(f"{len(lies) - stored_lies} of {len(lies)} authentic frame(s) refused")
    problems += s.window_moves
    need = s.expect_events if s.expect_events is not None else (
        s.delivered if sc.verdict == BLOCKED else 1)
    if sc.event is not None and seen[sc.event] < need:
        problems.append(f"expected {sc.event} x{need}, saw {_fmt(seen)}")
    if lost:
        problems.append(f"{lost} of {len(genuine)} genuine frame(s) lost")
    problems += s.failures
    if problems:
        return MISSED, observed, "; ".join(problems), stored_attack
    what = (f"{s.delivered} delivered, {_fmt(seen)}" if sc.verdict == BLOCKED
            else _fmt(Counter({k: v for k, v in seen.items() if k == sc.event})))
    return OK, sc.verdict, what, 0


# -- running --------------------------------------------------------------------------------

class _Run:
    """Shared state of one :func:`run`: the workspace, the twin key, the broker."""

    def __init__(self, target: Target, need_mqtt: bool) -> None:
        self.target = target
        self.count = 0
        self.broker: LocalBroker | None = None
        self.mqtt_skip = ""
        self.twin_key: keys.TwinKey | None = None
        self.topic_root = target.topic_root
        if not target.existing:
            if self.topic_root is None:
                self.topic_root = f"twinlink-attack/{os.urandom(3).hex()}"
            self.twin_key = keys.TwinKey.generate()
            keys.write_public(target.workdir / "twin.pub", self.twin_key.public_pem(),
                              overwrite=True)
        if need_mqtt:
            if target.mqtt_url is not None:
                pass
            elif target.existing:
                self.mqtt_skip = "give --mqtt URL: the broker the twin's ingest listens on"
            elif find_mosquitto() is None:
                self.mqtt_skip = "mosquitto is not installed (apt-get install mosquitto)"
            else:
                self.broker = LocalBroker(target.workdir / "broker")

    @property
    def mqtt_url(self) -> str | None:
        return self.target.mqtt_url or (self.broker.url if self.broker else None)

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()

    def skip_reason(self, sc: Scenario, transport: str) -> str:
        missing = [n for n in sc.needs if n not in self.target.capabilities()]
        if missing:
            return f"needs {', '.join(missing)}: not available against an existing twin"
        if transport == "mqtt" and self.mqtt_skip:
            return self.mqtt_skip
        if transport == "serial" and self.target.existing:
            return "serial runs need a fresh twin (the receiver runs in this process)"
        if transport == "inproc" and self.target.existing and not self.target.twin_key:
            return "give --twin-key to open frames in this process"
        return ""

    def rig(self, sc: Scenario, transport: str) -> Rig:
        self.count += 1
        root = self.target.workdir / f"{self.count:03d}-{sc.id}-{transport}"
        if self.target.existing:
            assert self.target.db is not None
            return Rig.existing(root, self.target.db, self.target.twin_key,
                                list(self.target.devices), in_process=transport != "mqtt",
                                topic_root=self.topic_root)
        assert self.twin_key is not None and self.topic_root is not None
        # A kid per run: retained messages and sessions on the shared broker never cross runs.
        prefix = b"\xa7" + self.count.to_bytes(2, "big")
        return Rig.fresh(root, self.twin_key, self.target.workdir / "twin.pub", prefix,
                         sc.params.get("qc"), self.topic_root)

    def channel(self, rig: Rig, transport: str) -> Channel:
        if transport == "inproc":
            return InprocChannel(rig)
        if transport == "serial":
            return SerialChannel(rig)
        assert self.mqtt_url is not None
        return MqttChannel(rig, self.mqtt_url, own_ingest=not self.target.existing)


def _warm_up(s: Session) -> None:
    """Every device sends ``history`` genuine readings first (the twin adopts its security
    context, the detectors learn a little); then the ``old`` device is revoked."""
    history = int(s.params.get("history", 20))
    for role in ("pump", "valve", "old"):
        if role in s.rig.bundles:
            s.ch.genuine(role, s.seal(role, history if role != "old" else 1))
    if "old" in s.rig.bundles:
        s.rig.store.revoke(s.rig.name("old"), "attack scenario: device reported stolen")


def run_one(sc: Scenario, transport: str, state: _Run,
            timeout: float = SCENARIO_TIMEOUT) -> Result:
    """Run one scenario over one transport; never raises (a failure is an ERROR result)."""
    from . import actions

    t0 = time.monotonic()
    reason = state.skip_reason(sc, transport)
    if reason:
        return Result(sc, transport, SKIPPED, detail=reason)
    box: dict[str, Any] = {}

    def body() -> None:
        rig = state.rig(sc, transport)
        ch: Channel | None = None
        try:
            ch = state.channel(rig, transport)
            ch.start()
            s = Session(sc, transport, rig, ch)
            _warm_up(s)
            before = event_counts(rig)
            s.readings0 = rig.readings()
            actions.run(sc.action, s)
            box["judged"] = judge(s, event_counts(rig) - before)
            box["events"] = dict(event_counts(rig) - before + s.device_events)
            box["delivered"] = s.delivered
        finally:
            try:
                if ch is not None:
                    ch.close()
            finally:
                rig.close()

    def guarded() -> None:
        try:
            body()
        except ScenarioError as exc:
            box["error"] = str(exc)
        except Exception as exc:
            box["error"] = f"{type(exc).__name__}: {exc}"
            box["trace"] = traceback.format_exc()

    worker = threading.Thread(target=guarded, name=f"twinlink-attack {sc.id}", daemon=True)
    worker.start()
    worker.join(timeout)
    dt = time.monotonic() - t0
    if worker.is_alive():
        return Result(sc, transport, ERROR, detail=f"hung: no verdict after {timeout:.0f} s",
                      seconds=dt)
    if "error" in box:
        return Result(sc, transport, ERROR, detail=box["error"], seconds=dt)
    mark, observed, detail, stored = box["judged"]
    return Result(sc, transport, mark, observed, detail, dt, box["events"], stored,
                  box["delivered"])


def run(runs: Sequence[tuple[Scenario, str]], target: Target | None = None,
        on_result: Callable[[int, int, Result], None] | None = None,
        on_start: Callable[[int, int, Scenario, str], None] | None = None,
        timeout: float = SCENARIO_TIMEOUT) -> list[Result]:
    """Run the (scenario, transport) pairs in order; return one :class:`Result` each.

    ``target`` defaults to fresh twins in a temporary workspace that is removed afterwards.
    ``on_start(i, n, scenario, transport)`` and ``on_result(i, n, result)`` report progress.
    Raises :class:`~twinlink.errors.TransportError` only if a broker was needed and could
    not be started.
    """
    scratch = target is None
    if target is None:
        target = Target(Path(tempfile.mkdtemp(prefix="twinlink-attack-")))
    target.workdir.mkdir(parents=True, exist_ok=True)
    state = _Run(target, any(t == "mqtt" for _, t in runs))
    results: list[Result] = []
    try:
        for i, (sc, transport) in enumerate(runs, 1):
            if on_start is not None:
                on_start(i, len(runs), sc, transport)
            res = run_one(sc, transport, state, timeout)
            results.append(res)
            if on_result is not None:
                on_result(i, len(runs), res)
    finally:
        state.close()
        if scratch and not os.environ.get("TWINLINK_ATTACK_KEEP"):
            shutil.rmtree(target.workdir, ignore_errors=True)
    return results


@dataclass
class Summary:
    """Counts per mark, and whether the scorecard passes (every run ok or skipped)."""

    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @classmethod
    def of(cls, results: Sequence[Result], seconds: float) -> Summary:
        return cls(Counter(r.mark for r in results), seconds)

    @property
    def passed(self) -> bool:
        return all(m in (OK, SKIPPED) for m in self.counts) and self.counts[OK] > 0

    def line(self) -> str:
        total = sum(self.counts.values())
        parts = [f"{self.counts[m]} {m}" for m in (OK, MISSED, FALSE_POSITIVE, ERROR, SKIPPED)]
        return f"{total} runs: {', '.join(parts)} in {self.seconds:.1f} s"
