"""Faults a cluster of workers survives: the real CLI, the scripted BMAD actor, real git with a
bare repository as the shared remote, PostgreSQL on loopback, workers as separate processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import attrs
import pytest
from _cluster import (
    Worker,
    engine_config,
    events_of,
    fail_if_a_worker_dies,
    git,
    project_with_remote,
    wait_until_serving,
)

from bmad_trio import ClaudeAgentRunner, run_epic
from bmad_trio.testing import (
    ApiRequest,
    BmadActor,
    FakeAnthropicAPI,
    Fault,
    Reply,
    Scenario,
    bmad_actor_scenario,
    parse_context,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HANG_LIMIT_S = 600


@attrs.define
class StallFirstDev:
    """The first Dev session's first request gets a stream that never ends: that session stays in
    flight, mid-answer, until its CLI is killed."""

    stalled: list[ApiRequest] = attrs.field(factory=list[ApiRequest])
    in_flight: anyio.Event = attrs.field(factory=anyio.Event)

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        contexts = (parse_context(text) for text in request.user_texts())
        ctx = next((c for c in contexts if c is not None), None)
        if ctx is None or ctx.role != "dev" or self.stalled or request.assistant_turns:
            return None
        self.stalled.append(request)
        self.in_flight.set()
        return Fault(kind="stall")


@pytest.fixture
def cluster() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def _roles(remote: Path, start: str, branch: str) -> list[str]:
    log = git(remote, "log", "--format=%(trailers:key=Bmad-Role,valueonly)", f"{start}..{branch}")
    return sorted(role for role in log.split() if role != "code")


@pytest.mark.parametrize("stop", ["SIGKILL", "Ctrl-C"])
async def test_a_worker_stopped_mid_session_leaves_its_story_to_another_without_rerunning_a_phase(
    tmp_path: Path, pg_database: str, cluster: ExitStack, stop: str
) -> None:
    project, epic, remote = project_with_remote(tmp_path, stories=1)
    start = git(project, "rev-parse", "HEAD")
    config = engine_config(project, epic, pg_database)
    stall = StallFirstDev()
    scenario = Scenario(responders=(stall, BmadActor()), default=Reply.text("OK"))
    root = tmp_path / "workers"
    async with FakeAnthropicAPI(scenario) as api:
        first = Worker("w1", root, pg_database, remote, api.env(), dead_after_s=3.0)
        cluster.callback(first.close)
        pool = [first]

        async def kill_mid_session_then_start_another() -> None:
            # The Dev session is in flight on w1 once its request stalls (SM's phase is pushed).
            await stall.in_flight.wait()
            assert _roles(remote, start, "bmad/epic-1-story-1.1") == ["sm"]
            if stop == "SIGKILL":
                first.kill()
            else:
                assert await anyio.to_thread.run_sync(first.interrupt) == 130
            second = Worker("w2", root, pg_database, remote, api.env(), dead_after_s=3.0)
            cluster.callback(second.close)
            pool.append(second)

        async with ClaudeAgentRunner(env=api.env()) as runner, anyio.create_task_group() as tg:
            tg.start_soon(fail_if_a_worker_dies, pool, frozenset({"w1"}))
            tg.start_soon(kill_mid_session_then_start_another)
            with anyio.fail_after(HANG_LIMIT_S):  # a bound, not a timing: the run takes ~20 s
                report = await run_epic(config, runner=runner)
            tg.cancel_scope.cancel(reason="the run is over")
        assert report.status == "done", (report.failure_reason, pool[-1].output()[-3000:])
        assert pool[-1].interrupt() == 130

    # w2 took the story up from the last pushed phase: SM ran once, Dev once more (its first
    # session died uncommitted with w1), then QA.
    assert _roles(remote, start, "bmad/epic-1-story-1.1") == ["dev", "qa", "sm"]
    assert "re-enqueued" in pool[1].output()
    moved = [e for e in events_of(project, report.run_id) if e["type"] == "story_moved"]
    reason = "it fell silent" if stop == "SIGKILL" else "it was stopped"
    assert [(e["worker"], str(e["reason"])[: len(reason)]) for e in moved] == [("w1", reason)]
    story = git(project, "show", "bmad/epic-1:docs/stories/1.1.story.md")
    assert "Status\n\nDone" in story or "Status\nDone" in story, story
    sm_requests = [
        r for r in api.message_requests
        if any((c := parse_context(t)) is not None and c.role == "sm" for t in r.user_texts())
    ]  # fmt: skip
    assert sm_requests  # (SM ran on w1 only: the count of its commits above says once)


async def test_a_worker_that_cannot_reach_the_remote_hands_its_story_to_another(
    tmp_path: Path, pg_database: str, cluster: ExitStack
) -> None:
    project, epic, remote = project_with_remote(tmp_path, stories=1)
    config = engine_config(project, epic, pg_database)
    # w1 reaches the remote through a link that goes away once it has cloned.
    link = tmp_path / "link.git"
    link.symlink_to(remote)
    root = tmp_path / "workers"
    async with FakeAnthropicAPI(bmad_actor_scenario()) as api:
        cut_off = Worker("w1", root, pg_database, link, api.env(), dead_after_s=3.0)
        cluster.callback(cut_off.close)
        await wait_until_serving(cut_off)
        link.unlink()
        pool = [cut_off]

        async def start_another_once_w1_gave_up() -> None:
            await anyio.to_thread.run_sync(cut_off.process.wait)
            other = Worker("w2", root, pg_database, remote, api.env(), dead_after_s=3.0)
            cluster.callback(other.close)
            pool.append(other)

        async with ClaudeAgentRunner(env=api.env()) as runner, anyio.create_task_group() as tg:
            tg.start_soon(fail_if_a_worker_dies, pool, frozenset({"w1"}))
            tg.start_soon(start_another_once_w1_gave_up)
            with anyio.fail_after(HANG_LIMIT_S):  # a bound, not a timing: the run takes ~20 s
                report = await run_epic(config, runner=runner)
            tg.cancel_scope.cancel(reason="the run is over")
        assert report.status == "done", (report.failure_reason, pool[-1].output()[-3000:])
        assert pool[-1].interrupt() == 130

    # w1 said why it stopped, and exited with an error; the run's events say the story moved
    assert cut_off.process.returncode == 1, cut_off.output()[-3000:]
    assert "cannot reach the shared remote" in cut_off.output()
    moved = [e for e in events_of(project, report.run_id) if e["type"] == "story_moved"]
    assert [(e["story_id"], e["worker"]) for e in moved] == [("1.1", "w1")], moved
    assert "cannot reach the shared remote" in str(moved[0]["reason"])


@attrs.define
class PushBehindTheWorkersBack:
    """At the first Dev request, a commit lands on the story's branch on the remote, as when the
    same story cycle runs twice at once (a worker declared dead that was only slow)."""

    remote: Path
    clone: Path
    done: list[str] = attrs.field(factory=list[str])

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        contexts = (parse_context(text) for text in request.user_texts())
        ctx = next((c for c in contexts if c is not None), None)
        if ctx is None or ctx.role != "dev" or self.done:
            return None
        branch = "bmad/epic-1-story-1.1"
        git(self.clone.parent, "clone", "-q", "-b", branch, str(self.remote), str(self.clone))
        (self.clone / "NOTES.md").write_text("pushed by the other execution\n")
        git(self.clone, "add", "-A")
        git(self.clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "other")
        git(self.clone, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        self.done.append(git(self.clone, "rev-parse", "HEAD"))
        return None


async def test_a_phase_whose_branch_moved_meanwhile_is_dropped_and_the_cycle_goes_on(
    tmp_path: Path, pg_database: str, cluster: ExitStack
) -> None:
    project, epic, remote = project_with_remote(tmp_path, stories=1)
    start = git(project, "rev-parse", "HEAD")
    config = engine_config(project, epic, pg_database)
    other = PushBehindTheWorkersBack(remote, tmp_path / "other")
    scenario = Scenario(responders=(other, BmadActor()), default=Reply.text("OK"))
    async with FakeAnthropicAPI(scenario) as api:
        worker = Worker("w1", tmp_path / "workers", pg_database, remote, api.env())
        cluster.callback(worker.close)
        async with ClaudeAgentRunner(env=api.env()) as runner, anyio.create_task_group() as tg:
            tg.start_soon(fail_if_a_worker_dies, [worker])
            with anyio.fail_after(HANG_LIMIT_S):
                report = await run_epic(config, runner=runner)
            tg.cancel_scope.cancel(reason="the run is over")
        assert report.status == "done", (report.failure_reason, worker.output()[-3000:])
        assert worker.interrupt() == 130

    # The Dev phase that ran while the branch moved was dropped (its push refused), and Dev ran
    # again on top of the other commit: one Dev commit on the branch, the other's kept.
    assert "moved on the remote while this phase ran" in worker.output()
    branch = "bmad/epic-1-story-1.1"
    assert other.done[0] in git(remote, "rev-list", branch)
    assert _roles(remote, start, branch) == ["dev", "qa", "sm"]
