"""The orchestrator end to end with MockAgentRunner: decisions, retries, budget, resume, gates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent, make_project, run_config

from bmad_trio import (
    ConfigError,
    GateCommand,
    Outcome,
    ProjectError,
    SessionResult,
    SessionSpec,
    StateError,
    StoryFinished,
    StoryReport,
    open_run,
    run_epic,
)
from bmad_trio._bmad import parse_story
from bmad_trio._state._store import open_store
from bmad_trio.testing import MockAgentRunner

pytestmark = pytest.mark.anyio


def _status(project: Path, story_id: str) -> str:
    return parse_story(project / "docs" / "stories" / f"{story_id}.story.md").status.value


async def test_every_story_goes_from_nothing_to_done(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent()
    report = await run_epic(run_config(project), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert report.exit_code == 0
    assert [s.story_id for s in report.stories] == ["1.1", "1.2", "1.3"]
    assert [s.status for s in report.stories] == ["done"] * 3
    assert [_status(project, s) for s in ("1.1", "1.2", "1.3")] == ["done"] * 3
    for story in ("1.1", "1.2", "1.3"):
        assert [agent.sessions[(story, role)] for role in ("sm", "dev", "qa")] == [1, 1, 1]
    assert report.cost_usd == pytest.approx(0.09)
    assert report.stories[0].cost_usd == pytest.approx(0.03)
    # the story file keeps the project's own spelling (v4 words)
    assert "\nDone\n" in (project / "docs" / "stories" / "1.1.story.md").read_text()
    events = (project / ".bmad-trio" / "runs" / report.run_id / "events.jsonl").read_text()
    types = [json.loads(line)["type"] for line in events.splitlines()]
    assert types[0] == "run_started"
    assert types[-1] == "run_finished"
    assert types.count("story_finished") == 3


async def test_qa_fail_sends_findings_back_to_dev(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(fail_first_review={"1.2"})
    report = await run_epic(run_config(project), runner=agent.runner())
    assert report.status == "done"
    assert agent.sessions[("1.2", "dev")] == 2
    assert agent.sessions[("1.2", "qa")] == 2
    assert report.stories[1].cycles == 2
    second_dev = [p for p in agent.prompts if "- story: 1.2" in p and "- role: dev" in p][1]
    assert "no tests" in second_dev
    assert "add tests" in second_dev


async def test_a_story_that_never_reaches_review_fails_and_blocks_its_dependents(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(lazy_dev={"1.1"})
    report = await run_epic(run_config(project, max_cycles=2), runner=agent.runner())
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.1"].status == "failed"
    assert by_id["1.1"].failure_reason == "not done after 2 Dev/QA cycles"
    assert _status(project, "1.1") == "failed"
    assert by_id["1.2"].status == "done"  # independent: goes on
    assert by_id["1.3"].status == "blocked"
    assert by_id["1.3"].failure_reason == "blocked by 1.1"
    assert agent.sessions[("1.3", "sm")] == 0
    assert report.status == "failed"
    assert report.exit_code == 1


async def test_stop_on_failure_stops_later_stories(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(lazy_dev={"1.1"})
    report = await run_epic(
        run_config(project, max_cycles=1, stop_on_failure=True), runner=agent.runner()
    )
    assert report.status == "failed"
    assert agent.sessions[("1.2", "sm")] == 0


async def test_budget_caps_the_run(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    seen: list[float | None] = []
    agent = DiskAgent(cost_usd=0.01, on_session=lambda spec: seen.append(spec.max_budget_usd))
    report = await run_epic(run_config(project, budget_usd=0.035), runner=agent.runner())
    assert report.status == "failed"
    assert report.failure_reason == "the run's budget of $0.04 is spent"
    assert sum(agent.sessions.values()) == 4
    assert seen == pytest.approx([0.035, 0.025, 0.015, 0.005])


async def test_rate_limit_pauses_and_retries_without_counting(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    limited = SessionResult(
        outcome=Outcome.API_ERROR,
        api_error_category="rate_limit",
        api_status=429,
        retry_after_s=0.05,
        error="slow down",
    )
    agent = DiskAgent(outcomes={"dev": [limited]})
    async with open_run(run_config(project), runner=agent.runner()) as run:
        kinds = [type(event).__name__ async for event in run.events]
        report = await run.wait()
    assert report.status == "done"
    assert kinds.index("RunPaused") < kinds.index("RunResumed")
    assert report.stories[0].cycles == 1
    assert agent.sessions[("1.1", "dev")] == 2


async def test_refused_credentials_abort_the_run(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    refused = SessionResult(
        outcome=Outcome.API_ERROR, api_error_category="authentication_failed", error="bad key"
    )
    agent = DiskAgent(outcomes={"sm": [refused]})
    report = await run_epic(run_config(project), runner=agent.runner())
    assert report.status == "failed"
    assert "authentication_failed" in (report.failure_reason or "")
    assert sum(agent.sessions.values()) == 1


async def test_cancel_then_resume_never_reruns_a_finished_phase(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent()
    calls = 0

    def stop_at_fifth(_spec: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            scope.cancel()

    agent.on_session = stop_at_fifth
    agent.delay_s = 0.01
    with anyio.CancelScope() as scope:
        await run_epic(run_config(project), runner=agent.runner())
    assert scope.cancelled_caught
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        assert (await store.get_run(run_id)).status == "interrupted"
    # finished: 1.1 sm, dev, qa; 1.2 sm; interrupted: 1.2 dev (5th)
    agent.on_session = None
    report = await run_epic(run_config(project), runner=agent.runner(), resume=True)
    assert report.status == "done"
    assert report.run_id == run_id
    for story in ("1.1", "1.2", "1.3"):
        assert agent.sessions[(story, "sm")] == 1, story
        assert agent.sessions[(story, "qa")] == 1, story
    assert agent.sessions[("1.2", "dev")] == 2  # the phase in flight ran again, nothing else
    # 4 sessions before the cancel + 5 after (the cancelled one reported no cost): costs add up
    assert report.cost_usd == pytest.approx(0.09)


async def test_gate_failure_gets_a_fixer_then_passes(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    check = "import os, sys; sys.exit(0 if os.path.exists('fixed') else 1)"
    gates = (GateCommand("fixed-file", (sys.executable, "-c", check), 60),)
    agent = DiskAgent()
    report = await run_epic(
        run_config(project, skip_gates=False, gates=gates), runner=agent.runner()
    )
    assert report.status == "done", report.failure_reason
    assert [(g.name, g.passed, g.attempts) for g in report.gates] == [("fixed-file", True, 2)]
    assert agent.sessions[("fixer", "fixer")] == 1


async def test_a_missing_gate_tool_fails_the_run_cleanly(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    gates = (GateCommand("lint", ("no-such-linter-xyz", "check"), 60),)
    report = await run_epic(
        run_config(project, skip_gates=False, gates=gates), runner=DiskAgent().runner()
    )
    assert report.status == "failed"
    assert report.gates[0].passed is False
    assert "no-such-linter-xyz" in report.gates[0].detail


async def test_without_auto_approve_drafts_wait(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    report = await run_epic(run_config(project, auto_approve=False), runner=DiskAgent().runner())
    assert {s.status for s in report.stories} == {"blocked"}
    assert _status(project, "1.1") == "draft"


@pytest.mark.parametrize(("strict", "expected"), [(False, "done"), (True, "failed")])
async def test_concerns_pass_unless_strict(tmp_path: Path, strict: bool, expected: str) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(gate_word="CONCERNS")
    report = await run_epic(
        run_config(project, strict_concerns=strict, max_cycles=2, stories=("1.1",)),
        runner=agent.runner(),
    )
    assert report.stories[0].status == expected


async def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="epic file not found"):
        await run_epic(run_config(tmp_path, epic=tmp_path / "nope.md"), runner=DiskAgent().runner())
    (tmp_path / "empty.md").write_text("# nothing here\n")
    with pytest.raises(ProjectError, match=r"empty\.md"):
        await run_epic(
            run_config(tmp_path, epic=tmp_path / "empty.md"), runner=DiskAgent().runner()
        )
    make_project(tmp_path / "p")
    with pytest.raises(ConfigError, match=r"--story 9\.9"):
        await run_epic(run_config(tmp_path / "p", stories=("9.9",)), runner=DiskAgent().runner())
    assert not (tmp_path / ".bmad-trio").exists()
    assert not (tmp_path / "p" / ".bmad-trio").exists()


async def test_a_second_run_on_the_same_project_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(delay_s=0.05)
    async with open_run(run_config(project), runner=agent.runner()) as run:
        with pytest.raises(StateError, match="another bmad-trio run"):
            await run_epic(run_config(project), runner=DiskAgent().runner())
        run.events.close()
        report = await run.wait()
    assert report.status == "done"


async def test_an_epic_is_chosen_by_number_from_a_file_with_several(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    prd = project / "docs" / "prd.md"
    text = (project / "docs" / "prd" / "epic-1.md").read_text()
    prd.write_text(
        text + "\n## Epic 2: Second\n\n### Story 2.1: Other\nAs a user, I want x, so that y.\n"
    )
    agent = DiskAgent()
    report = await run_epic(run_config(project, epic=prd, epic_number=2), runner=agent.runner())
    assert [s.story_id for s in report.stories] == ["2.1"]
    assert report.status == "done"


async def test_an_epic_number_is_looked_up_in_the_layout(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    report = await run_epic(run_config(project, epic=Path("1")), runner=DiskAgent().runner())
    assert [s.story_id for s in report.stories] == ["1.1", "1.2", "1.3"]


async def test_gates_after_each_story(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    gates = (GateCommand("ok", (sys.executable, "-c", "pass"), 60),)
    report = await run_epic(
        run_config(project, skip_gates=False, gates=gates, gates_after_each_story=True),
        runner=DiskAgent().runner(),
    )
    assert report.status == "done"
    # it ran after each of 3 stories, then at the end; the report keeps its last result
    assert [(g.name, g.passed) for g in report.gates] == [("ok", True)]


async def test_resume_takes_the_settings_given_again_and_the_stored_epic(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(lazy_dev={"1.1"})
    first = await run_epic(
        run_config(project, max_cycles=1, stories=("1.1",)), runner=agent.runner()
    )
    assert first.stories[0].status == "failed"
    # the user fixes the story by hand (back to in progress) and resumes with more cycles
    story = project / "docs" / "stories" / "1.1.story.md"
    story.write_text(story.read_text().replace("\nFailed\n", "\nInProgress\n"))
    agent.lazy_dev.clear()
    resumed = await run_epic(
        run_config(project, epic=None, max_cycles=5), runner=agent.runner(), resume=True
    )
    assert resumed.run_id == first.run_id
    assert [s.story_id for s in resumed.stories] == ["1.1"]  # the stored selection
    assert resumed.stories[0].status == "done"


async def test_jobs_run_independent_stories_at_once_and_respect_dependencies(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    running: set[str] = set()
    overlaps: list[frozenset[str]] = []
    order: list[str] = []
    agent = DiskAgent()
    inner = agent.handle
    two_at_once = anyio.Event()

    async def tracking(spec: SessionSpec) -> SessionResult:
        story = spec.label.split("-")[0]
        if story not in order:
            order.append(story)
        running.add(story)
        overlaps.append(frozenset(running))
        if len(running) == 2:
            two_at_once.set()
        try:
            if story in ("1.1", "1.2") and spec.role.value == "sm":
                # The two independent stories' first sessions wait for each other: with jobs=2
                # both must be running at once (a state, not a timing), however loaded the
                # machine. The deadline only turns a broken scheduler into a failure, not a hang.
                with anyio.fail_after(60):
                    await two_at_once.wait()
            return await inner(spec)
        finally:
            running.discard(story)

    report = await run_epic(run_config(project, jobs=2), runner=MockAgentRunner(tracking))
    assert report.status == "done"
    assert any(len(group) == 2 for group in overlaps)  # two stories really ran at once
    assert all(len(group) <= 2 for group in overlaps)  # never more than --jobs
    assert order.index("1.3") > order.index("1.1")  # 1.3 depends on 1.1
    assert not any({"1.1", "1.3"} <= group for group in overlaps)


def test_story_finished_carries_every_field_of_the_story_report() -> None:
    """StoryReport and the StoryFinished event are built from one list of shared fields: the event
    has every field of the report but the title (and its own timestamp)."""
    import attrs

    from bmad_trio._workflow._run_services import story_finished

    report = StoryReport(
        story_id="1.2",
        title="Two",
        status="failed",
        cycles=3,
        cost_usd=0.25,
        duration_s=12.5,
        failure_reason="QA gate FAIL",
    )
    event = story_finished(report)
    assert set(attrs.fields_dict(StoryFinished)) - {"ts"} == set(attrs.fields_dict(StoryReport)) - {
        "title"
    }
    for name in set(attrs.fields_dict(StoryReport)) - {"title"}:
        assert getattr(event, name) == getattr(report, name), name
