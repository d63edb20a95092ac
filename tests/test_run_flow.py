"""The run's flow with MockAgentRunner on every backend: the order stories run in (dependencies,
also on later stories), the event stream (detach, buffer, redaction) and per-run logging."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent, make_project, run_config

from bmad_trio import (
    AgentActivity,
    AgentMessage,
    ConfigError,
    ProjectError,
    SessionResult,
    SessionSpec,
    ToolCall,
    open_run,
    run_epic,
)
from bmad_trio._bmad import EpicStory, parse_epic
from bmad_trio._commandline._plan import make_plan
from bmad_trio._state._paths import run_dir
from bmad_trio._state._redact import REDACTED
from bmad_trio._state._run_files import read_events
from bmad_trio._workflow._run import Run
from bmad_trio._workflow._story_order import run_order
from bmad_trio.testing import MockAgentRunner, parse_context

pytestmark = pytest.mark.anyio

HANG_BOUND_S = 60
"""Only reached when a run hangs (each of these runs takes well under a second)."""


def _story(number: str, title: str, depends: str = "") -> str:
    dep = f"Depends on: {depends}\n\n" if depends else ""
    return (
        f"### Story {number}: {title}\nAs a user, I want {title}, so that it works.\n\n{dep}"
        f"#### Acceptance Criteria\n1. {title} works.\n\n"
    )


def _epic(*stories: str) -> str:
    return "# PRD\n\n## Epic 1: Flow\n\n" + "".join(stories)


FORWARD = _epic(_story("1.1", "Needs the later one", "1.2"), _story("1.2", "Comes first"))
INDEPENDENT = _epic(_story("1.1", "One"), _story("1.2", "Two"), _story("1.3", "Three"))


def _session_stories(agent: DiskAgent) -> list[str]:
    """The story of each session, in the order the sessions started."""
    stories: list[str] = []
    for prompt in agent.prompts:
        context = parse_context(prompt)
        assert context is not None
        stories.append(context.story)
    return stories


async def _until_senders_blocked(run: Run, count: int) -> None:
    """Wait (on the stream's own statistics) until ``count`` run tasks are blocked sending events."""
    # No event tells us a sender blocked: poll the stream's own count (state, not timing).
    while run.events.statistics().tasks_waiting_send < count:  # noqa: ASYNC110
        await anyio.sleep(0.001)


# -- the order stories run in ---------------------------------------------------------------------


def test_run_order_is_topological_with_epic_order_among_independents(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_text(
        _epic(
            _story("1.1", "A", "1.4"),
            _story("1.2", "B"),
            _story("1.3", "C", "1.1, 1.2"),
            _story("1.4", "D"),
            _story("1.5", "E", "2.7"),  # another epic's story: not ordered against
        )
    )
    stories = parse_epic(path).stories
    assert [s.story_id for s in run_order(stories)] == ["1.2", "1.4", "1.1", "1.3", "1.5"]
    # a dependency that is not selected does not order anything
    selected = tuple(s for s in stories if s.story_id in {"1.1", "1.3"})
    assert [s.story_id for s in run_order(selected)] == ["1.1", "1.3"]


def test_run_order_refuses_a_cycle() -> None:
    def story(story_id: str, *deps: str) -> EpicStory:
        return EpicStory(
            story_id=story_id,
            title=story_id,
            user_story="",
            acceptance_criteria=(),
            dependencies=deps,
            line=1,
        )

    with pytest.raises(ProjectError, match=r"dependency cycle among stories 1\.1, 1\.2"):
        run_order((story("1.1", "1.2"), story("1.2", "1.1"), story("1.3")))


@pytest.mark.parametrize("jobs", [1, 2])
async def test_a_story_may_depend_on_a_later_story(tmp_path: Path, jobs: int) -> None:
    project = make_project(tmp_path, FORWARD)
    agent = DiskAgent()
    with anyio.fail_after(HANG_BOUND_S):
        report = await run_epic(run_config(project, jobs=jobs), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert [s.story_id for s in report.stories] == ["1.1", "1.2"]  # the report keeps epic order
    assert _session_stories(agent) == ["1.2"] * 3 + ["1.1"] * 3


async def test_a_later_dependency_that_fails_blocks_the_earlier_story(tmp_path: Path) -> None:
    project = make_project(tmp_path, FORWARD)
    agent = DiskAgent(lazy_dev={"1.2"})
    with anyio.fail_after(HANG_BOUND_S):
        report = await run_epic(run_config(project, jobs=2, max_cycles=1), runner=agent.runner())
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.2"].status == "failed"
    assert by_id["1.1"].status == "blocked"
    assert by_id["1.1"].failure_reason == "blocked by 1.2"
    assert agent.sessions[("1.1", "sm")] == 0


@pytest.mark.parametrize("jobs", [1, 3])
async def test_dependencies_outside_the_selection_never_hang_a_story(
    tmp_path: Path, jobs: int
) -> None:
    epic = _epic(
        _story("1.1", "Needs an unselected one", "1.2"),
        _story("1.2", "Not selected"),
        _story("1.3", "Needs another epic", "2.1"),
    )
    project = make_project(tmp_path, epic)
    agent = DiskAgent()
    config = run_config(project, jobs=jobs, stories=("1.1", "1.3"))
    with anyio.fail_after(HANG_BOUND_S):
        report = await run_epic(config, runner=agent.runner())
    # Not waited for (they are not in this run): read from disk once; not done there → blocked,
    # as `plan` shows them waiting. A finished one counts as met (test_recorded_progress).
    assert [(s.story_id, s.status) for s in report.stories] == [
        ("1.1", "blocked"),
        ("1.3", "blocked"),
    ]
    assert report.stories[0].failure_reason == "blocked by 1.2 (not in this run, not done)"
    assert sum(agent.sessions.values()) == 0


@pytest.mark.parametrize("jobs", [1, 2])
async def test_jobs_run_the_stories_in_the_order_plan_shows(tmp_path: Path, jobs: int) -> None:
    epic = _epic(
        _story("1.1", "A", "1.3"), _story("1.2", "B", "1.1"), _story("1.3", "C"), _story("1.4", "D")
    )
    project = make_project(tmp_path, epic)
    plan = make_plan(run_config(project))
    assert [s["story_id"] for s in plan["stories"]] == ["1.3", "1.1", "1.2", "1.4"]
    assert plan["runs_next"] == "1.3"
    agent = DiskAgent()
    with anyio.fail_after(HANG_BOUND_S):
        report = await run_epic(run_config(project, jobs=jobs), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    started = list(dict.fromkeys(_session_stories(agent)))
    if jobs == 1:
        assert started == ["1.3", "1.1", "1.2", "1.4"]
    else:  # 1.4 needs nothing, so it takes the second slot at once (which begins first is luck)
        assert set(started[:2]) == {"1.3", "1.4"}
        assert started.index("1.1") < started.index("1.2")


# -- the event stream ----------------------------------------------------------------------------


@pytest.mark.parametrize("buffer", [0, -1])
async def test_an_event_buffer_below_one_is_refused(tmp_path: Path, buffer: int) -> None:
    project = make_project(tmp_path)
    with pytest.raises(ConfigError, match="event_buffer"):
        open_run(run_config(project), runner=DiskAgent().runner(), event_buffer=buffer)
    assert not (project / ".bmad-trio").exists()


async def test_leaving_the_block_unread_frees_every_blocked_sender(tmp_path: Path) -> None:
    project = make_project(tmp_path, INDEPENDENT)
    with anyio.fail_after(HANG_BOUND_S):
        async with open_run(
            run_config(project, jobs=3), runner=DiskAgent().runner(), event_buffer=1
        ) as run:
            # RunStarted fills the buffer; every story task then blocks on its StoryStarted.
            await _until_senders_blocked(run, 3)
    report = run.report()
    assert report is not None
    assert report.status == "done", report.failure_reason
    assert run.run_id is not None
    written = read_events(run_dir(project, run.run_id) / "events.jsonl")
    assert [type(e).__name__ for e in written].count("StoryFinished") == 3
    assert type(written[-1]).__name__ == "RunFinished"


async def test_a_cancelled_run_never_waits_for_a_reader(tmp_path: Path) -> None:
    """The run's cleanup is shielded; the final RunFinished must not wait there for a reader who
    may never come (nobody reads, nobody closes, the block has not been left)."""
    project = make_project(tmp_path)
    run = Run(run_config(project), DiskAgent().runner(), event_buffer=1)
    hung = False

    async def unstick_after_bound() -> None:
        nonlocal hung
        await anyio.sleep(HANG_BOUND_S)  # only reached if the run hangs in its cleanup
        hung = True
        run.events.close()  # wakes a blocked sender, so the test fails instead of hanging

    async with anyio.create_task_group() as watchdog:
        watchdog.start_soon(unstick_after_bound)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                await tg.start(run._main)  # pyright: ignore[reportPrivateUsage]
                with anyio.fail_after(HANG_BOUND_S):
                    await _until_senders_blocked(run, 1)
                scope.cancel(reason="the test interrupts the run while a sender is blocked")
        watchdog.cancel_scope.cancel()
    assert not hung, "the cancelled run waited for an event reader in its shielded cleanup"
    report = run.report()
    assert report is not None
    assert report.status == "interrupted"
    assert run.run_id is not None
    written = read_events(run_dir(project, run.run_id) / "events.jsonl")
    assert type(written[-1]).__name__ == "RunFinished"


async def test_a_secret_in_a_tool_target_reaches_neither_the_stream_nor_events_jsonl(
    tmp_path: Path,
) -> None:
    secret = "svc-3f9a7c1e5b2d4e6f"
    project = make_project(tmp_path)

    def tool_use(spec: SessionSpec) -> list[AgentMessage]:
        target = f"curl -H 'X-Service: {secret}' https://example.test/{spec.label}"
        return [AgentMessage(kind="tool_use", tool=ToolCall(name="Bash", target=target))]

    runner = MockAgentRunner(DiskAgent().handle, messages=tool_use)
    config = run_config(project, stories=("1.1",))
    async with open_run(config, runner=runner, environ={"MY_SERVICE_TOKEN": secret}) as run:
        streamed = [event async for event in run.events]
    activity = [e for e in streamed if isinstance(e, AgentActivity)]
    assert len(activity) == 3
    assert all(REDACTED in e.target for e in activity)
    assert not [e for e in streamed if secret in repr(e)]
    assert run.run_id is not None
    path = run_dir(project, run.run_id) / "events.jsonl"
    assert secret not in path.read_text()
    assert read_events(path) == streamed  # the stream and the file got the same redacted events


# -- logging -------------------------------------------------------------------------------------


async def test_two_runs_in_one_process_keep_their_own_run_log(tmp_path: Path) -> None:
    shared = logging.getLogger("bmad_trio")
    level_before = shared.level
    levels_seen: list[int] = []
    first_session = {"A": anyio.Event(), "B": anyio.Event()}

    def runner_for(name: str, other: str) -> MockAgentRunner:
        disk = DiskAgent()

        async def handle(spec: SessionSpec) -> SessionResult:
            levels_seen.append(shared.level)
            logging.getLogger("bmad_trio.test").warning("agent of %s: %s", name, spec.label)
            # Both runs are in their first session before either goes on: they overlap for sure.
            first_session[name].set()
            await first_session[other].wait()
            return await disk.handle(spec)

        return MockAgentRunner(handle)

    projects = {name: make_project(tmp_path / name) for name in ("A", "B")}
    with anyio.fail_after(HANG_BOUND_S):
        async with (
            open_run(run_config(projects["A"]), runner=runner_for("A", "B")) as run_a,
            open_run(run_config(projects["B"]), runner=runner_for("B", "A")) as run_b,
        ):
            run_a.events.close()
            run_b.events.close()
    assert shared.level == level_before
    assert levels_seen
    assert set(levels_seen) == {level_before}
    for name, run, other in (("A", run_a, run_b), ("B", run_b, run_a)):
        assert run.run_id is not None
        assert other.run_id is not None
        text = (run_dir(projects[name], run.run_id) / "run.log").read_text()
        assert f"run {run.run_id} started" in text
        assert f"run {run.run_id} done" in text
        assert f"agent of {name}: 1.1-1-sm" in text
        assert f"agent of {'B' if name == 'A' else 'A'}" not in text
        assert other.run_id not in text
