"""A run acts on what the project already recorded (issue 14, points 4 to 6; issue 13, item 10):
a v4 story at review whose passing gate is newer than its last change, and a v6 story that
sprint-status says is done, are finished without any session; a story whose status cannot be read
is blocked with the reason while the others go on; v6 stories finishing together both reach
sprint-status."""

from __future__ import annotations

from pathlib import Path

import pytest
from _disk_agent import DiskAgent, make_project, run_config
from test_v6_review import ARTIFACTS, V6Agent, make_v6_project

from bmad_trio import RunConfig, run_epic

pytestmark = pytest.mark.anyio


def _story(story_id: str, title: str, status: str, *, change_date: str = "2025-03-01") -> str:
    return (
        f"# Story {story_id}: {title}\n\n## Status\n\n{status}\n\n## Tasks / Subtasks\n\n"
        f"- [x] Task 1\n\n## Change Log\n\n| Date | Version | Description |\n| --- | --- | --- |\n"
        f"| {change_date} | 1.0 | implemented |\n"
    )


async def test_a_review_that_already_passed_is_not_run_again(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    stories = project / "docs" / "stories"
    stories.mkdir(parents=True)
    (stories / "1.1.story.md").write_text(_story("1.1", "Add greeting", "Review"))
    gates = project / "docs" / "qa" / "gates"
    gates.mkdir(parents=True)
    (gates / "1.1-add-greeting.yml").write_text(
        'schema: 1\nstory: "1.1"\ngate: PASS\nupdated: "2025-03-02T09:00:00Z"\n'
    )
    agent = DiskAgent()
    report = await run_epic(run_config(project, stories=("1.1",)), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "qa")] == 0
    assert sum(agent.sessions.values()) == 0
    assert "Done" in (stories / "1.1.story.md").read_text()


async def test_a_gate_older_than_the_last_change_means_qa_runs(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    stories = project / "docs" / "stories"
    stories.mkdir(parents=True)
    (stories / "1.1.story.md").write_text(
        _story("1.1", "Add greeting", "Review", change_date="2025-03-05")
    )
    gates = project / "docs" / "qa" / "gates"
    gates.mkdir(parents=True)
    (gates / "1.1-add-greeting.yml").write_text(
        'schema: 1\nstory: "1.1"\ngate: PASS\nupdated: "2025-03-02T09:00:00Z"\n'
    )
    agent = DiskAgent()
    report = await run_epic(run_config(project, stories=("1.1",)), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "qa")] == 1


async def test_an_unreadable_status_blocks_only_that_story(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    stories = project / "docs" / "stories"
    stories.mkdir(parents=True)
    (stories / "1.2.story.md").write_text(_story("1.2", "Add farewell", "Whatever This Is"))
    agent = DiskAgent()
    report = await run_epic(run_config(project), runner=agent.runner())
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.2"].status == "blocked"
    assert "1.2.story.md:5" in (by_id["1.2"].failure_reason or "")
    assert by_id["1.1"].status == "done"
    assert by_id["1.3"].status == "done"
    assert report.exit_code == 1
    assert agent.sessions[("1.2", "dev")] == 0


async def test_v6_sprint_status_done_is_not_redone(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    story = project / ARTIFACTS / "1-1-add-greeting.md"
    story.write_text(
        "# Story 1.1: Add greeting\n\nStatus: review\n\n## Tasks / Subtasks\n\n- [x] T\n"
    )
    sprint = project / ARTIFACTS / "sprint-status.yaml"
    sprint.write_text(
        sprint.read_text().replace("1-1-add-greeting: backlog", "1-1-add-greeting: done")
    )
    agent = V6Agent()
    config = RunConfig(
        epic=project / "_bmad-output" / "planning-artifacts" / "epics.md",
        project=project,
        skip_gates=True,
        stories=("1.1",),
        workspace="checkout",
    )
    report = await run_epic(config, runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert sum(agent.sessions.values()) == 0
    assert "Status: done" in story.read_text()


async def test_v6_stories_finishing_together_both_reach_sprint_status(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent()
    config = RunConfig(
        epic=project / "_bmad-output" / "planning-artifacts" / "epics.md",
        project=project,
        skip_gates=True,
        jobs=2,
        workspace="checkout",
    )
    report = await run_epic(config, runner=agent.runner())
    assert report.status == "done", report.failure_reason
    text = (project / ARTIFACTS / "sprint-status.yaml").read_text()
    assert "1-1-add-greeting: done" in text
    assert "1-2-add-farewell: done" in text
    assert "# first story" in text  # the line's comment survives


CROSS_EPIC = """\
# Epic 2: Follow-up

### Story 2.1: Uses the greeting
As a user, I want more.

Depends on: 1.1

### Story 2.2: Stands alone
As a user, I want this too.
"""


@pytest.mark.parametrize("done", [True, False])
async def test_a_dependency_on_another_epic_counts_when_done_on_disk(
    tmp_path: Path, done: bool
) -> None:
    project = make_project(tmp_path)
    (project / "docs" / "prd" / "epic-2.md").write_text(CROSS_EPIC)
    stories = project / "docs" / "stories"
    stories.mkdir(parents=True)
    (stories / "1.1.story.md").write_text(
        _story("1.1", "Add greeting", "Done" if done else "InProgress")
    )
    agent = DiskAgent()
    config = run_config(project, epic=project / "docs" / "prd" / "epic-2.md")
    report = await run_epic(config, runner=agent.runner())
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["2.2"].status == "done"
    if done:
        assert by_id["2.1"].status == "done"
    else:
        assert by_id["2.1"].status == "blocked"
        assert "1.1 (not in this run, not done)" in (by_id["2.1"].failure_reason or "")
        assert agent.sessions[("2.1", "sm")] == 0
