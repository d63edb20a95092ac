"""Quality gates: results, output capture, timeouts, cancellation and process-group hygiene."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from bmad_trio._config import GateCommand
from bmad_trio._errors import GateError
from bmad_trio._state._redact import Redactor
from bmad_trio._workflow._quality_gates import (
    FAILURE_TEXT_MAX_BYTES,
    QualityGateResult,
    format_quality_gate_failure,
    quality_gate_environment,
    run_quality_gate,
)

pytestmark = pytest.mark.anyio

PY = sys.executable


def py_gate(name: str, script: str, timeout_s: float = 60.0) -> GateCommand:
    return GateCommand(name, (PY, "-c", textwrap.dedent(script)), timeout_s)


# A parent that starts a sleeping child (a grandchild of the orchestrator) and reports both pids,
# on stdout and, written atomically, in the file named by argv[1] (when given).
SPAWNER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
line = f"pids {os.getpid()} {child.pid}"
print(line, flush=True)
if len(sys.argv) > 1:
    with open(sys.argv[1] + ".tmp", "w") as handle:
        handle.write(line)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def _assert_gone(pids: list[int], within: float = 10.0) -> None:
    with anyio.move_on_after(within):
        while any(_alive(pid) for pid in pids):  # noqa: ASYNC110 - polling other processes
            await anyio.sleep(0.02)
    assert [pid for pid in pids if _alive(pid)] == []


def _pids_from(text: str) -> list[int]:
    for line in text.splitlines():
        if line.startswith("pids "):
            return [int(part) for part in line.split()[1:]]
    raise AssertionError(f"no pids line in output: {text!r}")


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test started; killed at teardown if the code under test left any behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_passing_gate(tmp_path: Path) -> None:
    gate = py_gate("hello", "print('all good')")
    result = await run_quality_gate(gate, tmp_path)
    assert result.passed
    assert result.exit_code == 0
    assert result.output == "all good\n"
    assert not result.timed_out
    assert not result.skipped
    assert result.name == "hello"
    assert result.argv == gate.argv
    assert result.duration_s >= 0


async def test_failing_gate_reports_exit_code_and_merged_output(tmp_path: Path) -> None:
    gate = py_gate(
        "lint",
        """
        import sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        sys.exit(3)
        """,
    )
    result = await run_quality_gate(gate, tmp_path)
    assert not result.passed
    assert result.exit_code == 3
    assert not result.timed_out
    assert "to stdout\n" in result.output
    assert "to stderr\n" in result.output
    text = format_quality_gate_failure(result)
    assert "'lint'" in text
    assert "exit code 3" in text
    assert "to stderr" in text


async def test_runs_in_project_with_env_and_no_stdin(tmp_path: Path) -> None:
    gate = py_gate(
        "where",
        "import os, sys; print(os.getcwd(), os.environ.get('GATE_FLAG'), repr(sys.stdin.read()))",
    )
    result = await run_quality_gate(gate, tmp_path, env={"PATH": os.defpath, "GATE_FLAG": "on"})
    assert result.passed, result.output
    assert result.output.split() == [str(tmp_path), "on", "''"]


async def test_output_truncation_keeps_the_tail(tmp_path: Path) -> None:
    gate = py_gate(
        "noisy",
        """
        import sys
        for _ in range(200):
            sys.stdout.buffer.write(b"x" * 999 + b"\\n")
        sys.stdout.buffer.write(b"THE END\\n")
        """,
    )
    result = await run_quality_gate(gate, tmp_path, max_output_bytes=1000)
    assert result.passed
    total = 200 * 1000 + len("THE END\n")
    assert result.output.startswith(f"[... {total - 1000} bytes cut ...]\n")
    assert result.output.endswith("x\nTHE END\n")
    assert len(result.output.split("\n", 1)[1]) == 1000


async def test_undecodable_output_is_replaced(tmp_path: Path) -> None:
    gate = py_gate("bytes", "import sys; sys.stdout.buffer.write(b'caf\\xe9 ok\\n')")
    result = await run_quality_gate(gate, tmp_path)
    assert result.output == "caf\ufffd ok\n"


async def test_timeout_kills_the_whole_process_group(tmp_path: Path, spawned: list[int]) -> None:
    gate = py_gate("slow", SPAWNER, timeout_s=2.0)
    result = await run_quality_gate(gate, tmp_path)
    pids = _pids_from(result.output)
    spawned.extend(pids)
    assert result.timed_out
    assert result.exit_code is None
    assert not result.passed
    await _assert_gone(pids)
    assert "timed out" in format_quality_gate_failure(result)


async def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(
    tmp_path: Path, spawned: list[int]
) -> None:
    # SIG_IGN is inherited by the child across exec: both ignore SIGTERM.
    script = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SPAWNER
    result = await run_quality_gate(py_gate("stubborn", script, timeout_s=2.0), tmp_path)
    pids = _pids_from(result.output)
    spawned.extend(pids)
    assert result.timed_out
    await _assert_gone(pids)


async def test_leftover_processes_are_stopped_after_a_normal_exit(
    tmp_path: Path, spawned: list[int]
) -> None:
    # The child inherits the output pipe and would keep it open for two minutes.
    gate = py_gate(
        "leaky",
        """
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(f"pids {child.pid}", flush=True)
        """,
        timeout_s=60.0,
    )
    result = await run_quality_gate(gate, tmp_path)
    pids = _pids_from(result.output)
    spawned.extend(pids)
    assert result.passed
    assert result.exit_code == 0
    assert not result.timed_out
    await _assert_gone(pids)


async def test_cancellation_kills_the_group_and_propagates(
    tmp_path: Path, spawned: list[int]
) -> None:
    pid_file = tmp_path / "pids"
    gate = GateCommand("pytest", (PY, "-c", SPAWNER, str(pid_file)), 60.0)
    caught: list[BaseException] = []
    returned: list[QualityGateResult] = []
    scope = anyio.CancelScope()
    pids: list[int] = []

    async with anyio.create_task_group() as task_group:

        async def run() -> None:
            with scope:
                try:
                    returned.append(await run_quality_gate(gate, tmp_path))
                except BaseException as exc:
                    caught.append(exc)
                    raise

        task_group.start_soon(run)
        with anyio.fail_after(20):
            while not pid_file.exists():  # noqa: ASYNC110 - written by another process
                await anyio.sleep(0.02)
        pids.extend(_pids_from(pid_file.read_text()))
        spawned.extend(pids)
        assert all(_alive(pid) for pid in pids)
        scope.cancel()

    assert returned == []
    assert scope.cancelled_caught
    assert len(caught) == 1
    cancelled = anyio.get_cancelled_exc_class()
    exc = caught[0]
    if isinstance(exc, BaseExceptionGroup):
        assert all(isinstance(e, cancelled) for e in exc.exceptions), exc  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
    else:
        assert isinstance(exc, cancelled), exc
    await _assert_gone(pids)


async def test_missing_command_is_a_gate_error(tmp_path: Path) -> None:
    gate = GateCommand("pytest", ("no-such-gate-tool-xyz", "-q"))
    with pytest.raises(GateError) as info:
        await run_quality_gate(gate, tmp_path, env={"PATH": str(tmp_path)})
    message = str(info.value)
    assert "gate 'pytest'" in message
    assert "command not found: no-such-gate-tool-xyz" in message
    assert "[tool.bmad-trio] gates" in message


async def test_missing_relative_command_is_a_gate_error(tmp_path: Path) -> None:
    gate = GateCommand("check", ("./scripts/check.sh",))
    with pytest.raises(GateError, match=r"gate 'check': command not found: \./scripts/check\.sh"):
        await run_quality_gate(gate, tmp_path)


async def test_empty_command_is_a_gate_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="gate 'nothing': empty command"):
        await run_quality_gate(GateCommand("nothing", ()), tmp_path)


def _write_tool(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


async def test_project_venv_bin_is_on_path(tmp_path: Path) -> None:
    _write_tool(tmp_path / ".venv" / "bin" / "mytool", 'echo "venv tool $1"; echo "PATH=$PATH"')
    gate = GateCommand("mytool", ("mytool", "arg"))
    result = await run_quality_gate(gate, tmp_path, env={"PATH": os.defpath})
    assert result.passed, result.output
    venv_bin = str(tmp_path / ".venv" / "bin")
    assert result.output.splitlines() == [
        "venv tool arg",
        f"PATH={venv_bin}{os.pathsep}{os.defpath}",
    ]


async def test_relative_command_runs_from_the_project(tmp_path: Path) -> None:
    _write_tool(tmp_path / "scripts" / "check.sh", "echo checked; exit 1")
    result = await run_quality_gate(GateCommand("check", ("scripts/check.sh",)), tmp_path)
    assert result.exit_code == 1
    assert result.output == "checked\n"
    assert result.argv == ("scripts/check.sh",)


def test_gate_environment_defaults_to_os_environ(tmp_path: Path) -> None:
    assert quality_gate_environment(tmp_path) == dict(os.environ)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    env = quality_gate_environment(tmp_path)
    venv_bin = str(tmp_path / ".venv" / "bin")
    assert env["PATH"].split(os.pathsep)[0] == venv_bin
    assert {k: v for k, v in env.items() if k != "PATH"} == {
        k: v for k, v in os.environ.items() if k != "PATH"
    }
    # Not added twice.
    assert quality_gate_environment(tmp_path, env)["PATH"] == env["PATH"]


async def test_redactor_is_applied_to_output(tmp_path: Path) -> None:
    secret = "s3cr3t-value-1234567"
    gate = py_gate("leak", f"print('token is {secret}')")
    result = await run_quality_gate(gate, tmp_path, redactor=Redactor([secret]))
    assert secret not in result.output
    assert "[REDACTED]" in result.output


def test_format_gate_failure_is_bounded_and_keeps_the_tail() -> None:
    output = "".join(f"line {i} é\n" for i in range(5000)) + "FINAL ASSERTION ERROR\n"
    result = QualityGateResult(
        name="pytest",
        argv=("pytest", "-q"),
        passed=False,
        exit_code=1,
        output=output,
        duration_s=12.5,
    )
    text = format_quality_gate_failure(result)
    assert len(text.encode("utf-8")) <= FAILURE_TEXT_MAX_BYTES
    assert text.startswith("Quality gate 'pytest' (`pytest -q`")
    assert "exit code 1" in text
    assert "bytes cut ...]" in text
    assert text.endswith("FINAL ASSERTION ERROR")


def test_format_gate_failure_small_and_skipped() -> None:
    gate = GateCommand("ruff", ("ruff", "check", "."))
    empty = QualityGateResult("ruff", gate.argv, False, 2, "", 0.1)
    assert format_quality_gate_failure(empty).endswith("It printed nothing.")
    assert "bytes cut" not in format_quality_gate_failure(
        QualityGateResult("ruff", gate.argv, False, 1, "E1\n", 1)
    )
    skipped = QualityGateResult.skip(gate, "--skip-gates")
    assert skipped.skipped
    assert not skipped.passed
    assert skipped.exit_code is None
    assert "--skip-gates" in format_quality_gate_failure(skipped)


async def test_unstartable_program_is_a_gate_error(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "broken"
    tool.parent.mkdir()
    tool.write_text("#!/nonexistent/interpreter\n")
    tool.chmod(0o755)
    with pytest.raises(GateError, match=r"gate 'broken': cannot start bin/broken: "):
        await run_quality_gate(GateCommand("broken", ("bin/broken",)), tmp_path)
