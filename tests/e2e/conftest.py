"""Helpers for tests that drive the real Claude Code CLI (bundled in claude-agent-sdk)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    Message,
    ProcessError,
    ResultMessage,
    query,
)

from bmad_trio._agents._cli_processes import orchestrator_pids
from bmad_trio.testing import FakeAnthropicAPI

TOOLS = ("Read", "Write", "Edit", "Bash")


@attrs.define
class CliRun:
    """Everything one CLI session produced."""

    messages: list[Message] = attrs.field(factory=list[Message])
    error: ProcessError | None = None
    stderr: list[str] = attrs.field(factory=list[str])

    @property
    def result(self) -> ResultMessage:
        results = [m for m in self.messages if isinstance(m, ResultMessage)]
        assert results, (self.messages, self.error, self.stderr[-20:])
        return results[-1]

    @property
    def texts(self) -> list[str]:
        return [
            block.text
            for m in self.messages
            if isinstance(m, AssistantMessage)
            for block in m.content
            if hasattr(block, "text")
        ]


async def _run_cli(
    api: FakeAnthropicAPI,
    cwd: Path,
    prompt: str,
    *,
    env: Mapping[str, str] | None = None,
    tools: Sequence[str] = TOOLS,
) -> CliRun:
    """Run one ``query()`` session to its ResultMessage (never break out of the iterator)."""
    config_dir = cwd.parent / f".claude-config-{cwd.name}"
    config_dir.mkdir(exist_ok=True)
    run = CliRun()
    options = ClaudeAgentOptions(
        cwd=cwd,
        env={**api.env(), "CLAUDE_CONFIG_DIR": str(config_dir), **(env or {})},
        setting_sources=[],
        permission_mode="acceptEdits",
        allowed_tools=list(tools),
        max_buffer_size=16 * 1024 * 1024,
        stderr=run.stderr.append,
    )
    try:
        async for message in query(prompt=prompt, options=options):
            run.messages.append(message)
    except ProcessError as exc:  # a failed session ends with ResultError after its ResultMessage
        run.error = exc
    return run


RunCli = Callable[..., Awaitable[CliRun]]


@pytest.fixture
def run_cli() -> RunCli:
    """``await run_cli(api, cwd, prompt, env=..., tools=...)`` -> :class:`CliRun`."""
    return _run_cli


def _claude_pids() -> set[str]:
    """Our own CLI processes: children running the CLI (plain ``query()`` sessions), and every
    process tagged as started for this process (runner sessions: supervisors, CLIs, tools).
    Other users' sessions are ignored."""
    done = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "claude"],
        capture_output=True,
        text=True,
        check=False,
    )
    return set(done.stdout.split()) | {str(pid) for pid in orchestrator_pids(os.getpid())}


def _describe(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid}: {cmdline[:200]}"
    except OSError as exc:
        return f"{pid}: {exc}"


@pytest.fixture
def no_leftover_cli() -> object:
    """Fails the test if a CLI process started during it is still running afterwards."""
    before = _claude_pids()
    yield None
    deadline = time.monotonic() + 10
    left = _claude_pids() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _claude_pids() - before
    assert not left, f"claude processes left behind: {[_describe(pid) for pid in left]}"
