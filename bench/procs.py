"""/proc scans: the processes a benchmarked orchestrator started, their memory, the machine.

Every driver process is started with ``BENCH_RUN_TAG=<unique>`` in its environment; every process it
starts inherits it (the SDK passes the environment on; bmad-trio's CLI wrapper keeps it). bmad-trio
also tags each CLI with ``BMAD_TRIO_ORCHESTRATOR_PID=<driver pid>``. A process carrying either is
one of "the run's processes". Linux only.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = [
    "BENCH_TAG",
    "ProcInfo",
    "kill_all",
    "machine_info",
    "run_processes",
    "vmrss_kb",
]

BENCH_TAG = "BENCH_RUN_TAG"


@attrs.frozen
class ProcInfo:
    pid: int
    rss_kb: int
    is_cli: bool
    """The Claude Code CLI itself (argv[0] named ``claude``), not a wrapper shell or watcher."""


def vmrss_kb(pid: int | str = "self") -> int:
    """``VmRSS`` of a process in kB (0 if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def run_processes(tag: str, orchestrator_pid: int | None = None) -> list[ProcInfo]:
    """Live processes carrying ``BENCH_RUN_TAG=tag`` or ``BMAD_TRIO_ORCHESTRATOR_PID=<pid>``."""
    needles = {f"{BENCH_TAG}={tag}".encode()}
    if orchestrator_pid is not None:
        needles.add(f"BMAD_TRIO_ORCHESTRATOR_PID={orchestrator_pid}".encode())
    own = os.getpid()
    found: list[ProcInfo] = []
    for pid in _pids():
        if pid == own:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if not needles.intersection(environ.split(b"\0")):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv0 = handle.read().split(b"\0", 1)[0]
        except OSError:
            continue
        found.append(ProcInfo(pid, vmrss_kb(pid), os.path.basename(argv0) == b"claude"))
    return found


def kill_all(tag: str, orchestrator_pid: int | None = None) -> int:
    """SIGKILL what is left of a run's processes (ours: they carry our tag); returns how many."""
    killed = 0
    for _ in range(3):
        left = run_processes(tag, orchestrator_pid)
        if not left:
            break
        for proc in left:
            try:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_kb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _cli_version(cli: Path | None) -> str:
    if cli is None:
        return "unknown"
    try:
        done = subprocess.run(
            [str(cli), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return done.stdout.strip() or "unknown"


def machine_info() -> dict[str, object]:
    """nproc, CPU model, memory, load, Python, OS, and the SDK, CLI and bmad-trio versions."""
    import anyio
    import claude_agent_sdk
    import trio

    import bmad_trio
    from bmad_trio._agents._cli_processes import bundled_cli_path

    cli = bundled_cli_path()
    return {
        "nproc": os.cpu_count(),
        "nproc_available": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_total_kb": _mem_total_kb(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "claude_agent_sdk": claude_agent_sdk.__version__,
        "claude_cli": _cli_version(cli),
        "claude_cli_path": str(cli) if cli else None,
        "bmad_trio": bmad_trio.__version__,
        "trio": trio.__version__,
        "anyio": anyio.__version__ if hasattr(anyio, "__version__") else _dist_version("anyio"),
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
