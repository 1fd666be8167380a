"""Shared helpers for the detection tests: a device stream on a controlled clock."""

from __future__ import annotations

import math
import random
from typing import Any

from twinlink.detect import Detector, Verdict

T0 = 1_760_000_000.0


class Feed:
    """Feeds one device's frames to a Detector on a fake clock; keeps every event."""

    def __init__(self, det: Detector | None = None, device: str = "dev", interval: float = 60.0,
                 seed: int = 3) -> None:
        self.det = det or Detector()
        self.device, self.interval = device, interval
        self.rnd = random.Random(seed)
        self.t = T0
        self.seq = 0
        self.epoch = 0
        self.events: list[Any] = []
        self.verdicts: list[Verdict] = []

    def frame(self, records: list[tuple[str, Any, Any, Any]], size: int = 80,
              arrival: float | None = None, seq: int | None = None, advance: bool = True,
              ) -> Verdict:
        v = self.det.observe(self.device, self.seq if seq is None else seq, records,
                             self.t if arrival is None else arrival, size, self.epoch)
        self.events.extend(v.events)
        self.verdicts.append(v)
        if advance:
            self.seq = (self.seq if seq is None else seq) + 1
            self.t += self.interval
        return v

    def temp(self, value: float | None = None, name: str = "temp", unit: str = "Cel",
             **kw: Any) -> Verdict:
        """One temperature frame: noisy 21 degC with a gentle daily cycle unless given."""
        if value is None:
            value = self.normal()
        return self.frame([(name, value, unit, self.t)], **kw)

    def normal(self) -> float:
        return 21.0 + 2.0 * math.sin(2 * math.pi * self.t / 86400) + self.rnd.gauss(0, 0.05)

    def run(self, n: int, **kw: Any) -> None:
        for _ in range(n):
            self.temp(**kw)

    def sweep(self, now: float) -> list[Any]:
        ev = self.det.sweep(now)
        self.events.extend(ev)
        return ev

    def types(self) -> list[str]:
        return [e.type for e in self.events]
