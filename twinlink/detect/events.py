"""What the detectors report: QARTOD flags, :class:`DetectionEvent`, :class:`Verdict`, and the
catalogue of event types (name, default severity, meaning) for the twin's event registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# IOOS QARTOD flag values
PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING = 1, 2, 3, 4, 9

DETECTED, INFO = "detected", "info"

#: type -> (default severity 0..10, one-line meaning). A ``<type>.cleared`` (outcome "info",
#: severity 1) follows each stateful type when its series or device returns to normal.
EVENT_TYPES: dict[str, tuple[int, str]] = {
    "value.out_of_range": (6, "a value outside its gross range (physical or configured bounds)"),
    "value.spike": (4, "a single reading far off both its neighbours (robust to steps)"),
    "value.rate_of_change": (4, "a value changed faster than its physical rate limit"),
    "value.flatline": (5, "the same value repeated far longer than this series ever does"),
    "value.drift": (4, "the series drifted away from its learned daily baseline"),
    "value.syntax": (5, "a reading of the wrong type, non-finite, or a duplicate in one pack"),
    "device.silent": (5, "no frame for silent_factor x the expected interval"),
    "device.back_online": (1, "a silent device sent again"),
    "stream.seq_gap": (3, "sequence numbers skipped: frames missing (detail.missing)"),
    "stream.seq_jump": (7, "sequence number far ahead of elapsed time: burns the replay window"),
    "stream.delayed": (4, "SenML time far behind arrival: frames held back"),
    "device.clock_skew": (5, "SenML time in the future, going backwards, or invalid"),
    "device.rate_anomaly": (6, "message rate or frame size far off the device's own baseline"),
    "detect.series_cap": (6, "the device reached its cap of distinct series; new ones ignored"),
}

#: Types with a state that a ``.cleared`` event closes.
STATEFUL = frozenset({"value.out_of_range", "value.spike", "value.rate_of_change",
                      "value.flatline", "value.drift", "value.syntax", "stream.delayed",
                      "device.clock_skew", "device.rate_anomaly"})


def cleared(kind: str) -> str:
    """The type of the event that closes ``kind`` (``device.back_online`` for silence)."""
    return "device.back_online" if kind == "device.silent" else kind + ".cleared"


@dataclass(frozen=True)
class DetectionEvent:
    """One detection. ``seq`` is the frame that caused it (None for a sweep); ``count`` how many
    occurrences it stands for; ``detail`` JSON-friendly facts for an operator (bounds,
    thresholds, counts; a value only where it is the finding, e.g. out of range)."""

    type: str
    outcome: str
    severity: int
    device: str
    series: Optional[str] = None
    seq: Optional[int] = None
    time: Optional[float] = None
    detail: dict[str, Any] = field(default_factory=dict)
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "outcome": self.outcome,
                               "severity": self.severity, "device": self.device,
                               "count": self.count}
        if self.series is not None:
            out["series"] = self.series
        if self.seq is not None:
            out["seq"] = self.seq
        if self.time is not None:
            out["time"] = self.time
        if self.detail:
            out["detail"] = dict(self.detail)
        return out


def event(kind: str, device: str, series: str | None = None, seq: int | None = None,
          time: float | None = None, detail: dict[str, Any] | None = None,
          count: int = 1) -> DetectionEvent:
    """A ``detected`` event of a catalogued type, or its ``info`` clear (``*.cleared``,
    ``device.back_online``), with the catalogue's severity."""
    if kind in EVENT_TYPES and kind != "device.back_online":
        severity, outcome = EVENT_TYPES[kind][0], DETECTED
    else:
        severity, outcome = 1, INFO
    return DetectionEvent(kind, outcome, severity, device, series, seq, time, detail or {},
                          count)


#: (context epoch, seq, record index, flag, tests) for a reading of an earlier frame.
Revision = tuple[int, int, int, int, tuple[str, ...]]


@dataclass
class Verdict:
    """The result of :meth:`Detector.observe` for one frame.

    ``flags[i]`` and ``tests[i]`` belong to ``records[i]``. ``revisions`` lists
    ``(context epoch, seq, record index, flag, tests)`` for readings of *earlier* frames that
    this frame settled (a spike candidate is only confirmed or cleared by the next reading); a
    store may apply them, and a store that ignores them keeps the more cautious flag.
    """

    flags: list[int]
    tests: list[tuple[str, ...]]
    events: list[DetectionEvent]
    revisions: list[Revision] = field(default_factory=list)
