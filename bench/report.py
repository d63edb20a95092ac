"""Fits, the Markdown tables and the plots of a bench result (the JSON ``python -m bench`` writes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["fit", "growth", "markdown", "plot"]

GROWTH_METRICS = (
    "wall_s",
    "sessions_sum_s",
    "overhead_s",
    "sessions",
    "model_calls",
    "vmrss_max_kb",
    "ru_maxrss_kb",
    "first_request_after_run_start_s",
)


def fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float | bool | None]:
    """Least-squares line ``y = slope·x + intercept`` and the log-log exponent (y ∝ x^k).

    ``linear_or_better`` is k ≤ 1.1 (a little slack for noise). With two or three sizes this is a
    coarse check, not a model.
    """
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return {"slope": None, "intercept": None, "r2": None, "exponent": None}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    exponent: float | None = None
    if all(x > 0 for x in xs) and all(y > 0 for y in ys):
        lx = [math.log(x) for x in xs]
        ly = [math.log(y) for y in ys]
        mlx, mly = sum(lx) / n, sum(ly) / n
        exponent = sum((a - mlx) * (b - mly) for a, b in zip(lx, ly, strict=True)) / sum(
            (a - mlx) ** 2 for a in lx
        )
    return {
        "slope": slope,
        "intercept": intercept,
        "r2": r2,
        "exponent": exponent,
        "linear_or_better": None if exponent is None else exponent <= 1.1,
    }


def growth(cases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A fit per metric over the sizes of successful new-design runs."""
    ok = sorted((c for c in cases if "error" not in c), key=lambda c: c["stories"])
    out: dict[str, dict[str, Any]] = {}
    for metric in GROWTH_METRICS:
        points = [(float(c["stories"]), float(c[metric])) for c in ok if c.get(metric) is not None]
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        out[metric] = {"stories": xs, "values": ys, **fit(xs, ys)}
    return out


def _f(value: object, digits: int = 2, scale: float = 1.0) -> str:
    if value is None or not isinstance(value, int | float):
        return "—"
    return f"{value * scale:.{digits}f}"


def markdown(data: dict[str, Any]) -> str:
    """The result as Markdown tables (docs/performance.md quotes them)."""
    lines: list[str] = []
    machine = data["machine"]
    params = data["params"]
    lines += [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"claude-agent-sdk {machine['claude_agent_sdk']}, Claude Code CLI {machine['claude_cli']}; "
        f"model latency {params['latency_s']:g} s per request; backend {params['backend']}; "
        f"run {data['timestamp']}.",
        "",
        "**Overhead** (bmad-trio, jobs 1): epic wall time ÷ sum of its sessions' CLI wall times",
        "",
        "| stories | wall s | Σ sessions s | ratio | overhead ms/story | sessions | model calls "
        "| first request after run start s | orchestrator peak RSS MB | ru_maxrss MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in data["new"]:
        if "error" in c:
            lines.append(f"| {c['stories']} | error: {c['error'].splitlines()[0]} |")
            continue
        lines.append(
            f"| {c['stories']} | {_f(c['wall_s'], 1)} | {_f(c['sessions_sum_s'], 1)} "
            f"| {_f(c['overhead_ratio'], 3)} | {_f(c['overhead_per_story_s'], 0, 1000)} "
            f"| {c['sessions']} | {c['model_calls']} "
            f"| {_f(c.get('first_request_after_run_start_s'), 2)} "
            f"| {_f(c['vmrss_max_kb'], 0, 1 / 1024)} | {_f(c['ru_maxrss_kb'], 0, 1 / 1024)} |"
        )
    if data["original"]:
        new_by_size = {c["stories"]: c for c in data["new"] if "error" not in c}
        lines += [
            "",
            "**Against the original design** (same epic, same scripted actor, same latency)",
            "",
            "| stories | design | wall s | wall s/story | sessions/story | model calls/story "
            "| wall ratio original ÷ new |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in data["original"]:
            if "error" in c:
                lines.append(f"| {c['stories']} | original | error: {c['error'].splitlines()[0]} |")
                continue
            new = new_by_size.get(c["stories"])
            for design, case in (("bmad-trio", new), ("original", c)):
                if case is None:
                    continue
                ratio = c["wall_s"] / new["wall_s"] if new and design == "original" else None
                lines.append(
                    f"| {c['stories']} | {design} | {_f(case['wall_s'], 1)} "
                    f"| {_f(case['wall_per_story_s'], 2)} | {_f(case['sessions_per_story'], 1)} "
                    f"| {_f(case['model_calls_per_story'], 1)} | {_f(ratio, 2)} |"
                )
    if data["cancel"]:
        lines += [
            "",
            "**Cancellation**: SIGINT to the orchestrator process → it exited / every process "
            "it started is gone",
            "",
            "| design | sessions in flight | exit s | all processes gone s | exit code "
            "| CLI RSS per session MB | all run processes RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in data["cancel"]:
            design = "bmad-trio" if c["design"] == "new" else "original"
            if "all_gone_s" not in c:
                lines.append(
                    f"| {design} | {c['in_flight']} | error: {c['error'].splitlines()[0]} |"
                )
                continue
            code = str(c["returncode"]) + (" (error)" if "error" in c else "")
            lines.append(
                f"| {design} | {c['in_flight']} | {_f(c['exit_s'], 2)} | {_f(c['all_gone_s'], 2)} "
                f"| {code} | {_f(c['cli_rss_per_session_kb'], 0, 1 / 1024)} "
                f"| {_f(c['tagged_rss_max_kb'], 0, 1 / 1024)} |"
            )
    s = data["startup"]
    lines += [
        "",
        f"**Start-up**: `{s['command']}` median {_f(s['help_median_s'], 3)} s over {s['runs']} runs "
        f"(min {_f(s['help_min_s'], 3)}, max {_f(s['help_max_s'], 3)}); bare `python -c pass` "
        f"{_f(s['python_baseline_median_s'], 3)} s.",
    ]
    if any(g.get("slope") is not None for g in data["growth"].values()):
        lines += [
            "",
            "**Growth with the number of stories** (bmad-trio, least squares over the sizes run)",
            "",
            "| metric | slope per story | intercept | r² | log-log exponent | linear or better |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for metric, g in data["growth"].items():
            if g.get("slope") is None:
                continue
            better = {True: "yes", False: "no", None: "—"}[g.get("linear_or_better")]
            lines.append(
                f"| {metric} | {_f(g['slope'], 4)} | {_f(g['intercept'], 3)} | {_f(g['r2'], 3)} "
                f"| {_f(g['exponent'], 2)} | {better} |"
            )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], images: Path) -> list[str]:
    """Render the PNGs into ``images``; returns their paths (empty without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    new = sorted((c for c in data["new"] if "error" not in c), key=lambda c: c["stories"])
    original = [c for c in data["original"] if "error" not in c]
    title = (
        f"{data['machine']['nproc']} CPUs, model latency {data['params']['latency_s']:g} s/request"
    )

    if new:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        xs = [c["stories"] for c in new]
        left.plot(xs, [c["wall_s"] for c in new], "o-", label="epic wall time")
        left.plot(xs, [c["sessions_sum_s"] for c in new], "s--", label="Σ session CLI wall times")
        g = data["growth"]["wall_s"]
        if g.get("slope") is not None:
            left.plot(
                xs,
                [g["slope"] * x + g["intercept"] for x in xs],
                ":",
                color="gray",
                label=f"linear fit: {g['slope']:.2f} s/story",
            )
        left.set_xlabel("stories in the epic")
        left.set_ylabel("seconds")
        left.set_title("bmad-trio wall time vs its sessions")
        left.legend()
        labels = [str(x) for x in xs]
        right.bar(labels, [c["overhead_ratio"] for c in new], color="tab:blue")
        right.axhline(1.02, color="tab:red", linestyle="--", label="goal ≤ 1.02")
        low = min(0.98, *(c["overhead_ratio"] for c in new))
        right.set_ylim(low, max(1.05, *(c["overhead_ratio"] + 0.01 for c in new)))
        right.set_xlabel("stories in the epic")
        right.set_ylabel("wall ÷ Σ sessions")
        right.set_title("orchestrator overhead ratio")
        right.legend()
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = images / "perf-overhead.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    by_size = {c["stories"]: c for c in new}
    pairs = [(c, by_size[c["stories"]]) for c in original if c["stories"] in by_size]
    if pairs:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        metrics = (
            ("wall_per_story_s", "wall seconds per story"),
            ("model_calls_per_story", "model calls per story"),
            ("sessions_per_story", "CLI sessions per story"),
        )
        width = 0.38
        for ax, (key, label) in zip(axes, metrics, strict=True):
            positions = list(range(len(pairs)))
            ax.bar(
                [p - width / 2 for p in positions],
                [n[key] for _, n in pairs],
                width,
                label="bmad-trio",
                color="tab:blue",
            )
            ax.bar(
                [p + width / 2 for p in positions],
                [o[key] for o, _ in pairs],
                width,
                label="original design",
                color="tab:orange",
            )
            ax.set_xticks(positions, [f"{o['stories']} stories" for o, _ in pairs])
            ax.set_title(label)
        axes[0].legend()
        fig.suptitle(f"same epic, same scripted actor — {title}", fontsize=9)
        fig.tight_layout()
        path = images / "perf-original-vs-new.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    cancels = [c for c in data["cancel"] if "all_gone_s" in c]
    if cancels:
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [
            f"{'bmad-trio' if c['design'] == 'new' else 'original'}\n{c['in_flight']} in flight"
            + (f"\n(exit {c['returncode']})" if "error" in c else "")
            for c in cancels
        ]
        positions = list(range(len(cancels)))
        width = 0.38
        ax.bar(
            [p - width / 2 for p in positions],
            [c["exit_s"] or 0 for c in cancels],
            width,
            label="orchestrator exited",
        )
        ax.bar(
            [p + width / 2 for p in positions],
            [c["all_gone_s"] for c in cancels],
            width,
            label="every process gone",
        )
        ax.set_xticks(positions, labels)
        ax.set_ylabel("seconds after SIGINT")
        ax.set_title("cancellation")
        ax.legend()
        cancel_latency = data["params"].get("cancel_latency_s", 0.0)
        fig.suptitle(
            f"{data['machine']['nproc']} CPUs, model latency {cancel_latency:g} s/request",
            fontsize=9,
        )
        fig.tight_layout()
        path = images / "perf-cancel.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    if new or cancels:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        if new:
            xs = [c["stories"] for c in new]
            left.plot(xs, [c["vmrss_max_kb"] / 1024 for c in new], "o-", label="peak VmRSS")
            left.plot(xs, [c["ru_maxrss_kb"] / 1024 for c in new], "s--", label="ru_maxrss")
            left.set_ylim(bottom=0)
            left.set_xlabel("stories in the epic")
            left.set_ylabel("MB")
            left.set_title("orchestrator process memory (bmad-trio)")
            left.legend()
        new_cancels = [c for c in cancels if c["design"] == "new"]
        if new_cancels:
            right.bar(
                [f"{c['in_flight']} in flight" for c in new_cancels],
                [c["cli_rss_per_session_kb"] / 1024 for c in new_cancels],
                color="tab:green",
            )
            right.set_ylabel("MB per CLI session")
            right.set_title("Claude Code CLI RSS per concurrent session")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = images / "perf-memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report RESULT.json [--images DIR]``: redo the table and plots of a run."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("result", type=Path)
    parser.add_argument("--images", type=Path, default=None, help="also render the PNGs here")
    args = parser.parse_args(argv)
    data: dict[str, Any] = json.loads(args.result.read_text())
    print(markdown(data))
    if args.images is not None:
        for path in plot(data, args.images):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
