"""Exponential backoff: how long to wait before trying a failed thing again.

One helper for every retry loop twinlink runs itself: the serial link reopening a vanished port
and the MQTT ingest retrying a batch its database refused. (MQTT reconnects are paho's own,
configured with :meth:`paho.mqtt.client.Client.reconnect_delay_set`.)
"""

from __future__ import annotations

import random


class Backoff:
    """Delays ``d = min(hi, lo * 2**n)`` for the n-th consecutive failure (n from 0).

    With ``jitter`` ("equal jitter") the delay is drawn from ``[d/2, d]`` so that many clients
    failing together do not retry in lockstep; without it the delay is ``d`` exactly.
    :meth:`reset` after a success starts again from ``lo``.
    """

    def __init__(self, lo: float, hi: float, *, jitter: bool = True) -> None:
        if not 0 <= lo <= hi:
            raise ValueError("backoff needs 0 <= lo <= hi")
        self.lo, self.hi, self.jitter = lo, hi, jitter
        self.failures = 0

    def __repr__(self) -> str:
        return f"Backoff({self.lo:g}..{self.hi:g}s, failures={self.failures})"

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        d = min(self.hi, self.lo * (2 ** min(self.failures, 30)))
        self.failures += 1
        return d / 2 + random.uniform(0, d / 2) if self.jitter else d

    def reset(self) -> None:
        """A success: the next failure waits ``lo`` again."""
        self.failures = 0
