"""The run's budget and rate-limit pause shared by workers through PostgreSQL (the real database;
each object below stands for one worker's story)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from bmad_trio._distributed._run_limits import SharedBudget, SharedPauseGate
from bmad_trio._distributed._shared import SharedState
from bmad_trio._errors import BudgetSpent
from bmad_trio._events import Event, RunPaused, RunResumed

pytestmark = pytest.mark.anyio

RUN = "run-1"


@pytest.fixture
def shared(pg_database: str) -> Iterator[SharedState]:
    state = SharedState(pg_database)
    state.create()
    try:
        yield state
    finally:
        state.dispose()


def _finished(shared: SharedState, story: str, cost: float) -> None:
    """What a worker writes when a session ends: its SessionFinished event."""
    body = {"type": "session_finished", "story_id": story, "role": "dev", "cycle": 1}
    shared.add_event(RUN, story, "w", {**body, "outcome": "ok", "cost_usd": cost})


async def test_sessions_on_several_workers_share_one_budget(shared: SharedState) -> None:
    shared.open_run(RUN, cap_usd=1.0, spent_usd=0.0, jobs=2)
    first, second, third = (SharedBudget(shared, RUN, s, "w", 1.0) for s in ("1.1", "1.2", "1.3"))
    a = await first.reserve()
    b = await second.reserve()
    # two lanes: the first takes half, the second what is left: the whole cap is reserved
    assert a.limit_usd == pytest.approx(0.5)
    assert b.limit_usd == pytest.approx(0.5)

    got: list[float | None] = []

    async def third_session() -> None:
        got.append((await third.reserve()).limit_usd)

    async with anyio.create_task_group() as tg:
        tg.start_soon(third_session)
        # It asks again every second; nothing was released, so it cannot have got a share (this
        # cannot pass by luck: a share now would be a bug, however late the task ran).
        await anyio.sleep(1.5)
        assert got == []
        # the first session ends, having spent 0.3: its reservation goes, its cost counts
        await anyio.to_thread.run_sync(_finished, shared, "1.1", 0.3)
    assert got == [pytest.approx(0.2)]  # 1.0 - 0.3 spent - 0.5 still held by the second

    await anyio.to_thread.run_sync(_finished, shared, "1.2", 0.5)
    await anyio.to_thread.run_sync(_finished, shared, "1.3", 0.2)
    with pytest.raises(BudgetSpent, match=r"\$1\.00 is spent"):
        await SharedBudget(shared, RUN, "1.4", "w", 1.0).reserve()


async def test_a_reservation_left_by_a_dead_session_is_void_at_the_storys_next_one(
    shared: SharedState,
) -> None:
    shared.open_run(RUN, cap_usd=1.0, spent_usd=0.0, jobs=1)
    await SharedBudget(shared, RUN, "1.1", "w1", 1.0).reserve()  # w1 dies: no SessionFinished
    again = await SharedBudget(shared, RUN, "1.1", "w2", 1.0).reserve()  # the story, elsewhere
    assert again.limit_usd == pytest.approx(1.0)


async def test_a_pause_met_on_one_worker_holds_the_others(shared: SharedState) -> None:
    shared.open_run(RUN, cap_usd=None, spent_usd=0.0, jobs=2)
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    here, there = SharedPauseGate(shared, RUN, emit), SharedPauseGate(shared, RUN, emit)
    here.pause(2.0, "rate_limit: 429")
    until = time.time() + 2.0
    await there.wait()  # not yet published: the other worker does not know
    assert events == []
    async with anyio.create_task_group() as tg:
        tg.start_soon(here.wait)  # publishes the pause, and waits it out itself
        while True:  # until it is in the database
            in_force, _ = await anyio.to_thread.run_sync(shared.pause, RUN, 0.0, "")
            if in_force > 0:
                break
            await anyio.sleep(0.05)
        await there.wait()
    assert time.time() >= until - 0.05  # (a lower bound: waiting longer is allowed)
    kinds = [type(e) for e in events]
    assert kinds.count(RunPaused) == 2
    assert kinds.count(RunResumed) == 2
    paused = [e for e in events if isinstance(e, RunPaused)]
    assert all(e.reason == "rate_limit: 429" for e in paused)


def test_workers_starting_at_once_create_the_tables_once(pg_database: str) -> None:
    """Every worker and the coordinator create the tables at start, maybe at the same moment."""
    states = [SharedState(pg_database) for _ in range(6)]
    start = threading.Barrier(len(states))
    errors: list[Exception] = []

    def create(state: SharedState) -> None:
        start.wait()
        try:
            state.create()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(state,)) for state in states]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for state in states:
        state.dispose()
    assert errors == []
