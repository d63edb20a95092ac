"""A story file its own session breaks is that story's failed attempt; errors from the run are
classified, not called internal (issue 13, 6)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent, make_project, run_config

from bmad_trio import (
    ConfigError,
    Outcome,
    PreflightError,
    ProjectError,
    SessionResult,
    SessionSpec,
    StateError,
    run_epic,
)
from bmad_trio._errors import collapse
from bmad_trio._state._store import open_store
from bmad_trio.testing import MockAgentRunner, parse_context

pytestmark = pytest.mark.anyio

BROKEN = "# Story 1.1\n\nthe Dev agent overwrote everything, even the status\n"


def _breaking_dev(agent: DiskAgent, *, repair_at: int | None) -> MockAgentRunner:
    """Story 1.1's Dev leaves the story file unparseable, until its ``repair_at``-th session."""
    dev_sessions = 0

    async def handle(spec: SessionSpec) -> SessionResult:
        nonlocal dev_sessions
        context = parse_context(spec.prompt)
        assert context is not None
        if context.role != "dev" or context.story != "1.1":
            return await agent.handle(spec)
        dev_sessions += 1
        agent.prompts.append(spec.prompt)
        path = spec.cwd / context.story_file
        if repair_at is not None and dev_sessions >= repair_at:
            DiskAgent._draft(path, "1.1", context.story_title)  # pyright: ignore[reportPrivateUsage]
            DiskAgent._develop(path, spec.cwd)  # pyright: ignore[reportPrivateUsage]
        else:
            path.write_text(BROKEN)
        return SessionResult(outcome=Outcome.OK, cost_usd=0.01, turns=1)

    return MockAgentRunner(handle)


async def test_a_story_file_its_dev_breaks_is_repaired_by_the_next_cycle(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent()
    report = await run_epic(run_config(project), runner=_breaking_dev(agent, repair_at=2))
    assert report.status == "done", report.failure_reason
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.1"].status == "done"
    assert by_id["1.1"].cycles == 2
    second_dev = [p for p in agent.prompts if "- story: 1.1" in p and "- role: dev" in p][1]
    assert "no longer parses" in second_dev  # the repair cycle is told what is wrong
    async with open_store(project) as store:
        phases = await store.phases(report.run_id, "1.1")
    develops = [p for p in phases if p.phase == "develop"]
    assert [p.ok for p in develops] == [False, True]
    assert "no longer parses" in develops[0].detail


async def test_a_story_file_its_dev_keeps_breaking_fails_that_story_only(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    report = await run_epic(
        run_config(project, max_cycles=2), runner=_breaking_dev(DiskAgent(), repair_at=None)
    )
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.1"].status == "failed"
    reason = by_id["1.1"].failure_reason or ""
    assert "does not parse" in reason
    assert "1.1.story.md" in reason  # the parse error, naming the file
    assert by_id["1.2"].status == "done"  # the others go on
    assert by_id["1.3"].status == "blocked"  # depends on 1.1
    assert report.status == "failed"
    assert report.exit_code == 1


async def test_a_story_file_broken_before_the_run_blocks_that_story_only(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "docs" / "stories").mkdir(parents=True)
    (project / "docs" / "stories" / "1.2.story.md").write_text(
        BROKEN.replace("1.1", "1.2").replace("Story", "Story", 1)
    )
    report = await run_epic(run_config(project), runner=DiskAgent().runner())
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.2"].status == "blocked"
    assert "cannot be read" in (by_id["1.2"].failure_reason or "")
    assert by_id["1.1"].status == "done"
    assert by_id["1.3"].status == "done"


async def test_errors_from_several_stories_are_classified_not_internal(tmp_path: Path) -> None:
    """Two stories raise BmadErrors at once: the run reports the most severe, not "internal"."""
    project = make_project(tmp_path)
    both = anyio.Event()
    arrived = 0

    async def fail_together(spec: SessionSpec) -> SessionResult:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        # Shielded so that both reach their raise: the first raise cancels the other's story.
        with anyio.CancelScope(shield=True):
            await both.wait()
        if spec.label.startswith("1.1"):
            raise ConfigError("bad thing one")
        raise PreflightError("bad thing two")

    with pytest.raises(PreflightError, match="bad thing two"):
        await run_epic(run_config(project, jobs=2), runner=MockAgentRunner(fail_together))
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        run = await store.get_run(run_id)
    assert run.status == "failed"
    assert run.failure_reason == "bad thing two"


async def test_a_bug_stays_an_internal_error(tmp_path: Path) -> None:
    project = make_project(tmp_path)

    def bug(_spec: SessionSpec) -> SessionResult:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        await run_epic(run_config(project), runner=MockAgentRunner(bug))
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        run = await store.get_run(run_id)
    assert (run.failure_reason or "").startswith("internal error: ZeroDivisionError")


def test_collapse_picks_the_most_severe_bmad_error() -> None:
    state, preflight = StateError("s"), PreflightError("p")
    group = ExceptionGroup("run", [state, ExceptionGroup("story", [preflight, ProjectError("x")])])
    assert collapse(group) is preflight
    assert collapse(ExceptionGroup("one", [ExceptionGroup("inner", [state])])) is state
    bug = ValueError("bug")
    assert collapse(ExceptionGroup("one", [bug])) is bug
    mixed = ExceptionGroup("run", [state, bug])
    assert collapse(mixed) is mixed
