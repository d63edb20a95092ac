"""Faults on the coordinator's side of a distributed run: the coordinator killed, the database
restarting. Real CLI, scripted BMAD actor, real git (a bare repository as the shared remote),
PostgreSQL on loopback, workers as separate processes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
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
)
from _postgres import PostgresServer
from anyio.streams.text import TextReceiveStream

from bmad_trio import ClaudeAgentRunner, run_epic
from bmad_trio._distributed._shared import SharedState
from bmad_trio._state._store import Store
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
"""A bound on a hang, not a timing: each run here takes well under a minute."""
STORIES = 3


@attrs.define
class FirstRequestOf:
    """Answers nothing itself; sets ``seen`` at the first request of a session of ``role``."""

    role: str
    seen: anyio.Event = attrs.field(factory=anyio.Event)

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        contexts = (parse_context(text) for text in request.user_texts())
        if any(c is not None and c.role == self.role for c in contexts):
            self.seen.set()
        return None


@pytest.fixture
def cluster() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds (state outside this process: looked at five times a second)."""
    while True:
        if condition():
            return
        await anyio.sleep(0.2)


def _landed(project: Path, start: str) -> list[str]:
    return git(project, "log", "--format=%s", f"{start}..bmad/epic-1").splitlines()


def _session_events(database: str, run_id: str) -> int:
    shared = SharedState(database)
    try:
        return sum(
            1
            for n in range(1, STORIES + 1)
            for _, _, body in shared.events_after(run_id, f"1.{n}", 0)
            if body["type"] == "session_finished"
        )
    finally:
        shared.dispose()


async def test_a_killed_coordinator_resumes_and_lands_every_story_once(
    tmp_path: Path, pg_database: str, cluster: ExitStack
) -> None:
    project, epic, remote = project_with_remote(tmp_path, stories=STORIES)
    start = git(project, "rev-parse", "HEAD")
    async with FakeAnthropicAPI(bmad_actor_scenario()) as api:
        env = {**os.environ, **api.env()}
        pool = [
            Worker(name, tmp_path / "workers", pg_database, remote, api.env())
            for name in ("w1", "w2")
        ]
        for worker in pool:
            cluster.callback(worker.close)
        run = [sys.executable, "-m", "bmad_trio", "run", str(epic), "--project", str(project)]
        options = ["--engine", "dbos", "--database", pg_database, "--finish", "branch"]
        options += ["--skip-gates", "--progress", "jsonl", "--jobs", "2"]
        with anyio.fail_after(HANG_LIMIT_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(fail_if_a_worker_dies, pool)
                async with await anyio.open_process(
                    [*run, *options], env=env, stderr=subprocess.DEVNULL
                ) as coordinator:
                    # Killed once the first story has landed, the others in flight on workers.
                    assert coordinator.stdout is not None
                    seen = ""
                    async for chunk in TextReceiveStream(coordinator.stdout):
                        seen += chunk
                        if '"story_merged"' in seen:
                            break
                    coordinator.kill()
                    await coordinator.wait()
                assert len(_landed(project, start)) == 1
                resume = ["resume", "--project", str(project), "--progress", "plain"]
                resumed = await anyio.run_process(
                    [sys.executable, "-m", "bmad_trio", *resume], env=env, check=False
                )
                tg.cancel_scope.cancel(reason="the run is over")
        assert resumed.returncode == 0, resumed.stdout.decode()[-3000:]
        assert [w.interrupt() for w in pool] == [130, 130]

    # every story landed exactly once, and every session counted exactly once
    landed = _landed(project, start)
    assert sorted(landed) == sorted(f"1.{n}: Feature number {n}" for n in range(1, STORIES + 1))
    async with await Store.open(project) as store:
        run_id = (await store.runs())[-1].run_id
        stories = await store.stories(run_id)
        sessions = await store.sessions(run_id)
    assert [s.status for s in stories] == ["done"] * STORIES
    assert len(sessions) == _session_events(pg_database, run_id)
    assert len({s.label for s in sessions}) == len(sessions)


async def test_the_database_restarting_mid_run_is_waited_out(
    tmp_path: Path,
    postgres: PostgresServer,
    pg_database: str,
    cluster: ExitStack,
) -> None:
    project, epic, remote = project_with_remote(tmp_path, stories=STORIES)
    start = git(project, "rev-parse", "HEAD")
    config = engine_config(project, epic, pg_database, jobs=2)
    signal = FirstRequestOf("dev")
    scenario = Scenario(responders=(signal, BmadActor()), default=Reply.text("OK"))
    async with FakeAnthropicAPI(scenario) as api:
        pool = [
            Worker(name, tmp_path / "workers", pg_database, remote, api.env())
            for name in ("w1", "w2")
        ]
        for worker in pool:
            cluster.callback(worker.close)
        restarted = anyio.Event()

        async def restart_after_the_first_session() -> None:
            # Once a Dev session asks the model, its story's SM session has ended (its event
            # written) and the other stories' sessions are in flight.
            await signal.seen.wait()
            before = [w.output().count("heartbeat failed") for w in pool]
            await anyio.to_thread.run_sync(functools.partial(postgres.stop, "fast"))
            # Down until every worker has missed a heartbeat (so for seconds, not a blink), and
            # a story's phase on some worker has met the outage (writing an event, reserving its
            # budget) and is waiting it out.
            await _until(
                lambda: (
                    all(
                        w.output().count("heartbeat failed") > n
                        for w, n in zip(pool, before, strict=True)
                    )
                    and any("database is not answering" in w.output() for w in pool)
                )
            )
            await anyio.to_thread.run_sync(postgres.start)
            restarted.set()

        async with ClaudeAgentRunner(env=api.env()) as runner, anyio.create_task_group() as tg:
            tg.start_soon(fail_if_a_worker_dies, pool)
            tg.start_soon(restart_after_the_first_session)
            with anyio.fail_after(HANG_LIMIT_S):
                report = await run_epic(config, runner=runner)
            tg.cancel_scope.cancel(reason="the run is over")
        assert restarted.is_set(), "the run ended before the database could restart"
        assert report.status == "done", (report.failure_reason, pool[0].output()[-3000:])
        assert [w.interrupt() for w in pool] == [130, 130]
    landed = _landed(project, start)
    assert sorted(landed) == sorted(f"1.{n}: Feature number {n}" for n in range(1, STORIES + 1))
    kinds = [e["type"] for e in events_of(project, report.run_id)]
    assert kinds.count("story_merged") == STORIES
