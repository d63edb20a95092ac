"""The one interface between the workflow and an agent: :class:`AgentRunner`.

A runner runs one agent session per call to :meth:`AgentRunner.run_session`, inside the caller's task,
and returns a :class:`SessionResult`. It never raises for an outcome the workflow must decide on
(API error, timeout, budget, max turns, CLI failure): those are outcomes. It raises only
``Cancelled`` (the caller's scope was cancelled, after cleaning up) or a bug.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from ._errors import AgentAPIError, AgentCLIError, AgentError, AgentTimeout

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

__all__ = [
    "AgentMessage",
    "AgentRunner",
    "Outcome",
    "Role",
    "SessionResult",
    "SessionSpec",
    "ToolCall",
]


class Role(enum.StrEnum):
    """Who a session plays."""

    SM = "sm"
    DEV = "dev"
    QA = "qa"
    FIXER = "fixer"


class Outcome(enum.StrEnum):
    """How a session ended."""

    OK = "ok"
    API_ERROR = "api_error"
    BUDGET_EXHAUSTED = "budget_exhausted"
    MAX_TURNS = "max_turns"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CLI_ERROR = "cli_error"


@attrs.frozen(kw_only=True)
class SessionSpec:
    """What one agent session is asked to do, and within which limits."""

    role: Role
    prompt: str
    cwd: Path
    label: str = "session"
    """Names the session in transcripts and logs, e.g. ``1.2-1-dev``."""
    system_prompt: str | None = None
    allowed_tools: tuple[str, ...] = ()
    writable_paths: tuple[str, ...] = ("**",)
    """Glob patterns (relative to ``cwd``) the agent may write; everything outside ``cwd`` is refused."""
    model: str | None = None
    permission_mode: Literal["default", "acceptEdits", "plan", "bypassPermissions"] = "acceptEdits"
    max_budget_usd: float | None = None
    max_turns: int | None = None
    timeout_s: float = 2700.0
    idle_timeout_s: float = 600.0
    env: Mapping[str, str] = attrs.field(factory=dict[str, str])


@attrs.frozen
class ToolCall:
    """A tool the agent called, with the file or command it touched (secrets redacted)."""

    name: str
    target: str = ""


@attrs.frozen(kw_only=True)
class AgentMessage:
    """One message from a running session, as the workflow sees it (JSON-able ``data``)."""

    kind: Literal["text", "tool_use", "tool_result", "system", "result", "user"]
    text: str = ""
    tool: ToolCall | None = None
    data: Mapping[str, object] = attrs.field(factory=dict[str, object])


@attrs.frozen(kw_only=True)
class SessionResult:
    """The outcome of one session. ``cost_usd`` is this session's own cost, not a running total."""

    outcome: Outcome
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0
    duration_s: float = 0.0
    tools: tuple[ToolCall, ...] = ()
    final_text: str = ""
    error: str | None = None
    """Human-readable reason when the outcome is not OK (CLI stderr, API error text...)."""
    api_error_category: str | None = None
    """rate_limit, overloaded, server_error, authentication_failed, invalid_request, usage_limit..."""
    api_status: int | None = None
    retry_after_s: float | None = None
    session_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def raise_for_outcome(self) -> None:
        """Raise the outcome as a :class:`~bmad_trio.AgentError` (nothing for ``ok``).

        API errors become AgentAPIError (category, HTTP status), timeouts AgentTimeout, CLI failures
        AgentCLIError with the CLI's stderr; budget, max turns and cancellation plain AgentError.
        """
        message = self.error or self.outcome.value
        if self.outcome is Outcome.OK:
            return
        if self.outcome is Outcome.API_ERROR:
            raise AgentAPIError(
                message, category=self.api_error_category or "unknown", status=self.api_status
            )
        if self.outcome is Outcome.TIMEOUT:
            raise AgentTimeout(message)
        if self.outcome is Outcome.CLI_ERROR:
            raise AgentCLIError(message, stderr=self.error or "")
        raise AgentError(f"{self.outcome.value}: {message}")


class AgentRunner(Protocol):
    """Runs agent sessions. Implementations: ClaudeAgentRunner (real), MockAgentRunner (tests)."""

    async def run_session(
        self,
        spec: SessionSpec,
        messages: MemoryObjectSendStream[AgentMessage] | None = None,
    ) -> SessionResult:
        """Run one session to its end in the calling task.

        Messages are sent to ``messages`` as they arrive (the runner closes it when done). Cancelling
        the caller's scope stops the session promptly, leaves no process behind, and re-raises the
        cancellation.
        """
        ...
