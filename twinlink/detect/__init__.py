"""Detection of authentic lies: QARTOD-style value QC, liveness and behaviour anomalies.

Signatures prove who sent a reading, not that it is true. This package flags suspicious values
and stream behaviour per device, in pure Python with a few floats of state per series.

The interface (stable; the twin's ingest, store and CLI build on it)::

    engine = Detector(config=None)            # sane defaults, no configuration needed
    verdict = engine.observe(device, seq, records, arrival, frame_size, context_epoch=0)
        # records: (name, value, unit, time) tuples, e.g. senml.Record
        # verdict.flags[i]:  QARTOD flag of records[i]: 1 pass, 2 not evaluated, 3 suspect,
        #                    4 fail, 9 missing
        # verdict.tests[i]:  names of the tests that tripped for records[i]
        # verdict.events:    DetectionEvent list (raised on *entering* a state)
        # verdict.revisions: (epoch, seq, index, flag, tests) settling an earlier reading
    events = engine.sweep(now)                # liveness; call about once a second
    engine.state(device)                      # JSON-friendly: stream, series QC, open detections
    engine.configure(DetectConfig(...))       # new settings, learned state kept
    engine.export_state() / engine.import_state(obj)   # keep baselines across a restart

Event types (:data:`EVENT_TYPES`, each stateful one closed by ``<type>.cleared``, outcome
"info"): value.out_of_range, value.spike, value.rate_of_change, value.flatline, value.drift,
value.syntax, device.silent / device.back_online, stream.seq_gap, stream.seq_jump,
stream.delayed, device.clock_skew, device.rate_anomaly, detect.series_cap.

Configuration: :class:`DetectConfig` (JSON via ``to_json``/``from_json``, TOML via
:func:`load_toml`); see ``docs/DETECTION.md``.
"""

from .config import DetectConfig, DetectConfigError, load_toml, loads_toml
from .engine import Detector
from .events import (
    DETECTED,
    EVENT_TYPES,
    FAIL,
    INFO,
    MISSING,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    DetectionEvent,
    Verdict,
)

__all__ = [
    "DETECTED", "EVENT_TYPES", "FAIL", "INFO", "MISSING", "NOT_EVALUATED", "PASS", "SUSPECT",
    "DetectConfig", "DetectConfigError", "DetectionEvent", "Detector", "Verdict", "load_toml",
    "loads_toml",
]
