"""One measurement each. The model server runs here; the orchestrator runs in a driver process.

- :func:`epic_case` — run a whole epic with one design; wall time, sessions, model calls, memory,
  time to the first API request.
- :func:`cancel_case` — start a run, wait until N CLI sessions are in flight, sample their RSS, send
  SIGINT to the driver alone, and time until it has exited and none of its processes remain.
- :func:`startup_case` — ``bmad-trio --help`` wall time (median of N runs).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from bench.procs import BENCH_TAG, ProcInfo, kill_all, run_processes
from bench.workload import RequestClock, StatusAnswer, make_project, scenario
from bmad_trio.testing import FakeAnthropicAPI

__all__ = ["REPO_ROOT", "cancel_case", "epic_case", "startup_case"]

REPO_ROOT = Path(__file__).resolve().parents[1]
EPIC_TIMEOUT_S = 3600.0
CANCEL_WAIT_S = 180.0
CANCEL_DEADLINE_S = 60.0


def _driver_env(api: FakeAnthropicAPI, tag: str) -> dict[str, str]:
    env = {**os.environ, **api.env(), BENCH_TAG: tag}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def _driver_argv(
    design: str, project: Path, epic: Path, out: Path, *, jobs: int, backend: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.driver",
        "--design",
        design,
        "--project",
        str(project),
        "--epic",
        str(epic),
        "--jobs",
        str(jobs),
        "--backend",
        backend,
        "--out",
        str(out),
    ]


def _stderr_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _scan(tag: str, pid: int) -> list[ProcInfo]:
    return await anyio.to_thread.run_sync(run_processes, tag, pid)


async def epic_case(
    workdir: Path,
    design: str,
    stories: int,
    *,
    jobs: int = 1,
    latency_s: float,
    delta_delay_s: float = 0.0,
    backend: str = "trio",
    chains: int = 0,
) -> dict[str, Any]:
    """Run an epic of ``stories`` stories with ``design`` ("new" or "original") to its end
    (``chains`` > 0: the stories form that many dependency chains)."""
    root = workdir / f"{design}-{stories}-{uuid.uuid4().hex[:8]}"
    epic = make_project(root / "project", stories, chains=chains)
    clock, status = RequestClock(), StatusAnswer()
    tag = uuid.uuid4().hex
    out, err = root / "driver.json", root / "driver.stderr"
    case: dict[str, Any] = {
        "design": design,
        "stories": stories,
        "jobs": jobs if design == "new" else 1,
        "latency_s": latency_s,
        "delta_delay_s": delta_delay_s,
    }
    async with FakeAnthropicAPI(scenario(clock, status, latency_s=latency_s)) as api:
        argv = _driver_argv(design, root / "project", epic, out, jobs=jobs, backend=backend)
        with err.open("wb") as stderr:
            spawn = time.time()
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO_ROOT,
                env=_driver_env(api, tag),
            )
            async with process:
                with anyio.move_on_after(EPIC_TIMEOUT_S) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    process.kill()
                    await process.wait()
        case["returncode"] = process.returncode
        case["model_calls"] = len(api.message_requests)
        case["request_bytes"] = sum(request.body_bytes for request in api.message_requests)
        case["status_calls"] = status.answered
        arrivals = list(clock.arrivals)
    case["leftover_processes"] = await anyio.to_thread.run_sync(kill_all, tag, process.pid)
    if process.returncode != 0 or not out.is_file():
        case["error"] = f"driver exited {process.returncode}:\n{_stderr_tail(err)}"
        return case
    result: dict[str, Any] = json.loads(out.read_text())
    sessions: list[dict[str, Any]] = result.pop("sessions")
    session_sum = sum(float(s["duration_s"]) for s in sessions)
    wall = float(result["wall_s"])
    case.update(result)
    case["sessions"] = len(sessions)
    case["sessions_by_role"] = _count(s["role"] for s in sessions)
    case["session_outcomes"] = _count(s["outcome"] for s in sessions)
    case["sessions_sum_s"] = session_sum
    case["session_mean_s"] = session_sum / len(sessions) if sessions else 0.0
    case["overhead_ratio"] = wall / session_sum if session_sum else None
    case["overhead_s"] = wall - session_sum
    case["overhead_per_story_s"] = (wall - session_sum) / stories
    case["wall_per_story_s"] = wall / stories
    case["sessions_per_story"] = len(sessions) / stories
    case["model_calls_per_story"] = case["model_calls"] / stories
    case["request_bytes_per_story"] = case["request_bytes"] / stories
    if arrivals:
        case["first_request_after_run_start_s"] = arrivals[0] - float(result["run_start"])
        case["first_request_after_spawn_s"] = arrivals[0] - spawn
        if sessions:  # the orchestrator's part (first session start) vs the CLI's own start-up
            first = min(float(s["started_at"]) for s in sessions)
            case["first_session_after_run_start_s"] = first - float(result["run_start"])
            case["first_request_after_first_session_start_s"] = arrivals[0] - first
    case["driver_import_s"] = float(result["run_start"]) - float(result["process_start"])
    return case


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item)] = counts.get(str(item), 0) + 1
    return counts


async def cancel_case(
    workdir: Path,
    in_flight: int,
    *,
    latency_s: float,
    design: str = "new",
    backend: str = "trio",
    sample_s: float = 1.0,
) -> dict[str, Any]:
    """SIGINT a run with ``in_flight`` sessions running; time until every process is gone.

    The new design runs ``in_flight`` independent stories with ``jobs=in_flight``; the original
    design runs one session at a time, so only ``in_flight=1`` makes sense for it. The signal goes
    to the driver process alone (it runs in a session of its own), as ``kill -INT <pid>`` would:
    the orchestrator itself must stop its CLI processes.
    """
    root = workdir / f"cancel-{design}-{in_flight}-{uuid.uuid4().hex[:8]}"
    epic = make_project(root / "project", in_flight)
    clock, status = RequestClock(), StatusAnswer()
    tag = uuid.uuid4().hex
    out, err = root / "driver.json", root / "driver.stderr"
    case: dict[str, Any] = {
        "design": design,
        "in_flight": in_flight,
        "latency_s": latency_s,
        "backend": backend if design == "new" else "asyncio",
    }
    async with FakeAnthropicAPI(scenario(clock, status, latency_s=latency_s)) as api:
        argv = _driver_argv(design, root / "project", epic, out, jobs=in_flight, backend=backend)
        with err.open("wb") as stderr:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO_ROOT,
                env=_driver_env(api, tag),
                start_new_session=True,
            )
            async with process:
                try:
                    await _cancel(process, api, tag, in_flight, sample_s, case)
                finally:
                    if process.returncode is None:
                        process.kill()
                    with anyio.CancelScope(shield=True):
                        await process.wait()
    case["leftover_killed"] = await anyio.to_thread.run_sync(kill_all, tag, process.pid)
    if "error" in case:
        case["error"] += "\n" + _stderr_tail(err)
    return case


async def _cancel(
    process: anyio.abc.Process,
    api: FakeAnthropicAPI,
    tag: str,
    in_flight: int,
    sample_s: float,
    case: dict[str, Any],
) -> None:
    pid = process.pid
    procs: list[ProcInfo] = []
    with anyio.move_on_after(CANCEL_WAIT_S) as waiting:
        while True:
            procs = await _scan(tag, pid)
            clis = [p for p in procs if p.is_cli]
            if len(clis) >= in_flight and len(api.message_requests) >= in_flight:
                break
            if process.returncode is not None:
                case["error"] = f"the run ended (exit {process.returncode}) before the signal"
                return
            await anyio.sleep(0.05)
    if waiting.cancelled_caught:
        case["error"] = f"never saw {in_flight} sessions in flight"
        return
    # Memory while the sessions run: the CLI processes (and all of the run's processes).
    cli_rss: list[int] = []
    all_rss: list[int] = []
    counts: list[int] = []
    sample_end = anyio.current_time() + sample_s
    while True:
        procs = await _scan(tag, pid)
        clis = [p for p in procs if p.is_cli]
        cli_rss.append(sum(p.rss_kb for p in clis))
        all_rss.append(sum(p.rss_kb for p in procs if p.pid != pid))
        counts.append(len(clis))
        if anyio.current_time() >= sample_end:
            break
        await anyio.sleep(0.2)
    case["cli_processes_sampled"] = counts
    case["cli_rss_max_kb"] = max(cli_rss)
    case["cli_rss_per_session_kb"] = max(r / c for r, c in zip(cli_rss, counts, strict=True) if c)
    case["tagged_rss_max_kb"] = max(all_rss)
    case["processes_at_signal"] = len(procs)
    case["cli_at_signal"] = sum(1 for p in procs if p.is_cli)
    case["model_calls_at_signal"] = len(api.message_requests)
    exited_at: list[float] = []

    async def wait_exit() -> None:
        await process.wait()
        exited_at.append(time.perf_counter())

    sent = time.perf_counter()
    os.kill(pid, signal.SIGINT)
    scans = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_exit)
        with anyio.move_on_after(CANCEL_DEADLINE_S) as deadline:
            while True:
                left = await _scan(tag, pid)
                scans += 1
                if exited_at and not left:
                    break
                await anyio.sleep(0.01)
        clean = time.perf_counter()
        if deadline.cancelled_caught:
            case["error"] = f"processes still running {CANCEL_DEADLINE_S:g} s after SIGINT"
            case["left_after_deadline"] = len(left)
            process.kill()
        tg.cancel_scope.cancel()
    case["returncode"] = process.returncode
    if process.returncode != 130 and "error" not in case:
        case["error"] = f"the driver exited {process.returncode} instead of 130 (interrupted)"
    case["exit_s"] = exited_at[0] - sent if exited_at else None
    case["all_gone_s"] = clean - sent
    case["scans"] = scans


def startup_case(runs: int) -> dict[str, Any]:
    """``bmad-trio --help`` wall time over ``runs`` runs, and a bare ``python -c pass`` baseline."""
    script = Path(sys.executable).parent / "bmad-trio"
    argv = [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "bmad_trio"]
    if not script.is_file():
        argv.append("--help")

    def timed(command: list[str]) -> list[float]:
        times: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )
            times.append(time.perf_counter() - started)
        return times

    help_times = timed(argv)
    baseline = timed([sys.executable, "-c", "pass"])
    return {
        "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv)),
        "runs": runs,
        "help_median_s": statistics.median(help_times),
        "help_min_s": min(help_times),
        "help_max_s": max(help_times),
        "python_baseline_median_s": statistics.median(baseline),
        "help_times_s": help_times,
    }
