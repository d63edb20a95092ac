"""Parallel stories on git worktrees: wall time of an epic at several ``jobs``, against the ideal.

``python -m bench.parallel [--latency 1.5] [--stories 8] [--jobs 1,2,4,8] [--no-original]
[--out DIR] [--images docs/images]``; ``--from-json FILE`` redoes the table and plot.

Runs the real CLI against the scripted server (a model latency per request, close to real use)
through :func:`bench.cases.epic_case`: an epic of independent stories at each ``jobs``, then an
epic of two dependency chains at the largest ``jobs``, then (unless ``--no-original``) the same
independent epic with the seed design re-created (:mod:`bench.original_design`, one story at a
time) for its model requests and request bytes per story. The ideal speed-up at ``jobs = N`` is
``min(N, stories that can run at once)``; the report gives the measured speed-up over ``jobs = 1``
and its ratio to the ideal. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import anyio

from bench.cases import epic_case
from bench.procs import machine_info


async def measure(
    workdir: Path, *, stories: int, jobs: list[int], latency_s: float, original: bool = True
) -> dict[str, Any]:
    """One run per ``jobs`` on independent stories, one on two chains at ``max(jobs)``, and one
    of the seed design when ``original``."""
    rows: list[dict[str, Any]] = []
    for n in jobs:
        case = await epic_case(workdir, "new", stories, jobs=n, latency_s=latency_s)
        rows.append({"epic": "independent", "jobs": n, "width": stories, **_brief(case)})
    chained = await epic_case(
        workdir, "new", stories, jobs=max(jobs), latency_s=latency_s, chains=2
    )
    rows.append({"epic": "two chains", "jobs": max(jobs), "width": 2, **_brief(chained)})
    if original:
        seed = await epic_case(workdir, "original", stories, latency_s=latency_s)
        rows.append({"epic": "seed design", "jobs": 1, "width": 1, **_brief(seed)})
    base = next((r["wall_s"] for r in rows if r["jobs"] == 1 and r.get("wall_s")), None)
    for row in rows:
        if base and row.get("wall_s") and row["epic"] != "seed design":
            ideal = min(row["jobs"], row["width"])
            row["speedup"] = base / row["wall_s"]
            row["ideal"] = ideal
            row["of_ideal"] = row["speedup"] / ideal
    return {"machine": machine_info(), "latency_s": latency_s, "stories": stories, "rows": rows}


def _brief(case: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "wall_s",
        "status",
        "stories_done",
        "sessions",
        "model_calls",
        "model_calls_per_story",
        "request_bytes",
        "request_bytes_per_story",
        "error",
    )
    return {key: case[key] for key in keys if key in case}


def table(result: dict[str, Any]) -> str:
    """The Markdown table docs/performance.md shows."""
    lines = [
        "| epic | jobs | wall | speed-up over jobs 1 | ideal | of ideal | model requests "
        "| requests per story | request kB per story |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        wall = f"{row['wall_s']:.0f} s" if row.get("wall_s") else row.get("error", "?")[:40]
        speedup = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
        of_ideal = f"{row['of_ideal']:.2f}" if "of_ideal" in row else "-"
        per_story = row.get("model_calls_per_story")
        kb = row.get("request_bytes_per_story")
        lines.append(
            f"| {row['epic']} ({result['stories']} stories) | {row['jobs']} | {wall} | {speedup} "
            f"| {row.get('ideal', '-')} | {of_ideal} | {row.get('model_calls', '-')} "
            f"| {f'{per_story:.1f}' if per_story is not None else '-'} "
            f"| {f'{kb / 1000:.0f}' if kb is not None else '-'} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], images: Path) -> list[str]:
    """Render ``perf-parallel.png`` into ``images`` (wall time and speed-up against the ideal);
    returns its path (empty without matplotlib or without a ``jobs = 1`` baseline)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["epic"] == "independent" and "speedup" in r]
    if not rows:
        return []
    jobs = [r["jobs"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(jobs, [r["wall_s"] for r in rows], "o-", label="epic wall time")
    left.set_xscale("log", base=2)
    left.set_xticks(jobs, [str(j) for j in jobs])
    left.set_xlabel("jobs")
    left.set_ylabel("seconds")
    left.set_ylim(bottom=0)
    left.set_title(f"{result['stories']} independent stories")
    right.plot(jobs, [r["speedup"] for r in rows], "o-", label="measured")
    right.plot(jobs, [r["ideal"] for r in rows], "--", label="ideal: min(jobs, stories)")
    right.plot(jobs, [0.8 * r["ideal"] for r in rows], ":", label="0.8 x ideal (goal)")
    for row in rows:
        right.annotate(f"{row['of_ideal']:.2f}", (row["jobs"], row["speedup"]), va="bottom")
    right.set_xscale("log", base=2)
    right.set_xticks(jobs, [str(j) for j in jobs])
    right.set_xlabel("jobs")
    right.set_ylabel("speed-up over jobs 1")
    right.set_title("speed-up (label: fraction of the ideal)")
    right.legend()
    machine = result["machine"]
    load = ", ".join(f"{x:.1f}" for x in machine.get("loadavg_at_start", [])[:1])
    fig.suptitle(
        f"real Claude Code CLI in the OS sandbox, git worktrees, scripted model "
        f"({result['latency_s']:g} s/request) — {machine['nproc']} CPUs, load {load} at the start",
        fontsize=9,
    )
    fig.tight_layout()
    images.mkdir(parents=True, exist_ok=True)
    path = images / "perf-parallel.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parallel")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds per model request")
    parser.add_argument("--stories", type=int, default=8)
    parser.add_argument("--jobs", default="1,2,4,8", help="comma-separated jobs values")
    parser.add_argument(
        "--no-original", action="store_true", help="skip the seed design's run (its requests)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write parallel.json here")
    parser.add_argument(
        "--images", type=Path, default=None, help="render perf-parallel.png here (matplotlib)"
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="redo the table and plot from a parallel.json"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        print(table(result))
        if args.images is not None:
            plot(result, args.images)
        return 0
    jobs = [int(part) for part in args.jobs.split(",") if part]
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as workdir:
        result = anyio.run(
            lambda: measure(
                Path(workdir),
                stories=args.stories,
                jobs=jobs,
                latency_s=args.latency,
                original=not args.no_original,
            )
        )
    print(table(result))
    if args.images is not None:
        plot(result, args.images)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "parallel.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
