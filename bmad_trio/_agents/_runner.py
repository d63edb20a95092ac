"""The one interface between the workflow and an agent: :class:`AgentRunner`.

A runner runs one agent session per call to :meth:`AgentRunner.run_session`, inside the caller's task,
and returns a :class:`SessionResult`. It never raises for an outcome the workflow must decide on
(API error, timeout, budget, max turns, CLI failure): those are outcomes. It raises only
``Cancelled`` (the caller's scope was cancelled, after cleaning up) or a bug.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args

import attrs

from .._errors import (
    AgentAPIError,
    AgentCLIError,
    AgentError,
    AgentTimeout,
    ConfigTypeError,
    ConfigValueError,
)
from ._sandbox import Sandbox

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
    "ToolRefusal",
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


PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions"]


def _where(attribute: attrs.Attribute[Any]) -> str:
    return f"SessionSpec.{attribute.name}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _wrong_type(field: str, expected: str, value: object) -> ConfigTypeError:
    return ConfigTypeError(f"{field} must be {expected}, not {type(value).__name__} {value!r:.60}")


def _seconds(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A time limit: a positive number of seconds (``math.inf`` means no limit; NaN is refused)."""
    field = _where(attribute)
    if not _is_number(value):
        raise _wrong_type(field, "a number of seconds", value)
    number = cast(float, value)
    if math.isnan(number) or number <= 0:
        raise ConfigValueError(f"{field} must be a positive number of seconds, not {number!r}")


def _optional_budget(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    field = _where(attribute)
    if not _is_number(value):
        raise _wrong_type(field, "a number of US dollars or None", value)
    number = cast(float, value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigValueError(
            f"{field} must be a positive, finite number of US dollars, not {number!r}"
        )


def _optional_turns(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    field = _where(attribute)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(field, "an integer or None", value)
    if value < 1:
        raise ConfigValueError(f"{field} must be at least 1, not {value}")


def _string(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigTypeError(f"{_where(attribute)} must be a string, not {type(value).__name__}")


def _optional_string(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _string(instance, attribute, value)


def _names(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A tuple of non-empty strings (a bare string is refused: it would become its characters)."""
    field = _where(attribute)
    if not isinstance(value, tuple):
        raise ConfigTypeError(f"{field} must be a sequence of strings, not {type(value).__name__}")
    for item in cast(tuple[object, ...], value):
        if not isinstance(item, str):
            raise _wrong_type(field, "a sequence of strings", item)
        if not item:
            raise ConfigValueError(f"{field} must not hold an empty string")


def _to_names(value: object) -> Any:
    """Lists and other iterables of names become tuples; a bare string is left for the validator."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value
    if isinstance(value, Mapping):
        return cast(object, value)
    return tuple(cast(Iterable[object], value))


def _to_path(value: object) -> Any:
    if isinstance(value, str):
        return Path(value)
    if isinstance(value, os.PathLike):
        return Path(cast("os.PathLike[str]", value))
    return value


def _path(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Path):
        raise ConfigTypeError(f"{_where(attribute)} must be a path, not {type(value).__name__}")


def _to_roots(value: object) -> Any:
    """An iterable of paths becomes a tuple of Paths; None and anything else are left as they are."""
    if value is None or isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value
    return tuple(_to_path(item) for item in cast(Iterable[object], value))


def _roots(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    field = _where(attribute)
    if not isinstance(value, tuple):
        raise ConfigTypeError(
            f"{field} must be a sequence of paths or None, not {type(value).__name__}"
        )
    for item in cast(tuple[object, ...], value):
        if not isinstance(item, Path):
            raise _wrong_type(field, "a sequence of paths", item)


def _sandbox(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, Sandbox):
        raise _wrong_type(_where(attribute), "a Sandbox or None", value)


def _role(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Role):
        raise _wrong_type(_where(attribute), "a Role", value)


def _permission_mode(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    modes = get_args(PermissionMode)
    if value not in modes:
        raise ConfigValueError(
            f"{_where(attribute)} must be one of {', '.join(modes)}, not {value!r:.60}"
        )


def _env(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    field = _where(attribute)
    if not isinstance(value, Mapping):
        raise ConfigTypeError(f"{field} must be a mapping of strings, not {type(value).__name__}")
    for key, item in cast(Mapping[object, object], value).items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ConfigTypeError(
                f"{field} must map strings to strings, not {key!r:.40}: {item!r:.40}"
            )


@attrs.frozen(kw_only=True)
class SessionSpec:
    """What one agent session is asked to do, and within which limits.

    Every field is checked when the spec is made (and by ``attrs.evolve``): a wrong type raises
    :class:`~bmad_trio.ConfigTypeError` (a ``TypeError``), a value out of range
    :class:`~bmad_trio.ConfigValueError` (a ``ValueError``); both name the field. Lists of tool names
    or paths are accepted and stored as tuples.
    """

    role: Role = attrs.field(validator=_role)
    prompt: str = attrs.field(validator=_string)
    cwd: Path = attrs.field(converter=_to_path, validator=_path)
    label: str = attrs.field(default="session", validator=_string)
    """Names the session in transcripts and logs, e.g. ``1.2-1-dev``."""
    system_prompt: str | None = attrs.field(default=None, validator=_optional_string)
    allowed_tools: tuple[str, ...] = attrs.field(default=(), converter=_to_names, validator=_names)
    writable_paths: tuple[str, ...] = attrs.field(
        default=("**",), converter=_to_names, validator=_names
    )
    """Glob patterns (relative to ``cwd``) the agent may write; everything outside ``cwd`` is refused."""
    model: str | None = attrs.field(default=None, validator=_optional_string)
    permission_mode: PermissionMode = attrs.field(default="acceptEdits", validator=_permission_mode)
    max_budget_usd: float | None = attrs.field(default=None, validator=_optional_budget)
    max_turns: int | None = attrs.field(default=None, validator=_optional_turns)
    """At least 1 when given; ``None`` leaves the CLI's own default."""
    timeout_s: float = attrs.field(default=2700.0, validator=_seconds)
    """The whole session's limit in seconds (``math.inf``: none)."""
    idle_timeout_s: float = attrs.field(default=600.0, validator=_seconds)
    """How long the agent may send nothing, in seconds (``math.inf``: no idle limit)."""
    env: Mapping[str, str] = attrs.field(factory=dict[str, str], validator=_env)
    sandbox: Sandbox | None = attrs.field(default=None, validator=_sandbox)
    """Run the agent's shell commands in the OS sandbox with this policy (None: no sandbox)."""
    writable_roots: tuple[Path, ...] | None = attrs.field(
        default=None, converter=_to_roots, validator=_roots
    )
    """Where the agent's shell may write under the sandbox, besides temp space: ``None`` is
    ``cwd`` (Dev, fixer: the story's project or worktree); ``()`` nothing (QA, SM: their files are
    written with file tools, confined by ``writable_paths``)."""


@attrs.frozen
class ToolCall:
    """A tool the agent called, with the file or command it touched (secrets redacted)."""

    name: str
    target: str = ""


@attrs.frozen
class ToolRefusal:
    """A tool call a fence refused: the tool, what it aimed at, and why."""

    tool: str
    target: str
    reason: str


@attrs.frozen(kw_only=True)
class AgentMessage:
    """One message from a running session, as the workflow sees it (JSON-able ``data``)."""

    kind: Literal["text", "tool_use", "tool_result", "system", "result", "user", "refusal"]
    """``refusal``: a tool call a fence refused; ``tool`` names the tool and its target,
    ``text`` the reason."""
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
    refusals: tuple[ToolRefusal, ...] = ()
    """Tool calls the file-tool policy or the OS sandbox refused, in order."""

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

        Messages are sent to ``messages`` as they arrive (the runner closes it when done); a
        consumer that stops reading holds the session back, but never its deadlines or a cancel.
        Cancelling the caller's scope stops the session promptly, leaves no process behind, and
        re-raises the cancellation.
        """
        ...

    async def aclose(self) -> None:
        """Stop the sessions still running and release what the runner holds; safe to call twice.

        A run closes the runner it made itself (never one passed in) when it ends, also when it is
        cancelled, so this must return promptly on a cancelled path (bound any wait in time).
        """
        ...
