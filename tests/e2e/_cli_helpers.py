"""Helpers for the process-level CLI tests: a ``bmad-trio`` subprocess whose stdout is read in a
thread (so every wait is bounded), a scan for processes tagged with an orchestrator's pid, and
synchronous reads of the run store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from bmad_trio._agents._cli_processes import orchestrator_pids
from bmad_trio._state._store import PhaseRow, RunRow, SessionRow, StoryRow, open_store
from bmad_trio.testing import FakeAnthropicAPI, parse_context

AUTH_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
WAIT_S = 120.0
"""Bound on any single wait (a whole demo run takes ~15-20 s on 2 cores)."""

Event = dict[str, Any]


def bmad_trio_argv() -> list[str]:
    """The console script installed next to this interpreter, else ``python -m bmad_trio``."""
    script = Path(sys.executable).with_name("bmad-trio")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bmad_trio"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without credentials, base URL or bmad-trio tags, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in AUTH_VARIABLES and k != "ANTHROPIC_BASE_URL" and not k.startswith("BMAD_TRIO")
    }
    env.update(extra)
    return env


def api_env(api: FakeAnthropicAPI) -> dict[str, str]:
    """What a user sets to point ``bmad-trio run`` at the scripted server."""
    return clean_env(
        **{
            **api.env(),
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "offline",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
    )


class CliProcess:
    """A running ``bmad-trio`` command; stdout lines (and JSON events) are collected in a thread.

    Use as a context manager: leaving kills the process if it still runs and closes its pipes.
    """

    def __init__(
        self, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, stderr_path: Path
    ) -> None:
        self._stderr_file = stderr_path.open("w")
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen(
            [*bmad_trio_argv(), *args],
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def events(self) -> list[Event]:
        """Every stdout line that is a JSON object (``--progress jsonl``)."""
        with self._cond:
            lines = list(self.lines)
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_event(self, predicate: Callable[[list[Event]], bool], what: str) -> list[Event]:
        """Wait (bounded) until ``predicate(events so far)``; the events."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while True:
                events = [json.loads(line) for line in self.lines if line.startswith("{")]
                if predicate(events):
                    return events
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"never saw {what}; exit {self.proc.poll()}; stdout tail "
                        f"{self.lines[-10:]!r}; stderr {self.stderr()[-2000:]!r}"
                    )
                self._cond.wait(min(left, 0.5))

    def signal(self, number: signal.Signals) -> float:
        """Send ``number``; the monotonic time it was sent."""
        sent = time.monotonic()
        self.proc.send_signal(number)
        return sent

    def wait(self) -> int:
        code = self.proc.wait(WAIT_S)
        self._reader.join(WAIT_S)
        return code

    def stderr(self) -> str:
        if not self._stderr_file.closed:
            self._stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(WAIT_S)
            self._reader.join(WAIT_S)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stderr_file.close()


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A ``bmad-trio`` command to completion (bounded)."""
    return subprocess.run(
        [*bmad_trio_argv(), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def status_json(project: Path, env: Mapping[str, str]) -> dict[str, Any]:
    done = run_cli(["status", "--project", str(project), "--json"], env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def tagged_with_orchestrator(pid: int) -> list[int]:
    """Live processes whose environment says ``BMAD_TRIO_ORCHESTRATOR_PID=<pid>`` (CLI, tools and
    lifeline watchers of that orchestrator; zombies have an empty environment)."""
    return orchestrator_pids(pid)


def wait_until_untagged(pid: int, timeout: float = 30.0) -> list[int]:
    """Poll (bounded) until no process carries the tag; what is left (empty when clean)."""
    deadline = time.monotonic() + timeout
    left = tagged_with_orchestrator(pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = tagged_with_orchestrator(pid)
    return left


class StoreView:
    """A synchronous snapshot of one run in the store."""

    def __init__(self, project: Path, run_id: str | None = None) -> None:
        async def read() -> tuple[RunRow, list[StoryRow], list[PhaseRow], list[SessionRow]]:
            async with open_store(project) as store:
                rid = run_id or await store.latest_run_id()
                assert rid is not None, "no run in the store"
                return (
                    await store.get_run(rid),
                    await store.stories(rid),
                    await store.phases(rid),
                    await store.sessions(rid),
                )

        self.run, self.stories, self.phases, self.sessions = anyio.run(read)

    def ok_sessions(self) -> Counter[tuple[str | None, str]]:
        return Counter((s.story_id, s.role) for s in self.sessions if s.outcome == "ok")

    def all_sessions(self) -> Counter[tuple[str | None, str]]:
        return Counter((s.story_id, s.role) for s in self.sessions)

    def ok_phase_keys(self) -> Counter[tuple[str | None, str, int]]:
        return Counter((p.story_id, p.phase, p.cycle) for p in self.phases if p.ok)


def server_sessions(api: FakeAnthropicAPI) -> Counter[tuple[str, str]]:
    """Agent sessions the scripted server saw start: first-turn requests per (story, role)."""
    seen: Counter[tuple[str, str]] = Counter()
    for request in list(api.message_requests):
        if request.assistant_turns != 0:
            continue
        ctx = None
        for text in request.user_texts():
            ctx = parse_context(text)
            if ctx is not None:
                break
        if ctx is not None:
            seen[(ctx.story, ctx.role)] += 1
    return seen
