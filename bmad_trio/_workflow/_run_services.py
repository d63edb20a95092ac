"""What the story cycles of one run share: the agent-session runner, budget, pause gate, reports.

:meth:`RunServices.run_session` is the "one scope per agent session" of the task-group tree: the
session and its transcript relay run in their own task group, and the session is recorded in the
store (cost included) even when it was cancelled. Nothing here is global: a run makes one.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from .._agents._pricing import UsageMeter
from .._agents._runner import AgentMessage, AgentRunner, Outcome, Role, SessionResult, SessionSpec
from .._agents._sandbox import Sandbox
from .._bmad import Epic, EpicStory, Layout, SprintStatusFile
from .._config import RunConfig
from .._errors import BudgetSpent, RunAbort
from .._events import (
    AgentActivity,
    Event,
    RunPaused,
    RunResumed,
    SessionFinished,
    StoryFinished,
    ToolRefused,
)
from .._state._run_files import RunFiles, TranscriptWriter
from .._state._store import Store, StoryRow
from ._prompts import SHELL_WRITES_PROJECT, RolePlan, rel

if TYPE_CHECKING:
    from ._workspace import StoryPlace

__all__ = [
    "Budget",
    "BudgetReservation",
    "BudgetSpent",
    "GateReport",
    "PauseGate",
    "PhaseVerdict",
    "RunAbort",
    "RunServices",
    "StoryReport",
    "story_finished",
    "story_report",
]

_RETRYABLE_API = frozenset({"rate_limit", "overloaded", "server_error", "usage_limit", "unknown"})
_ON_FINISHED_LIMIT_S = 120.0
"""How long ``run_session``'s shielded ``on_finished`` hook may take."""
_LAST_SHARE = 0.01
"""A new session is not given less than this fraction of the cap (the last 1 % is not handed out)."""

log = logging.getLogger("bmad_trio.run")


@attrs.frozen(kw_only=True)
class StoryReport:
    """How one story ended (one entry of ``RunReport.stories``)."""

    story_id: str
    title: str
    status: str
    cycles: int
    cost_usd: float
    duration_s: float
    failure_reason: str | None = None


def story_report(row: StoryRow, title: str, **changes: object) -> StoryReport:
    """A story's report from its store row (``changes`` override fields): the one place the
    report's fields are read from the store."""
    fields = {
        name: getattr(row, name) for name in attrs.fields_dict(StoryReport) if name != "title"
    }
    fields.update(changes)
    return StoryReport(title=title, **fields)  # pyright: ignore[reportArgumentType]


_STORY_FINISHED_FIELDS = tuple(
    name for name in attrs.fields_dict(StoryFinished) if name in attrs.fields_dict(StoryReport)
)
"""The fields :class:`StoryReport` and the :class:`StoryFinished` event share (all but ``ts``)."""


def story_finished(report: StoryReport) -> StoryFinished:
    """The StoryFinished event for a story's report; a field added to both is carried over."""
    return StoryFinished(**{name: getattr(report, name) for name in _STORY_FINISHED_FIELDS})


@attrs.frozen(kw_only=True)
class GateReport:
    """How one quality gate ended."""

    name: str
    passed: bool
    attempts: int
    skipped: bool = False
    detail: str = ""


class Budget:
    """The run's spending cap, shared by the sessions in flight.

    Each session reserves its ``max_budget_usd`` out of what no session in flight has reserved
    (a fair share: the unreserved money divided among the lanes not yet busy, a lane being one of
    ``min(jobs, stories left)``), and settles it with its real cost when it ends, cancelled or not.
    So sessions in flight can together spend at most the cap, however many run at once. When less
    than 1 % of the cap is unreserved, a new session waits for one in flight to settle; with none
    in flight the run is over (:class:`BudgetSpent`). Without a cap nothing is limited.

    Lives in the run's tasks (one event loop); its bookkeeping is synchronous, so a session's
    settlement can never be interrupted half-way.
    """

    def __init__(
        self, cap_usd: float | None, spent_usd: float = 0.0, *, jobs: int = 1, stories: int = 1
    ) -> None:
        self.cap_usd = cap_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self._jobs = max(1, jobs)
        self._stories_left = max(0, stories)
        self._in_flight = 0
        self._settled: anyio.Event | None = None

    @property
    def jobs(self) -> int:
        """The run's lanes: stories that may run sessions at once."""
        return self._jobs

    def remaining(self) -> float | None:
        """What is neither spent nor reserved (None without a cap)."""
        return None if self.cap_usd is None else self.cap_usd - self.spent_usd - self.reserved_usd

    def spent_out(self) -> bool:
        """True when the cap is set and less than a session's minimum is left unspent."""
        return self.cap_usd is not None and self.cap_usd - self.spent_usd < self._floor()

    def story_ended(self) -> None:
        """One story fewer competes for the budget (its share goes to those left)."""
        self._stories_left = max(0, self._stories_left - 1)

    def _floor(self) -> float:
        return max(1e-9, (self.cap_usd or 0.0) * _LAST_SHARE)

    def _spent_error(self) -> BudgetSpent:
        return BudgetSpent(f"the run's budget of ${self.cap_usd:.2f} is spent")

    async def reserve(self) -> BudgetReservation:
        """Reserve a new session's share; waits while sessions in flight hold the rest.

        Raises BudgetSpent when nothing is left and no session is in flight. Cancelling the wait
        reserves nothing.
        """
        while self.cap_usd is not None:
            available = self.cap_usd - self.spent_usd - self.reserved_usd
            floor = self._floor()
            if available >= floor:
                lanes = max(1, min(self._jobs, self._stories_left))
                free = max(1, lanes - self._in_flight)
                share = max(available / free, floor)
                self.reserved_usd += share
                self._in_flight += 1
                return BudgetReservation(share)
            if self._in_flight == 0:
                raise self._spent_error()
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()
        await anyio.lowlevel.checkpoint()
        return BudgetReservation(None)

    def settle(self, reservation: BudgetReservation, cost_usd: float) -> None:
        """Release ``reservation`` and count what the session really spent (once; synchronous)."""
        if reservation.settled:
            return
        reservation.settled = True
        self.spent_usd += cost_usd
        if reservation.limit_usd is None:
            return
        self.reserved_usd = max(0.0, self.reserved_usd - reservation.limit_usd)
        self._in_flight -= 1
        if self._settled is not None:  # wake every waiter; each recomputes its share
            self._settled.set()
            self._settled = None


@attrs.define
class BudgetReservation:
    """One session's share of the budget: ``limit_usd`` is its ``max_budget_usd``."""

    limit_usd: float | None
    settled: bool = False


class PauseGate:
    """Holds new sessions back after a rate or usage limit, until the reset time."""

    def __init__(self, emit: Callable[[Event], Awaitable[None]]) -> None:
        self._emit = emit
        self._until = 0.0
        self._reason = ""
        self._paused = False
        self._waiters = 0

    def pause(self, seconds: float, reason: str) -> None:
        until = anyio.current_time() + max(0.0, seconds)
        if until > self._until:
            self._until, self._reason = until, reason

    async def wait(self) -> None:
        """Return once no pause is in force; the first waiter emits RunPaused, the first to wake
        RunResumed. A waiter cancelled while it was the last one leaves the gate unannounced, so
        the next waiter announces the pause (still in force, or a new one) again."""
        self._waiters += 1
        try:
            while anyio.current_time() < self._until:
                if not self._paused:
                    self._paused = True
                    wall_until = time.time() + (self._until - anyio.current_time())
                    await self._emit(RunPaused(reason=self._reason, until_ts=wall_until))
                await anyio.sleep_until(self._until)
        except BaseException:
            if self._waiters == 1:
                self._paused = False  # nobody is left to announce the end of this pause
            raise
        finally:
            self._waiters -= 1
        if self._paused:
            self._paused = False
            await self._emit(RunResumed())


class RemoteCycles(Protocol):
    """Story cycles run elsewhere (``engine = "dbos"``: on workers); see ``_distributed``."""

    async def run_cycle(
        self, services: RunServices, story: EpicStory, place: StoryPlace
    ) -> StoryReport: ...


@attrs.define
class RunServices:
    """Everything the story cycles of one run share. Owned by the run; not global."""

    config: RunConfig
    layout: Layout
    epic: Epic
    runner: AgentRunner
    store: Store
    files: RunFiles
    run_id: str
    emit: Callable[[Event], Awaitable[None]]
    budget: Budget
    pause: PauseGate
    api_backoff_s: float = 30.0
    sandbox: Sandbox | None = None
    """The OS sandbox for the agents' shell commands (None: none)."""
    remote: RemoteCycles | None = None
    """Where story cycles run when not here (None: in this process)."""
    gate_lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    """Held while quality gates (and their fixer sessions) run. Gates run in the project's one
    tree; two at once (e.g. after two stories that end together) would run two linters and two
    fixers on the same files, so the second waits for the first."""
    sprint_status: SprintStatusFile | None = attrs.field(init=False, default=None)
    """v6: the run's one writer of ``sprint-status.yaml`` (its lock keeps two stories that finish
    at once from losing one's update). None for v4 and plain projects."""

    def __attrs_post_init__(self) -> None:
        path = self.layout.sprint_status_path
        if path is not None:
            self.sprint_status = SprintStatusFile(path, project=self.layout.project)

    async def run_session(
        self,
        plan: RolePlan,
        *,
        story_id: str,
        cycle: int,
        phase_id: int | None,
        run_level: bool = False,
        on_finished: Callable[[SessionResult], Awaitable[None]] | None = None,
    ) -> SessionResult:
        """One agent session in its own task group: the session and its transcript relay.

        Waits out a rate-limit pause first; raises BudgetSpent when nothing is left to spend.
        Records the session (cost included) in the store even when it was cancelled mid-way.
        ``on_finished`` gets the result of a session that ran to its end, right after it is
        recorded and shielded from a cancel that arrives then (the story cycle commits the
        session's work there, so an interrupt just after a session never loses it).
        """
        # Both waits come before the session exists, so a cancel here leaves nothing to clean up:
        # the pause gate (a rate-limit pause of the whole run) and the budget reservation (which
        # raises BudgetSpent rather than start a session it could not pay for).
        await self.pause.wait()
        reservation = await self.budget.reserve()
        config = self.config
        spec = SessionSpec(
            role=plan.role,
            prompt=plan.prompt,
            cwd=self.layout.project,
            label=f"{story_id}-{cycle}-{plan.role.value}",
            system_prompt=plan.system_prompt,
            allowed_tools=plan.allowed_tools,
            writable_paths=plan.writable_paths,
            model=config.model,
            permission_mode=config.permission_mode,
            max_budget_usd=reservation.limit_usd,
            max_turns=config.max_turns,
            timeout_s=config.session_timeout,
            idle_timeout_s=config.idle_timeout,
            sandbox=self.sandbox,
            writable_roots=None if SHELL_WRITES_PROJECT[plan.role] else (),
        )
        # The runner sends into ``send`` and closes it; the relay task reads ``receive``. Bounded,
        # so a relay that falls behind (a slow event reader downstream) slows the session rather
        # than growing memory; the runner's idle deadline still ends a session stuck there.
        send, receive = anyio.create_memory_object_stream[AgentMessage](64)
        writer = self.files.transcript(story_id, cycle, plan.role.value)
        meter = UsageMeter()
        result: SessionResult | None = None
        started = time.time()
        try:
            # One task group per session: the session runs in this task, its relay in a child.
            # The group ends when both have: the runner closes ``send`` when the session ends,
            # which ends the relay's ``async for``. A cancel from above cancels both; the runner
            # still kills the session's processes before it re-raises (see ClaudeAgentRunner).
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._relay, receive, writer, meter, story_id, plan.role)
                with send:
                    result = await self.runner.run_session(spec, send)
        finally:
            # Teardown, also when cancelled. Everything up to record_session is synchronous, so
            # a cancel cannot cut it short; record_session is a shielded store write (bounded by
            # SQLite's busy timeout), so a killed session is still recorded and charged.
            _drain(receive, writer, meter)  # what the relay had no time for still counts
            receive.close()
            writer.close()
            ended = result is not None  # the runner returned: the session ran to its end
            if result is None:  # cancelled: still record that the session ran
                result = SessionResult(outcome=Outcome.CANCELLED, error="cancelled")
            result = _charged(result, meter, spec.label)
            self.budget.settle(reservation, result.cost_usd)
            await self.store.record_session(
                self.run_id,
                None if run_level else story_id,
                phase_id,
                plan.role.value,
                cycle,
                spec.label,
                result,
                rel(self.layout, writer.path),
                started_at=started,
            )
            if ended and on_finished is not None:
                # Bounded: a phase commit is a few local git commands.
                with anyio.move_on_after(_ON_FINISHED_LIMIT_S, shield=True):
                    await on_finished(result)
        # After the ``finally``: a cancelled session emits nothing (the cancel propagates above),
        # and waiting for an event reader is never done on a cancelled path.
        await self.emit(
            SessionFinished(
                story_id=story_id,
                role=plan.role.value,
                cycle=cycle,
                outcome=result.outcome.value,
                cost_usd=result.cost_usd,
                duration_s=result.duration_s,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                error=result.error,
            )
        )
        return result

    async def _relay(
        self,
        receive: anyio.abc.ObjectReceiveStream[AgentMessage],
        writer: TranscriptWriter,
        meter: UsageMeter,
        story_id: str,
        role: Role,
    ) -> None:
        # Not ``async with receive``: run_session closes it after draining what is left.
        async for message in receive:
            writer.write(message)
            meter.observe(message)
            if message.kind == "tool_use" and message.tool is not None:
                await self.emit(
                    AgentActivity(
                        story_id=story_id,
                        role=role.value,
                        tool=message.tool.name,
                        target=_short_target(self.layout.project, message.tool.target),
                    )
                )
            elif message.kind == "refusal" and message.tool is not None:
                await self.emit(
                    ToolRefused(
                        story_id=story_id,
                        role=role.value,
                        tool=message.tool.name,
                        target=_short_target(self.layout.project, message.tool.target),
                        reason=message.text,
                    )
                )

    def handle_outcome(self, result: SessionResult) -> PhaseVerdict:
        """Decide what a non-OK session means for the run: retry later, a failed attempt, or stop."""
        if result.outcome is Outcome.OK:
            return PhaseVerdict.CHECK_DISK
        if result.outcome is Outcome.BUDGET_EXHAUSTED:
            # Its share ran out; only when the run's cap itself is spent does the run stop.
            if self.budget.spent_out():
                raise BudgetSpent(f"the run's budget of ${self.budget.cap_usd:.2f} is spent")
            return PhaseVerdict.FAILED_ATTEMPT
        if result.outcome is Outcome.API_ERROR:
            category = result.api_error_category or "unknown"
            if category in _RETRYABLE_API:
                wait = result.retry_after_s if result.retry_after_s else self.api_backoff_s
                self.pause.pause(wait, f"{category}: {result.error or 'API error'}")
                return PhaseVerdict.RETRY
            raise RunAbort(f"the model API refused the request ({category}): {result.error}")
        return PhaseVerdict.FAILED_ATTEMPT


class PhaseVerdict(enum.Enum):
    CHECK_DISK = "check_disk"
    FAILED_ATTEMPT = "failed_attempt"
    RETRY = "retry"


def _drain(
    receive: MemoryObjectReceiveStream[AgentMessage],
    writer: TranscriptWriter,
    meter: UsageMeter,
) -> None:
    """Record the messages still buffered (the relay was cancelled before it read them)."""
    while True:
        try:
            message = receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return
        writer.write(message)
        meter.observe(message)


def _charged(result: SessionResult, meter: UsageMeter, label: str) -> SessionResult:
    """The result with a cost: the one the CLI reported, else the estimate from the stream's usage
    (a session killed mid-way, e.g. cancelled or past its deadline, reports none)."""
    estimate = meter.cost_usd()
    if result.cost_usd > 0 or estimate <= 0:
        return result
    log.info("session %s reported no cost: $%.4f estimated from its token usage", label, estimate)
    return attrs.evolve(
        result,
        cost_usd=estimate,
        input_tokens=result.input_tokens or meter.input_tokens,
        output_tokens=result.output_tokens or meter.output_tokens,
    )


def _short_target(project: Path, target: str) -> str:
    if target.startswith(str(project)):
        return target[len(str(project)) :].lstrip("/") or "."
    return target
