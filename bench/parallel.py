"""Parallel stories on git worktrees: wall time of an epic at several ``jobs``, against the ideal.

``python -m bench.parallel [--latency 1.5] [--stories 8] [--jobs 1,2,4,8] [--out DIR]``

Runs the real CLI against the scripted server (a model latency per request, close to real use)
through :func:`bench.cases.epic_case`: an epic of independent stories at each ``jobs``, then an
epic of two dependency chains at the largest ``jobs``. The ideal speed-up at ``jobs = N`` is
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
    workdir: Path, *, stories: int, jobs: list[int], latency_s: float
) -> dict[str, Any]:
    """One run per ``jobs`` on independent stories, and one on two chains at ``max(jobs)``."""
    rows: list[dict[str, Any]] = []
    for n in jobs:
        case = await epic_case(workdir, "new", stories, jobs=n, latency_s=latency_s)
        rows.append({"epic": "independent", "jobs": n, "width": stories, **_brief(case)})
    chained = await epic_case(
        workdir, "new", stories, jobs=max(jobs), latency_s=latency_s, chains=2
    )
    rows.append({"epic": "two chains", "jobs": max(jobs), "width": 2, **_brief(chained)})
    base = next((r["wall_s"] for r in rows if r["jobs"] == 1 and r.get("wall_s")), None)
    for row in rows:
        if base and row.get("wall_s"):
            ideal = min(row["jobs"], row["width"])
            row["speedup"] = base / row["wall_s"]
            row["ideal"] = ideal
            row["of_ideal"] = row["speedup"] / ideal
    return {"machine": machine_info(), "latency_s": latency_s, "stories": stories, "rows": rows}


def _brief(case: dict[str, Any]) -> dict[str, Any]:
    keys = ("wall_s", "status", "stories_done", "sessions", "model_calls", "error")
    return {key: case[key] for key in keys if key in case}


def table(result: dict[str, Any]) -> str:
    """The Markdown table docs/performance.md shows."""
    lines = [
        "| epic | jobs | wall | speed-up over jobs 1 | ideal | of ideal | model requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        wall = f"{row['wall_s']:.0f} s" if row.get("wall_s") else row.get("error", "?")[:40]
        speedup = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
        of_ideal = f"{row['of_ideal']:.2f}" if "of_ideal" in row else "-"
        lines.append(
            f"| {row['epic']} ({result['stories']} stories) | {row['jobs']} | {wall} | {speedup} "
            f"| {row.get('ideal', '-')} | {of_ideal} | {row.get('model_calls', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parallel")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds per model request")
    parser.add_argument("--stories", type=int, default=8)
    parser.add_argument("--jobs", default="1,2,4,8", help="comma-separated jobs values")
    parser.add_argument("--out", type=Path, default=None, help="write parallel.json here")
    args = parser.parse_args(argv)
    jobs = [int(part) for part in args.jobs.split(",") if part]
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as workdir:
        result = anyio.run(
            lambda: measure(Path(workdir), stories=args.stories, jobs=jobs, latency_s=args.latency)
        )
    print(table(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "parallel.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
