"""Many machines: an epic's wall time with 1, 2, 4 ``bmad-trio worker`` processes, the engine's
overhead per phase, and the memory of a worker.

``python -m bench.distributed [--stories 16] [--workers 1,2,4] [--latency 1.5]
[--local-jobs 1] [--out DIR]``; ``--from-json FILE`` redoes the table from a ``distributed.json``.

Everything runs on this machine: a throwaway PostgreSQL on loopback (tests/distributed/_postgres.py),
a project whose ``origin`` is a bare repository (the shared remote), worker processes with their
own clones (tests/distributed/_cluster.py), the coordinator in this process, and the real Claude
Code CLI against the scripted server playing the BMAD roles with a latency per model request.

1. Wall time of an epic of independent stories (``skip_gates``, ``finish="branch"``) with N
   workers, each ``--jobs 1``, the coordinator's ``jobs`` = N; the clock starts once every worker
   serves (a worker is long-lived; its start-up is reported apart). Speed-up over 1 worker and
   its ratio to the ideal ``min(workers, stories)``.
2. Overhead per phase, from the coordinator's ``events.jsonl`` (see :func:`session_units`): the
   wall time around each agent session minus the session's own ``duration_s``; the same epic with
   the local engine (``--local-jobs``, default ``jobs = 1``) gives the one-machine figure, so the
   engine's own cost per phase is the difference (against the local run with ``jobs`` = workers
   when there is one: it loads the CPUs alike; else ``jobs = 1``). For the distributed runs
   DBOS's tables split it further (see :func:`dbos_split`). A local run with ``jobs > 1`` also
   gets its speed-up over local ``jobs = 1``: what this machine's CPUs allow at all.
3. Memory: peak RSS of each worker process alone and with its children (the CLI sessions),
   sampled with psutil while the epic runs, and the worker's own ``VmHWM`` at the end.

Figures only: nothing here asserts a time. Linux only (``/proc``, the PostgreSQL test server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Generator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import psutil

from bench.cases import REPO_ROOT
from bench.procs import machine_info, vmrss_kb

EPIC_TIMEOUT_S = 3600.0
READY_TIMEOUT_S = 300.0
SAMPLE_S = 0.5
DEAD_AFTER_S = 60.0
"""Generous: on a loaded 2-core machine a 3 s limit could declare a busy worker dead, and a
re-enqueued cycle would be measured twice. Recovery is not what this measures."""
_CLUSTER_DIR = REPO_ROOT / "tests" / "distributed"


def _cluster() -> Any:
    """tests/distributed/_cluster.py (project with a bare remote, worker processes)."""
    if str(_CLUSTER_DIR) not in sys.path:
        sys.path.insert(0, str(_CLUSTER_DIR))
    import _cluster

    return _cluster


def _postgres() -> Any:
    """tests/distributed/_postgres.py (a throwaway PostgreSQL server on loopback)."""
    if str(_CLUSTER_DIR) not in sys.path:
        sys.path.insert(0, str(_CLUSTER_DIR))
    import _postgres

    return _postgres


@contextmanager
def postgres_server() -> Generator[Any]:
    """A PostgreSQL server for the whole bench, stopped (and its files removed) at the end."""
    pg = _postgres()
    bin_dir = pg.find_postgres()
    if bin_dir is None:
        raise SystemExit(
            "PostgreSQL binaries not found: set BMAD_TRIO_PG_BIN or put pg_ctl on PATH"
        )
    run_as = pg.unprivileged_user()
    if pg.running_as_root() and run_as is None:
        raise SystemExit("running as root, and PostgreSQL refuses root: no 'postgres' account")
    # In the system temp dir itself: the unprivileged server must reach it.
    base = Path(tempfile.mkdtemp(prefix="bench-distributed-pg-"))
    server = pg.PostgresServer(bin_dir, base, run_as=run_as)
    try:
        server.start()
        yield server
    finally:
        try:
            if server.running:
                try:
                    server.stop("fast")
                except pg.PostgresError:
                    server.stop("immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)


# -- figures from a run's events and DBOS's tables (pure) -----------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a run's ``events.jsonl`` (empty when it is missing)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def session_units(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per phase that ran an agent session: the wall time around it, its sessions'
    ``duration_s`` and their difference (``overhead_s``).

    Per story, the wall time is cut at each such phase's ``PhaseStarted``: a unit runs from its
    phase's start (the story's ``StoryStarted`` for the first one: queueing, the worker's clone
    and set-up belong to it) to the next session phase's start (the story's ``StoryFinished`` for
    the last one: the final push, the relay and the fetch back belong to it). A phase without a
    session (the code's own approval) folds into the unit before it. So a story's units add up
    to its StoryStarted-to-StoryFinished time exactly.
    """
    by_story: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if "story_id" in event:
            by_story.setdefault(str(event["story_id"]), []).append(event)
    units: list[dict[str, Any]] = []
    for story_id, story_events in by_story.items():
        ordered = sorted(story_events, key=lambda e: float(e["ts"]))
        started = next((e["ts"] for e in ordered if e["type"] == "story_started"), None)
        finished = next((e["ts"] for e in ordered if e["type"] == "story_finished"), None)
        phases: list[dict[str, Any]] = []
        for event in ordered:
            if event["type"] == "phase_started":
                phases.append(
                    {
                        "story_id": story_id,
                        "role": event["role"],
                        "cycle": event["cycle"],
                        "start": float(event["ts"]),
                        "session_s": 0.0,
                        "sessions": 0,
                    }
                )
            elif event["type"] == "session_finished" and phases:
                phases[-1]["session_s"] += float(event["duration_s"])
                phases[-1]["sessions"] += 1
        with_session = [p for p in phases if p["sessions"]]
        if not with_session or finished is None:
            continue  # the story did not end: its last unit has no end
        if started is not None:
            with_session[0]["start"] = min(with_session[0]["start"], float(started))
        ends = [p["start"] for p in with_session[1:]] + [float(finished)]
        for phase, end in zip(with_session, ends, strict=True):
            wall = end - phase["start"]
            units.append(
                {
                    "story_id": story_id,
                    "role": phase["role"],
                    "cycle": phase["cycle"],
                    "sessions": phase["sessions"],
                    "wall_s": wall,
                    "session_s": phase["session_s"],
                    "overhead_s": wall - phase["session_s"],
                }
            )
    return units


def stats(values: list[float]) -> dict[str, float] | None:
    """mean, median, p90, min, max (None for no values); p90 by the inclusive method."""
    if not values:
        return None
    p90 = (
        statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    )
    return {
        "n": float(len(values)),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p90": p90,
        "min": min(values),
        "max": max(values),
    }


def per_phase(units: list[dict[str, Any]]) -> dict[str, Any]:
    """The units' wall, session and overhead statistics."""
    return {
        "units": len(units),
        "wall_s": stats([u["wall_s"] for u in units]),
        "session_s": stats([u["session_s"] for u in units]),
        "overhead_s": stats([u["overhead_s"] for u in units]),
    }


def dbos_split(
    workflows: list[dict[str, Any]], steps: list[dict[str, Any]], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """Where a distributed phase's time goes, from DBOS's tables (times in ms since the epoch)
    and the sessions' events:

    - ``queue_wait_s``: a workflow's ``created_at`` (enqueued) to its ``started_at_epoch_ms``
      (a worker dequeued it);
    - ``step_outside_session_s``: a step (one phase) from its start to its recorded completion,
      minus the durations of the sessions that ended inside it: the worker's fetch and worktree
      reset, ``prepare_run``, the session's set-up, the phase commit, the push, the event writes;
    - ``between_steps_s``: a step's completion to the next step's start (DBOS's checkpoint and
      the workflow's loop), and the workflow's start to its first step;
    - ``after_workflow_s``: the workflow's completion to the coordinator's ``StoryFinished``
      (its poll, the relay, fetching the branch back).
    """
    finished_ts = {
        str(e["story_id"]): float(e["ts"]) for e in events if e["type"] == "story_finished"
    }
    session_ends = [
        (str(e["story_id"]), float(e["ts"]), float(e["duration_s"]))
        for e in events
        if e["type"] == "session_finished"
    ]
    queue_wait: list[float] = []
    outside: list[float] = []
    between: list[float] = []
    after: list[float] = []
    by_workflow: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        by_workflow.setdefault(str(step["workflow_uuid"]), []).append(step)
    for wf in workflows:
        wid = str(wf["workflow_uuid"])
        story_id = wid.split("/", 1)[1] if "/" in wid else wid
        if wf.get("started_at_epoch_ms") is not None:
            queue_wait.append((wf["started_at_epoch_ms"] - wf["created_at"]) / 1000)
        previous_end = wf.get("started_at_epoch_ms")
        for step in sorted(by_workflow.get(wid, []), key=lambda s: s["function_id"]):
            begin, end = step.get("started_at_epoch_ms"), step.get("completed_at_epoch_ms")
            if begin is None or end is None:
                continue
            if previous_end is not None:
                between.append((begin - previous_end) / 1000)
            previous_end = end
            in_step = sum(
                duration
                for sid, ts, duration in session_ends
                if sid == story_id and begin / 1000 <= ts <= end / 1000
            )
            outside.append((end - begin) / 1000 - in_step)
        done = wf.get("completed_at")
        if done is not None and story_id in finished_ts:
            after.append(finished_ts[story_id] - done / 1000)
    return {
        "workflows": len(workflows),
        "steps": len(steps),
        "queue_wait_s": stats(queue_wait),
        "step_outside_session_s": stats(outside),
        "between_steps_s": stats(between),
        "after_workflow_s": stats(after),
    }


def finish_rows(result: dict[str, Any]) -> dict[str, Any]:
    """Add speed-up over 1 worker, the ideal ``min(workers, stories)`` and the ratio to it to each
    distributed row, and the engine's overhead per phase over the local run's; returns ``result``."""
    rows = result["rows"]
    base = next(
        (
            r["wall_s"]
            for r in rows
            if r["engine"] == "dbos" and r["workers"] == 1 and r.get("wall_s")
        ),
        None,
    )
    local = next(
        (r for r in rows if r["engine"] == "local" and r.get("jobs", 1) == 1 and r.get("wall_s")),
        None,
    )
    for row in rows:
        if row["engine"] == "local" and row.get("jobs", 1) > 1 and local and row.get("wall_s"):
            # the same epic on one machine with ``jobs`` sessions at once: what the CPUs allow
            ideal = min(row["jobs"], row["stories"])
            row["speedup"] = local["wall_s"] / row["wall_s"]
            row["ideal"] = ideal
            row["of_ideal"] = row["speedup"] / ideal
        if row["engine"] != "dbos":
            continue
        if base and row.get("wall_s"):
            ideal = min(row["workers"], row["stories"])
            row["speedup"] = base / row["wall_s"]
            row["ideal"] = ideal
            row["of_ideal"] = row["speedup"] / ideal
        # The local run with as many sessions at once shares the CPUs alike; else jobs 1.
        same = next(
            (
                r
                for r in rows
                if r["engine"] == "local" and r.get("jobs", 1) == row["workers"] and r.get("wall_s")
            ),
            local,
        )
        overhead, wall = _mean(row, "overhead_s"), _mean(row, "wall_s")
        reference_overhead = _mean(same, "overhead_s") if same else None
        reference_wall = _mean(same, "wall_s") if same else None
        if same is not None and overhead is not None and reference_overhead is not None:
            row["engine_overhead_per_phase_s"] = overhead - reference_overhead
            row["overhead_reference_local_jobs"] = same.get("jobs", 1)
        if wall is not None and reference_wall is not None:
            row["phase_wall_over_local_s"] = wall - reference_wall
    return result


def _mean(row: dict[str, Any], key: str) -> float | None:
    figure = (row.get("per_phase") or {}).get(key)
    return None if figure is None else float(figure["mean"])


# -- memory -----------------------------------------------------------------------------------


class MemorySampler:
    """Peak RSS of processes (alone, and with their children) sampled every ``SAMPLE_S``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self.own_peak_kb: dict[str, int] = dict.fromkeys(pids, 0)
        self.tree_peak_kb: dict[str, int] = dict.fromkeys(pids, 0)
        self.children_peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self.descendants: dict[int, psutil.Process] = {}
        """Every child seen, by pid (the Process object knows its start time, so a pid reused
        later is never mistaken for it)."""

    def sample(self) -> None:
        for name, pid in self._pids.items():
            try:
                process = psutil.Process(pid)
                own = process.memory_info().rss
                children = process.children(recursive=True)
            except psutil.Error:
                continue
            tree = own
            for child in children:
                self.descendants.setdefault(child.pid, child)
                with suppress(psutil.Error):
                    tree += child.memory_info().rss
            self.own_peak_kb[name] = max(self.own_peak_kb[name], own // 1024)
            self.tree_peak_kb[name] = max(self.tree_peak_kb[name], tree // 1024)
            self.children_peak[name] = max(self.children_peak[name], len(children))
        self.samples += 1

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await anyio.to_thread.run_sync(self.sample)
            await anyio.sleep(SAMPLE_S)


def kill_leftovers(processes: dict[int, psutil.Process]) -> list[str]:
    """SIGKILL those of ``processes`` still running (a worker's children outliving it); returns
    what each was (its command line, shortened)."""
    killed: list[str] = []
    for process in processes.values():
        try:
            if not process.is_running():  # gone, or its pid now belongs to another process
                continue
            what = f"{process.status()}: {' '.join(process.cmdline())[:160]}"
            process.kill()
        except psutil.Error:
            continue
        killed.append(what)
    return killed


# -- the runs ---------------------------------------------------------------------------------


async def _wait_serving(pool: list[Any]) -> None:
    """Until every worker's log says it serves (or one exits: RuntimeError with its log)."""
    while True:
        for worker in pool:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.output()[-3000:]}")
        if all("serving" in worker.output() for worker in pool):
            return
        await anyio.sleep(0.2)


async def _watch(pool: list[Any], errors: list[str], scope: anyio.CancelScope) -> None:
    """A worker that exits during the run ends the measurement with its log."""
    while True:
        for worker in pool:
            if worker.process.poll() is not None:
                errors.append(f"worker {worker.name} exited:\n{worker.output()[-3000:]}")
                scope.cancel()
                return
        await anyio.sleep(0.5)


def _log_lines(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in needles)]


def _dbos_rows(database: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database, row_factory=dict_row, connect_timeout=30) as conn:
        workflows = conn.execute(
            "SELECT workflow_uuid, status, executor_id, created_at, started_at_epoch_ms, "
            "completed_at, recovery_attempts FROM dbos.workflow_status"
        ).fetchall()
        steps = conn.execute(
            "SELECT workflow_uuid, function_id, function_name, started_at_epoch_ms, "
            "completed_at_epoch_ms, error IS NOT NULL AS failed FROM dbos.operation_outputs"
        ).fetchall()
    return [dict(w) for w in workflows], [dict(s) for s in steps]


def _report_figures(report: Any, project: Path) -> dict[str, Any]:
    from bmad_trio._state._paths import run_dir

    events = read_events(run_dir(project, report.run_id) / "events.jsonl")
    units = session_units(events)
    return {
        "status": report.status,
        "stories_done": sum(1 for s in report.stories if s.status == "done"),
        "story_statuses": sorted({s.status for s in report.stories}),
        "sessions": sum(1 for e in events if e["type"] == "session_finished"),
        "per_phase": per_phase(units),
        "per_phase_by_role": {
            role: per_phase([u for u in units if u["role"] == role])
            for role in sorted({u["role"] for u in units})
        },
        "_events": events,
    }


async def dbos_case(
    workdir: Path, server: Any, *, stories: int, workers: int, latency_s: float
) -> dict[str, Any]:
    """The epic on ``workers`` worker processes (each ``--jobs 1``)."""
    from bmad_trio import ClaudeAgentRunner, RunConfig, run_epic
    from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

    cluster = _cluster()
    root = workdir / f"dbos-{workers}w-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    project, epic, remote = cluster.project_with_remote(root, stories)
    database = server.create_database(f"bench_{workers}w_{uuid.uuid4().hex[:8]}")
    config = RunConfig(
        epic=epic,
        project=project,
        jobs=workers,
        skip_gates=True,
        finish="branch",
        engine="dbos",
        database=database,
        session_timeout=900.0,
        idle_timeout=600.0,
    )
    case: dict[str, Any] = {"engine": "dbos", "workers": workers, "stories": stories}
    pool: list[Any] = []
    sampler: MemorySampler | None = None
    report = None
    errors: list[str] = []
    async with FakeAnthropicAPI(bmad_actor_scenario(latency_s=latency_s)) as api:
        try:
            spawned = time.perf_counter()
            for n in range(1, workers + 1):
                pool.append(
                    cluster.Worker(
                        f"w{n}",
                        root / "workers",
                        database,
                        remote,
                        api.env(),
                        jobs=1,
                        dead_after_s=DEAD_AFTER_S,
                    )
                )
            with anyio.fail_after(READY_TIMEOUT_S):
                await _wait_serving(pool)
            case["workers_ready_s"] = time.perf_counter() - spawned
            sampler = MemorySampler({w.name: w.process.pid for w in pool})
            async with (
                ClaudeAgentRunner(env=api.env()) as runner,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(sampler.run)
                tg.start_soon(_watch, pool, errors, tg.cancel_scope)
                started = time.perf_counter()
                with anyio.move_on_after(EPIC_TIMEOUT_S):
                    report = await run_epic(config, runner=runner)
                case["wall_s"] = time.perf_counter() - started
                tg.cancel_scope.cancel()
            case["model_calls"] = len(api.message_requests)
            case["worker_vmhwm_kb"] = {w.name: _vmhwm_kb(w.process.pid) for w in pool}
        finally:
            # Bounded: close() waits 60 s for a worker's Ctrl-C exit, then SIGKILLs it.
            with anyio.CancelScope(shield=True):
                for worker in pool:
                    await anyio.to_thread.run_sync(worker.close)
                if sampler is not None:
                    case["leftovers_killed"] = kill_leftovers(sampler.descendants)
    case["worker_exit_codes"] = {w.name: w.process.returncode for w in pool}
    if sampler is not None:
        case["memory"] = {
            "samples": sampler.samples,
            "worker_own_peak_kb": sampler.own_peak_kb,
            "worker_with_children_peak_kb": sampler.tree_peak_kb,
            "worker_children_peak": sampler.children_peak,
        }
    logs = {w.name: w.output() for w in pool}
    case["worker_warnings"] = {
        name: _log_lines(text, "WARNING", "ERROR", "Traceback")[:20] for name, text in logs.items()
    }
    if report is None:
        case["error"] = "\n".join(errors) or f"no report within {EPIC_TIMEOUT_S:g} s"
        return case
    figures = _report_figures(report, project)
    events = figures.pop("_events")
    case.update(figures)
    if report.failure_reason:
        case["failure_reason"] = report.failure_reason
    try:
        workflows, steps = await anyio.to_thread.run_sync(_dbos_rows, database)
    except Exception as exc:  # the DBOS schema moved: the other figures stand
        case["dbos_error"] = repr(exc)
    else:
        case["dbos"] = dbos_split(workflows, steps, events)
        case["dbos"]["statuses"] = sorted({str(w["status"]) for w in workflows})
        case["dbos"]["recovery_attempts_max"] = max(
            (int(w["recovery_attempts"] or 0) for w in workflows), default=0
        )
        case["dbos"]["failed_steps"] = sum(1 for s in steps if s["failed"])
        case["cycles_by_worker"] = _count(str(w["executor_id"]) for w in workflows)
    return case


async def local_case(
    workdir: Path, *, stories: int, latency_s: float, jobs: int = 1
) -> dict[str, Any]:
    """The same epic with the local engine and ``jobs``."""
    from bmad_trio import ClaudeAgentRunner, RunConfig, run_epic
    from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

    root = workdir / f"local-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    project, epic, _remote = _cluster().project_with_remote(root, stories)
    config = RunConfig(
        epic=epic,
        project=project,
        jobs=jobs,
        skip_gates=True,
        finish="branch",
        session_timeout=900.0,
        idle_timeout=600.0,
    )
    case: dict[str, Any] = {"engine": "local", "workers": 0, "jobs": jobs, "stories": stories}
    sampler = MemorySampler({"bench": os.getpid()})
    async with (
        FakeAnthropicAPI(bmad_actor_scenario(latency_s=latency_s)) as api,
        ClaudeAgentRunner(env=api.env()) as runner,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(sampler.run)
        started = time.perf_counter()
        report = None
        with anyio.move_on_after(EPIC_TIMEOUT_S):
            report = await run_epic(config, runner=runner)
        case["wall_s"] = time.perf_counter() - started
        case["model_calls"] = len(api.message_requests)
        tg.cancel_scope.cancel()
    # The bench process holds the scripted server too: only its children (the CLIs) compare.
    case["memory"] = {
        "samples": sampler.samples,
        "children_peak": sampler.children_peak["bench"],
        "bench_process_with_children_peak_kb": sampler.tree_peak_kb["bench"],
        "bench_process_peak_kb": sampler.own_peak_kb["bench"],
    }
    if report is None:
        case["error"] = f"no report within {EPIC_TIMEOUT_S:g} s"
        return case
    figures = _report_figures(report, project)
    figures.pop("_events")
    case.update(figures)
    return case


def _vmhwm_kb(pid: int) -> int:
    """A process's own peak RSS (``VmHWM``) in kB, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


async def measure(
    workdir: Path,
    *,
    stories: int,
    workers: list[int],
    latency_s: float,
    local_jobs: tuple[int, ...] = (1,),
) -> dict[str, Any]:
    """One distributed run per worker count, then one local run per ``local_jobs``."""
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    with postgres_server() if workers else _no_server() as server:
        for n in workers:
            try:
                row = await _with_load(
                    dbos_case(workdir, server, stories=stories, workers=n, latency_s=latency_s)
                )
            except Exception as exc:  # one case failing leaves the others' figures
                row = {"engine": "dbos", "workers": n, "stories": stories, "error": repr(exc)}
            rows.append(row)
            print(f"[bench.distributed] {n} worker(s): {_short(row)}", file=sys.stderr)
    for jobs in local_jobs:
        try:
            row = await _with_load(
                local_case(workdir, stories=stories, latency_s=latency_s, jobs=jobs)
            )
        except Exception as exc:
            row = {"engine": "local", "workers": 0, "jobs": jobs, "stories": stories}
            row["error"] = repr(exc)
        rows.append(row)
        print(f"[bench.distributed] local, jobs {jobs}: {_short(row)}", file=sys.stderr)
    machine["loadavg_at_end"] = list(os.getloadavg())
    machine["bench_vmrss_kb_at_end"] = vmrss_kb()
    result = {"machine": machine, "latency_s": latency_s, "stories": stories, "rows": rows}
    return finish_rows(result)


@contextmanager
def _no_server() -> Generator[None]:
    yield None


async def _with_load(case: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """The case's figures, with the load average before and after it (the machine is shared)."""
    before = list(os.getloadavg())
    row = await case
    row["loadavg_before"] = before
    row["loadavg_after"] = list(os.getloadavg())
    return row


def _short(row: dict[str, Any]) -> str:
    if "error" in row:
        return "error: " + row["error"].splitlines()[0]
    return (
        f"{row.get('wall_s', 0):.0f} s, {row.get('stories_done')} done, status {row.get('status')}"
    )


# -- report -----------------------------------------------------------------------------------


def _s(figure: dict[str, float] | None, key: str, digits: int = 1) -> str:
    return "-" if figure is None else f"{figure[key]:.{digits}f}"


def _engine(row: dict[str, Any]) -> str:
    return "dbos" if row["engine"] == "dbos" else f"local (jobs {row.get('jobs', 1)})"


def _overhead_cell(row: dict[str, Any]) -> str:
    extra = row.get("engine_overhead_per_phase_s")
    if extra is None:
        return "-"
    return f"{extra:+.2f} (jobs {row.get('overhead_reference_local_jobs', 1)})"


def table(result: dict[str, Any]) -> str:
    """The Markdown tables: wall time and speed-up, per-phase time, memory per worker."""
    stories = result["stories"]
    lines = [
        f"Epic of {stories} independent stories, scripted model {result['latency_s']:g} s/request, "
        "skip_gates, finish=branch.",
        "",
        "| engine | workers | wall | stories done | sessions | speed-up over 1 worker "
        "(local: over jobs 1) | ideal | of ideal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        engine = _engine(row)
        workers = row["workers"] if row["engine"] == "dbos" else "-"
        wall = f"{row['wall_s']:.0f} s" if row.get("wall_s") and "error" not in row else "error"
        speedup = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
        of_ideal = f"{row['of_ideal']:.2f}" if "of_ideal" in row else "-"
        lines.append(
            f"| {engine} | {workers} | {wall} | {row.get('stories_done', '-')}/{stories} "
            f"| {row.get('sessions', '-')} | {speedup} | {row.get('ideal', '-')} | {of_ideal} |"
        )
    lines += [
        "",
        "Per phase (one agent session and the time around it, from the coordinator's "
        "events.jsonl), seconds:",
        "",
        "| engine | workers | phases | wall mean | wall p90 | session mean | outside session mean "
        "| outside p90 | engine overhead (mean, over local at jobs = workers, else jobs 1) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        phase = row.get("per_phase")
        if not phase:
            continue
        engine = _engine(row)
        workers = row["workers"] if row["engine"] == "dbos" else "-"
        lines.append(
            f"| {engine} | {workers} | {phase['units']} | {_s(phase['wall_s'], 'mean')} "
            f"| {_s(phase['wall_s'], 'p90')} | {_s(phase['session_s'], 'mean')} "
            f"| {_s(phase['overhead_s'], 'mean', 2)} | {_s(phase['overhead_s'], 'p90', 2)} "
            f"| {_overhead_cell(row)} |"
        )
    dbos_rows = [r for r in result["rows"] if r.get("dbos")]
    if dbos_rows:
        lines += [
            "",
            "Distributed phases split by DBOS's tables (mean / p90 seconds):",
            "",
            "| workers | queue wait | step outside session | between steps (checkpoint) "
            "| workflow end to StoryFinished |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in dbos_rows:
            d = row["dbos"]
            cells = [
                f"{_s(d[k], 'mean', 2)} / {_s(d[k], 'p90', 2)}"
                for k in (
                    "queue_wait_s",
                    "step_outside_session_s",
                    "between_steps_s",
                    "after_workflow_s",
                )
            ]
            lines.append(f"| {row['workers']} | " + " | ".join(cells) + " |")
    mem_rows = [r for r in result["rows"] if r["engine"] == "dbos" and r.get("memory")]
    if mem_rows:
        lines += [
            "",
            "Memory per worker (peak RSS, MB):",
            "",
            "| workers | worker process alone (sampled max) | VmHWM max | with its CLI children "
            "(max) |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for row in mem_rows:
            mem = row["memory"]
            own = max(mem["worker_own_peak_kb"].values(), default=0)
            tree = max(mem["worker_with_children_peak_kb"].values(), default=0)
            hwm = max((row.get("worker_vmhwm_kb") or {}).values(), default=0)
            lines.append(
                f"| {row['workers']} | {own / 1024:.0f} | {hwm / 1024:.0f} | {tree / 1024:.0f} |"
            )
    machine = result["machine"]
    start = machine.get("loadavg_at_start", [])
    end = machine.get("loadavg_at_end", [])
    lines += [
        "",
        f"{machine.get('nproc')} CPUs ({machine.get('cpu_model')}); load average "
        f"{' '.join(f'{x:.2f}' for x in start)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in end)} at the end.",
    ]
    for row in result["rows"]:
        if "loadavg_before" in row and row.get("separate_run"):
            lines.append(
                f"{_engine(row)} ran separately: load average "
                f"{' '.join(f'{x:.2f}' for x in row['loadavg_before'])} before, "
                f"{' '.join(f'{x:.2f}' for x in row['loadavg_after'])} after."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds per model request")
    parser.add_argument("--stories", type=int, default=16)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument(
        "--local-jobs",
        default="1",
        help="comma-separated jobs of the local engine's runs of the same epic ('' for none)",
    )
    parser.add_argument("--backend", default="trio", choices=("trio", "asyncio"))
    parser.add_argument("--out", type=Path, default=None, help="write distributed.json here")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="redo the table from a distributed.json"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        print(table(finish_rows(json.loads(args.from_json.read_text()))))
        return 0
    workers = [int(part) for part in args.workers.split(",") if part]
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as workdir:
        result = anyio.run(
            lambda: measure(
                Path(workdir),
                stories=args.stories,
                workers=workers,
                latency_s=args.latency,
                local_jobs=tuple(int(part) for part in args.local_jobs.split(",") if part),
            ),
            backend=args.backend,
        )
    result["backend"] = args.backend
    print(table(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "distributed.json"
        temp = target.with_suffix(".json.tmp")
        temp.write_text(json.dumps(result, indent=2))
        os.replace(temp, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
