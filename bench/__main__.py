"""``python -m bench``: run the benchmarks, write the JSON, the Markdown table and the plots.

Examples::

    python -m bench                                   # sizes 1,10,50; original design at 1,10
    python -m bench --sizes 1,10,25 --latency 0.05
    python -m bench --sizes 1 --quick --out /tmp/b    # the smoke run tests/test_bench.py does
    python -m bench --only server,floor               # the scripted server alone, session floor
    python -m bench --only boundary,session-cancel    # runner vs plain query(), cancel-to-gone

A benchmark never asserts a time: it records figures and the machine they were measured on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.boundary import boundary_case, cancel_boundary_case
from bench.cases import REPO_ROOT, cancel_case, epic_case, startup_case
from bench.procs import machine_info
from bench.report import growth, markdown, plot
from bench.server import floor_case, server_case

DEFAULT_OUT = REPO_ROOT / "bench" / "results"
DEFAULT_IMAGES = REPO_ROOT / "docs" / "images"
PARTS = (
    "startup",
    "epics",
    "original",
    "cancel",
    "server",
    "floor",
    "boundary",
    "session-cancel",
)
"""What ``--only`` selects from (all by default)."""
WHERE = ("in-process", "subprocess")


def _sizes(text: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be >= 1")
    return sizes


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}"
        )
    return parts


def _where(text: str) -> list[str]:
    where = [part.strip() for part in text.split(",") if part.strip()]
    if not where or any(part not in WHERE for part in where):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(WHERE)}")
    return where


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark bmad-trio with the real Claude Code CLI against the scripted model.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="epic sizes in stories, 'none' to skip (default 1,10,50)",
    )
    parser.add_argument(
        "--original-sizes",
        type=_sizes,
        default=None,
        help="sizes for the original design, 'none' to skip (default 1,10; quick: 1)",
    )
    parser.add_argument(
        "--cancel",
        type=_sizes,
        default=None,
        help="sessions in flight for the cancellation runs, 'none' to skip (default 1,8; quick: 1)",
    )
    parser.add_argument(
        "--cancel-original",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also cancel the original design with 1 session in flight (default on; quick: off)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.05, help="model latency per request, s (0.05)"
    )
    parser.add_argument(
        "--cancel-latency",
        type=float,
        default=2.0,
        help="model latency in the cancellation runs, so sessions are mid-request (2.0)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="bmad-trio --jobs for the epic runs")
    parser.add_argument("--backend", choices=("trio", "asyncio"), default="trio")
    parser.add_argument(
        "--startup-runs", type=int, default=None, help="runs of `bmad-trio --help` (10; quick: 3)"
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=None,
        metavar="PARTS",
        help=f"run only these parts, comma-separated (default all: {','.join(PARTS)})",
    )
    server = parser.add_argument_group("the scripted server alone, and the session floor")
    server.add_argument(
        "--server-requests",
        type=_count,
        default=None,
        help="timed requests per server case, 0 to skip (2000; quick: 100)",
    )
    server.add_argument(
        "--server-concurrency",
        type=_sizes,
        default=None,
        help="concurrent client connections (default 1,8; quick: 1,8)",
    )
    server.add_argument(
        "--server-where",
        type=_where,
        default=None,
        help="in-process (same event loop), subprocess (bmad-trio fake-api); default both",
    )
    server.add_argument(
        "--floor-sessions",
        type=_count,
        default=None,
        help="one-turn sessions with plain query(), 0 to skip (20; quick: 2)",
    )
    boundary = parser.add_argument_group("the agent boundary: ClaudeAgentRunner vs plain query()")
    boundary.add_argument(
        "--boundary-pairs",
        type=_count,
        default=None,
        help="interleaved runner/plain session pairs, 0 to skip (20; quick: 2)",
    )
    boundary.add_argument(
        "--session-cancel-trials",
        type=_count,
        default=None,
        help="cancel-to-gone trials with run_session, 0 to skip (10; quick: 1)",
    )
    boundary.add_argument(
        "--sdk-cancel-trials",
        type=_count,
        default=None,
        help="the same with plain query(), per variant (scope cancel, break), 0 to skip (3; quick: 1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: fewer runs and cases (see the defaults)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory (bench/results)")
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="where the PNGs go (docs/images; with --out: OUT/images)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    return parser


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run_cases(args: argparse.Namespace, workdir: Path, data: dict[str, Any]) -> None:
    params = data["params"]
    for size in params["sizes"]:
        _log(f"bmad-trio: epic of {size} stories")
        case = await epic_case(
            workdir,
            "new",
            size,
            jobs=args.jobs,
            latency_s=args.latency,
            backend=args.backend,
        )
        data["new"].append(case)
        _log(_summary(case))
    for size in params["original_sizes"]:
        _log(f"original design: epic of {size} stories")
        case = await epic_case(workdir, "original", size, latency_s=args.latency)
        data["original"].append(case)
        _log(_summary(case))
    for in_flight in params["cancel"]:
        _log(f"bmad-trio: SIGINT with {in_flight} session(s) in flight")
        case = await cancel_case(
            workdir, in_flight, latency_s=args.cancel_latency, backend=args.backend
        )
        data["cancel"].append(case)
        _log(_cancel_summary(case))
    if params["cancel_original"]:
        _log("original design: SIGINT with 1 session in flight")
        case = await cancel_case(workdir, 1, latency_s=args.cancel_latency, design="original")
        data["cancel"].append(case)
        _log(_cancel_summary(case))
    await _run_new_parts(workdir, data)


async def _run_new_parts(workdir: Path, data: dict[str, Any]) -> None:
    params = data["params"]
    if params["server_requests"]:
        _log(
            f"scripted server alone: {params['server_requests']} requests per case, "
            f"concurrency {params['server_concurrency']}, {'/'.join(params['server_where'])}"
        )
        load = list(os.getloadavg())
        rows = await server_case(
            workdir,
            requests=params["server_requests"],
            concurrencies=params["server_concurrency"],
            where=params["server_where"],
        )
        for row in rows:
            row["loadavg_before"] = load
            _log(
                f"  {row['where']} {'stream' if row['stream'] else 'plain'} "
                f"c={row['concurrency']}: {row['rps']:.0f} req/s, "
                f"p50 {row['latency_ms']['median']:.2f} ms, errors {row['errors']}"
            )
        data["server"] = rows
    if params["floor_sessions"]:
        _log(f"session floor: {params['floor_sessions']} one-turn sessions with plain query()")
        load = list(os.getloadavg())
        floor = await floor_case(workdir, params["floor_sessions"])
        floor["loadavg_before"] = load
        floor["loadavg_after"] = list(os.getloadavg())
        data["floor"] = floor
        _log(
            f"  to ResultMessage median {_s(floor['to_result_s']['median'])}, "
            f"to end median {_s(floor['to_end_s']['median'])}, errors {len(floor['errors'])}"
        )
    if params["boundary_pairs"]:
        _log(f"agent boundary: {params['boundary_pairs']} runner/plain pairs, interleaved")
        load = list(os.getloadavg())
        ab = await boundary_case(workdir, params["boundary_pairs"])
        ab["loadavg_before"] = load
        ab["loadavg_after"] = list(os.getloadavg())
        data["boundary"] = ab
        _log(
            f"  runner median {_s(ab['runner_s']['median'])}, plain median "
            f"{_s(ab['plain_s']['median'])}, ratio {ab['ratio_of_medians'] or 0:.3f}, "
            f"failures {ab['failures']}"
        )
    if params["session_cancel_trials"] or params["sdk_cancel_trials"]:
        _log(
            f"cancel-to-gone: {params['session_cancel_trials']} runner trials, "
            f"{params['sdk_cancel_trials']} plain query() trials per variant"
        )
        load = list(os.getloadavg())
        cancel = await cancel_boundary_case(
            workdir, params["session_cancel_trials"], sdk_trials=params["sdk_cancel_trials"]
        )
        cancel["loadavg_before"] = load
        cancel["loadavg_after"] = list(os.getloadavg())
        data["session_cancel"] = cancel
        for key in ("runner", "sdk_cancel", "sdk_break"):
            part = cancel[key]
            if part["trials"]:
                _log(
                    f"  {key}: returned median {_s(part['returned_s']['median'])}, all gone "
                    f"median {_s(part['gone_s']['median'])}, capped {part['capped']}, "
                    f"errors {len(part['errors'])}"
                )


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _new_part_failures(data: dict[str, Any]) -> list[str]:
    """What went wrong in the server / floor / boundary parts (a figure missing, not a time)."""
    failed = [
        f"server {row['where']} stream={row['stream']} c={row['concurrency']}"
        for row in data["server"]
        if row["errors"]
    ]
    if data["floor"] and data["floor"]["errors"]:
        failed.append("floor")
    if data["boundary"] and any(data["boundary"]["failures"].values()):
        failed.append("boundary")
    cancel = data["session_cancel"]
    if cancel:
        failed += [
            f"session-cancel {key}"
            for key in cancel
            if isinstance(cancel[key], dict) and cancel[key].get("errors")
        ]
    return failed


def _summary(case: dict[str, Any]) -> str:
    if "error" in case:
        return f"  error: {case['error']}"
    return (
        f"  wall {case['wall_s']:.1f} s, Σ sessions {case['sessions_sum_s']:.1f} s, "
        f"ratio {case['overhead_ratio']:.3f}, {case['sessions']} sessions, "
        f"{case['model_calls']} model calls, status {case['status']}"
    )


def _cancel_summary(case: dict[str, Any]) -> str:
    if "error" in case:
        return f"  error: {case['error']}"
    return (
        f"  exited after {case['exit_s']:.2f} s (code {case['returncode']}), "
        f"all processes gone after {case['all_gone_s']:.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quick = args.quick
    parts = set(args.only or PARTS)

    def pick(part: str, given: Any, default: Any, quick_default: Any) -> Any:
        if part not in parts:
            return type(default)()  # [] or 0: skipped
        if given is not None:
            return given
        return quick_default if quick else default

    sizes = pick("epics", args.sizes, [1, 10, 50], [1])
    original_sizes = pick("original", args.original_sizes, [1, 10], [1])
    cancel = pick("cancel", args.cancel, [1, 8], [1])
    cancel_original = "cancel" in parts and (
        args.cancel_original if args.cancel_original is not None else not quick
    )
    startup_runs = pick("startup", args.startup_runs or None, 10, 3)
    server_requests = pick("server", args.server_requests, 2000, 100)
    server_concurrency = args.server_concurrency or [1, 8]
    server_where = args.server_where or list(WHERE)
    floor_sessions = pick("floor", args.floor_sessions, 20, 2)
    boundary_pairs = pick("boundary", args.boundary_pairs, 20, 2)
    session_cancel_trials = pick("session-cancel", args.session_cancel_trials, 10, 1)
    sdk_cancel_trials = pick("session-cancel", args.sdk_cancel_trials, 3, 1)
    out: Path = args.out or DEFAULT_OUT
    images: Path = args.images or (out / "images" if args.out else DEFAULT_IMAGES)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    data: dict[str, Any] = {
        "timestamp": stamp,
        "params": {
            "sizes": sizes,
            "original_sizes": original_sizes,
            "cancel": cancel,
            "cancel_original": cancel_original,
            "latency_s": args.latency,
            "cancel_latency_s": args.cancel_latency,
            "jobs": args.jobs,
            "backend": args.backend,
            "startup_runs": startup_runs,
            "server_requests": server_requests,
            "server_concurrency": server_concurrency,
            "server_where": server_where,
            "floor_sessions": floor_sessions,
            "boundary_pairs": boundary_pairs,
            "session_cancel_trials": session_cancel_trials,
            "sdk_cancel_trials": sdk_cancel_trials,
            "parts": [part for part in PARTS if part in parts],
            "quick": quick,
        },
        "machine": machine_info(),
        "new": [],
        "original": [],
        "cancel": [],
        "startup": None,
        "server": [],
        "floor": None,
        "boundary": None,
        "session_cancel": None,
    }
    # The SDK logs "Fatal error in message reader" at ERROR whenever a CLI is killed, which the
    # cancellation runs do on purpose; keep that off the bench's output.
    logging.getLogger("claude_agent_sdk").setLevel(logging.CRITICAL)
    _log(f"machine: {data['machine']['nproc']} CPUs, {data['machine']['cpu_model']}")
    _log(f"load average: {' '.join(f'{x:.2f}' for x in data['machine']['loadavg_at_start'])}")
    if startup_runs:
        _log(f"start-up: {startup_runs} runs of bmad-trio --help")
        data["startup"] = startup_case(startup_runs)
    with tempfile.TemporaryDirectory(prefix="bmad-trio-bench-") as tmp:
        anyio.run(_run_cases, args, Path(tmp), data, backend="trio")
    data["growth"] = growth(data["new"])
    data["bench_wall_s"] = time.perf_counter() - started
    data["machine"]["loadavg_at_end"] = list(os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / f"{stamp}.json"
    table = markdown(data)
    data["plots"] = [] if args.no_plots else plot(data, images)
    result_path.write_text(json.dumps(data, indent=2))
    (out / f"{stamp}.md").write_text(table)
    print(table)
    _log(f"wrote {result_path} ({data['bench_wall_s']:.0f} s)")
    for path in data["plots"]:
        _log(f"wrote {path}")
    failed = [c for group in ("new", "original", "cancel") for c in data[group] if "error" in c]
    new_failed = _new_part_failures(data)
    if new_failed:
        _log(f"failed: {', '.join(new_failed)}")
    return 1 if failed or new_failed else 0


if __name__ == "__main__":
    sys.exit(main())
