"""``bmad-trio plan`` on projects shaped like real ones (synthetic fixtures written here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bmad_trio._commandline._plan import make_plan
from bmad_trio._config import load_config


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _plan(project: Path, epic: str) -> dict[str, object]:
    return make_plan(load_config(project, overrides={"epic": Path(epic)}))


def _story(status: str, n: str) -> str:
    return f"# Story {n}: T\n\n## Status\n\n{status}\n"


def test_one_odd_story_file_does_not_stop_the_epic(tmp_path: Path) -> None:
    _write(tmp_path, "docs/prd/epic-1.md", "# Epic 1: A\n\n### Story 1.1: A\n\n### Story 1.2: B\n")
    _write(tmp_path, "docs/stories/1.1.story.md", _story("Done", "1.1"))
    _write(tmp_path, "docs/stories/1.2.story.md", _story("Whatever This Is", "1.2"))
    plan = _plan(tmp_path, "1")
    rows = {s["story_id"]: s for s in plan["stories"]}  # type: ignore[union-attr]
    assert rows["1.1"]["status"] == "done"
    assert rows["1.2"]["status"] == "unreadable"
    assert rows["1.2"]["status_line"] == 5
    assert "1.2.story.md:5" in rows["1.2"]["problem"]
    assert rows["1.2"]["next"].startswith("blocked")


def test_multi_epic_file_without_number_shows_every_epic(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "docs-test/prd.md",
        "## Epic 1: A\n\n### Story 1.1: A\n\n## Epic 2: B\n\n### Story 2.1: B\n\n"
        "**Dependencies:** Story 1.1\n",
    )
    _write(tmp_path, "docs-test/stories/1.1.md", _story("Done", "1.1"))
    plan = _plan(tmp_path, "docs-test/prd.md")
    assert plan["epics"] == [1, 2]
    rows = plan["stories"]
    assert [(r["story_id"], r["file"]) for r in rows] == [  # type: ignore[index]
        ("1.1", "docs-test/stories/1.1.md"),
        ("2.1", None),
    ]
    assert rows[1]["waiting_for"] == []  # type: ignore[index]


def test_cross_epic_dependency_read_from_disk(tmp_path: Path) -> None:
    _write(tmp_path, "docs/prd/epic-2.md", "# Epic 2: B\n\n### Story 2.1: B\n\nDepends on: 1.3\n")
    story = _write(tmp_path, "docs/stories/1.3.story.md", _story("InProgress", "1.3"))
    plan = _plan(tmp_path, "2")
    assert plan["stories"][0]["waiting_for"] == ["1.3"]  # type: ignore[index]
    story.write_text(_story("Done", "1.3"))
    plan = _plan(tmp_path, "2")
    assert plan["stories"][0]["waiting_for"] == []  # type: ignore[index]


def test_a_stray_file_named_like_the_number_does_not_win(tmp_path: Path) -> None:
    _write(tmp_path, "docs/prd/epic-2.md", "# Epic 2: Real\n\n### Story 2.1: Real\n")
    _write(tmp_path, "2", "### Story 9.1: stray\n")
    plan = _plan(tmp_path, str(tmp_path / "2"))
    assert plan["epic"] == "docs/prd/epic-2.md"


def test_fifty_story_epic_plans_every_story(tmp_path: Path) -> None:
    # Its speed (goal: under 0.5 s) is measured by `python -m bench.reading`, not asserted here.
    parts = ["# Epic 1: Big\n"]
    for n in range(1, 51):
        parts.append(f"\n### Story 1.{n}: Story number {n}\n\nAs a user, I want {n}.\n")
        if n <= 40:
            _write(tmp_path, f"docs/stories/1.{n}.story-number-{n}.md", _story("Done", f"1.{n}"))
    _write(tmp_path, "docs/prd/epic-1.md", "".join(parts))
    plan = _plan(tmp_path, "1")
    assert len(plan["stories"]) == 50  # type: ignore[arg-type]
    files = [story["file"] for story in plan["stories"]]  # type: ignore[union-attr]
    assert sum(1 for f in files if f) == 40


def test_plan_table_is_not_cut_in_a_pipe(tmp_path: Path) -> None:
    slug = "a-very-long-story-title-that-makes-the-path-longer-than-eighty-columns"
    _write(tmp_path, "docs/prd/epic-1.md", f"# Epic 1: A\n\n### Story 1.1: {slug}\n")
    _write(tmp_path, f"docs/stories/1.1.{slug}.md", _story("Draft", "1.1"))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "bmad_trio", "plan", "1", "--project", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"docs/stories/1.1.{slug}.md" in done.stdout
    json.dumps(done.stdout)


def test_a_story_at_review_with_a_newer_passing_gate_needs_no_qa(tmp_path: Path) -> None:
    _write(tmp_path, "docs/prd/epic-1.md", "# Epic 1: A\n\n### Story 1.1: A\n\n### Story 1.2: B\n")
    for n in ("1.1", "1.2"):
        _write(tmp_path, f"docs/stories/{n}.story.md", _story("Review", n))
    _write(
        tmp_path,
        "docs/qa/gates/1.1-a.yml",
        'schema: 1\nstory: "1.1"\ngate: PASS\nupdated: "2025-03-02T10:00:00Z"\n',
    )
    plan = _plan(tmp_path, "1")
    rows = {s["story_id"]: s for s in plan["stories"]}  # type: ignore[union-attr]
    assert rows["1.1"]["review_finished"] is True
    assert rows["1.1"]["gate"]["decision"] == "PASS"  # type: ignore[index]
    assert "no QA re-run" in rows["1.1"]["next"]
    assert rows["1.2"]["review_finished"] is False
    assert rows["1.2"]["next"].startswith("QA reviews")


def test_v6_review_step_is_the_code_review(tmp_path: Path) -> None:
    """v6 has no QA gate: the review step of a v6 story is BMAD's code review."""
    _write(tmp_path, "_bmad/bmm/config.yaml", "output_folder: '{project-root}/_bmad-output'\n")
    out = "_bmad-output"
    _write(
        tmp_path,
        f"{out}/planning-artifacts/epics.md",
        "# Epics\n\n## Epic 1: A\n\n### Story 1.1: Log in\n\n### Story 1.2: Log out\n",
    )
    _write(
        tmp_path,
        f"{out}/implementation-artifacts/sprint-status.yaml",
        "development_status:\n  epic-1: in-progress\n  1-1-log-in: review\n  1-2-log-out: backlog\n",
    )
    _write(
        tmp_path,
        f"{out}/implementation-artifacts/1-1-log-in.md",
        "# Story 1.1: Log in\n\nStatus: review\n",
    )
    plan = _plan(tmp_path, "1")
    assert plan["layout"] == "v6"
    rows = {s["story_id"]: s for s in plan["stories"]}  # type: ignore[union-attr]
    assert rows["1.1"]["next"].startswith("code review")
    assert "QA" not in rows["1.1"]["next"]
    assert rows["1.2"]["next"] == "create-story drafts the story file"


def test_v4_review_step_is_qa_and_its_gate(tmp_path: Path) -> None:
    _write(tmp_path, ".bmad-core/core-config.yaml", "devStoryLocation: docs/stories\n")
    _write(tmp_path, "docs/prd/epic-1.md", "# Epic 1: A\n\n### Story 1.1: A\n")
    _write(tmp_path, "docs/stories/1.1.story.md", _story("Review", "1.1"))
    plan = _plan(tmp_path, "1")
    assert plan["layout"] == "v4"
    assert plan["stories"][0]["next"] == "QA reviews and writes the gate"  # type: ignore[index]
