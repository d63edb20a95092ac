"""Quality gates: run a configured command (ruff, basedpyright, pytest...) in the project.

:func:`run_quality_gate` starts the gate in a session (and process group) of its own, with stdin from
``/dev/null`` and stdout and stderr merged into one captured pipe, and returns a :class:`QualityGateResult`.
A gate that runs and exits non-zero is a failed gate, not an error; only a gate that cannot start
at all (its program is not installed) raises :class:`GateError`.

Process hygiene: whatever way the gate ends (normal exit, timeout, the caller's cancellation, an
error) its whole process group is stopped before :func:`run_quality_gate` returns or raises: ``SIGTERM``, a
grace period of :data:`TERM_GRACE_S`, then ``SIGKILL``. That includes grandchildren (pytest workers,
servers a test forgot to stop), unless they moved to a session of their own. No global state.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import attrs

from .._agents._cli_processes import group_has_live_members
from .._config import GateCommand
from .._errors import GateError
from .._state._redact import Redactor

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "FAILURE_TEXT_MAX_BYTES",
    "QualityGateResult",
    "format_quality_gate_failure",
    "quality_gate_environment",
    "resolve_quality_gate_program",
    "run_quality_gate",
]

DEFAULT_MAX_OUTPUT_BYTES: Final = 64_000
TERM_GRACE_S: Final = 1.0
"""After ``SIGTERM``, how long the gate's process group gets to exit before ``SIGKILL``."""
DRAIN_S: Final = 1.0
"""After the group is stopped, how long to wait for the output pipe's end (a process that moved to a
session of its own may still hold it open; we stop reading then)."""
FAILURE_TEXT_MAX_BYTES: Final = 8_000
"""Upper bound of :func:`format_quality_gate_failure`'s text, in UTF-8 bytes."""
KILL_WAIT_S: Final = 0.5
"""After ``SIGKILL``, how long to wait for the group to be gone (a process in uninterruptible sleep
dies only when it wakes; we do not wait for it longer than this)."""
_POLL_S: Final = 0.02


@attrs.frozen
class QualityGateResult:
    """What one gate run produced. ``exit_code`` is ``None`` when it timed out or was skipped."""

    name: str
    argv: tuple[str, ...]
    passed: bool
    exit_code: int | None
    output: str
    """Merged stdout and stderr (the tail, when longer than the limit), decoded with ``replace``."""
    duration_s: float
    timed_out: bool = False
    skipped: bool = False
    skip_reason: str | None = None

    @classmethod
    def skip(cls, gate: GateCommand, reason: str) -> QualityGateResult:
        """A result for a gate that was not run (``--skip-gates``...): not passed, not failed."""
        return cls(
            name=gate.name,
            argv=gate.argv,
            passed=False,
            exit_code=None,
            output="",
            duration_s=0.0,
            skipped=True,
            skip_reason=reason,
        )


def quality_gate_environment(project: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with ``<project>/.venv/bin`` first on ``PATH`` if it exists."""
    result = dict(os.environ if env is None else env)
    venv_bin = Path(project).absolute() / ".venv" / "bin"
    if venv_bin.is_dir():
        path = result.get("PATH", "")
        entries = [entry for entry in path.split(os.pathsep) if entry]
        if not entries or entries[0] != str(venv_bin):
            result["PATH"] = os.pathsep.join([str(venv_bin), *entries])
    return result


def resolve_quality_gate_program(gate: GateCommand, project: Path, env: Mapping[str, str]) -> str:
    """The absolute path of the gate's program, as the gate would run it. Raises GateError.

    A bare name is looked up on ``env``'s ``PATH``; a name with a slash is relative to the project.
    """
    if not gate.argv:
        raise GateError(f"gate {gate.name!r}: empty command (change [tool.bmad-trio] gates)")
    program = gate.argv[0]
    if os.sep in program or (os.altsep is not None and os.altsep in program):
        candidate = Path(project).absolute() / program
        found = str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    else:
        found = shutil.which(program, path=env.get("PATH", ""))
        found = str(Path(found).absolute()) if found is not None else None
    if found is None:
        raise GateError(
            f"gate {gate.name!r}: command not found: {program} "
            "(install it or change [tool.bmad-trio] gates)"
        )
    return found


class _Tail:
    """Keeps the last ``limit`` bytes of a stream and counts what it dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.data = bytearray()
        self.cut = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        # Trim in batches: amortised O(1) per byte.
        if len(self.data) > 2 * self.limit + 65_536:
            self._trim()

    def _trim(self) -> None:
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.cut += excess

    def text(self) -> str:
        self._trim()
        data = bytes(self.data)
        if not self.cut:
            return data.decode("utf-8", errors="replace")
        # Do not start in the middle of a UTF-8 sequence.
        skip = 0
        while skip < min(len(data), 3) and data[skip] & 0xC0 == 0x80:
            skip += 1
        return f"[... {self.cut + skip} bytes cut ...]\n" + data[skip:].decode(
            "utf-8", errors="replace"
        )


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; whether any process in it (zombies included) still existed."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only a process that is not ours (a reused id) can refuse: nothing of ours is left.
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running.

    Zombies do not count: the group's orphans are reaped by init (or a subreaper), which may take
    its time (about a second, measured in a container), and ``killpg(pgid, 0)`` still finds them.
    """
    return _signal_group(pgid, 0) and group_has_live_members(pgid)


async def _wait_group_gone(pgid: int) -> None:
    delay = 0.005
    while _group_alive(pgid):
        await anyio.sleep(delay)
        delay = min(delay * 2, _POLL_S)


async def _stop_group(process: anyio.abc.Process) -> None:
    """SIGTERM the gate's process group, wait up to TERM_GRACE_S, then SIGKILL; reap the leader.

    The caller shields this: it must finish even when the caller is being cancelled.
    """
    pgid = process.pid  # start_new_session: the leader's pid is the group's (and session's) id
    if _signal_group(pgid, signal.SIGTERM):
        with anyio.move_on_after(TERM_GRACE_S):
            if process.returncode is None:
                await process.wait()
            # The leader is reaped; wait for the rest of the group (reparented to init).
            await _wait_group_gone(pgid)
        if _signal_group(pgid, signal.SIGKILL):
            with anyio.move_on_after(KILL_WAIT_S):
                await _wait_group_gone(pgid)
    if process.returncode is None:
        await process.wait()


async def _read_into(stream: anyio.abc.ByteReceiveStream, tail: _Tail, eof: anyio.Event) -> None:
    try:
        async for chunk in stream:
            tail.add(chunk)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        eof.set()


def _prepare(
    gate: GateCommand, project: Path, env: Mapping[str, str] | None
) -> tuple[Path, dict[str, str], str]:
    project = Path(project).absolute()
    environment = quality_gate_environment(project, env)
    return project, environment, resolve_quality_gate_program(gate, project, environment)


async def run_quality_gate(
    gate: GateCommand,
    project: Path,
    *,
    env: Mapping[str, str] | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    redactor: Redactor | None = None,
) -> QualityGateResult:
    """Run ``gate.argv`` in ``project`` and report how it went. Raises GateError if it cannot start.

    ``env`` defaults to ``os.environ``; ``<project>/.venv/bin`` is put first on ``PATH`` when it
    exists. Output (stdout and stderr merged) keeps the last ``max_output_bytes`` bytes, and is
    passed through ``redactor`` when one is given. After ``gate.timeout_s`` the process group is
    stopped and the result has ``timed_out=True`` and ``exit_code=None``.

    Cancellation: the process group is stopped (SIGTERM, at most :data:`TERM_GRACE_S` of grace,
    SIGKILL; shielded) and the cancellation propagates; no result is returned.
    """
    project, environment, program = _prepare(gate, project, env)
    started = time.monotonic()
    try:
        process = await anyio.open_process(
            [program, *gate.argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=project,
            env=environment,
            start_new_session=True,
        )
    except OSError as exc:
        # E.g. a script whose interpreter is missing, or a directory not executable.
        raise GateError(
            f"gate {gate.name!r}: cannot start {gate.argv[0]}: {exc.strerror or exc} "
            "(install it or change [tool.bmad-trio] gates)"
        ) from None
    tail = _Tail(max_output_bytes)
    exit_code: int | None = None
    stopped = False
    async with process:
        try:
            assert process.stdout is not None
            eof = anyio.Event()
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_read_into, process.stdout, tail, eof)
                with anyio.move_on_after(gate.timeout_s):
                    exit_code = await process.wait()
                # Leftovers (or, on timeout, everything) go; the reader keeps reading meanwhile.
                # Cannot hang: _stop_group waits TERM_GRACE_S, then SIGKILLs and waits KILL_WAIT_S;
                # a SIGKILLed leader is always reaped.
                with anyio.CancelScope(shield=True):
                    await _stop_group(process)
                    stopped = True
                with anyio.move_on_after(DRAIN_S):
                    await eof.wait()
                task_group.cancel_scope.cancel(reason="the quality gate's process has ended")
        finally:
            if not stopped:
                # Cannot hang: bounded as above (TERM_GRACE_S, then SIGKILL and KILL_WAIT_S).
                with anyio.CancelScope(shield=True):
                    await _stop_group(process)
    duration = time.monotonic() - started
    output = tail.text()
    if redactor is not None:
        output = redactor.redact(output)
    return QualityGateResult(
        name=gate.name,
        argv=gate.argv,
        passed=exit_code == 0,
        exit_code=exit_code,
        output=output,
        duration_s=duration,
        timed_out=exit_code is None,
    )


def _utf8_tail(text: str, max_bytes: int) -> tuple[str, int]:
    """The longest tail of ``text`` that fits in ``max_bytes`` UTF-8 bytes, and how many were cut."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text, 0
    start = len(data) - max(0, max_bytes)
    while start < len(data) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:].decode("utf-8", errors="replace"), start


def format_quality_gate_failure(result: QualityGateResult) -> str:
    """A compact text for a fixer agent's prompt: command, how it ended, the output's tail.

    At most :data:`FAILURE_TEXT_MAX_BYTES` UTF-8 bytes. Pure computation.
    """
    command = shlex.join(result.argv)
    if len(command) > 500:
        command = command[:500] + " ..."
    if result.skipped:
        return f"Quality gate {result.name!r} (`{command}`) was skipped: {result.skip_reason}"
    if result.timed_out:
        ending = f"timed out after {result.duration_s:.0f} s and was stopped"
    elif result.passed:
        ending = f"passed in {result.duration_s:.1f} s"
    else:
        ending = f"failed with exit code {result.exit_code} after {result.duration_s:.1f} s"
    head = f"Quality gate {result.name!r} (`{command}`, run in the project root) {ending}.\n"
    output = result.output.strip("\n")
    if not output:
        return head + "It printed nothing."
    label = "Output (stdout and stderr; the end if long):\n"
    budget = FAILURE_TEXT_MAX_BYTES - len((head + label).encode("utf-8")) - 40
    shown, cut = _utf8_tail(output, budget)
    if cut:
        shown = f"[... {cut} bytes cut ...]\n{shown}"
    return head + label + shown
