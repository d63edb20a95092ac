"""v4 QA gate files as real projects write them (issue 14 point 6); synthetic files."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad import detect_layout
from bmad_trio._bmad._qa_gates import (
    QaGateDecision,
    find_qa_gate_file,
    find_qa_gate_files,
    qa_gate_decision_of,
    read_qa_gate,
    review_already_passed,
    story_last_change,
    story_qa_gate,
)
from bmad_trio._bmad._status_line import read_story_status

D = QaGateDecision


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    path = tmp_path / "docs/qa/gates"
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize(
    ("raw", "decision"),
    [
        ("PASS", D.PASS),
        ('"pass"', D.PASS),
        ("Passed", D.PASS),
        ("APPROVED", D.PASS),
        ("PASS ✅", D.PASS),
        ("PASS with CONCERNS", D.CONCERNS),
        ("PASS_WITH_CONCERNS", D.CONCERNS),
        ("CONDITIONAL PASS", D.CONCERNS),
        ("concerns", D.CONCERNS),
        ("FAIL - see top issues", D.FAIL),
        ("FAILED", D.FAIL),
        ("REJECTED", D.FAIL),
        ("WAIVED", D.WAIVED),
    ],
)
def test_gate_values(raw: str, decision: QaGateDecision) -> None:
    assert qa_gate_decision_of(raw) is decision


@pytest.mark.parametrize("raw", ["PENDING", "RESOLVED", "MAYBE", "", "123"])
def test_gate_values_not_guessed(raw: str) -> None:
    assert qa_gate_decision_of(raw) is None


def test_newest_by_updated_field_not_file_time(tmp_path: Path, gates: Path) -> None:
    # the old gate is written last and has the newer mtime, as after a clone in any order
    (gates / "1.3-login-fix.yml").write_text(
        'story: "1.3"\ngate: PASS\nupdated: "2025-03-02T10:00:00Z"\n'
    )
    (gates / "1.3-login.yml").write_text(
        'story: "1.3"\ngate: FAIL\nupdated: "2025-03-01T09:00:00Z"\n'
    )
    same = 1_700_000_000_000_000_000
    for path in gates.iterdir():
        os.utime(path, ns=(same, same))
    layout = detect_layout(tmp_path)
    files = find_qa_gate_files(layout, "1.3", "Login")
    assert [p.name for p in files] == ["1.3-login-fix.yml", "1.3-login.yml"]
    assert read_qa_gate(files[0]).gate is D.PASS
    os.utime(gates / "1.3-login.yml", ns=(same + 10**9, same + 10**9))  # newer file, older field
    assert find_qa_gate_file(layout, "1.3") == (gates / "1.3-login-fix.yml").resolve()


def test_title_prefers_the_story_own_gate(tmp_path: Path, gates: Path) -> None:
    (gates / "4.1-voice-deposit.yml").write_text("gate: FAIL\nupdated: 2025-05-01\n")
    (gates / "4.1-csv-export.yml").write_text("gate: PASS\nupdated: 2025-04-01\n")
    layout = detect_layout(tmp_path)
    assert (
        find_qa_gate_file(layout, "4.1", "CSV export") == (gates / "4.1-csv-export.yml").resolve()
    )
    assert find_qa_gate_file(layout, "4.1") == (gates / "4.1-voice-deposit.yml").resolve()


def test_broken_yaml_with_readable_gate_line(tmp_path: Path) -> None:
    path = tmp_path / "3.4-close.yml"
    path.write_text(
        "schema: 1\nstory: '3.4'\ngate: PASS\n"
        "status_reason: 'it\\'s fine: all criteria met'\n"
        "updated: '2025-01-27T15:30:00Z'\n"
    )
    gate = read_qa_gate(path)
    assert gate.gate is D.PASS
    assert gate.story_id == "3.4"
    assert gate.line == 3
    assert gate.updated_at == datetime.datetime(2025, 1, 27, 15, 30, tzinfo=datetime.UTC)
    assert any("malformed YAML at line 4" in w for w in gate.warnings)


@pytest.mark.parametrize(
    ("text", "decision", "warning"),
    [
        ("decision: PASS\nsummary: ok\n", D.PASS, "uses 'decision:'"),
        ("gate_decision: CONCERNS\n", D.CONCERNS, "uses 'gate_decision:'"),
        ("gate-decision: PASS\nbroken: [\n", D.PASS, "uses 'gate_decision:'"),
        ("gate: PASS with CONCERNS\n", D.CONCERNS, "read as CONCERNS"),
        ("gate: PASS\ntop_issues: 3\n", D.PASS, "'top_issues' is not a list"),
    ],
)
def test_non_standard_gates(
    tmp_path: Path, text: str, decision: QaGateDecision, warning: str
) -> None:
    path = tmp_path / "1.1-x.yml"
    path.write_text(text)
    gate = read_qa_gate(path)
    assert gate.gate is decision
    assert any(warning in w for w in gate.warnings), gate.warnings


def test_story_gate_for_plan(tmp_path: Path, gates: Path) -> None:
    layout = detect_layout(tmp_path)
    assert story_qa_gate(layout, "2.1") is None
    (gates / "2.1-search.yml").write_text("gate: PENDING\nupdated: 2025-06-01\n")
    report = story_qa_gate(layout, "2.1")
    assert report is not None
    assert report.decision is None
    assert report.problem is not None
    assert "QA has not decided" in report.problem
    assert report.as_json(tmp_path)["file"] == "docs/qa/gates/2.1-search.yml"
    (gates / "2.1-search-rerun.yml").write_text("decision: PASS\nupdated: 2025-06-02\n")
    report = story_qa_gate(layout, "2.1")
    assert report is not None
    shown = report.as_json(tmp_path)
    assert shown["decision"] == "PASS"
    assert shown["updated"] == "2025-06-02T00:00:00+00:00"
    assert shown["older"] == ["docs/qa/gates/2.1-search.yml"]
    assert shown["warnings"] == ["uses 'decision:' instead of 'gate:'"]
    assert shown["problem"] is None


STORY = """\
# Story 1.2: Login

## Status

{status}

## Change Log

| Date | Version | Description | Author |
|------|---------|-------------|--------|
| 2025-03-01 | 1.0 | Draft | SM |
| {changed} | 1.1 | Fixed QA findings | Dev |

## Dev Agent Record

Completion notes, 2025-02-28.

## QA Results

Reviewed 2099-01-01 (QA's own section does not count).
"""


def _story(tmp_path: Path, status: str, changed: str) -> Path:
    path = tmp_path / "1.2.story.md"
    path.write_text(STORY.format(status=status, changed=changed))
    return path


def _gate(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "1.2-login.yml"
    path.write_text(text)
    return path


def test_last_change_is_from_dev_sections(tmp_path: Path) -> None:
    path = _story(tmp_path, "Review", "2025-03-05")
    assert story_last_change(path.read_text().splitlines(keepends=True)) == datetime.date(
        2025, 3, 5
    )
    assert story_last_change(["# Story 1.2\n", "no dates\n"]) is None


@pytest.mark.parametrize(
    ("status", "changed", "gate", "finished"),
    [
        # a passing gate on or after the last change: review finished, no QA re-run
        ("Review", "2025-03-05", "gate: PASS\nupdated: 2025-03-05T18:00:00Z\n", True),
        ("Ready for Done", "2025-03-05", "gate: PASS\nupdated: 2025-03-06\n", True),
        ("Ready for Review", "2025-03-05", "gate: WAIVED\nupdated: 2025-03-07\n", True),
        ("Review", "2025-03-05", "gate: CONCERNS\nupdated: 2025-03-07\n", True),
        # Dev changed the story after the gate: QA again
        ("Review", "2025-03-09", "gate: PASS\nupdated: 2025-03-07\n", False),
        # a failing gate, or a story not at review
        ("Review", "2025-03-05", "gate: FAIL\nupdated: 2025-03-07\n", False),
        ("In Progress", "2025-03-05", "gate: PASS\nupdated: 2025-03-07\n", False),
        # no date in the gate: its presence is enough
        ("Review", "2025-03-09", "gate: PASS\n", True),
    ],
)
def test_review_already_passed(
    tmp_path: Path, status: str, changed: str, gate: str, finished: bool
) -> None:
    reading = read_story_status(_story(tmp_path, status, changed))
    verdict = review_already_passed(reading, read_qa_gate(_gate(tmp_path, gate)))
    assert verdict.finished is finished, verdict.reason


def test_strict_concerns_is_not_a_pass(tmp_path: Path) -> None:
    reading = read_story_status(_story(tmp_path, "Review", "2025-03-05"))
    gate = read_qa_gate(_gate(tmp_path, "gate: CONCERNS\nupdated: 2025-03-07\n"))
    assert not review_already_passed(reading, gate, strict_concerns=True).finished


@pytest.mark.parametrize(
    ("status", "finished"),
    [("Ready for Done", True), ("**Status**: Review Passed", True), ("Ready for Review", False)],
)
def test_no_gate_file_status_words_decide(tmp_path: Path, status: str, finished: bool) -> None:
    reading = read_story_status(_story(tmp_path, status, "2025-03-05"))
    assert review_already_passed(reading, None).finished is finished


def test_unreadable_gate_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = _gate(tmp_path, "schema: 1\ngate: RESOLVED\n")
    with pytest.raises(ProjectError, match="unknown gate value 'RESOLVED'") as info:
        read_qa_gate(path)
    assert (info.value.path, info.value.line) == (str(path), 2)
