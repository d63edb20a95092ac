"""ClaudeAgentRunner: the real AgentRunner, over claude-agent-sdk and the Claude Code CLI.

One call to :meth:`ClaudeAgentRunner.run_session` is one agent session, and it runs entirely in the
calling task, with no task group: it starts the SDK's ``query()``, reads its messages, relays them
to the caller's stream, and returns once the session's processes are gone. The SDK is imported
lazily, on the first session.

How a session ends, and why it is done this way:

- **The ResultMessage ends it.** Once it arrives the outcome is decided: we stop reading. The CLI
  may still be running (a Bash tool started with ``run_in_background`` keeps it alive), and the
  SDK's iterator would not end until the CLI exits, so waiting for it would turn a finished session
  into a timeout.
- **Deadlines are one cancel scope** (``_SessionState.reading``) around the reading loop: its
  deadline is the sooner of the session deadline and the idle deadline, pushed forward by every
  message. The relay into the caller's stream is inside that scope, so a consumer that stops
  reading holds the session back (back-pressure, nothing is dropped) but can never hold off a
  deadline, the caller's cancel or :meth:`ClaudeAgentRunner.aclose`: a stalled consumer makes the
  session end at its idle deadline, as ``Outcome.TIMEOUT``.
- **The SDK's generator always finishes in this task**, through its own cleanup. It is closed with
  ``contextlib.aclosing``, but never left suspended at a ``yield`` for ``aclose()`` to find:
  ``query()`` does not close the generator it wraps, so ``aclose()`` at a ``yield`` would leave
  that one to the garbage collector, in another task. Instead, :func:`_unwind` resumes it inside a
  cancelled scope, so its next read raises ``Cancelled`` inside it and every ``finally`` of the SDK
  runs here (``_SessionTransport.close`` among them).
- **Our transport kills the session's processes when the SDK closes it.** The SDK calls
  ``close()`` only after cancelling its own reader task, so a CLI we kill on purpose is never
  reported as a crash ("Fatal error in message reader"), and the SDK's 5 s grace for the CLI to
  exit by itself never applies: ``close()`` finds it dead. No logging filter, no global state.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs

from ._cli_processes import CLIProcesses
from ._login import LoginCopy, expose_login
from ._refusals import refusals_in
from ._runner import AgentMessage, Outcome, SessionResult, SessionSpec, ToolCall, ToolRefusal
from ._sandbox import existing_leftovers, remove_leftovers, sandbox_settings
from ._tool_policy import tool_denial

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream
    from claude_agent_sdk import ClaudeAgentOptions, Message, Transport
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

PINNED_ENV: Mapping[str, str] = {"CLAUDE_CODE_SUBPROCESS_ENV_SCRUB": "0"}
"""Environment every session gets whatever the user's says. ``CLAUDE_CODE_SUBPROCESS_ENV_SCRUB``
puts the CLI (2.1.332) in its subprocess isolation mode: its own bubblewrap policy, which lets the
shell write /home, /root, /tmp, /var, /opt, /run and /mnt, then replaces our sandbox's write limits
(a Dev's ``echo x > $HOME/x`` succeeds), and at start the CLI creates empty files in HOME
(``.bashrc``, ``.gitconfig``, ...) and in the project (``package.json``, ``.env``, lock files,
``node_modules/.bin``), sandbox or not; it also forces the permission mode to ``default``."""

_USAGE_LIMIT = re.compile(r"usage limit|limit reached|out of (?:extra )?usage", re.IGNORECASE)
_RESET_EPOCH = re.compile(r"\|(\d{10})\b")
_MAX_TARGET = 200
_SURROGATE = re.compile("[\ud800-\udfff]")
_KILL_WAIT_S = 5.0
"""How long a finished session waits for its SIGKILLed processes to be gone."""
_CLOSE_WAIT_S = 10.0
"""How long :meth:`ClaudeAgentRunner.aclose` waits for running sessions to unwind."""


def _safe(text: str) -> str:
    """``text`` with every surrogate code point replaced by U+FFFD, so it always encodes as UTF-8.

    JSON from the CLI can carry a lone surrogate (``"\\ud800"``); Python decodes it into a ``str``
    that any later ``encode()`` (a transcript file, a terminal) would reject.
    """
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() else text


@dataclasses.dataclass(eq=False)
class _SessionState:
    """What one session has seen so far (one task writes it; no locking needed)."""

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
    closed_by_runner: bool = False
    stopping: bool = False
    """Set before we kill the CLI: permission callbacks then never answer (``hold_if_stopping``)."""
    reading: anyio.CancelScope | None = None
    """Around the reading loop: its deadline is the sooner of the session and idle deadlines;
    cancelled when the ResultMessage arrives and by ``aclose()``."""
    done: anyio.Event | None = None
    """Set once the session's processes are gone (``aclose()`` waits for it)."""
    calls: dict[str, tuple[ToolCall, str]] = dataclasses.field(
        default_factory=dict[str, tuple[ToolCall, str]]
    )
    """Tool calls by id: what they aimed at and, for Bash, the command (to read their results)."""
    refusals: list[ToolRefusal] = dataclasses.field(default_factory=list[ToolRefusal])
    sandboxed: bool = False
    deny_read: tuple[str, ...] = ()
    home: str | None = None


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
        return {_safe(str(key)): _jsonable(item) for key, item in items}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in cast(list[object], value)]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, str):
        return _safe(value)
    if value is None or isinstance(value, int | float | bool):
        return value
    return _safe(str(value))


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


def _result_text(content: object) -> str:
    """A tool result's content (a string or a list of blocks) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in cast(list[object], content):
            if isinstance(block, dict):
                text = cast(dict[str, object], block).get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return ""


def _tool_target(tool_input: Mapping[str, object]) -> str:
    for key in ("file_path", "notebook_path", "path", "command", "pattern", "url"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            value = _safe(value)
            return value if len(value) <= _MAX_TARGET else value[: _MAX_TARGET - 1] + "…"
    return ""


def _session_transport(
    prompt: AsyncIterator[dict[str, Any]],
    options: ClaudeAgentOptions,
    state: _SessionState,
    processes: CLIProcesses,
    tag: str,
) -> Transport:
    """The SDK's own subprocess transport, except that ``close()`` kills the session first.

    ``query(transport=...)`` uses a transport as given, so it gets the options the SDK would have
    given its own: with a ``can_use_tool`` callback, permission prompts go over stdio.
    """
    # The SDK exports only the abstract Transport; its subprocess transport is the one to extend.
    from claude_agent_sdk._internal.transport.subprocess_cli import (
        SubprocessCLITransport,
    )

    class _SessionTransport(SubprocessCLITransport):
        _lines: AsyncGenerator[dict[str, Any], None] | None = None

        def read_messages(self) -> AsyncIterator[dict[str, Any]]:
            """The SDK's line reader, behind a plain iterator.

            The SDK's reader task leaves its ``async for`` with ``break`` once the query is
            closed, which would hand the generator behind it to the garbage collector, in
            another task (a ResourceWarning under trio). A plain iterator can be dropped
            harmlessly; :meth:`close` finishes the generator itself.
            """
            lines = cast("AsyncGenerator[dict[str, Any], None]", super().read_messages())
            self._lines = lines
            return _PlainIterator(lines)

        async def close(self) -> None:
            """Kill the session's processes, then let the SDK close a transport whose CLI is gone.

            The SDK calls this only after it has cancelled its reader task, so the kill can never
            reach the SDK as a failed CLI (an ERROR log and a ``ProcessError``), and the SDK's
            wait for the CLI to exit by itself (5 s, then SIGTERM) returns at once. The CLI's
            tools die with it: they carry the session's tag.
            """
            process = self._process
            if process is not None:
                state.stopping = True
                # Shielded: the SDK may close us from a cancelled scope. Bounded by the layer's
                # own wait (it gives up after a few seconds, every process SIGKILLed by then).
                with anyio.move_on_after(2 * _KILL_WAIT_S, shield=True):
                    await processes.kill_session(tag, _KILL_WAIT_S)
            try:
                await super().close()
            finally:
                if process is not None:
                    # The SDK drops its stdout stream without closing it. When the CLI died with
                    # output still unread (a message over the buffer limit), asyncio's subprocess
                    # transport then never closes, and warns when collected. aclose() closes every
                    # pipe and waits for a process that is already dead; bounded all the same.
                    with anyio.move_on_after(_KILL_WAIT_S, shield=True):
                        await process.aclose()
                lines, self._lines = self._lines, None
                if lines is not None:
                    # The SDK cancelled its reader before closing us: the generator has either
                    # ended or waits at a ``yield``, where aclose() returns at once (it has no
                    # scope of its own). Still running means the reader is alive: leave it be.
                    with anyio.move_on_after(_KILL_WAIT_S, shield=True):
                        with contextlib.suppress(RuntimeError):
                            await lines.aclose()

    if options.can_use_tool is not None:
        options = dataclasses.replace(options, permission_prompt_tool_name="stdio")
    return _SessionTransport(prompt=prompt, options=options)


class _PlainIterator:
    """An async iterator over ``inner`` (async or not) that is not itself a generator.

    Dropping it part-way leaves nothing for the garbage collector to finalise in another task.
    """

    def __init__(self, inner: AsyncIterator[dict[str, Any]] | Iterator[dict[str, Any]]) -> None:
        self._inner = inner

    def __aiter__(self) -> _PlainIterator:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if isinstance(self._inner, AsyncIterator):
            return await self._inner.__anext__()
        try:
            return next(self._inner)
        except StopIteration:
            raise StopAsyncIteration from None


async def _unwind(stream: AsyncGenerator[Message, None]) -> None:
    """Finish the SDK generator in this task, through its own cleanup (a no-op once it ended).

    Resumed inside a cancelled scope, a generator suspended at a ``yield`` raises ``Cancelled`` at
    its next read, inside itself, so every ``finally`` of the SDK runs (closing its query and our
    transport). ``aclose()`` would throw ``GeneratorExit`` in instead, which ``query()`` does not
    pass on to the generator it wraps: that one would be finalised by the garbage collector, in
    another task. Each round ends at the SDK's next checkpoint, so the loop ends at once.
    """
    from claude_agent_sdk import ClaudeSDKError

    # A scope cancelled before its first checkpoint: every await inside raises at once, so this
    # cannot wait for anything. Not a shield: a cancel of the caller's scope is not hidden by it
    # (run_session checks for one once teardown is done, with checkpoint_if_cancelled).
    with anyio.CancelScope() as scope:
        scope.cancel(reason="the session is over: the SDK generator unwinds in its own task")
        with contextlib.suppress(StopAsyncIteration, ClaudeSDKError):
            while True:
                await stream.__anext__()


class ClaudeAgentRunner:
    """Runs agent sessions through the real Claude Code CLI.

    ``env`` is added to every session's environment (``ANTHROPIC_*`` and the CLI's own variables
    also pass through from the process environment unchanged). With ``isolate_config`` (default)
    each runner gives the CLI a fresh ``CLAUDE_CONFIG_DIR`` so no user settings leak in; API-key
    and token auth work as usual, and with neither a ``claude login`` user's credentials file is
    copied into it (see :mod:`._login`). A spec with a ``sandbox`` runs its shell commands in
    Claude Code's OS sandbox (see :mod:`._sandbox`); refused calls come back as ``refusal``
    messages and in ``SessionResult.refusals``.

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
        self._login: LoginCopy | None = None
        self._login_checked = False
        self._sessions: set[_SessionState] = set()
        """Sessions running now, for :meth:`aclose` to stop."""

    async def __aenter__(self) -> ClaudeAgentRunner:
        self._ensure_processes()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every session still running, kill every CLI left and remove the temp files.

        A session stopped here returns ``Outcome.CANCELLED`` ("the runner was closed"). Waits (up
        to 10 s, shielded: it also runs on cancelled paths) for those sessions to unwind.
        """
        live = list(self._sessions)
        for state in live:
            state.closed_by_runner = True
            if state.reading is not None:
                state.reading.cancel(reason="the runner was closed")
        # Let each session unwind through the SDK's close (which kills its CLI) before dropping the
        # lifeline: dropping it first would kill the CLIs under the SDK's reader, which reports
        # that as a crash. Bounded: a session's own teardown is (a kill and a 2 s wait).
        with anyio.move_on_after(_CLOSE_WAIT_S, shield=True):
            for state in live:
                if state.done is not None:
                    await state.done.wait()
        if self._login is not None:
            self._login.write_back()  # a token the CLI refreshed goes back before the copy goes
            self._login, self._login_checked = None, False
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
                home=env.get("HOME", os.environ.get("HOME")),  # the CLI expands ~ with its HOME
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
        # defaults only fill what the environment does not already say. The one exception,
        # PINNED_ENV, wins over everything: the CLI would otherwise open our sandbox (see there).
        defaults = {k: v for k, v in OFFLINE_SAFE_ENV.items() if k not in os.environ}
        env: dict[str, str] = {**defaults, **self._env, **spec.env, **session_env, **PINNED_ENV}
        hidden: list[str] = []
        if self._isolate_config and "CLAUDE_CONFIG_DIR" not in {**os.environ, **env}:
            config_dir = processes.directory / "config"
            config_dir.mkdir(mode=0o700, exist_ok=True)  # transcripts: prompts and tool output
            env["CLAUDE_CONFIG_DIR"] = str(config_dir)
            hidden.append(str(config_dir))  # the shell never reads the CLI's config (nor a login)
            if not self._login_checked:
                # Only the login's credentials file, none of the user's settings, hooks or plugins.
                self._login_checked = True
                self._login = expose_login(config_dir, env)
        sandbox = None
        if spec.sandbox is not None:
            sandbox = sandbox_settings(
                spec.sandbox,
                cwd=spec.cwd,
                writable_roots=spec.writable_roots,
                env={**os.environ, **env},
                deny_read_extra=hidden,
            )
            state.sandboxed = True
            state.deny_read = spec.sandbox.deny_read
            state.home = env.get("HOME", os.environ.get("HOME"))
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
            sandbox=sandbox,
        )

    async def run_session(
        self,
        spec: SessionSpec,
        messages: MemoryObjectSendStream[AgentMessage] | None = None,
    ) -> SessionResult:
        """Run one session until its ResultMessage (or a deadline, or a failure), in the calling task.

        Returns once every process of the session is gone, and closes ``messages``. Cancelling the
        caller's scope stops the session at once (its processes killed), even while a send into a
        full ``messages`` blocks, and re-raises the cancellation. Timeouts become
        ``Outcome.TIMEOUT``; API, budget, turn and CLI failures become outcomes too. A consumer
        that stops reading ``messages`` holds the session back until its idle deadline.
        """
        state = _SessionState()
        wall_start = time.monotonic()
        processes = self._ensure_processes()
        session_env, tag = processes.session_env()
        options = self._options(spec, session_env, state)
        cwd = spec.cwd
        before = existing_leftovers(cwd, state.home) if state.sandboxed else None
        now = anyio.current_time()
        deadline = now + spec.timeout_s
        # Why a scope of our own for reading: its cancel means "stop reading, decide the outcome"
        # (ResultMessage, deadline, aclose) and is absorbed at its ``with``, so the session still
        # returns a result; the caller's cancel is not absorbed and propagates (see below).
        state.reading = anyio.CancelScope(deadline=min(deadline, now + spec.idle_timeout_s))
        # Why an Event: aclose() waits for this session's teardown (kill, processes gone) before
        # dropping the lifeline, and only this task knows when that is done.
        state.done = anyio.Event()
        self._sessions.add(state)
        try:
            await self._read_stream(spec, options, state, tag, messages, deadline)
            # The reading scope stopped the loop, and neither the ResultMessage nor aclose() did
            # (those decide the outcome themselves): one of the two deadlines passed.
            stopped = state.reading.cancelled_caught and state.result is None
            if stopped and not state.closed_by_runner:
                if anyio.current_time() >= deadline:
                    state.timed_out = f"session exceeded its {spec.timeout_s:g} s limit"
                else:
                    state.timed_out = f"no message from the agent for {spec.idle_timeout_s:g} s"
        finally:
            # Teardown, on every path (result, deadline, error, the caller's cancel). Closing
            # ``messages`` first ends the caller's relay, which may be blocked on us. ``stopping``
            # tells the SDK-facing callbacks that a dying CLI is expected, not a crash.
            self._sessions.discard(state)
            if messages is not None:
                messages.close()
            state.stopping = True
            # Our transport's close() has killed the session already, unless the SDK never got as
            # far as starting it; this also catches a tool that forked while we were killing.
            # Shielded so that a cancelled caller still waits until the processes are gone;
            # bounded, though the layer's kill already gives up after a few seconds.
            with anyio.move_on_after(2 * _KILL_WAIT_S, shield=True):
                await processes.kill_session(tag, _KILL_WAIT_S)
            if before is not None:
                remove_leftovers(cwd, state.home, before)  # a few stats; the CLI is gone
            state.done.set()  # set even if the kill gave up: aclose() must never wait forever
        # A caller's cancel that arrived while a scope of ours was absorbing its own (the reading
        # scope, _unwind's) is still pending: surface it rather than return a result.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self._result(state, time.monotonic() - wall_start)

    async def _read_stream(
        self,
        spec: SessionSpec,
        options: ClaudeAgentOptions,
        state: _SessionState,
        tag: str,
        messages: MemoryObjectSendStream[AgentMessage] | None,
        deadline: float,
    ) -> None:
        """Send the prompt; read and relay messages until the ResultMessage, a deadline or cancel.

        Whatever stops the loop, :func:`_unwind` then finishes the SDK's generator here, which
        closes our transport, which kills the session's processes.
        """
        from claude_agent_sdk import ClaudeSDKError, ResultMessage, query

        assert state.reading is not None

        # A plain iterator, not an async generator: the SDK reads it from a detached task that
        # may be cancelled part-way, and a generator left there would be finalised by the
        # garbage collector in another task (a ResourceWarning under trio).
        the_prompt = _PlainIterator(
            iter([{"type": "user", "message": {"role": "user", "content": spec.prompt}}])
        )
        transport = _session_transport(the_prompt, options, state, self._ensure_processes(), tag)
        stream = cast(
            "AsyncGenerator[Message, None]",
            query(prompt=the_prompt, options=options, transport=transport),
        )
        async with contextlib.aclosing(stream):  # only a no-op: _unwind below has finished it
            try:
                with state.reading:
                    async for message in stream:
                        # Every message pushes the idle deadline forward; the relay below is
                        # inside the scope, so a stalled consumer cannot hold the deadlines off.
                        idle_deadline = anyio.current_time() + spec.idle_timeout_s
                        state.reading.deadline = min(deadline, idle_deadline)
                        for agent_message in self._observe(message, state):
                            if messages is not None:
                                try:
                                    await messages.send(agent_message)
                                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                                    messages = None  # nobody listens any more; read on
                        if isinstance(message, ResultMessage):
                            # The outcome is decided: stop reading. The SDK's stream would end
                            # only when the CLI exits, which a background tool can put off.
                            state.result = message
                            state.reading.cancel(reason="the ResultMessage ends the session")
            except ClaudeSDKError as exc:
                state.error = exc
            finally:
                await _unwind(stream)

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
                state.api_error = _safe(message.error)
            for block in message.content:
                if isinstance(block, TextBlock):
                    text = _safe(block.text)
                    state.texts.append(text)
                    out.append(AgentMessage(kind="text", text=text, data=data))
                elif isinstance(block, ToolUseBlock):
                    call = ToolCall(_safe(block.name), _tool_target(block.input))
                    state.tools.append(call)
                    command = block.input.get("command")
                    state.calls[block.id] = (call, command if isinstance(command, str) else "")
                    out.append(AgentMessage(kind="tool_use", tool=call, data=data))
            if not out:
                # Thinking only: nothing to show, but its usage is what a killed session is
                # charged from (the workflow's usage meter reads ``data``), so it still goes out.
                out.append(AgentMessage(kind="system", text="assistant", data=data))
        elif isinstance(message, UserMessage):
            out.append(AgentMessage(kind="user", data=data))
            out.extend(self._refusals(message.content, state))
        elif isinstance(message, SystemMessage):
            if message.subtype == "api_retry":
                delay = message.data.get("retry_delay_ms") or message.data.get("retryDelayMs")
                if isinstance(delay, int | float):
                    state.retry_after_s = float(delay) / 1000
            out.append(AgentMessage(kind="system", text=_safe(message.subtype), data=data))
        elif isinstance(message, RateLimitEvent):
            info = message.rate_limit_info
            if info.status == "rejected" and info.resets_at:
                state.retry_after_s = max(0.0, info.resets_at - time.time())
            out.append(AgentMessage(kind="system", text="rate_limit", data=data))
        elif isinstance(message, ResultMessage):
            out.append(AgentMessage(kind="result", text=_safe(message.result or ""), data=data))
        return out

    def _refusals(self, content: object, state: _SessionState) -> list[AgentMessage]:
        """The refused calls a user message's tool results report, as ``refusal`` messages."""
        from claude_agent_sdk import ToolResultBlock

        out: list[AgentMessage] = []
        if not isinstance(content, list):
            return out
        for block in cast(list[object], content):
            if not isinstance(block, ToolResultBlock):
                continue
            call, command = state.calls.pop(block.tool_use_id, (ToolCall("?"), ""))
            found = refusals_in(
                call.name,
                call.target,
                _safe(_result_text(block.content)),
                sandboxed=state.sandboxed and call.name == "Bash",
                command=command,
                deny_read=state.deny_read,
                home=state.home,
            )
            for refusal in found:
                state.refusals.append(refusal)
                tool = ToolCall(refusal.tool, refusal.target)
                out.append(
                    AgentMessage(
                        kind="refusal",
                        tool=tool,
                        text=refusal.reason,
                        data={"type": "refusal", **attrs.asdict(refusal)},
                    )
                )
        return out

    def _result(self, state: _SessionState, duration_s: float) -> SessionResult:
        from claude_agent_sdk import ProcessError, ResultError, ResultMessage

        stderr = _safe(
            "".join(line if line.endswith("\n") else line + "\n" for line in state.stderr)
        )
        base: dict[str, Any] = {
            "duration_s": duration_s,
            "tools": tuple(state.tools),
            "final_text": state.texts[-1] if state.texts else "",
            "retry_after_s": state.retry_after_s,
            "refusals": tuple(state.refusals),
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
                session_id=_safe(result.session_id),
            )
            if result.result and not result.is_error:
                base["final_text"] = _safe(result.result)
        elif state.closed_by_runner:
            return SessionResult(outcome=Outcome.CANCELLED, error="the runner was closed", **base)
        elif state.timed_out is not None:
            return SessionResult(outcome=Outcome.TIMEOUT, error=state.timed_out, **base)
        error = state.error
        subtype = result.subtype if result else getattr(error, "subtype", None)
        reason = result.terminal_reason if result else getattr(error, "terminal_reason", None)
        status = result.api_error_status if result else getattr(error, "api_error_status", None)
        text = _safe((result.result if result else getattr(error, "result", None)) or "")
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
            detail = detail or _safe(str(error))
        elif error is not None and not detail:
            detail = _safe(str(error))
        return SessionResult(
            outcome=Outcome.CLI_ERROR,
            error=detail or "the Claude Code CLI ended without a result",
            **base,
        )
