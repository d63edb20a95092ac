"""``python -m bench``: run the benchmarks, write the JSON, the Markdown table and the plots.

Examples::

    python -m bench                                   # sizes 1,10,50; original design at 1,10
    python -m bench --sizes 1,10,25 --latency 0.05
    python -m bench --sizes 1 --quick --out /tmp/b    # the smoke run tests/test_bench.py does

A benchmark never asserts a time: it records figures and the machine they were measured on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.cases import REPO_ROOT, cancel_case, epic_case, startup_case
from bench.procs import machine_info
from bench.report import growth, markdown, plot

DEFAULT_OUT = REPO_ROOT / "bench" / "results"
DEFAULT_IMAGES = REPO_ROOT / "docs" / "images"


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
    sizes = args.sizes if args.sizes is not None else ([1] if quick else [1, 10, 50])
    original_sizes = (
        args.original_sizes if args.original_sizes is not None else ([1] if quick else [1, 10])
    )
    cancel = args.cancel if args.cancel is not None else ([1] if quick else [1, 8])
    cancel_original = args.cancel_original if args.cancel_original is not None else not quick
    startup_runs = args.startup_runs or (3 if quick else 10)
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
            "quick": quick,
        },
        "machine": machine_info(),
        "new": [],
        "original": [],
        "cancel": [],
    }
    _log(f"machine: {data['machine']['nproc']} CPUs, {data['machine']['cpu_model']}")
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
