"""Story cycles on worker processes through DBOS: the real CLI, the scripted BMAD actor, real git
with a bare repository as the shared remote, PostgreSQL on loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest
from _cluster import Worker, engine_config, fail_if_a_worker_dies, git, project_with_remote

from bmad_trio import ClaudeAgentRunner, run_epic
from bmad_trio._state._store import Store
from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def workers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


async def test_two_workers_run_an_epic_and_the_coordinator_lands_it(
    tmp_path: Path, pg_database: str, workers: ExitStack, anyio_backend: str
) -> None:
    """The coordinator on this test's backend, and so are the workers' event loops."""
    project, epic, remote = project_with_remote(tmp_path, stories=4)
    start = git(project, "rev-parse", "HEAD")
    config = engine_config(project, epic, pg_database, jobs=4)
    async with FakeAnthropicAPI(bmad_actor_scenario()) as api:
        pool = [
            Worker(
                name, tmp_path / "workers", pg_database, remote, api.env(), backend=anyio_backend
            )
            for name in ("w1", "w2")
        ]
        for worker in pool:
            workers.callback(worker.close)
        async with ClaudeAgentRunner(env=api.env()) as runner, anyio.create_task_group() as tg:
            tg.start_soon(fail_if_a_worker_dies, pool)
            with anyio.fail_after(600):  # a bound on a hang, not a timing: the run takes ~25 s
                report = await run_epic(config, runner=runner)
            tg.cancel_scope.cancel(reason="the run is over")
        assert report.status == "done", (report.failure_reason, pool[0].output()[-3000:])
        assert [w.interrupt() for w in pool] == [130, 130]

    assert [s.status for s in report.stories] == ["done"] * 4
    assert git(project, "rev-parse", "HEAD") == start
    landed = git(project, "log", "--format=%s", f"{start}..bmad/epic-1").splitlines()
    assert sorted(landed) == sorted(f"1.{n}: Feature number {n}" for n in range(1, 5))
    for n in range(1, 5):
        story = git(project, "show", f"bmad/epic-1:docs/stories/1.{n}.story.md")
        assert re.search(r"^## Status\s+Done$", story, re.MULTILINE), story
        # the phases were pushed to the shared remote by the workers, one commit each
        roles = git(
            remote, "log", "--format=%(trailers:key=Bmad-Role,valueonly)",
            f"{start}..bmad/epic-1-story-1.{n}",
        ).split()  # fmt: skip
        assert sorted(r for r in roles if r != "code") == ["dev", "qa", "sm"], (n, roles)
    # both workers took stories, and the coordinator's store has every session and its cost
    outputs = [w.output() for w in pool]
    async with await Store.open(project) as store:
        sessions = await store.sessions(report.run_id)
    assert len(sessions) >= 12
    assert {s.role for s in sessions} >= {"sm", "dev", "qa"}
    assert report.cost_usd == pytest.approx(sum(s.cost_usd for s in sessions))
    # each session's transcript came back from its worker, where the store says it is
    for session in sessions:
        assert session.transcript is not None
        transcript = project / session.transcript
        assert transcript.is_file(), session.transcript
        assert transcript.read_text().strip(), session.transcript
    assert all("serving" in out for out in outputs), outputs


async def test_the_budget_holds_across_workers(
    tmp_path: Path, pg_database: str, workers: ExitStack
) -> None:
    """Four stories (~$0.39 each with the scripted actor) on two workers, $0.60 for the run: the
    workers reserve their sessions' shares from one budget in the database, so the run stops
    once $0.60 is spent, all workers together."""
    project, epic, remote = project_with_remote(tmp_path, stories=4)
    config = engine_config(project, epic, pg_database, jobs=4, budget_usd=0.6)
    async with FakeAnthropicAPI(bmad_actor_scenario()) as api:
        pool = [
            Worker(name, tmp_path / "workers", pg_database, remote, api.env())
            for name in ("w1", "w2")
        ]
        for worker in pool:
            workers.callback(worker.close)
        async with ClaudeAgentRunner(env=api.env()) as runner, anyio.create_task_group() as tg:
            tg.start_soon(fail_if_a_worker_dies, pool)
            with anyio.fail_after(600):  # a bound on a hang, not a timing
                report = await run_epic(config, runner=runner)
            tg.cancel_scope.cancel(reason="the run is over")
        assert [w.interrupt() for w in pool] == [130, 130]

    why = (
        [(r.story_id, r.status, r.failure_reason) for r in report.stories],
        report.cost_usd,
        [w.output()[-2000:] for w in pool],
    )
    assert report.status == "failed", why
    assert report.failure_reason == "the run's budget of $0.60 is spent", why
    assert any(s.status != "done" for s in report.stories)
    # Spent: at least the cap, and past it by no more than the sessions in flight could each
    # overrun their share by one model turn (~$0.17 with this actor), not by whole sessions.
    assert 0.6 <= report.cost_usd < 0.6 + 4 * 0.17, report.cost_usd
