"""What the story cycles of one run share: the agent-session runner, budget, pause gate, reports.

:meth:`RunServices.run_session` is the "one scope per agent session" of the task-group tree: the
session and its transcript relay run in their own task group, and the session is recorded in the
store (cost included) even when it was cancelled. Nothing here is global: a run makes one.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.abc
import attrs

from ._agent import AgentMessage, AgentRunner, Outcome, Role, SessionResult, SessionSpec
from ._bmad import Epic, Layout
from ._config import RunConfig
from ._errors import BmadError
from ._events import AgentActivity, Event, RunPaused, RunResumed, SessionFinished
from ._prompts import RolePlan, rel
from ._runfiles import RunFiles, TranscriptWriter
from ._store import Store

__all__ = [
    "Budget",
    "BudgetSpent",
    "GateReport",
    "PauseGate",
    "PhaseVerdict",
    "RunAbort",
    "RunServices",
    "StoryReport",
]

_RETRYABLE_API = frozenset({"rate_limit", "overloaded", "server_error", "usage_limit", "unknown"})
_MAX_API_RETRIES = 8


class RunAbort(BmadError):
    """Stop the whole run (no new sessions): e.g. the API refused the credentials."""


class BudgetSpent(RunAbort):
    """The run's budget is spent; no new session may start."""


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


@attrs.frozen(kw_only=True)
class GateReport:
    """How one quality gate ended."""

    name: str
    passed: bool
    attempts: int
    skipped: bool = False
    detail: str = ""


class Budget:
    """The run's spending cap; sessions get what remains as their own ``max_budget_usd``."""

    def __init__(self, cap_usd: float | None, spent_usd: float = 0.0) -> None:
        self.cap_usd = cap_usd
        self.spent_usd = spent_usd

    def remaining(self) -> float | None:
        return None if self.cap_usd is None else self.cap_usd - self.spent_usd

    def check(self) -> float | None:
        """What a new session may spend; raises BudgetSpent when nothing is left."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 1e-9:
            raise BudgetSpent(f"the run's budget of ${self.cap_usd:.2f} is spent")
        return remaining


class PauseGate:
    """Holds new sessions back after a rate or usage limit, until the reset time."""

    def __init__(self, emit: Callable[[Event], Awaitable[None]]) -> None:
        self._emit = emit
        self._until = 0.0
        self._reason = ""
        self._paused = False

    def pause(self, seconds: float, reason: str) -> None:
        until = anyio.current_time() + max(0.0, seconds)
        if until > self._until:
            self._until, self._reason = until, reason

    async def wait(self) -> None:
        """Return once no pause is in force; the first waiter emits RunPaused/RunResumed."""
        while anyio.current_time() < self._until:
            if not self._paused:
                self._paused = True
                wall_until = time.time() + (self._until - anyio.current_time())
                await self._emit(RunPaused(reason=self._reason, until_ts=wall_until))
            await anyio.sleep_until(self._until)
        if self._paused:
            self._paused = False
            await self._emit(RunResumed())


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

    async def run_session(
        self,
        plan: RolePlan,
        *,
        story_id: str,
        cycle: int,
        phase_id: int | None,
        run_level: bool = False,
    ) -> SessionResult:
        """One agent session in its own task group: the session and its transcript relay.

        Waits out a rate-limit pause first; raises BudgetSpent when nothing is left to spend.
        Records the session (cost included) in the store even when it was cancelled mid-way.
        """
        await self.pause.wait()
        remaining = self.budget.check()
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
            max_budget_usd=remaining,
            max_turns=config.max_turns,
            timeout_s=config.session_timeout,
            idle_timeout_s=config.idle_timeout,
        )
        send, receive = anyio.create_memory_object_stream[AgentMessage](64)
        writer = self.files.transcript(story_id, cycle, plan.role.value)
        result: SessionResult | None = None
        started = time.time()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._relay, receive, writer, story_id, plan.role)
                with send:
                    result = await self.runner.run_session(spec, send)
        finally:
            receive.close()  # the relay may never have started if we were cancelled at once
            writer.close()
            if result is None:  # cancelled: still record that the session ran
                result = SessionResult(outcome=Outcome.CANCELLED, error="cancelled")
            self.budget.spent_usd += result.cost_usd
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
        story_id: str,
        role: Role,
    ) -> None:
        async with receive:
            async for message in receive:
                writer.write(message)
                if message.kind == "tool_use" and message.tool is not None:
                    await self.emit(
                        AgentActivity(
                            story_id=story_id,
                            role=role.value,
                            tool=message.tool.name,
                            target=_short_target(self.layout.project, message.tool.target),
                        )
                    )

    def handle_outcome(self, result: SessionResult) -> PhaseVerdict:
        """Decide what a non-OK session means for the run: retry later, a failed attempt, or stop."""
        if result.outcome is Outcome.OK:
            return PhaseVerdict.CHECK_DISK
        if result.outcome is Outcome.BUDGET_EXHAUSTED:
            if self.budget.cap_usd is not None:
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


def _short_target(project: Path, target: str) -> str:
    if target.startswith(str(project)):
        return target[len(str(project)) :].lstrip("/") or "."
    return target
