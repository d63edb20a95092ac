"""Keep every Claude Code CLI process, and every tool it starts, tied to the orchestrator.

The SDK starts the CLI through ``cli_path``; we point that at a small shell wrapper. Each session's
environment carries a unique tag, ``BMAD_TRIO_SESSION=<id>``, which the CLI and every tool it runs
inherit (the CLI starts Bash tools in sessions of their own, so a process group would miss them).

- To stop a session we kill every process that carries its tag (:meth:`CLIProcesses.kill_session`).
- To die with the orchestrator even on SIGKILL, the wrapper starts an untagged watcher that blocks
  on a *lifeline*: a pipe whose only write end the orchestrator holds. When the orchestrator dies,
  the kernel closes that end, the watcher reads EOF and kills every process with the tag.
  (``PR_SET_PDEATHSIG`` is tied to the thread that forked, and trio forks from worker threads that
  come and go, so a pipe is the robust signal.)
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import tempfile
from pathlib import Path

__all__ = [
    "CLIProcesses",
    "bundled_cli_path",
    "orchestrator_pids",
    "pids_with_env",
    "tagged_pids",
]

SESSION_TAG = "BMAD_TRIO_SESSION"
WATCHER_TAG = "BMAD_TRIO_WATCHER"
"""The lifeline watcher carries its session's tag under this name, so it never kills itself."""

_WRAPPER = """\
#!/bin/sh
# bmad-trio: run the Claude Code CLI; if the orchestrator goes away (its lifeline pipe reaches EOF),
# kill every process tagged with this session, the CLI's tools included.
env -u BMAD_TRIO_SESSION BMAD_TRIO_WATCHER="$BMAD_TRIO_SESSION" sh -c '
    { while read -r _; do :; done; } < "/proc/$1/fd/$2"
    for _ in 1 2 3; do
        pids=$(grep -lzx -- "$3" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
        [ -n "$pids" ] || break
        kill -KILL $pids 2>/dev/null
    done
' bmad-trio-lifeline "$BMAD_TRIO_ORCHESTRATOR_PID" "$BMAD_TRIO_LIFELINE_FD" \\
    "BMAD_TRIO_SESSION=$BMAD_TRIO_SESSION" </dev/null >/dev/null 2>&1 &
watcher=$!
# A background job's stdin is /dev/null unless redirected from a descriptor saved beforehand.
exec 3<&0
"$BMAD_TRIO_CLI" "$@" <&3 3<&- &
cli=$!
exec 3<&-
trap 'kill -TERM "$cli" 2>/dev/null' TERM INT HUP
wait "$cli"
code=$?
kill "$watcher" 2>/dev/null
exit "$code"
"""


def bundled_cli_path() -> Path | None:
    """The Claude Code CLI bundled in the claude-agent-sdk wheel, found without importing the SDK."""
    import importlib.util

    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "_bundled" / "claude"
    return candidate if candidate.is_file() else None


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment has ``BMAD_TRIO_SESSION=<tag>`` (zombies have none)."""
    return pids_with_env(SESSION_TAG, tag)


def orchestrator_pids(pid: int) -> list[int]:
    """Live processes started for orchestrator ``pid``: its CLIs, their tools and watchers."""
    return pids_with_env("BMAD_TRIO_ORCHESTRATOR_PID", str(pid))


def pids_with_env(name: str, value: str) -> list[int]:
    """Live processes (not this one) whose environment has ``name=value``."""
    needle = f"{name}={value}".encode()
    found: list[int] = []
    own = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


class CLIProcesses:
    """Owns the lifeline pipe and the wrapper script for every CLI a runner starts.

    Creating and closing it does no blocking work worth a thread. Close it when no session runs any
    more: every CLI still running then dies (through its watcher).
    """

    def __init__(self, cli_path: Path | None = None) -> None:
        real = cli_path or bundled_cli_path() or _which_claude()
        if real is None:
            raise FileNotFoundError("Claude Code CLI not found (is claude-agent-sdk installed?)")
        self.real_cli = Path(real)
        self.directory = Path(tempfile.mkdtemp(prefix="bmad-trio-cli-"))
        self.wrapper = self.directory / "claude-wrapper"
        self.wrapper.write_text(_WRAPPER)
        self.wrapper.chmod(0o700)
        read_end, self._lifeline = os.pipe()
        os.close(read_end)  # only the write end lives here; watchers open their own read ends
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self):x}"
        self.closed = False

    def session_env(self) -> tuple[dict[str, str], str]:
        """Environment for one CLI session, and the session's tag."""
        tag = f"{self._prefix}-{next(self._ids)}"
        env = {
            SESSION_TAG: tag,
            "BMAD_TRIO_CLI": str(self.real_cli),
            "BMAD_TRIO_ORCHESTRATOR_PID": str(os.getpid()),
            "BMAD_TRIO_LIFELINE_FD": str(self._lifeline),
        }
        return env, tag

    @staticmethod
    def kill_session(tag: str) -> int:
        """SIGKILL every process of the session (the CLI, its tools, its watcher); returns how many.

        Scans up to three times so a child forked while we were killing is caught too.
        """
        killed = 0
        for _ in range(3):
            pids = tagged_pids(tag) + pids_with_env(WATCHER_TAG, tag)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
        return killed

    def close(self) -> None:
        """Drop the lifeline (every wrapper still running kills its session) and the temp dir."""
        if self.closed:
            return
        self.closed = True
        os.close(self._lifeline)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> CLIProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _which_claude() -> Path | None:
    found = shutil.which("claude")
    return Path(found) if found else None
