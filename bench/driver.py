"""The orchestrator under test, one process per measurement: ``python -m bench.driver ...``.

``--design new`` runs :func:`bmad_trio.run_epic` with a :class:`bmad_trio.ClaudeAgentRunner` (jobs,
backend and quality gates as given); ``--design original`` runs :mod:`bench.original_design`. The
model server runs in the parent (``ANTHROPIC_BASE_URL`` and friends come from the environment).

No signal handler of its own is installed: SIGINT becomes KeyboardInterrupt (through ``anyio.run`` for the new
design, ``asyncio.run`` for the original); the process then exits 130. On a normal end it writes a
JSON file (``--out``) with the run's wall time, its sessions, and the process's memory: ``ru_maxrss``
and ``/proc/self/status`` VmRSS sampled every 50 ms by a thread.
"""

from __future__ import annotations

import time

PROCESS_START = time.time()  # before the heavy imports below

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.procs import vmrss_kb  # noqa: E402

ENV_KEYS = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
)


class RssSampler:
    """Samples this process's VmRSS every ``interval_s`` in a daemon thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(vmrss_kb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        samples = self.samples or [0]
        return {
            "vmrss_max_kb": max(samples),
            "vmrss_mean_kb": sum(samples) / len(samples),
            "vmrss_samples": len(samples),
        }


def _cli_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ENV_KEYS if key in os.environ}


async def _run_new(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from bmad_trio import ClaudeAgentRunner, RunConfig, run_epic
    from bmad_trio._state._store import open_store

    config = RunConfig(
        epic=Path(args.epic),
        project=Path(args.project),
        jobs=args.jobs,
        skip_gates=True,
        backend=args.backend,
        max_cycles=args.max_cycles,
    )
    async with ClaudeAgentRunner(env=_cli_env()) as runner:
        result["run_start"] = time.time()
        started = time.perf_counter()
        report = await run_epic(config, runner=runner)
        result["wall_s"] = time.perf_counter() - started
        result["run_end"] = time.time()
    async with open_store(Path(args.project)) as store:
        rows = await store.sessions(report.run_id)
    result["status"] = report.status
    result["stories_done"] = sum(1 for s in report.stories if s.status == "done")
    result["stories"] = len(report.stories)
    result["sessions"] = [
        {
            "story": row.story_id,
            "role": row.role,
            "outcome": row.outcome,
            "duration_s": row.duration_s,
            "started_at": row.started_at,
            "turns": row.turns,
        }
        for row in rows
    ]
    result["report_story_duration_s"] = sum(s.duration_s for s in report.stories)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.driver")
    parser.add_argument("--design", choices=("new", "original"), default="new")
    parser.add_argument("--project", required=True)
    parser.add_argument("--epic", required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--backend", choices=("trio", "asyncio"), default="trio")
    parser.add_argument("--max-cycles", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "design": args.design,
        "pid": os.getpid(),
        "process_start": PROCESS_START,
        "backend": args.backend if args.design == "new" else "asyncio",
        "jobs": args.jobs if args.design == "new" else 1,
    }
    result["vmrss_before_run_kb"] = vmrss_kb()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell without job control starts background jobs with SIGINT ignored, and Python then
        # keeps it ignored. Put back what an interactive ``python`` has (KeyboardInterrupt).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        result["sigint_was_ignored"] = True
    try:
        with RssSampler() as sampler:
            if args.design == "new":
                import anyio

                anyio.run(_run_new, args, result, backend=args.backend)
            else:
                from bench.original_design import run_original

                run_original(
                    Path(args.project), Path(args.epic), _cli_env(), result, args.max_cycles
                )
    except KeyboardInterrupt:
        return 130
    result.update(sampler.summary())
    result["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
