"""Fits, the Markdown tables and the plots of a bench result (the JSON ``python -m bench`` writes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

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
        + (
            f"model latency {params['latency_s']:g} s per request; backend {params['backend']}; "
            if data["new"] or data["original"] or data["cancel"]
            else "trio backend in the bench process; "
        )
        + f"run {data['timestamp']}.",
    ]
    if "loadavg_at_end" in machine:
        lines[-1] += (
            f" Load average {_load(machine.get('loadavg_at_start'))} at the start, "
            f"{_load(machine.get('loadavg_at_end'))} at the end."
        )
    if data["new"]:
        lines += [
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
    s = data.get("startup")
    if s:
        lines += [
            "",
            f"**Start-up**: `{s['command']}` median {_f(s['help_median_s'], 3)} s over "
            f"{s['runs']} runs (min {_f(s['help_min_s'], 3)}, max {_f(s['help_max_s'], 3)}); "
            f"bare `python -c pass` {_f(s['python_baseline_median_s'], 3)} s.",
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
    lines += _server_markdown(data)
    lines += _boundary_markdown(data)
    return "\n".join(lines) + "\n"


def _load(values: Any) -> str:
    if not isinstance(values, list) or not values:
        return "—"
    return " / ".join(f"{float(v):.2f}" for v in cast(list[float], values))


def _server_markdown(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rows = data.get("server") or []
    if rows:
        lines += [
            "",
            "**The scripted server alone**: `POST /v1/messages` with a small text reply, "
            "httpx.AsyncClient with keep-alive, loopback, no model latency",
            "",
            "| server | response | concurrency | requests | req/s | latency p50 ms | p90 ms "
            "| p99 ms | CPU ms/request | errors |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            where = "in-process" if r["where"] == "in-process" else "`bmad-trio fake-api`"
            cpu = _f(r.get("cpu_ms_per_request"), 2)
            cpu += " (client + server)" if r["where"] == "in-process" else " (server)"
            lat = r["latency_ms"]
            lines.append(
                f"| {where} | {'SSE stream' if r['stream'] else 'JSON'} | {r['concurrency']} "
                f"| {r['requests']} | {_f(r['rps'], 0)} | {_f(lat['median'], 2)} "
                f"| {_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} | {cpu} | {r['errors']} |"
            )
    floor = data.get("floor")
    if floor:
        lines += [
            "",
            f"**One-turn session floor**: plain `claude_agent_sdk.query()` driving the bundled CLI "
            f"against the in-process server (latency 0), {floor['sessions']} sessions "
            f"(+1 warm-up dropped), {_f(floor['model_requests_per_session'], 0)} model request "
            "per session",
            "",
            "| from `query()` called to | median s | p90 s | min s | max s |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (("to_result_s", "ResultMessage"), ("to_end_s", "end of the stream")):
            st = floor[key]
            lines.append(
                f"| {label} | {_f(st['median'], 3)} | {_f(st['p90'], 3)} | {_f(st['min'], 3)} "
                f"| {_f(st['max'], 3)} |"
            )
    return lines


def _boundary_markdown(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    ab = data.get("boundary")
    if ab:
        lines += [
            "",
            f"**Agent boundary**: one-turn sessions, {ab['pairs']} through "
            "`ClaudeAgentRunner.run_session` and as many through plain `query()` with equivalent "
            "options, interleaved in one run (+1 warm-up pair dropped)",
            "",
            "| path | sessions | median s | p90 s | mean s | min s | max s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (("runner_s", "`run_session`"), ("plain_s", "plain `query()`")):
            st = ab[key]
            count = len(ab["runner_samples_s" if key == "runner_s" else "plain_samples_s"])
            lines.append(
                f"| {label} | {count} | {_f(st['median'], 3)} | {_f(st['p90'], 3)} "
                f"| {_f(st['mean'], 3)} | {_f(st['min'], 3)} | {_f(st['max'], 3)} |"
            )
        diff = ab["difference_ms"]
        lines += [
            "",
            f"Ratio of medians runner ÷ plain: **{_f(ab['ratio_of_medians'], 3)}**; difference "
            f"of the medians {_f(ab['median_difference_ms_of_medians'], 0)} ms; per pair "
            f"(runner - plain) median {_f(diff['median'], 0)} ms, p90 {_f(diff['p90'], 0)} ms, "
            f"mean {_f(diff['mean'], 0)} ms.",
        ]
    cancel = data.get("session_cancel")
    if cancel:
        lines += [
            "",
            "**Cancel-to-gone**: a session runs a long Bash tool "
            f"(`{cancel['tool_command']}`); once the tool process exists the caller cancels; "
            "time until the call has returned and no process of the session is left "
            f"(cap {cancel['cap_s']:g} s)",
            "",
            "| path | trials | returned median s | returned p90 s | tool gone median s "
            "| all gone median s | all gone p90 s | over the cap |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        labels = (
            ("runner", "`run_session`, cancel scope"),
            ("sdk_cancel", "plain `query()`, cancel scope"),
            ("sdk_break", "plain `query()`, `break`"),
        )
        for key, label in labels:
            part = cancel.get(key)
            if not part or not part["trials"]:
                continue
            errors = f" ({len(part['errors'])} errors)" if part["errors"] else ""
            lines.append(
                f"| {label} | {part['trials']}{errors} | {_f(part['returned_s']['median'], 3)} "
                f"| {_f(part['returned_s']['p90'], 3)} | {_f(part['tool_gone_s']['median'], 3)} "
                f"| {_f(part['gone_s']['median'], 3)} | {_f(part['gone_s']['p90'], 3)} "
                f"| {part['capped']} |"
            )
        runner = cancel.get("runner")
        if runner and runner["trials"]:
            lines += [
                "",
                f"Processes left while the runner stays open (untagged lifeline watchers of the "
                f"killed wrappers): {runner['untagged_left_while_runner_open']}; 0.5 s after the "
                f"runner closed: {runner['left_0_5s_after_runner_close']}.",
            ]
    return lines


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
    written += _plot_server(plt, data, images)
    written += _plot_boundary(plt, data, images)
    return written


def _plot_server(plt: Any, data: dict[str, Any], images: Path) -> list[str]:
    rows = [r for r in data.get("server") or [] if r.get("rps")]
    if not rows:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [
        f"{'in-proc' if r['where'] == 'in-process' else 'subproc'}\n"
        f"{'SSE' if r['stream'] else 'JSON'} c={r['concurrency']}"
        for r in rows
    ]
    colors = ["tab:blue" if r["where"] == "in-process" else "tab:orange" for r in rows]
    positions = list(range(len(rows)))
    left.bar(positions, [r["rps"] for r in rows], color=colors)
    left.set_xticks(positions, labels, fontsize=7)
    left.set_ylabel("requests per second")
    left.set_title("throughput (keep-alive, loopback)")
    p50 = [r["latency_ms"]["median"] for r in rows]
    p90 = [r["latency_ms"]["p90"] for r in rows]
    right.bar(positions, p50, color=colors, label="median")
    right.scatter(positions, p90, color="black", marker="_", s=200, label="p90", zorder=3)
    right.set_xticks(positions, labels, fontsize=7)
    right.set_ylabel("ms per request")
    right.set_title("latency per request (no model latency)")
    right.legend()
    machine = data["machine"]
    fig.suptitle(
        f"FakeAnthropicAPI alone — {machine['nproc']} CPUs, load "
        f"{_load(machine.get('loadavg_at_start'))} at the start (blue: same process, "
        "orange: bmad-trio fake-api subprocess)",
        fontsize=9,
    )
    fig.tight_layout()
    path = images / "perf-server.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def _plot_boundary(plt: Any, data: dict[str, Any], images: Path) -> list[str]:
    ab = data.get("boundary")
    cancel = data.get("session_cancel")
    floor = data.get("floor")
    if not ab and not cancel:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if ab:
        series = [ab["runner_samples_s"], ab["plain_samples_s"]]
        names = ["run_session", "plain query()"]
        if floor:
            series.append(floor["to_end_samples_s"])
            names.append("floor run\n(plain query())")
        left.boxplot(series, showfliers=True)
        left.set_xticks(list(range(1, len(names) + 1)), names)
        left.set_ylabel("seconds per one-turn session")
        left.set_title(
            f"agent boundary: median ratio {_f(ab['ratio_of_medians'], 3)}, "
            f"Δ {_f(ab['median_difference_ms_of_medians'], 0)} ms"
        )
        left.set_ylim(bottom=0)
    if cancel:
        keys = [
            (key, label)
            for key, label in (
                ("runner", "run_session\ncancel scope"),
                ("sdk_cancel", "plain query()\ncancel scope"),
                ("sdk_break", "plain query()\nbreak"),
            )
            if cancel.get(key) and cancel[key]["trials"]
        ]
        positions = list(range(len(keys)))
        width = 0.38
        returned = [cancel[k]["returned_s"]["median"] or 0 for k, _ in keys]
        gone = [cancel[k]["gone_s"]["median"] or cancel["cap_s"] for k, _ in keys]
        right.bar([p - width / 2 for p in positions], returned, width, label="call returned")
        right.bar([p + width / 2 for p in positions], gone, width, label="every process gone")
        for p, value in zip(positions, gone, strict=True):
            right.annotate(f"{value:.2f} s", (p + width / 2, value), ha="center", va="bottom")
        right.set_xticks(positions, [label for _, label in keys])
        right.set_ylim(0, max([*gone, *returned, 0.1]) * 1.35)  # room for the legend
        right.set_ylabel("seconds after cancel (median)")
        right.set_title("cancel-to-gone with a Bash tool running")
        right.legend()
    machine = data["machine"]
    fig.suptitle(
        f"real Claude Code CLI, scripted model (latency 0) — {machine['nproc']} CPUs, load "
        f"{_load(machine.get('loadavg_at_start'))} at the start",
        fontsize=9,
    )
    fig.tight_layout()
    path = images / "perf-boundary.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


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
