"""ClaudeAgentRunner: the real AgentRunner, over claude-agent-sdk and the Claude Code CLI.

One call to :meth:`ClaudeAgentRunner.run_session` is one agent session, and it runs entirely inside
the call (in a task group of its own): it opens the SDK client, sends the prompt, reads every message up to the ResultMessage
and closes the client. No task group or cancel scope is ever held across a ``yield``; the SDK's
message iterator is always read to its end or closed with ``aclosing`` (never abandoned with
``break``). Deadlines are two cancel scopes owned here: the overall session timeout and an idle
deadline pushed forward by every message.

The SDK stream is read to its natural end in a shielded scope; a watchdog task beside it owns the
deadlines. On cancel or timeout the watchdog kills every process of the session (the CLI and the
tools it started), which ends the stream at once, so the SDK's 5 s graceful close never applies and
no SDK generator is left half-read. The SDK is imported lazily, on the first session.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio

from ._agent import AgentMessage, Outcome, SessionResult, SessionSpec, ToolCall
from ._cli_process import CLIProcesses
from ._permissions import tool_denial

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream
    from claude_agent_sdk import ClaudeAgentOptions
    from claude_agent_sdk.types import (
        HookContext,
        HookInput,
        HookJSONOutput,
        PermissionResult,
        ToolPermissionContext,
    )

__all__ = ["OFFLINE_SAFE_ENV", "ClaudeAgentRunner"]

OFFLINE_SAFE_ENV: Mapping[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
"""Environment every session gets: no update checks, telemetry or other non-essential traffic."""

_USAGE_LIMIT = re.compile(r"usage limit|limit reached|out of (?:extra )?usage", re.IGNORECASE)
_RESET_EPOCH = re.compile(r"\|(\d{10})\b")
_MAX_TARGET = 200
_STREAM_GRACE_S = 30.0


@dataclasses.dataclass
class _SessionState:
    """What one session has seen so far (lives in one task; no locking needed)."""

    tools: list[ToolCall] = dataclasses.field(default_factory=list[ToolCall])
    texts: list[str] = dataclasses.field(default_factory=list[str])
    stderr: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=200)
    )
    result: Any = None
    api_error: str | None = None
    retry_after_s: float | None = None
    error: Exception | None = None
    timed_out: str | None = None
    idle_deadline: float = 0.0
    finished: bool = False
    stopping: bool = False
    """Set before we kill the CLI: permission callbacks then never answer (see ``_hold``)."""


def _jsonable(value: object) -> object:
    """Messages as JSON-able data for transcripts (dataclasses, enums and paths flattened)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": type(value).__name__,
            **{
                field.name: _jsonable(getattr(value, field.name))
                for field in dataclasses.fields(value)
            },
        }
    if isinstance(value, dict):
        items = cast(dict[object, object], value).items()
        return {str(key): _jsonable(item) for key, item in items}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in cast(list[object], value)]
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _category_for(status: int | None, reported: str | None) -> str:
    """An API error's category: from the HTTP status when known, else what the CLI reported."""
    if status == 400 or status == 413:
        return "invalid_request"
    if status in (401, 403):
        return "authentication_failed"
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    if status is not None and status >= 500:
        return "server_error"
    return reported or "unknown"


def _tool_target(tool_input: Mapping[str, object]) -> str:
    for key in ("file_path", "notebook_path", "path", "command", "pattern", "url"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value if len(value) <= _MAX_TARGET else value[: _MAX_TARGET - 1] + "…"
    return ""


class ClaudeAgentRunner:
    """Runs agent sessions through the real Claude Code CLI.

    ``env`` is added to every session's environment (``ANTHROPIC_*`` and the CLI's own variables
    also pass through from the process environment unchanged). With ``isolate_config`` (default)
    each runner gives the CLI a fresh ``CLAUDE_CONFIG_DIR`` so no user settings leak in; API-key
    and token auth work as usual, a ``claude login`` session does not.

    Use it as ``async with ClaudeAgentRunner() as runner:``; leaving the block kills any CLI still
    running. It also works without the block (call :meth:`aclose` when done).
    """

    def __init__(
        self,
        *,
        cli_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        isolate_config: bool = True,
        max_buffer_size: int = 16 * 1024 * 1024,
    ) -> None:
        self._cli_path = cli_path
        self._env = dict(env or {})
        self._isolate_config = isolate_config
        self._max_buffer_size = max_buffer_size
        self._processes: CLIProcesses | None = None
        self._config_dir: Path | None = None

    async def __aenter__(self) -> ClaudeAgentRunner:
        self._ensure_processes()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kill every CLI this runner still has running and remove its temp files."""
        if self._processes is not None:
            self._processes.close()
            self._processes = None
        await anyio.lowlevel.checkpoint()

    def _ensure_processes(self) -> CLIProcesses:
        if self._processes is None or self._processes.closed:
            self._processes = CLIProcesses(self._cli_path)
        return self._processes

    def _options(
        self, spec: SessionSpec, session_env: Mapping[str, str], state: _SessionState
    ) -> ClaudeAgentOptions:
        from claude_agent_sdk import ClaudeAgentOptions, HookMatcher
        from claude_agent_sdk.types import (
            PermissionResultAllow,
            PermissionResultDeny,
            SystemPromptPreset,
        )

        processes = self._ensure_processes()
        root = Path(os.path.realpath(spec.cwd))
        allowed = tuple(spec.allowed_tools)

        def denial(tool_name: str, tool_input: Mapping[str, object]) -> str | None:
            return tool_denial(
                tool_name,
                tool_input,
                root=root,
                allowed_tools=allowed,
                writable_paths=spec.writable_paths,
            )

        async def hold_if_stopping() -> None:
            # The SDK answers a permission request from a detached task; if the CLI is being
            # killed, that answer would hit a dead process and fail outside any scope we own.
            # Never answering instead lets the SDK cancel the task when it closes the session.
            if state.stopping:
                await anyio.sleep_forever()

        async def can_use_tool(
            tool_name: str, tool_input: dict[str, Any], _context: ToolPermissionContext
        ) -> PermissionResult:
            await hold_if_stopping()
            reason = denial(tool_name, tool_input)
            if reason is None:
                return PermissionResultAllow()
            return PermissionResultDeny(message=f"bmad-trio policy: {reason}")

        async def confine(
            hook_input: HookInput, _tool_use_id: str | None, _context: HookContext
        ) -> HookJSONOutput:
            await hold_if_stopping()
            data = cast(Mapping[str, object], hook_input)
            tool_name = str(data.get("tool_name", ""))
            raw_input = data.get("tool_input")
            empty: dict[str, object] = {}
            tool_input = (
                cast(Mapping[str, object], raw_input) if isinstance(raw_input, dict) else empty
            )
            reason = denial(tool_name, tool_input)
            if reason is None:
                return {}
            return {
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": "deny",
                    "permissionDecisionReason": f"bmad-trio policy: {reason}",
                }
            }

        # The user's own values (ANTHROPIC_*, the CLI's variables) pass through unchanged: our
        # defaults only fill what the environment does not already say.
        defaults = {k: v for k, v in OFFLINE_SAFE_ENV.items() if k not in os.environ}
        env: dict[str, str] = {**defaults, **self._env, **spec.env, **session_env}
        if self._isolate_config and "CLAUDE_CONFIG_DIR" not in {**os.environ, **env}:
            config_dir = processes.directory / "config"
            config_dir.mkdir(mode=0o700, exist_ok=True)  # transcripts: prompts and tool output
            env["CLAUDE_CONFIG_DIR"] = str(config_dir)
        system_prompt: SystemPromptPreset = {"type": "preset", "preset": "claude_code"}
        if spec.system_prompt:
            system_prompt["append"] = spec.system_prompt
        return ClaudeAgentOptions(
            cwd=str(spec.cwd),
            model=spec.model,
            system_prompt=system_prompt,
            tools=list(allowed),
            permission_mode=spec.permission_mode,
            max_budget_usd=spec.max_budget_usd,
            max_turns=spec.max_turns,
            env=env,
            cli_path=str(processes.wrapper),
            setting_sources=[],
            stderr=state.stderr.append,
            max_buffer_size=self._max_buffer_size,
            can_use_tool=can_use_tool,
            hooks={"PreToolUse": [HookMatcher(matcher=None, hooks=[confine])]},
        )

    async def run_session(
        self,
        spec: SessionSpec,
        messages: MemoryObjectSendStream[AgentMessage] | None = None,
    ) -> SessionResult:
        """Run one session to the end of its message stream, in the calling task.

        Cancelling the caller's scope kills the session's processes (the CLI and its tools) at
        once, waits for the SDK stream to end, and re-raises the cancellation. Timeouts become
        ``Outcome.TIMEOUT``; API, budget, turn and CLI failures become outcomes too. Closes
        ``messages`` when done.
        """
        state = _SessionState()
        wall_start = time.monotonic()
        processes = self._ensure_processes()
        session_env, tag = processes.session_env()
        options = self._options(spec, session_env, state)
        now = anyio.current_time()
        deadline = now + spec.timeout_s
        state.idle_deadline = now + spec.idle_timeout_s
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, spec, state, processes, tag, deadline)
                # The stream is read in a child task, never in this one: a native asyncio cancel
                # (asyncio.timeout, wait_for, task.cancel) and trio's KeyboardInterrupt land in
                # the task that called us, ignoring shields. Here that is the task group's exit,
                # which cancels the watchdog (it kills the session at once) while the shielded
                # reader goes on to the end of the stream. In the reader they would interrupt the
                # SDK mid-read, whose cleanup then waits 5 s for a CLI that is still running.
                tg.start_soon(
                    self._read_to_end, spec, options, state, messages, tg.cancel_scope, deadline
                )
        finally:
            if messages is not None:
                messages.close()
            state.stopping = True
            # A tool left running in the background dies too. Shielded: bounded by the kill's
            # own timeout (a few seconds at worst), and the session must not outlive this call.
            with anyio.CancelScope(shield=True):
                await processes.kill_session(tag)
        # The group's own cancel can absorb an outer cancellation on asyncio: surface it here.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self._result(state, time.monotonic() - wall_start)

    async def _read_to_end(
        self,
        spec: SessionSpec,
        options: ClaudeAgentOptions,
        state: _SessionState,
        messages: MemoryObjectSendStream[AgentMessage] | None,
        group: anyio.CancelScope,
        deadline: float,
    ) -> None:
        """Read the SDK stream to its end, then stop the watchdog.

        Shielded: the SDK stream is always read to its end (killing the CLI ends it), so no SDK
        generator is ever abandoned half-way. The session deadline plus a grace is a safety net.
        """
        with anyio.CancelScope(shield=True, deadline=deadline + _STREAM_GRACE_S):
            await self._read_stream(spec, options, state, messages)
        state.finished = True
        group.cancel(reason="the session's message stream ended")

    async def _watch(
        self,
        spec: SessionSpec,
        state: _SessionState,
        processes: CLIProcesses,
        tag: str,
        deadline: float,
    ) -> None:
        """Enforce the session and idle deadlines; on either, or on cancel, kill the session."""
        try:
            while True:
                wake = min(deadline, state.idle_deadline)
                await anyio.sleep_until(wake)
                now = anyio.current_time()
                if now >= deadline:
                    state.timed_out = f"session exceeded its {spec.timeout_s:g} s limit"
                    break
                if now >= state.idle_deadline:
                    state.timed_out = f"no message from the agent for {spec.idle_timeout_s:g} s"
                    break
        finally:
            if not state.finished:
                state.stopping = True
                # Shielded: we are usually here because of a cancel. Bounded by the kill's timeout.
                with anyio.CancelScope(shield=True):
                    await processes.kill_session(tag)

    async def _read_stream(
        self,
        spec: SessionSpec,
        options: ClaudeAgentOptions,
        state: _SessionState,
        messages: MemoryObjectSendStream[AgentMessage] | None,
    ) -> None:
        """Send the prompt and read every message until the SDK stream ends by itself."""
        from claude_agent_sdk import ClaudeSDKError, ResultMessage, query

        async def prompt() -> AsyncIterator[dict[str, Any]]:
            yield {"type": "user", "message": {"role": "user", "content": spec.prompt}}

        try:
            async for message in query(prompt=prompt(), options=options):
                state.idle_deadline = anyio.current_time() + spec.idle_timeout_s
                for agent_message in self._observe(message, state):
                    if messages is not None:
                        try:
                            await messages.send(agent_message)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            messages = None  # nobody listens any more: keep draining the SDK
                if isinstance(message, ResultMessage):
                    state.result = message
        except ClaudeSDKError as exc:
            state.error = exc

    def _observe(self, message: object, state: _SessionState) -> list[AgentMessage]:
        """Record what a message tells us; translate it for the workflow."""
        from claude_agent_sdk import (
            AssistantMessage,
            RateLimitEvent,
            ResultMessage,
            SystemMessage,
            TextBlock,
            ToolUseBlock,
            UserMessage,
        )

        data = cast(Mapping[str, object], _jsonable(message))
        out: list[AgentMessage] = []
        if isinstance(message, AssistantMessage):
            if message.error is not None:
                state.api_error = message.error
            for block in message.content:
                if isinstance(block, TextBlock):
                    state.texts.append(block.text)
                    out.append(AgentMessage(kind="text", text=block.text, data=data))
                elif isinstance(block, ToolUseBlock):
                    call = ToolCall(block.name, _tool_target(block.input))
                    state.tools.append(call)
                    out.append(AgentMessage(kind="tool_use", tool=call, data=data))
        elif isinstance(message, UserMessage):
            out.append(AgentMessage(kind="user", data=data))
        elif isinstance(message, SystemMessage):
            if message.subtype == "api_retry":
                delay = message.data.get("retry_delay_ms") or message.data.get("retryDelayMs")
                if isinstance(delay, int | float):
                    state.retry_after_s = float(delay) / 1000
            out.append(AgentMessage(kind="system", text=message.subtype, data=data))
        elif isinstance(message, RateLimitEvent):
            info = message.rate_limit_info
            if info.status == "rejected" and info.resets_at:
                state.retry_after_s = max(0.0, info.resets_at - time.time())
            out.append(AgentMessage(kind="system", text="rate_limit", data=data))
        elif isinstance(message, ResultMessage):
            out.append(AgentMessage(kind="result", text=message.result or "", data=data))
        return out

    def _result(self, state: _SessionState, duration_s: float) -> SessionResult:
        from claude_agent_sdk import ProcessError, ResultError, ResultMessage

        stderr = "".join(line if line.endswith("\n") else line + "\n" for line in state.stderr)
        base: dict[str, Any] = {
            "duration_s": duration_s,
            "tools": tuple(state.tools),
            "final_text": state.texts[-1] if state.texts else "",
            "retry_after_s": state.retry_after_s,
        }
        result = state.result if isinstance(state.result, ResultMessage) else None
        if result is not None:
            usage: Mapping[str, object] = result.usage or {}
            base.update(
                cost_usd=float(result.total_cost_usd or 0.0),  # one prompt per CLI: total = delta
                input_tokens=sum(
                    int(v)
                    for k, v in usage.items()
                    if k.endswith("input_tokens") and isinstance(v, int)
                ),
                output_tokens=int(cast(int, usage.get("output_tokens") or 0)),
                turns=result.num_turns,
                session_id=result.session_id,
            )
            if result.result and not result.is_error:
                base["final_text"] = result.result
        if state.timed_out is not None:
            return SessionResult(outcome=Outcome.TIMEOUT, error=state.timed_out, **base)
        error = state.error
        subtype = result.subtype if result else getattr(error, "subtype", None)
        reason = result.terminal_reason if result else getattr(error, "terminal_reason", None)
        status = result.api_error_status if result else getattr(error, "api_error_status", None)
        text = (result.result if result else getattr(error, "result", None)) or ""
        is_error = result.is_error if result else error is not None
        if not is_error and result is not None:
            return SessionResult(outcome=Outcome.OK, **base)
        if subtype == "error_max_budget_usd" or reason == "budget_exhausted":
            return SessionResult(
                outcome=Outcome.BUDGET_EXHAUSTED, error="session budget exhausted", **base
            )
        if subtype == "error_max_turns" or reason == "max_turns":
            return SessionResult(outcome=Outcome.MAX_TURNS, error="max turns reached", **base)
        if reason in ("aborted_streaming", "aborted_tools"):
            return SessionResult(outcome=Outcome.CANCELLED, error="session was interrupted", **base)
        if reason == "api_error" or status is not None or state.api_error is not None:
            category = _category_for(status, state.api_error)
            if _USAGE_LIMIT.search(text) or (status == 429 and "usage" in text.lower()):
                category = "usage_limit"
                reset = _RESET_EPOCH.search(text)
                if reset:
                    base["retry_after_s"] = max(0.0, int(reset.group(1)) - time.time())
            return SessionResult(
                outcome=Outcome.API_ERROR,
                error=(text or f"API error {status}").strip(),
                api_error_category=category,
                api_status=status,
                **base,
            )
        detail = stderr.strip() or text.strip()
        if isinstance(error, ProcessError) and not isinstance(error, ResultError):
            detail = detail or str(error)
        elif error is not None and not detail:
            detail = str(error)
        return SessionResult(
            outcome=Outcome.CLI_ERROR,
            error=detail or "the Claude Code CLI ended without a result",
            **base,
        )
