"""A trio application embeds a run: nursery.start(serve_run), async with open_run, cancel, resume.

Run with pytest-trio: ``pytest -p no:anyio tests/embed``.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from _embed_helpers import HangingAgent, config_for, make_project, signal_handlers

from bmad_trio import (
    ConfigError,
    Event,
    ProjectError,
    Run,
    RunConfig,
    RunFinished,
    RunStarted,
    StoryFinished,
    open_run,
    run_epic,
    serve_run,
)
from bmad_trio._state._store import PhaseRow, open_store

ROLES = ("sm", "dev", "qa")
STORIES = ("1.1", "1.2", "1.3")


async def _phases(project: Path) -> tuple[str, str, list[PhaseRow]]:
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        run = await store.get_run(run_id)
        return run_id, run.status, await store.phases(run_id)


def _last_event(project: Path, run_id: str) -> dict[str, object]:
    lines = (project / ".bmad-trio" / "runs" / run_id / "events.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


@pytest.mark.trio
async def test_serve_run_in_an_app_nursery_cancel_mid_run_then_resume(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    config = config_for(project)
    agent = HangingAgent(hang_at=("1.2", "dev"))
    seen: list[Event] = []
    ticks = 0

    async def heartbeat() -> None:  # the application's own work, next to the run
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.01)

    async def consume(run: Run) -> None:
        async for event in run.events:
            seen.append(event)

    async with trio.open_nursery() as nursery:
        # The app decides to stop once 1.2's Dev session is under way (mid-phase). Cancelling
        # on the PhaseStarted event instead would race the session's own start: the cancel may
        # land at a checkpoint before the agent is called, and the armed agent would then hang
        # the resumed run.
        agent.on_hang = partial(nursery.cancel_scope.cancel, reason="the app stops the run")
        nursery.start_soon(heartbeat)
        run: Run = await nursery.start(partial(serve_run, config, runner=agent.runner()))
        assert run.run_id is not None
        nursery.start_soon(consume, run)

    assert nursery.cancel_scope.cancelled_caught
    assert ticks > 0
    assert agent.hung == 1
    assert isinstance(seen[0], RunStarted)  # (how far the app read before the cancel varies)
    report = run.report()
    assert report is not None
    assert (report.status, report.exit_code) == ("interrupted", 130)

    run_id, status, before = await _phases(project)
    assert run_id == run.run_id
    assert status == "interrupted"
    in_flight = [p for p in before if not p.finished]
    assert [(p.story_id, p.phase) for p in in_flight] == [("1.2", "develop")]
    assert _last_event(project, run_id)["type"] == "run_finished"
    assert _last_event(project, run_id)["status"] == "interrupted"

    resumed = await run_epic(config, runner=agent.runner(), resume=True)
    assert resumed.status == "done", resumed.failure_reason
    assert resumed.run_id == run_id
    assert [s.status for s in resumed.stories] == ["done"] * 3

    # Every session that did its job ran exactly once across both runs; the one in flight ran
    # again (it never reached the disk agent the first time).
    for story in STORIES:
        assert [agent.disk.sessions[(story, role)] for role in ROLES] == [1, 1, 1], story
    _, status, after = await _phases(project)
    assert status == "done"
    finished_before = {(p.story_id, p.phase, p.cycle) for p in before if p.ok}
    new = [p for p in after if p.id > max(p.id for p in before)]
    rerun = [p for p in new if (p.story_id, p.phase, p.cycle) in finished_before]
    assert rerun == []
    assert ("1.2", "develop") in {(p.story_id, p.phase) for p in new}


@pytest.mark.trio
async def test_open_run_as_an_async_context_manager(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = HangingAgent(hang_at=("none", "none"))
    async with open_run(config_for(project), runner=agent.runner()) as run:
        events = [event async for event in run.events]
        report = await run.wait()
    assert report.ok
    assert report.exit_code == 0
    assert isinstance(events[0], RunStarted)
    assert events[0].run_id == report.run_id
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status == "done"
    finished = [e.story_id for e in events if isinstance(e, StoryFinished)]
    assert finished == list(STORIES)
    assert [(s.story_id, s.status) for s in report.stories] == [(s, "done") for s in STORIES]


@pytest.mark.trio
async def test_cancelling_the_callers_scope_stops_cleanly_and_leaves_resumable_state(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    scope = trio.CancelScope()
    agent = HangingAgent(hang_at=("1.1", "qa"), on_hang=scope.cancel)
    with scope:
        await run_epic(config_for(project), runner=agent.runner())
    assert scope.cancelled_caught
    run_id, status, phases = await _phases(project)
    assert status == "interrupted"
    assert [(p.story_id, p.phase) for p in phases if not p.finished] == [("1.1", "review")]
    assert _last_event(project, run_id)["status"] == "interrupted"
    # the project lock was released and the state is resumable
    report = await run_epic(config_for(project), runner=agent.runner(), resume=run_id)
    assert report.status == "done"
    assert agent.disk.sessions[("1.1", "qa")] == 1


@pytest.mark.trio
async def test_a_deadline_on_the_callers_scope_is_the_only_timeout_needed(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = HangingAgent(hang_at=("1.1", "dev"))
    with trio.move_on_after(0.5) as scope:
        await run_epic(config_for(project), runner=agent.runner())
    assert scope.cancelled_caught
    _, status, _ = await _phases(project)
    assert status == "interrupted"


@pytest.mark.trio
async def test_the_library_never_prints_and_installs_no_signal_handlers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path)
    handlers = signal_handlers()
    logger = logging.getLogger("bmad_trio")
    log_state = (list(logger.handlers), logger.level)

    report = await run_epic(config_for(project), runner=HangingAgent(("-", "-")).runner())
    assert report.ok
    other = make_project(tmp_path / "other")
    with trio.CancelScope() as scope:
        agent = HangingAgent(("1.1", "sm"), on_hang=scope.cancel)
        await run_epic(config_for(other), runner=agent.runner())
    assert scope.cancelled_caught
    with pytest.raises(ConfigError):
        await run_epic(config_for(project, epic=project / "missing.md"))

    assert capfd.readouterr() == ("", "")
    assert signal_handlers() == handlers
    assert (list(logger.handlers), logger.level) == log_state


@pytest.mark.trio
async def test_bad_input_raises_config_error_not_an_exception_group(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    runner = HangingAgent(("-", "-")).runner()
    missing = config_for(project, epic=project / "docs" / "nope.md")

    with pytest.raises(ConfigError, match="epic file not found"):
        await run_epic(missing, runner=runner)
    with pytest.raises(ConfigError, match="epic file not found"):
        async with open_run(missing, runner=runner):
            pytest.fail("the block must not run")  # pragma: no cover
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConfigError, match="epic file not found"):
            await nursery.start(partial(serve_run, missing, runner=runner))
    with pytest.raises(ConfigError, match=r"--story 9\.9"):
        await run_epic(config_for(project, stories=("9.9",)), runner=runner)
    with pytest.raises(ConfigError, match="max_cycles must be > 0"):
        RunConfig(epic=project / "docs" / "prd" / "epic-1.md", project=project, max_cycles=0)
    with pytest.raises(ConfigError, match="no epic given"):
        await run_epic(RunConfig(project=project), runner=runner)
    (project / "empty.md").write_text("# nothing to run\n")
    with pytest.raises(ProjectError):
        await run_epic(config_for(project, epic=project / "empty.md"), runner=runner)
    assert runner.calls == []
    assert not (project / ".bmad-trio").exists()  # nothing was written


@pytest.mark.trio
async def test_reading_events_from_another_task_ends_cleanly(tmp_path: Path) -> None:
    # The race needs the reader to be waiting when the run ends; trio's scheduler picks the order
    # at random, so try often enough to see it.
    for attempt in range(30):
        project = make_project(tmp_path / str(attempt), "# Epic 1\n\n## Story 1.1: Hello\n")
        runner = HangingAgent(("-", "-")).runner()
        async with trio.open_nursery() as nursery:
            run: Run = await nursery.start(partial(serve_run, config_for(project), runner=runner))
            count = 0
            async for _ in run.events:
                count += 1
        assert count > 0
