"""The run's spending cap: it holds with concurrent sessions, cancels and timeouts (issue 13, 4)."""

from __future__ import annotations

from pathlib import Path

import anyio
import attrs
import pytest
from _disk_agent import DiskAgent, make_project, run_config

from bmad_trio import (
    AgentMessage,
    Event,
    Outcome,
    RunPaused,
    SessionResult,
    SessionSpec,
    run_epic,
)
from bmad_trio._state._store import open_store
from bmad_trio._workflow._run_services import PauseGate
from bmad_trio.testing import MockAgentRunner

pytestmark = pytest.mark.anyio

INDEPENDENT = """\
# PRD

## Epic 1: Three

### Story 1.1: One
As a user, I want one, so that a.

### Story 1.2: Two
As a user, I want two, so that b.

### Story 1.3: Three
As a user, I want three, so that c.
"""


async def test_concurrent_sessions_share_the_cap_instead_of_each_getting_all_of_it(
    tmp_path: Path,
) -> None:
    """Cap $1, jobs 3, every session spends 90 % of its own limit: the run spends at most $1."""
    project = make_project(tmp_path, INDEPENDENT)
    agent = DiskAgent()
    first_three = anyio.Event()
    started = 0
    limits: list[float | None] = []

    async def spend_most_of_the_limit(spec: SessionSpec) -> SessionResult:
        nonlocal started
        started += 1
        limits.append(spec.max_budget_usd)
        if started == 3:
            first_three.set()
        await first_three.wait()  # the first three sessions really are in flight together
        result = await agent.handle(spec)
        assert spec.max_budget_usd is not None
        return attrs.evolve(result, cost_usd=0.9 * spec.max_budget_usd)

    report = await run_epic(
        run_config(project, budget_usd=1.0, jobs=3), runner=MockAgentRunner(spend_most_of_the_limit)
    )
    # whether the shrinking shares left enough for all nine sessions depends on their order
    if report.status != "done":
        assert report.failure_reason == "the run's budget of $1.00 is spent"
    assert report.cost_usd <= 1.0 + 1e-9
    assert report.cost_usd >= 0.9  # the budget was used, not left idle
    assert sum(limit or 0.0 for limit in limits[:3]) <= 1.0 + 1e-9
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        assert await store.run_cost(run_id) == pytest.approx(report.cost_usd)


async def test_one_job_gets_everything_that_is_left(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    seen: list[float | None] = []
    agent = DiskAgent(cost_usd=0.01, on_session=lambda spec: seen.append(spec.max_budget_usd))
    report = await run_epic(run_config(project, budget_usd=0.035), runner=agent.runner())
    assert report.failure_reason == "the run's budget of $0.04 is spent"
    assert seen == pytest.approx([0.035, 0.025, 0.015, 0.005])


def _usage(message_id: str, input_tokens: int, output_tokens: int) -> AgentMessage:
    return AgentMessage(
        kind="text",
        text="working",
        data={
            "type": "AssistantMessage",
            "model": "claude-sonnet-4-5",
            "message_id": message_id,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    )


def _streamed(_spec: SessionSpec) -> list[AgentMessage]:
    # Two API messages; the CLI repeats a message's usage on each of its content blocks.
    return [_usage("m1", 1000, 100), _usage("m1", 1000, 100), _usage("m2", 2000, 1000)]


STREAMED_COST = (3000 * 3.0 + 1100 * 15.0) / 1e6  # sonnet: $3 / $15 per million tokens


async def test_a_cancelled_session_is_charged_for_the_usage_it_streamed(tmp_path: Path) -> None:
    project = make_project(tmp_path)

    async def hang(_spec: SessionSpec) -> SessionResult:
        scope.cancel(reason="test: the user interrupts mid-session")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.CancelScope() as scope:
        await run_epic(
            run_config(project, budget_usd=1.0), runner=MockAgentRunner(hang, messages=_streamed)
        )
    assert scope.cancelled_caught
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        (session,) = await store.sessions(run_id)
        assert session.outcome == "cancelled"
        assert session.cost_usd == pytest.approx(STREAMED_COST)
        assert session.input_tokens == 3000
        assert session.output_tokens == 1100
        assert await store.run_cost(run_id) == pytest.approx(STREAMED_COST)


async def test_a_timed_out_session_without_a_reported_cost_is_estimated(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    timed_out = SessionResult(outcome=Outcome.TIMEOUT, error="session exceeded its 1 s limit")
    report = await run_epic(
        run_config(project, max_cycles=1, stories=("1.1",)),
        runner=MockAgentRunner(lambda _spec: timed_out, messages=_streamed),
    )
    assert report.cost_usd == pytest.approx(STREAMED_COST)


async def test_a_reported_cost_wins_over_the_estimate(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(cost_usd=0.5)
    report = await run_epic(
        run_config(project, stories=("1.1",)),
        runner=MockAgentRunner(agent.handle, messages=_streamed),
    )
    assert report.status == "done"
    assert report.cost_usd == pytest.approx(1.5)  # three sessions at their reported $0.50


async def test_the_cap_holds_when_sessions_time_out_after_spending(tmp_path: Path) -> None:
    """Sessions that time out report no cost; what they streamed (90 % of their limit) is charged,
    so the cap holds and the run stops when it is spent."""
    project = make_project(tmp_path, INDEPENDENT)

    def ninety_percent(spec: SessionSpec) -> list[AgentMessage]:
        assert spec.max_budget_usd is not None
        return [_usage("m1", 0, int(0.9 * spec.max_budget_usd / 15e-6))]

    timed_out = SessionResult(outcome=Outcome.TIMEOUT, error="deadline")
    report = await run_epic(
        run_config(project, budget_usd=0.1, jobs=3, max_cycles=10),
        runner=MockAgentRunner(lambda _spec: timed_out, messages=ninety_percent),
    )
    assert report.status == "failed"
    assert report.failure_reason == "the run's budget of $0.10 is spent"
    assert 0.09 <= report.cost_usd <= 0.1 + 1e-9


async def test_a_cancelled_pause_waiter_leaves_the_next_pause_announced() -> None:
    events: list[Event] = []
    announced = anyio.Event()

    async def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, RunPaused):
            announced.set()

    gate = PauseGate(emit)
    gate.pause(3600, "rate_limit: slow down")
    async with anyio.create_task_group() as tg:
        tg.start_soon(gate.wait)
        await announced.wait()
        tg.cancel_scope.cancel(reason="test: the story waiting out the pause is cancelled")
    announced = anyio.Event()
    with anyio.move_on_after(30):  # a guard: before the fix the second pause was never announced
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate.wait)  # the pause is still in force: it is announced again
            await announced.wait()
            tg.cancel_scope.cancel(reason="test: done")
    assert [type(e) for e in events] == [RunPaused, RunPaused]
