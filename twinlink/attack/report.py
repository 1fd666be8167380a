"""The scorecard: a table for people, JSON and JUnit XML for machines.

JUnit XML (the de-facto schema CI systems read): one ``<testsuite name="twinlink-attack">``,
one ``<testcase classname="attack.<transport>" name="<scenario id>">`` per run; MISSED and
FALSE-POSITIVE are ``<failure>``, ERROR is ``<error>``, skipped runs ``<skipped>``. Each case
carries the expectation and the observation as ``<properties>``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from .model import ERROR, FALSE_POSITIVE, MISSED, OK, SKIPPED, Result
from .runner import Summary

__all__ = ["junit_xml", "table", "to_json"]


def table(results: Sequence[Result], width: int = 120) -> str:
    """A fixed-width table, one line per run, the detail cut to fit ``width``."""
    head = ("scenario", "transport", "ATT&CK", "expected", "observed", "mark", "s", "detail")
    rows = [(r.scenario.id, r.transport, r.scenario.technique[0] if r.scenario.technique
             else "-", r.scenario.verdict, r.observed or "-", r.mark, f"{r.seconds:.2f}",
             r.detail) for r in results]
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) if rows else len(head[i])
              for i in range(7)]
    fixed = sum(widths) + 2 * 7
    lines = []
    for row in (head, *rows):
        cells = [c.ljust(w) for c, w in zip(row[:7], widths)]
        detail = row[7]
        room = max(20, width - fixed)
        if len(detail) > room:
            detail = detail[:room - 1] + "…"
        lines.append("  ".join(cells) + "  " + detail)
    return "\n".join(lines)


def to_json(results: Sequence[Result], summary: Summary) -> dict[str, Any]:
    """The whole scorecard as JSON-ready data."""
    return {
        "tool": "twinlink attack",
        "passed": summary.passed,
        "seconds": round(summary.seconds, 3),
        "counts": {m: summary.counts[m] for m in (OK, MISSED, FALSE_POSITIVE, ERROR, SKIPPED)},
        "results": [r.to_json() for r in results],
    }


def junit_xml(results: Sequence[Result], summary: Summary) -> bytes:
    """The scorecard as JUnit XML (UTF-8, with declaration)."""
    failures = summary.counts[MISSED] + summary.counts[FALSE_POSITIVE]
    suite = ET.Element("testsuite", {
        "name": "twinlink-attack", "tests": str(len(results)), "failures": str(failures),
        "errors": str(summary.counts[ERROR]), "skipped": str(summary.counts[SKIPPED]),
        "time": f"{summary.seconds:.3f}", "hostname": socket.gethostname(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
    })
    for r in results:
        sc = r.scenario
        case = ET.SubElement(suite, "testcase", {
            "classname": f"attack.{r.transport}", "name": sc.id, "time": f"{r.seconds:.3f}"})
        props = ET.SubElement(case, "properties")
        for name, value in (("title", sc.title),
                            ("technique", " ".join(sc.technique) if sc.technique else ""),
                            ("expected", sc.verdict), ("expected_event", sc.event or ""),
                            ("observed", r.observed), ("mark", r.mark),
                            ("events", json.dumps(r.events, sort_keys=True))):
            ET.SubElement(props, "property", {"name": name, "value": value})
        message = f"{r.mark}: {r.detail}"
        if r.mark in (MISSED, FALSE_POSITIVE):
            ET.SubElement(case, "failure", {"type": r.mark, "message": message}).text = message
        elif r.mark == ERROR:
            ET.SubElement(case, "error", {"type": r.mark, "message": message}).text = message
        elif r.mark == SKIPPED:
            ET.SubElement(case, "skipped", {"message": r.detail})
        else:
            ET.SubElement(case, "system-out").text = r.detail
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path: str, data: bytes) -> None:
    """Write a report file (``-`` is stdout)."""
    if path == "-":
        os.write(1, data)
        return
    with open(path, "wb") as fh:
        fh.write(data)
