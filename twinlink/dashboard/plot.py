"""Server-drawn SVG plots of one series over a period, flagged readings marked.

No chart library and no script: the dashboard serves each plot as an ``image/svg+xml`` document
shown through ``<img>`` (an image cannot run script, whatever it contains), and every text in it
(series name, unit) is XML-escaped with control characters made visible. Long periods are
reduced per pixel column to first/min/max/last (the M4 reduction), so the line keeps every
extreme while the document stays small; every reading flagged suspect (3) or fail (4) is drawn
as a marker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Optional
from xml.sax.saxutils import escape as _xml_escape

from ..naming import printable
from .model import QC_LABELS, qc_flag

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 26, 26
#: Periods the pages offer, in seconds.
PERIODS = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800}
DEFAULT_PERIOD = "1h"
#: Readings read for one plot at most (the newest of the period).
MAX_READINGS = 20_000
_FLAG_COLOURS = {3: "#d97706", 4: "#dc2626"}


class Point(NamedTuple):
    t: float
    v: float
    flag: Optional[int]


def text(value: Any) -> str:
    """Untrusted text for an SVG text node or attribute: control characters made visible,
    markup characters escaped, lone surrogates replaced."""
    s = printable(str(value)).encode("utf-8", "replace").decode("utf-8")
    return _xml_escape(s, {'"': "&quot;", "'": "&#39;"})


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): something a plot can draw."""
    return (not isinstance(v, bool) and isinstance(v, (int, float))
            and math.isfinite(float(v)))


def points(readings: Iterable[Mapping[str, Any]], series: str) -> list[Point]:
    """The numeric values of ``series`` in stored readings, by arrival time, with their flag."""
    out = []
    for r in readings:
        payload = r.get("payload")
        if not isinstance(payload, Mapping) or series not in payload:
            continue
        v = payload[series]
        if not is_number(v):
            continue
        fv = float(v)
        flags = r.get("flags")
        flag = qc_flag(flags.get(series)) if isinstance(flags, Mapping) else None
        out.append(Point(float(r["received_at"]), fv, flag))
    return out


def numeric_series(readings: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the series with at least one finite number among ``readings``, sorted."""
    names: set[str] = set()
    for r in readings:
        payload = r.get("payload")
        if isinstance(payload, Mapping):
            names.update(k for k, v in payload.items() if isinstance(k, str) and is_number(v))
    return sorted(names)


def _reduce(pts: Sequence[Point], t0: float, t1: float, columns: int) -> list[Point]:
    """M4: per pixel column keep the first, lowest, highest and last point, in time order."""
    if len(pts) <= 4 * columns:
        return list(pts)
    span = (t1 - t0) or 1.0
    out: list[Point] = []
    bucket: list[Point] = []
    current = None
    for p in pts:
        col = int((p.t - t0) / span * columns)
        if col != current and bucket:
            out.extend(_m4(bucket))
            bucket = []
        current = col
        bucket.append(p)
    if bucket:
        out.extend(_m4(bucket))
    return out


def _m4(bucket: list[Point]) -> list[Point]:
    keep = {0, len(bucket) - 1,
            min(range(len(bucket)), key=lambda i: bucket[i].v),
            max(range(len(bucket)), key=lambda i: bucket[i].v)}
    return [bucket[i] for i in sorted(keep)]


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _num(v: float) -> str:
    return f"{v:.6g}"


def _clock(t: float, span: float) -> str:
    fmt = "%m-%d %H:%M" if span > 86400 else "%H:%M:%S" if span < 1800 else "%H:%M"
    return time.strftime(fmt, time.gmtime(t))


def svg(series: str, unit: Optional[str], pts: Sequence[Point], t0: float, t1: float,
        note: str = "") -> str:
    """The SVG document of one series over [t0, t1] (UTC clock on the x axis)."""
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    title = series + (f" [{unit}]" if unit else "")
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">'
            f'<title>{text(title)}</title>'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
            f'<text x="{LEFT}" y="16" font-size="12" font-weight="bold" fill="#111827">'
            f'{text(title)}</text>')
    parts = [head]
    if note:
        parts.append(f'<text x="{WIDTH - RIGHT}" y="16" text-anchor="end" fill="#6b7280">'
                     f'{text(note)}</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" '
                 f'stroke="#d1d5db"/>')
    if not pts:
        parts.append(f'<text x="{LEFT + pw / 2}" y="{TOP + ph / 2}" text-anchor="middle" '
                     f'fill="#6b7280">no numeric readings in this period</text></svg>')
        return "".join(parts)
    lo = min(p.v for p in pts)
    hi = max(p.v for p in pts)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * pw

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * ph

    for tick in _ticks(lo, hi):
        ty = y(tick)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{ty:.1f}" y2="{ty:.1f}" '
                     f'stroke="#f3f4f6"/><text x="{LEFT - 4}" y="{ty + 4:.1f}" '
                     f'text-anchor="end" fill="#374151">{_num(tick)}</text>')
    for i in range(3):
        tt = t0 + span * i / 2
        anchor = ("start", "middle", "end")[i]
        parts.append(f'<text x="{x(tt):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" '
                     f'fill="#374151">{_clock(tt, span)}</text>')
    line = _reduce(pts, t0, t1, pw)
    coords = " ".join(f"{x(p.t):.1f},{y(p.v):.1f}" for p in line)
    parts.append(f'<polyline points="{coords}" fill="none" stroke="#2563eb" '
                 f'stroke-width="1.5"/>')
    if len(pts) == 1:
        p = pts[0]
        parts.append(f'<circle cx="{x(p.t):.1f}" cy="{y(p.v):.1f}" r="2.5" fill="#2563eb"/>')
    for p in pts:
        if p.flag in _FLAG_COLOURS:
            parts.append(f'<circle class="flag-{p.flag}" cx="{x(p.t):.1f}" cy="{y(p.v):.1f}" '
                         f'r="4" fill="none" stroke="{_FLAG_COLOURS[p.flag]}" stroke-width="2">'
                         f'<title>{text(_num(p.v))}: {QC_LABELS[p.flag]}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
