"""The whole workflow through the real Claude Code CLI and the scripted BMAD actor, including
interruption at random points and resume."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import anyio
import attrs
import pytest

from bmad_trio import ClaudeAgentRunner, RunConfig, SessionFinished, open_run, run_epic
from bmad_trio._bmad import parse_story
from bmad_trio._config import load_config
from bmad_trio._demo import scaffold_demo
from bmad_trio._store import open_store
from bmad_trio.testing import (
    ApiRequest,
    BmadActor,
    FakeAnthropicAPI,
    Fault,
    Reply,
    Responder,
    Rule,
    Scenario,
    bmad_actor_scenario,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]

# SM, Dev, QA per story; story 1.2 fails its first review, so it has a second Dev and QA session.
EXPECTED_OK = Counter(
    {
        ("1.1", "sm"): 1, ("1.1", "dev"): 1, ("1.1", "qa"): 1,
        ("1.2", "sm"): 1, ("1.2", "dev"): 2, ("1.2", "qa"): 2,
        ("1.3", "sm"): 1, ("1.3", "dev"): 1, ("1.3", "qa"): 1,
    }
)  # fmt: skip


def _config(project: Path, epic: Path) -> RunConfig:
    """The demo project's own config ([tool.bmad-trio] gates) with test-sized deadlines."""
    overrides = {"epic": epic, "session_timeout": 120.0, "idle_timeout": 60.0}
    return load_config(project, overrides=overrides)


async def _ok_sessions(project: Path) -> tuple[str, Counter[tuple[str, str]], float, int]:
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        sessions = await store.sessions(run_id)
        cost = await store.run_cost(run_id)
    ok = Counter((s.story_id or "", s.role) for s in sessions if s.outcome == "ok")
    cancelled = sum(1 for s in sessions if s.outcome == "cancelled")
    assert cost == pytest.approx(sum(s.cost_usd for s in sessions))
    return run_id, ok, cost, cancelled


async def test_the_demo_epic_runs_to_done_with_gates(tmp_path: Path) -> None:
    demo = scaffold_demo(tmp_path / "demo")
    async with (
        FakeAnthropicAPI(bmad_actor_scenario(set(demo.fail_first_review))) as api,
        ClaudeAgentRunner(env=api.env()) as runner,
    ):
        report = await run_epic(_config(demo.root, demo.epic_path), runner=runner)
    assert report.status == "done", report.failure_reason
    assert [s.status for s in report.stories] == ["done"] * 3
    assert [(g.name, g.passed) for g in report.gates] == [("compile", True), ("unittest", True)]
    for story_id in demo.story_ids:
        assert parse_story(demo.root / "docs" / "stories" / f"{story_id}.story.md").status == "done"
    assert (demo.root / "src" / "sample_app" / "add_greeting.py").is_file()
    _, ok, cost, cancelled = await _ok_sessions(demo.root)
    assert ok == EXPECTED_OK
    assert cancelled == 0
    assert cost == pytest.approx(report.cost_usd)
    assert report.cost_usd > 0
    assert len(api.message_requests) >= sum(EXPECTED_OK.values())


@pytest.mark.parametrize("seed", [1, 2])
async def test_interrupt_at_a_random_point_then_resume(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    stop_after = rng.randint(1, 8)  # sessions finished before we interrupt
    extra_delay = rng.uniform(0.0, 0.8)  # then part-way into the next one
    demo = scaffold_demo(tmp_path / "demo")
    config = _config(demo.root, demo.epic_path)
    async with (
        FakeAnthropicAPI(bmad_actor_scenario(set(demo.fail_first_review))) as api,
        ClaudeAgentRunner(env=api.env()) as runner,
    ):
        with anyio.CancelScope() as scope:
            async with open_run(config, runner=runner) as run:
                finished = 0
                async for event in run.events:
                    if isinstance(event, SessionFinished):
                        finished += 1
                        if finished == stop_after:
                            await anyio.sleep(extra_delay)
                            scope.cancel()
        assert scope.cancelled_caught
        run_id, ok_before, cost_before, _ = await _ok_sessions(demo.root)
        async with open_store(demo.root) as store:
            assert (await store.get_run(run_id)).status == "interrupted"
        requests_before = len(api.message_requests)

        report = await run_epic(config, runner=runner, resume=True)

    assert report.status == "done", report.failure_reason
    assert report.run_id == run_id
    same_run, ok_after, cost_after, cancelled = await _ok_sessions(demo.root)
    assert same_run == run_id
    assert ok_after == EXPECTED_OK  # no phase that had finished ran again
    assert sum(ok_before.values()) >= stop_after
    assert cancelled <= 1
    assert cost_after == pytest.approx(report.cost_usd)
    assert cost_after > cost_before
    assert len(api.message_requests) > requests_before


def _scenario(*first: Responder, fail_first_review: frozenset[str] = frozenset()) -> Scenario:
    """The BMAD actor, after some responders that take precedence."""
    return Scenario(
        responders=(*first, BmadActor(fail_first_review=fail_first_review)),
        default=Reply.text("OK"),
    )


async def test_a_dev_that_never_finishes_fails_while_the_others_complete(tmp_path: Path) -> None:
    demo = scaffold_demo(tmp_path / "demo")
    lazy = Rule(prompt_contains="- role: dev\n- story: 1.2", reply=Reply.text("Not today."))
    config = attrs.evolve(_config(demo.root, demo.epic_path), max_cycles=2)
    async with FakeAnthropicAPI(_scenario(lazy)) as api, ClaudeAgentRunner(env=api.env()) as runner:
        report = await run_epic(config, runner=runner)
    by_id = {s.story_id: s for s in report.stories}
    assert by_id["1.2"].status == "failed"
    assert by_id["1.2"].failure_reason == "not done after 2 Dev/QA cycles"
    assert by_id["1.1"].status == "done"
    assert by_id["1.3"].status == "done"
    assert report.status == "failed"
    assert [g.skipped for g in report.gates] == [True, True]


async def test_budget_exhaustion_stops_the_run(tmp_path: Path) -> None:
    demo = scaffold_demo(tmp_path / "demo")
    config = attrs.evolve(_config(demo.root, demo.epic_path), budget_usd=0.25)
    async with (
        FakeAnthropicAPI(_scenario()) as api,
        ClaudeAgentRunner(env=api.env()) as runner,
    ):
        report = await run_epic(config, runner=runner)
    assert report.status == "failed"
    assert report.failure_reason == "the run's budget of $0.25 is spent"
    _, ok, cost, _ = await _ok_sessions(demo.root)
    assert sum(ok.values()) < sum(EXPECTED_OK.values())
    assert cost >= 0.25
    assert cost < 0.25 + 0.2  # the last session was capped by what remained, not by a full turn


async def test_a_429_burst_pauses_new_sessions_and_recovers(tmp_path: Path) -> None:
    demo = scaffold_demo(tmp_path / "demo")

    def burst(request: ApiRequest) -> Fault | None:
        return (
            Fault.http(429, "rate limited", retry_after_s=0) if 3 <= request.number <= 5 else None
        )

    config = attrs.evolve(
        _config(demo.root, demo.epic_path), rate_limit_backoff=0.2, stories=("1.1",)
    )
    async with (
        FakeAnthropicAPI(_scenario(burst)) as api,
        ClaudeAgentRunner(env={**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0"}) as runner,
        open_run(config, runner=runner) as run,
    ):
        kinds = [type(event).__name__ async for event in run.events]
        report = await run.wait()
    assert report.status == "done", report.failure_reason
    assert kinds.count("RunPaused") >= 1
    assert kinds.index("RunPaused") < kinds.index("RunResumed")
    assert report.stories[0].cycles == 1  # the failed attempts were not counted as cycles
    _, ok, _, _ = await _ok_sessions(demo.root)
    assert ok == Counter({("1.1", "sm"): 1, ("1.1", "dev"): 1, ("1.1", "qa"): 1})
