#!/usr/bin/env python3
"""Check docs/COMPLIANCE.md against what this CI run proved.

Every requirement row of the document's tables says ``meets``, ``supports`` or ``gap`` and may
name evidence: attack scenarios as ``attack:<scenario id>`` and tests as pytest node ids
(``tests/test_x.py::test_y``, optionally with a ``[param]``). This script fails (exit 1) when

- a requirement the document must cover has no row, or a row has no valid status;
- a ``meets`` row names no evidence;
- a named test does not appear in the pytest JUnit report of this run, or did not pass there
  (every matching case passed, at least one ran: a parametrized test passes only if all its
  cases did);
- a named scenario does not appear in the ``twinlink attack`` JUnit report, or was not ``ok``
  over every transport it ran on (at least one).

Usage: ``check_compliance.py --pytest-junit FILE --attack-junit FILE [--doc docs/COMPLIANCE.md]``.
``--static`` checks only that the named tests exist in tests/ and the scenarios in the
catalogue (no reports needed; the test suite runs that mode).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What the document must cover: IEC 62443-4-2 component requirements (and the embedded
#: device requirement EDR 3.10), NIST IR 8259A's six core capabilities, ETSI EN 303 645 5.x.
REQUIRED = (
    [f"CR {n}" for n in ("1.2", "1.5", "1.9", "2.8", "2.9", "2.10", "2.11", "3.1", "3.4",
                         "3.5", "3.7", "3.8", "3.9", "4.1", "4.3", "6.1", "6.2", "7.1",
                         "7.2", "7.6", "7.7", "7.8")]
    + ["EDR 3.10"]
    + ["Device Identification", "Device Configuration", "Data Protection",
       "Logical Access to Interfaces", "Software Update", "Cybersecurity State Awareness"]
    + [f"5.{n}" for n in range(1, 14)]
)
STATUSES = ("meets", "supports", "gap")

_TEST = re.compile(r"`(tests/[\w/]+\.py::\w+(?:\[[^\]`]*\])?)`")
_SCENARIO = re.compile(r"`attack:([a-z0-9-]+)`")


@dataclass
class Row:
    requirement: str
    status: str
    line: int
    tests: list[str] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)


def parse_doc(text: str) -> list[Row]:
    """The requirement rows: table lines whose first cell starts with a required id (or ``CR``
    / ``EDR`` / ``5.``) and whose second cell is the status."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        first = cells[0].replace("*", "")
        req = next((r for r in REQUIRED if first == r or first.startswith(r + " ")), None)
        if req is None:
            continue
        status = cells[1].replace("*", "").strip().lower()
        rows.append(Row(req, status, i, _TEST.findall(line), _SCENARIO.findall(line)))
    return rows


def structure_errors(rows: list[Row]) -> list[str]:
    errors = []
    covered = {r.requirement for r in rows}
    errors += [f"no row for {req}" for req in REQUIRED if req not in covered]
    for r in rows:
        if r.status not in STATUSES:
            errors.append(f"line {r.line}: {r.requirement}: status {r.status!r} is not one of "
                          f"{', '.join(STATUSES)}")
        elif r.status == "meets" and not (r.tests or r.scenarios):
            errors.append(f"line {r.line}: {r.requirement} says meets but names no evidence")
    return errors


def _cases(path: Path) -> list[ET.Element]:
    # The reports are this CI run's own output, not input from outside.
    return list(ET.parse(path).getroot().iter("testcase"))  # noqa: S314


def _passed(case: ET.Element) -> bool:
    return not any(case.find(tag) is not None for tag in ("failure", "error", "skipped"))


def test_errors(rows: list[Row], junit: Path) -> list[str]:
    """Named tests missing from, or not passed in, a pytest JUnit report."""
    by_id: dict[str, list[ET.Element]] = {}
    for case in _cases(junit):
        module = (case.get("classname") or "").replace(".", "/")
        by_id.setdefault(f"{module}.py::{case.get('name')}", []).append(case)
    errors = []
    for r in rows:
        for node in r.tests:
            exact = node if "[" in node else None
            found = [c for k, cs in by_id.items() for c in cs
                     if k == node or (exact is None and k.startswith(node + "["))]
            if not found:
                errors.append(f"line {r.line}: {node} did not run in this CI run")
            elif not all(_passed(c) for c in found):
                bad = sum(1 for c in found if not _passed(c))
                errors.append(f"line {r.line}: {node}: {bad} of {len(found)} case(s) did not "
                              "pass")
    return errors


def scenario_errors(rows: list[Row], junit: Path) -> list[str]:
    """Named scenarios missing from, or not ok in, the attack JUnit report."""
    by_id: dict[str, list[ET.Element]] = {}
    for case in _cases(junit):
        by_id.setdefault(case.get("name") or "", []).append(case)
    errors = []
    for r in rows:
        for sid in r.scenarios:
            cases = by_id.get(sid, [])
            ran = [c for c in cases if c.find("skipped") is None]
            if not ran:
                errors.append(f"line {r.line}: attack:{sid} did not run in this CI run")
            elif not all(_passed(c) for c in ran):
                errors.append(f"line {r.line}: attack:{sid} was not ok over "
                              + ", ".join(c.get("classname", "?").split(".")[-1]
                                          for c in ran if not _passed(c)))
    return errors


def static_errors(rows: list[Row], root: Path = ROOT) -> list[str]:
    """Named tests that do not exist as test functions, scenarios not in the catalogue."""
    try:
        from twinlink.attack import by_id
    except ImportError:  # run from a source tree without an install
        sys.path.insert(0, str(root))
        from twinlink.attack import by_id

    known = by_id()
    errors = []
    defined: dict[Path, set[str]] = {}
    for r in rows:
        for node in r.tests:
            file, name = node.split("::")
            name = name.split("[")[0]
            path = root / file
            if path not in defined:
                names: set[str] = set()
                if path.exists():
                    tree = ast.parse(path.read_text(encoding="utf-8"))
                    names = {n.name for n in ast.walk(tree)
                             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                defined[path] = names
            if name not in defined[path]:
                errors.append(f"line {r.line}: {node} is not a test in {file}")
        errors += [f"line {r.line}: attack:{s} is not in the catalogue"
                   for s in r.scenarios if s not in known]
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "COMPLIANCE.md")
    ap.add_argument("--pytest-junit", type=Path)
    ap.add_argument("--attack-junit", type=Path)
    ap.add_argument("--static", action="store_true",
                    help="only check that the named tests and scenarios exist")
    args = ap.parse_args(argv)
    rows = parse_doc(args.doc.read_text(encoding="utf-8"))
    errors = structure_errors(rows) + static_errors(rows)
    if not args.static:
        if args.pytest_junit is None or args.attack_junit is None:
            ap.error("give --pytest-junit and --attack-junit (or --static)")
        errors += test_errors(rows, args.pytest_junit) + scenario_errors(rows, args.attack_junit)
    tests = {t for r in rows for t in r.tests}
    scenarios = {s for r in rows for s in r.scenarios}
    counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    if errors:
        print(f"{args.doc}: dangling or failed evidence:", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(f"{args.doc}: {len(rows)} requirement rows ({counts['meets']} meets, "
          f"{counts['supports']} supports, {counts['gap']} gap); {len(tests)} tests and "
          f"{len(scenarios)} attack scenarios named, all "
          + ("present" if args.static else "passed in this run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
