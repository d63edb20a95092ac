"""One story's state for ``run`` and ``plan``: status, sprint-status, gate, finished review."""

from __future__ import annotations

from pathlib import Path

from bmad_trio._bmad import detect_layout
from bmad_trio._bmad._sprint_status import read_sprint_entries
from bmad_trio._bmad._status import StoryStatus
from bmad_trio._bmad._story_state import read_story_state

S = StoryStatus


def _v4(tmp_path: Path) -> Path:
    (tmp_path / ".bmad-core").mkdir()
    (tmp_path / "docs/stories").mkdir(parents=True)
    (tmp_path / "docs/qa/gates").mkdir(parents=True)
    return tmp_path


def test_v4_review_with_a_passing_gate_is_finished(tmp_path: Path) -> None:
    root = _v4(tmp_path)
    story = root / "docs/stories/1.2.story.md"
    story.write_text(
        "# Story 1.2: Login\n\n## Status\n\nReady for Review\n\n## Change Log\n\n"
        "| Date | Version | Description | Author |\n|---|---|---|---|\n"
        "| 2025-03-01 | 1.0 | Draft | SM |\n"
    )
    (root / "docs/qa/gates/1.2-login.yml").write_text("gate: PASS\nupdated: 2025-03-02\n")
    state = read_story_state(detect_layout(root), "1.2", "Login", story)
    assert state.status is S.REVIEW
    assert state.review is not None
    assert state.review.finished
    shown = state.as_json(root)
    assert shown["status"] == "review"
    assert shown["review_finished"] is True
    assert shown["gate"]["decision"] == "PASS"
    assert shown["file"] == "docs/stories/1.2.story.md"


def test_unreadable_status_and_unreadable_gate(tmp_path: Path) -> None:
    root = _v4(tmp_path)
    story = root / "docs/stories/1.3.story.md"
    story.write_text("# Story 1.3: Search\n\n## Status\n\nSomewhere in between\n")
    (root / "docs/qa/gates/1.3-search.yml").write_text("gate: PENDING\n")
    state = read_story_state(detect_layout(root), "1.3", "Search", story)
    assert state.status is None
    assert state.unreadable is not None
    assert f"{story}:5: Somewhere in between" in state.unreadable
    shown = state.as_json(root)
    assert shown["status"] == "unreadable"
    assert "unknown story status" in shown["unreadable"]
    assert shown["gate"]["decision"] is None
    assert "QA has not decided" in shown["gate"]["problem"]


def test_unreadable_gate_never_finishes_a_review(tmp_path: Path) -> None:
    root = _v4(tmp_path)
    story = root / "docs/stories/1.4.story.md"
    story.write_text("# Story 1.4: Export\n\n## Status\n\nReady for Done\n")
    (root / "docs/qa/gates/1.4-export.yml").write_text("gate: RESOLVED\n")
    state = read_story_state(detect_layout(root), "1.4", "Export", story)
    assert state.review is not None
    assert not state.review.finished
    assert "cannot be read" in state.review.reason


def test_v6_sprint_status_done_wins_over_a_story_left_at_review(tmp_path: Path) -> None:
    (tmp_path / "_bmad/bmm").mkdir(parents=True)
    out = tmp_path / "_bmad-output/implementation-artifacts"
    out.mkdir(parents=True)
    story = out / "1-10-intake-语义提交门.md"
    story.write_text("# Story 1.10: Intake 语义提交门\n\nStatus: review\n")
    sprint = out / "sprint-status.yaml"
    sprint.write_text(
        "development_status:\n  epic-1: in-progress\n  1-10-intake-语义提交门: done\n"
    )
    layout = detect_layout(tmp_path)
    state = read_story_state(
        layout, "1.10", "Intake 语义提交门", story, sprint_entries=read_sprint_entries(sprint)
    )
    assert state.status is S.DONE
    assert state.effective.source == "sprint-status"
    shown = state.as_json(tmp_path)
    assert shown["sprint_status"] == {"key": "1-10-intake-语义提交门", "value": "done", "line": 3}
    assert "following it" in shown["conflict"]


def test_no_story_file(tmp_path: Path) -> None:
    root = _v4(tmp_path)
    state = read_story_state(detect_layout(root), "2.1", "New", None)
    assert (state.status, state.reading, state.gate, state.review) == (None, None, None, None)
    assert state.as_json(root)["status"] is None
