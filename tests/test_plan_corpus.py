"""The corpus measurement's own judge: it must catch a wrong next step, read independently."""

from __future__ import annotations

from pathlib import Path

from bench import plan_corpus as pc


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_status_words_are_classified_like_a_reader_would() -> None:
    assert pc._category("✅ **COMPLETED** - 2025-08-08") == "done"
    assert pc._category("✅ APPROVED") == "ready"
    assert pc._category("Planning Complete (Ready for Implementation)") == "ready"
    assert pc._category("Ready for Done") == "passed"
    assert pc._category("Ready for Review (QA Fixes Applied)") == "review"
    assert pc._category("ON-HOLD") == "blocked"
    assert pc._category("✅") == "done"
    assert pc._category("Waiting") is None


def test_the_judge_catches_wrong_next_steps(tmp_path: Path) -> None:
    story = _write(tmp_path, "docs/stories/1.1.story.md", "# Story 1.1: A\n\n## Status\n\nDone\n")
    _write(tmp_path, "docs/archive/story-1.3-c.md", "# Story 1.3: CSV exports\n\n## Status\nDone\n")
    _write(tmp_path, "docs/stories/1.2.story.md", "# Story 1.2: B\n\n## Status\n\nReview\n")
    gate = 'gate: PASS\nupdated: "2025-03-02T10:00:00Z"\n'
    _write(tmp_path, "docs/qa/gates/1.2-b.yml", gate)
    files = pc._walk(tmp_path)
    gates = pc._gates(pc._walk(tmp_path, (".yml",)))

    def judge(story_id: str, got: dict[str, object], sprint: dict[str, str] | None = None) -> bool:
        return pc._judge_next(tmp_path, files, story_id, got, gates, sprint or {})["next_ok"]

    done_row = {"file": str(story.relative_to(tmp_path)), "status": "done", "title": "A"}
    assert judge("1.1", {**done_row, "next": "nothing (done)"})
    assert not judge("1.1", {**done_row, "next": "Dev implements"})
    review_row = {"file": "docs/stories/1.2.story.md", "status": "review", "title": "B"}
    assert not judge("1.2", {**review_row, "next": "QA reviews and writes the gate"})
    assert judge("1.2", {**review_row, "next": "done: its review already passed (no QA re-run)"})
    drafted = {"file": None, "status": None, "next": "SM drafts the story file"}
    assert not judge("1.3", {**drafted, "title": "CSV exports"})  # its done file is archived
    assert judge("1.3", {**drafted, "title": "Another story"})  # an old numbering
    assert not judge("1.4", {**drafted, "title": "D"}, {"1.4": "done"})  # sprint-status: done
    assert judge("1.4", {**drafted, "title": "D"})
