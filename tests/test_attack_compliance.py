"""docs/COMPLIANCE.md and its CI check: every requirement covered, only real evidence named, and
the check fails on dangling or failed evidence; SECURITY.md says how to report and what is in
scope."""

from __future__ import annotations

import importlib.util
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import twinlink

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "COMPLIANCE.md"


def _checker():
    spec = importlib.util.spec_from_file_location("check_compliance",
                                                  ROOT / "scripts" / "check_compliance.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


cc = _checker()


def test_the_document_covers_every_requirement_and_names_only_real_evidence(capsys):
    assert cc.main(["--static"]) == 0, capsys.readouterr().err
    rows = cc.parse_doc(DOC.read_text())
    assert {r.requirement for r in rows} == set(cc.REQUIRED)
    meets = [r for r in rows if r.status == "meets"]
    assert len(meets) >= 15 and all(r.tests or r.scenarios for r in meets)
    assert {s for r in rows for s in r.scenarios} >= {"replay-exact", "wildcard-eavesdrop",
                                                      "flood-forgery", "value-drift"}


def _junit(path: Path, suite: str, cases: list[tuple[str, str, str]]) -> Path:
    """cases: (classname, name, outcome) with outcome ok / failure / error / skipped."""
    root = ET.Element("testsuite", {"name": suite})
    for classname, name, outcome in cases:
        case = ET.SubElement(root, "testcase", {"classname": classname, "name": name})
        if outcome != "ok":
            ET.SubElement(case, outcome, {"message": outcome})
    ET.ElementTree(root).write(path)
    return path


DOC_SAMPLE = """
| Requirement | Status | How | Evidence |
|---|---|---|---|
| CR 3.1 Communication integrity | meets | x | `attack:flip-signature` \
`tests/test_frame.py::test_every_bit_flip_is_refused` |
| CR 3.5 Input validation | meets | x | `tests/test_twin.py::test_replay_is_refused_and_logged` |
| CR 7.7 Least functionality | supports | x | — |
"""


def _run(tmp_path: Path, doc: str, tests: list[tuple[str, str, str]],
         scenarios: list[tuple[str, str, str]]) -> list[str]:
    rows = cc.parse_doc(doc)
    pj = _junit(tmp_path / "p.xml", "pytest", tests)
    aj = _junit(tmp_path / "a.xml", "twinlink-attack", scenarios)
    return cc.test_errors(rows, pj) + cc.scenario_errors(rows, aj)


GOOD_TESTS = [("tests.test_frame", "test_every_bit_flip_is_refused[python]", "ok"),
              ("tests.test_frame", "test_every_bit_flip_is_refused[native]", "ok"),
              ("tests.test_twin", "test_replay_is_refused_and_logged[python]", "ok")]
GOOD_SCENARIOS = [("attack.inproc", "flip-signature", "ok"),
                  ("attack.mqtt", "flip-signature", "skipped")]


def test_the_check_passes_when_everything_named_passed(tmp_path):
    assert _run(tmp_path, DOC_SAMPLE, GOOD_TESTS, GOOD_SCENARIOS) == []


@pytest.mark.parametrize("tests, scenarios, complaint", [
    (GOOD_TESTS[1:], GOOD_SCENARIOS, None),  # one parameter of a test missing is fine ...
    (GOOD_TESTS[:2], GOOD_SCENARIOS, "test_replay_is_refused_and_logged did not run"),
    ([GOOD_TESTS[0], (*GOOD_TESTS[1][:2], "failure"), GOOD_TESTS[2]], GOOD_SCENARIOS,
     "1 of 2 case(s) did not pass"),
    ([*GOOD_TESTS[:2], (*GOOD_TESTS[2][:2], "skipped")], GOOD_SCENARIOS, "0 of"),
    (GOOD_TESTS, [("attack.mqtt", "flip-signature", "skipped")],
     "attack:flip-signature did not run"),
    (GOOD_TESTS, [("attack.inproc", "flip-signature", "ok"),
                  ("attack.serial", "flip-signature", "failure")],
     "attack:flip-signature was not ok over serial"),
    (GOOD_TESTS, [("attack.inproc", "flip-signature", "error")], "was not ok over inproc"),
])
def test_the_check_fails_on_dangling_or_failed_evidence(tmp_path, tests, scenarios, complaint):
    errors = _run(tmp_path, DOC_SAMPLE, tests, scenarios)
    if complaint is None:
        assert errors == []
    elif complaint == "0 of":  # a skipped case is not a pass
        assert any("did not pass" in e for e in errors), errors
    else:
        assert any(complaint in e for e in errors), errors


def test_the_check_fails_on_a_bare_claim_and_a_missing_requirement():
    bare = DOC_SAMPLE.replace("`tests/test_twin.py::test_replay_is_refused_and_logged`", "")
    errors = cc.structure_errors(cc.parse_doc(bare))
    assert "CR 3.5 says meets but names no evidence" in " ".join(errors)
    assert any(e == "no row for CR 1.2" for e in errors)
    odd = DOC_SAMPLE.replace("| supports |", "| mostly |")
    assert any("'mostly' is not one of" in e for e in cc.structure_errors(cc.parse_doc(odd)))
    static = cc.static_errors(cc.parse_doc(DOC_SAMPLE.replace("test_every_bit_flip",
                                                              "test_no_such")))
    assert static == ["line 4: tests/test_frame.py::test_no_such_is_refused is not a test in "
                      "tests/test_frame.py"]


def test_security_policy_says_how_to_report_and_what_is_in_scope():
    text = (ROOT / "SECURITY.md").read_text()
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert {"Reporting a vulnerability", "Scope", "Supported versions"} <= set(sections)
    assert "Report privately" in text and "Do not open a public issue" in text
    for path in re.findall(r"`((?:twinlink|native|firmware_examples)/)`", text):
        assert (ROOT / path).is_dir(), path
    minor = ".".join(twinlink.__version__.split(".")[:2])
    assert f"{minor}.x" in text
