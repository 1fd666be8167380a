"""What a scenario is (plain data) and what running one yields.

A :class:`Scenario` says what to do (``action`` names a function in
:mod:`twinlink.attack.actions`, ``params`` are its arguments), over which transports, and what a
sound twin does about it (``verdict``, ``event``). A :class:`Result` is one scenario run over
one transport, with its mark on the scorecard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

#: Transports a scenario can run over: frames handed to ``Twin.open_many`` in-process, a pty
#: serial line into a :class:`~twinlink.ingest.SerialReceiver`, a local mosquitto into an
#: :class:`~twinlink.ingest.MqttIngest`.
TRANSPORTS = ("inproc", "serial", "mqtt")

#: What a sound twin does about a scenario.
BLOCKED = "BLOCKED"      # refused: nothing stored, window unchanged, the event recorded
DETECTED = "DETECTED"    # an authentic lie (or a silence): stored, but flagged with the event
ACCEPTED = "ACCEPTED"    # a control: genuine traffic stored, no event at all
VERDICTS = (BLOCKED, DETECTED, ACCEPTED)

#: The scorecard's marks.
OK = "ok"
MISSED = "MISSED"                  # an attack got further than expected, or without its event
FALSE_POSITIVE = "FALSE-POSITIVE"  # a control raised an event, or genuine traffic was refused
ERROR = "ERROR"                    # the scenario crashed, hung or could not set up its attack
SKIPPED = "skipped"                # not applicable to this target (reason given)
MARKS = (OK, MISSED, FALSE_POSITIVE, ERROR, SKIPPED)

#: Setup a scenario may need beyond one registered device (an existing twin may lack them).
NEEDS = (
    "second_device",  # another registered device (kid swap, topic spoofing)
    "operator",       # change the registry or configuration (revoke, re-key, QC bounds)
    "clock",          # the detectors on a simulated clock (fast-forwards hours and days)
    "own_ingest",     # an ingest this run starts and stops (redelivery, retained poisoning)
)


@dataclass(frozen=True)
class Scenario:
    """One catalogued attack or control. Validated on construction (ValueError)."""

    id: str
    title: str
    action: str
    verdict: str
    event: Optional[str]
    transports: tuple[str, ...] = TRANSPORTS
    #: MITRE ATT&CK for ICS technique id and name, where one fits.
    technique: Optional[tuple[str, str]] = None
    params: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    #: What the scenario assumes (configuration an operator would make, simulated time ...).
    assumes: str = ""

    def __post_init__(self) -> None:
        if not self.id or not all(c.isalnum() or c == "-" for c in self.id):
            raise ValueError(f"scenario id {self.id!r}: letters, digits and '-' only")
        if self.verdict not in VERDICTS:
            raise ValueError(f"{self.id}: verdict must be one of {VERDICTS}")
        if self.verdict == ACCEPTED and self.event is not None:
            raise ValueError(f"{self.id}: a control expects no event")
        if self.verdict == DETECTED and self.event is None:
            raise ValueError(f"{self.id}: a detection names its event")
        if not self.transports or any(t not in TRANSPORTS for t in self.transports):
            raise ValueError(f"{self.id}: transports must be a subset of {TRANSPORTS}")
        if any(n not in NEEDS for n in self.needs):
            raise ValueError(f"{self.id}: needs must be a subset of {NEEDS}")
        if self.technique is not None and not (
                len(self.technique) == 2 and self.technique[0].startswith("T0")):
            raise ValueError(f"{self.id}: technique is (ATT&CK for ICS id, name)")


@dataclass
class Result:
    """One scenario over one transport: what was expected, what was seen, the mark."""

    scenario: Scenario
    transport: str
    mark: str
    observed: str = ""          # BLOCKED / DETECTED / ACCEPTED / "" (nothing to judge)
    detail: str = ""
    seconds: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    stored_attack: int = 0
    delivered: int = 0

    @property
    def id(self) -> str:
        return f"{self.scenario.id}@{self.transport}"

    def to_json(self) -> dict[str, Any]:
        sc = self.scenario
        return {
            "id": sc.id, "transport": self.transport, "title": sc.title,
            "technique": list(sc.technique) if sc.technique else None,
            "expected": sc.verdict, "expected_event": sc.event, "observed": self.observed,
            "mark": self.mark, "detail": self.detail, "seconds": round(self.seconds, 3),
            "events": dict(sorted(self.events.items())), "attack_delivered": self.delivered,
            "attack_stored": self.stored_attack,
        }
