"""``twinlink attack``: simulate attacks against a twin and score its defences.

The catalogue (:mod:`.catalogue`) is data; :func:`run` plays each scenario over each transport
against a fresh twin (or an existing one) and returns one :class:`Result` per run; the
:mod:`.report` module renders the scorecard as a table, JSON or JUnit XML.
"""

from __future__ import annotations

from .catalogue import SCENARIOS, by_id
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
from .runner import Summary, Target, run, select

__all__ = ["ACCEPTED", "BLOCKED", "DETECTED", "ERROR", "FALSE_POSITIVE", "MISSED", "OK",
           "SCENARIOS", "SKIPPED", "TRANSPORTS", "Result", "Scenario", "Summary", "Target",
           "by_id", "run", "select"]
