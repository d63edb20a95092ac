"""The whole workflow through the real Claude Code CLI and the scripted BMAD actor, including
interruption at random points and resume."""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs
import pytest

from bmad_trio import ClaudeAgentRunner, RunConfig, SessionFinished, open_run, run_epic
from bmad_trio._bmad import (
    QaGateDecision,
    StoryStatus,
    detect_layout,
    find_qa_gate_file,
    find_story_file,
    parse_epic,
    parse_story,
    read_qa_gate,
)
from bmad_trio._commandline._demo import DemoProject, scaffold_demo
from bmad_trio._config import load_config
from bmad_trio._git import story_branch_name
from bmad_trio._state._store import open_store
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
    parse_context,
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
    """The demo project's own config ([tool.bmad-trio] gates) with test-sized deadlines, one story
    at a time (the interrupt tests count the one session a cancel cuts short)."""
    overrides = {"epic": epic, "session_timeout": 120.0, "idle_timeout": 60.0, "jobs": 1}
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


# -- interrupt and resume ------------------------------------------------------------------------
#
# Semantics (the decision table of CONTRACT.md, _story_cycle.py): resume looks at each story's file
# on disk and at the store's phase rows, never at which session was "in flight":
# - no parseable story file: the SM drafts it; a story file that exists and parses means the SM
#   phase is done, even when its session was killed before it could report (then that SM session
#   never counts as ok);
# - Draft: code approves it; ReadyForDev/InProgress: Dev runs; a Dev killed after it set Review is
#   done (Review means "go to QA"), one killed before is run again;
# - Review: QA runs again unless the last phase row is a finished, successful review (then code
#   decides from the gate file on disk). The review round QA is told is the number of review
#   phases started so far plus one, so a first review killed in flight is re-run as "again";
# - Done: nothing.
# A phase killed in flight is not rolled back here (the git-native issue will make that exact with
# phase commits); the tests below assert what this table implies for whatever state the interrupt
# left, so every interrupt point gives one deterministic expectation.


def _committed_tree(repo: Path, branch: str, into: Path) -> Path:
    """The files of ``branch``'s last commit, written under ``into`` (the project's own first
    commit when the branch does not exist yet)."""
    exists = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=repo, check=False
    )
    ref = branch if exists.returncode == 0 else "HEAD"
    archive = subprocess.run(["git", "archive", ref], cwd=repo, capture_output=True, check=True)
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


async def _still_to_run(
    demo: DemoProject, run_id: str, fail_first: frozenset[str], scratch: Path
) -> Counter[tuple[str, str]]:
    """The ok sessions resume must add, per (story, role), from the state the interrupt left.

    Each story works on its own git branch; resume rolls a worktree back to its last phase
    commit, so what counts is the story branch's committed tree (no branch: not started)."""
    titles = {s.story_id: s.title for s in parse_epic(demo.epic_path).stories}
    todo: Counter[tuple[str, str]] = Counter()
    async with open_store(demo.root) as store:
        for sid in demo.story_ids:
            tree = _committed_tree(demo.root, story_branch_name("bmad/epic-1", sid), scratch / sid)
            layout = detect_layout(tree)
            path = find_story_file(layout, sid, titles[sid])
            status = parse_story(path).status if path is not None else None
            phases = await store.phases(run_id, sid)
            next_round = sum(1 for p in phases if p.phase == "review") + 1
            last = phases[-1] if phases else None

            def dev_and_qa(review_round: int, sid: str = sid) -> None:
                todo[sid, "dev"] += 1
                todo[sid, "qa"] += 1
                if sid in fail_first and review_round == 1:  # QA fails it: one more Dev/QA cycle
                    todo[sid, "dev"] += 1
                    todo[sid, "qa"] += 1

            if status is None:
                todo[sid, "sm"] += 1
                dev_and_qa(next_round)
            elif status in (StoryStatus.DRAFT, StoryStatus.READY_FOR_DEV, StoryStatus.IN_PROGRESS):
                dev_and_qa(next_round)
            elif status is StoryStatus.REVIEW:
                if last is not None and last.phase == "review" and last.ok:
                    gate_file = find_qa_gate_file(layout, sid)
                    assert gate_file is not None
                    if (
                        read_qa_gate(gate_file).gate is QaGateDecision.FAIL
                    ):  # back to Dev, then pass
                        dev_and_qa(next_round)
                else:
                    todo[sid, "qa"] += 1
                    if sid in fail_first and next_round == 1:
                        dev_and_qa(2)
            else:
                assert status is StoryStatus.DONE, (sid, status)
    return todo


async def _resume_and_check(
    demo: DemoProject, config: RunConfig, api: FakeAnthropicAPI, runner: ClaudeAgentRunner
) -> None:
    """Resume the interrupted run; exactly what the decision table implies runs, and it ends done."""
    run_id, ok_before, cost_before, cancelled_before = await _ok_sessions(demo.root)
    async with open_store(demo.root) as store:
        assert (await store.get_run(run_id)).status == "interrupted"
    scratch = demo.root.parent / f"committed-{run_id}"
    todo = await _still_to_run(demo, run_id, frozenset(demo.fail_first_review), scratch)
    requests_before = len(api.message_requests)

    report = await run_epic(config, runner=runner, resume=True)

    assert report.status == "done", report.failure_reason
    assert report.run_id == run_id
    same_run, ok_after, cost_after, cancelled = await _ok_sessions(demo.root)
    assert same_run == run_id
    assert ok_after == ok_before + todo  # what had finished (on disk) did not run again
    assert ok_after.keys() <= EXPECTED_OK.keys()
    assert all(ok_after[k] <= EXPECTED_OK[k] for k in ok_after)
    assert cancelled == cancelled_before <= 1  # one session at a time; resume cancels none
    assert cost_after == pytest.approx(report.cost_usd)
    if todo:
        assert cost_after > cost_before
        assert len(api.message_requests) > requests_before
    assert [s.status for s in report.stories] == ["done"] * 3


@pytest.mark.parametrize("seed", [1, 2])
async def test_interrupt_at_a_random_point_then_resume(tmp_path: Path, seed: int) -> None:
    """Interrupt part-way after a random number of sessions: the point is timing's choice (between
    sessions, in code, or inside a session before or after its disk effect); the expectation is
    derived from the state it left, so every point is checked exactly."""
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
        _, ok_before, _, _ = await _ok_sessions(demo.root)
        assert sum(ok_before.values()) >= stop_after
        await _resume_and_check(demo, config, api, runner)


@attrs.define
class _Tripwire:
    """A responder that answers the first request matching ``when`` with a stalled stream (so that
    turn's tools never run) and sets ``tripped``; the test then interrupts the run."""

    when: Callable[[ApiRequest], bool]
    tripped: anyio.Event = attrs.field(factory=anyio.Event)

    def __call__(self, request: ApiRequest) -> Fault | None:
        if self.tripped.is_set() or not self.when(request):
            return None
        self.tripped.set()
        return Fault(kind="stall")


def _at(
    role: str, story: str, turn: int, review: str | None = None
) -> Callable[[ApiRequest], bool]:
    """Matches the request for ``turn`` (0-based model turns so far) of ``role``'s session on
    ``story`` (and review round ``first``/``again`` for QA)."""

    def when(request: ApiRequest) -> bool:
        contexts = [c for t in request.user_texts() if (c := parse_context(t)) is not None]
        return bool(
            contexts
            and contexts[0].role == role
            and contexts[0].story == story
            and request.assistant_turns == turn
            and (review is None or contexts[0].review == review)
        )

    return when


# Every kind of point inside a session, on story 1.2 (the one with a failed first review). The
# BMAD actor's turns: SM reads (0), writes the story (1), reports (2); Dev reads (0), writes code
# (1), edits the story to Review (2), reports (3); QA reads the story (0), the files (1), writes
# the gate and QA Results (2), reports (3). Between-session points are the random test's.
INTERRUPT_POINTS = {
    "sm-before-writing": _at("sm", "1.2", 1),
    "sm-after-writing": _at("sm", "1.2", 2),  # the CI failure: a parseable story, SM killed
    "dev-after-code-before-review": _at("dev", "1.2", 2),
    "dev-after-setting-review": _at("dev", "1.2", 3),
    "qa-first-before-gate": _at("qa", "1.2", 2, "first"),
    "qa-first-after-fail-gate": _at("qa", "1.2", 3, "first"),
    "qa-again-after-pass-gate": _at("qa", "1.2", 3, "again"),
}


@pytest.mark.parametrize("point", sorted(INTERRUPT_POINTS))
async def test_interrupt_at_a_chosen_point_then_resume(tmp_path: Path, point: str) -> None:
    demo = scaffold_demo(tmp_path / "demo")
    config = _config(demo.root, demo.epic_path)
    tripwire = _Tripwire(INTERRUPT_POINTS[point])
    scenario = _scenario(tripwire, fail_first_review=frozenset(demo.fail_first_review))
    async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env=api.env()) as runner:
        with anyio.CancelScope() as scope:
            async with open_run(config, runner=runner) as run, anyio.create_task_group() as tg:

                async def interrupt_when_tripped() -> None:
                    await tripwire.tripped.wait()
                    scope.cancel()

                tg.start_soon(interrupt_when_tripped)
                async for _ in run.events:
                    pass
                tg.cancel_scope.cancel()  # the run ended without reaching the point
        assert tripwire.tripped.is_set(), f"the run never reached {point}"
        assert scope.cancelled_caught
        await _resume_and_check(demo, config, api, runner)


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
