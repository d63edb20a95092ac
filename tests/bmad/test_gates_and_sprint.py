from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad import (
    QaGateDecision,
    StoryStatus,
    detect_layout,
    find_qa_gate_file,
    read_qa_gate,
    read_sprint_status,
    set_sprint_status,
    sprint_key_for,
)

Snapshot = Callable[[Path], dict[str, bytes]]


def test_find_and_read_gates(v4_project: Path) -> None:
    layout = detect_layout(v4_project)
    passed = find_qa_gate_file(layout, "1.1")
    assert passed is not None
    assert passed == layout.gates_dir / "1.1-user-registration.yml"
    gate = read_qa_gate(passed)
    assert gate.gate is QaGateDecision.PASS
    assert gate.story_id == "1.1"
    assert gate.top_issues == ()
    assert gate.reviewer == "Quinn (Test Architect)"
    failed = read_qa_gate(find_qa_gate_file(layout, "1.2") or passed)
    assert failed.gate is QaGateDecision.FAIL
    assert failed.status_reason == "Reset tokens never expire."
    assert [(i.id, i.severity) for i in failed.top_issues] == [
        ("SEC-001", "high"),
        ("TEST-001", "medium"),
    ]
    assert failed.top_issues[0].suggested_action == "Store an expiry time and check it"
    assert failed.updated is not None
    assert find_qa_gate_file(layout, "1.3") is None


def test_gate_without_slug_and_newest_wins(tmp_path: Path) -> None:
    gates = tmp_path / "docs/qa/gates"
    gates.mkdir(parents=True)
    layout = detect_layout(tmp_path)
    assert find_qa_gate_file(layout, "1.10") is None
    (gates / "1.10.yml").write_text("story: 1.10\ngate: concerns\n")
    assert read_qa_gate(gates / "1.10.yml").story_id == "1.10"  # not YAML's float 1.1
    assert read_qa_gate(gates / "1.10.yml").gate is QaGateDecision.CONCERNS
    (gates / "1.1-old.yml").write_text("gate: FAIL\n")
    (gates / "1.1-new.yml").write_text("gate: WAIVED\n")
    os.utime(gates / "1.1-old.yml", ns=(1_000_000_000, 1_000_000_000))
    found = find_qa_gate_file(layout, "1.1")
    assert found is not None
    assert found == (gates / "1.1-new.yml").resolve()
    assert read_qa_gate(found).gate is QaGateDecision.WAIVED
    assert find_qa_gate_file(layout, "1.10") == (gates / "1.10.yml").resolve()


@pytest.mark.parametrize(
    ("content", "message", "line"),
    [
        ("story: '1.1'\ntop_issues: [unclosed\n", "malformed YAML.*no readable 'gate:'", 3),
        ("gate: MAYBE\n", "unknown gate value 'MAYBE'", 1),
        ("status_reason: x\n", "has no 'gate", None),
        ("- just\n- a list\n", "must be a YAML mapping", None),
        ("gate: PENDING\n", "QA has not decided", 1),
    ],
)
def test_malformed_gate(tmp_path: Path, content: str, message: str, line: int | None) -> None:
    path = tmp_path / "1.1-x.yml"
    path.write_text(content)
    with pytest.raises(ProjectError, match=message) as info:
        read_qa_gate(path)
    assert info.value.path == str(path)
    assert info.value.line == line


# --- sprint-status.yaml ----------------------------------------------------------------------


def test_read_sprint_status(v6_project: Path) -> None:
    path = detect_layout(v6_project).sprint_status_path
    assert path is not None
    statuses = read_sprint_status(path)
    assert statuses["1-1-product-list-page"] == "done"
    assert statuses["2-1-cart"] == "drafted"
    assert sprint_key_for(statuses, "1.2") == "1-2-product-search"
    assert sprint_key_for(statuses, "1.2a") == "1-2a-search-suggestions-stretch"
    assert sprint_key_for(statuses, "3.1") is None


def test_set_sprint_status_edits_one_line(v6_project: Path) -> None:
    path = detect_layout(v6_project).sprint_status_path
    assert path is not None
    before = path.read_text()
    assert set_sprint_status(path, "1.2", StoryStatus.IN_PROGRESS, project=v6_project) is True
    after = path.read_text()
    assert after == before.replace(
        "  1-2-product-search: ready-for-dev\n", "  1-2-product-search: in-progress\n"
    )
    assert read_sprint_status(path)["1-2-product-search"] == "in-progress"


def test_set_sprint_status_keeps_comment_column(v6_project: Path) -> None:
    path = detect_layout(v6_project).sprint_status_path
    assert path is not None
    # drafted (legacy ready-for-dev) -> review; the comment stays where it was
    assert set_sprint_status(path, "2-1-cart", "review") is True
    assert "  2-1-cart: review    # legacy word\n" in path.read_text()
    assert set_sprint_status(path, "2-1-cart", "done") is True
    assert "  2-1-cart: done      # legacy word\n" in path.read_text()


def test_set_sprint_status_never_moves_backwards(v6_project: Path, snapshot: Snapshot) -> None:
    path = detect_layout(v6_project).sprint_status_path
    assert path is not None
    before = snapshot(v6_project)
    assert set_sprint_status(path, "1-1-product-list-page", StoryStatus.IN_PROGRESS) is False
    assert set_sprint_status(path, "1.2", StoryStatus.READY_FOR_DEV) is False  # same
    assert set_sprint_status(path, "2.1", StoryStatus.DRAFT) is False  # drafted > backlog
    assert set_sprint_status(path, "1.2", StoryStatus.FAILED) is False  # nothing to write
    assert set_sprint_status(path, "epic-1", "backlog") is False
    assert snapshot(v6_project) == before


def test_set_sprint_status_quoted_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "sprint-status.yaml"
    original = b'# c\r\ndevelopment_status:\r\n  "1-1-a": "backlog"  # x\r\n  1-2-b: backlog\r\nother:\r\n  1-1-a: backlog\r\n'
    path.write_bytes(original)
    assert set_sprint_status(path, "1.1", StoryStatus.READY_FOR_DEV) is True
    assert path.read_bytes() == original.replace(
        b'"1-1-a": "backlog"  # x', b'"1-1-a": "ready-for-dev" # x'
    )


def test_set_sprint_status_bad_input(v6_project: Path, snapshot: Snapshot, tmp_path: Path) -> None:
    path = detect_layout(v6_project).sprint_status_path
    assert path is not None
    before = snapshot(v6_project)
    with pytest.raises(ProjectError, match=r"no development_status entry for '9\.9'") as info:
        set_sprint_status(path, "9.9", StoryStatus.DONE)
    assert info.value.path == str(path)
    with pytest.raises(ProjectError, match="unknown sprint status 'finished'"):
        set_sprint_status(path, "1.2", "finished")
    assert snapshot(v6_project) == before
    broken = tmp_path / "broken.yaml"
    broken.write_text("development_status:\n  a: done\n b: [\n")
    with pytest.raises(ProjectError, match="malformed YAML") as info:
        set_sprint_status(broken, "a", "done")
    assert info.value.path == str(broken)
    assert info.value.line == 3
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("development_status:\n  1-1-a: backlog\n")
    with pytest.raises(ProjectError, match="escapes the project"):
        set_sprint_status(outside, "1.1", StoryStatus.DONE, project=v6_project)
    assert outside.read_text() == "development_status:\n  1-1-a: backlog\n"
