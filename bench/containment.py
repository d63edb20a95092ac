"""``python -m bench.containment``: cancel-to-gone and SIGKILL-to-gone on both containment paths.

One run measures both paths (``linux-native`` and ``portable``, ``BMAD_TRIO_CONTAINMENT``) on the
same machine, alternating them trial by trial so that load changes hit both alike. Each trial runs
one session through the real CLI against the scripted server; its Bash tool leaves three processes:

- a long tool (the command the CLI waits for),
- an orphan: ``sh -c '… &'`` without our environment (``env -i``), which exits at once, leaving
  its child to init but in the Bash command's POSIX session,
- an escapee in a session of its own (``setsid … &``; it keeps its environment).

**cancel**: an anyio cancel of ``run_session`` in this process once the long tool runs.
**SIGKILL**: the orchestrator in a process of its own, SIGKILLed once the long tool runs.
"Gone" is when none of the three tools, and no process tagged for the orchestrator, is left
(a psutil scan every 10 ms). A benchmark records figures; it asserts nothing.

Example::

    python -m bench.containment --trials 5 --out bench/results/containment.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import psutil

from bmad_trio import Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio._agents._cli_processes import (
    CONTAINMENT_ENV,
    LINUX_NATIVE,
    PORTABLE,
    orchestrator_pids,
)
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

PY = sys.executable
MODES = (LINUX_NATIVE, PORTABLE)
CAP_S = 20.0
"""A trial that has not seen everything gone by then records ``capped``."""


def _command(marker: Path, run: str) -> tuple[str, list[str]]:
    """The Bash command of a trial and the command-line snippets of its three tools."""
    long, orphan, escapee = (f"time.sleep(70.{n}{run})" for n in (1, 2, 3))
    command = (
        f"env -i sh -c '{PY} -c \"import time; {orphan}\" </dev/null >/dev/null 2>&1 &'; "
        f"setsid {PY} -c 'import time; {escapee}' </dev/null >/dev/null 2>&1 & "
        f'{PY} -c \'import time; open("{marker}", "w").close(); {long}\''
    )
    return command, [long, orphan, escapee]


def _left(orchestrator: int, needles: list[str]) -> int:
    """Processes of the trial still running: tagged for ``orchestrator`` or running a tool."""
    count = len([pid for pid in orchestrator_pids(orchestrator) if pid != os.getpid()])
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(needle in cmdline for needle in needles):
            count += 1
    return count


def _wait_gone(orchestrator: int, needles: list[str], since: float) -> float | None:
    while _left(orchestrator, needles):
        if time.perf_counter() - since > CAP_S:
            return None
        time.sleep(0.01)
    return time.perf_counter() - since


def _reap(needles: list[str]) -> None:
    for proc in psutil.process_iter(["cmdline"]):
        if any(needle in " ".join(proc.info["cmdline"] or []) for needle in needles):
            proc.kill()


async def _cancel_trial(mode: str, workdir: Path, run: str) -> dict[str, Any]:
    marker = workdir / f"running-{run}"
    command, needles = _command(marker, run)
    scenario = Scenario(responders=[Rule(turn=1, reply=Reply.tools(Reply.bash(command)))])
    os.environ[CONTAINMENT_ENV] = mode  # read once, by the runner's containment layer
    async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env=api.env()) as runner:
        spec = SessionSpec(role=Role.DEV, prompt="go", cwd=workdir, allowed_tools=("Bash",))
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_the_tool_runs() -> None:
                    while not marker.exists():  # noqa: ASYNC110 - another process's file
                        await anyio.sleep(0.01)
                    cancelled.append(time.perf_counter())
                    scope.cancel(reason="the benchmark cancels mid-tool")

                cancelled: list[float] = []
                tg.start_soon(cancel_when_the_tool_runs)
                await runner.run_session(spec)
        returned = time.perf_counter() - cancelled[0]
        gone = await anyio.to_thread.run_sync(_wait_gone, os.getpid(), needles, cancelled[0])
    _reap(needles)
    return {"returned_s": returned, "gone_s": gone, "capped": gone is None}


_ORCHESTRATOR = """
import sys, trio
from pathlib import Path
from bmad_trio import Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

async def main():
    scenario = Scenario(responders=[Rule(turn=1, reply=Reply.tools(Reply.bash(sys.argv[1])))])
    async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env=api.env()) as runner:
        spec = SessionSpec(role=Role.DEV, prompt="go", cwd=Path(sys.argv[2]), allowed_tools=("Bash",))
        await runner.run_session(spec)

trio.run(main)
"""


def _sigkill_trial(mode: str, workdir: Path, run: str) -> dict[str, Any]:
    marker = workdir / f"running-{run}"
    command, needles = _command(marker, run)
    script = workdir / "orchestrator.py"
    script.write_text(textwrap.dedent(_ORCHESTRATOR))
    child = subprocess.Popen(
        [PY, str(script), command, str(workdir)],
        env={**os.environ, CONTAINMENT_ENV: mode},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if not marker.exists():
            return {"error": "the long tool never started"}
        killed = time.perf_counter()
        child.kill()
        child.wait()
        gone = _wait_gone(child.pid, needles, killed)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _reap(needles)
    return {"gone_s": gone, "capped": gone is None}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
    }


def measure(trials: int) -> dict[str, Any]:
    """``trials`` cancel and SIGKILL trials per path, the paths alternating."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: {"cancel": [], "sigkill": []} for mode in MODES
    }
    saved = os.environ.get(CONTAINMENT_ENV)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-containment-") as temp:
            for trial in range(trials):
                for mode in MODES:
                    workdir = Path(temp) / f"{mode}-{trial}"
                    workdir.mkdir()
                    run = f"{os.getpid() % 10**5:05d}{trial}{MODES.index(mode)}"
                    results[mode]["cancel"].append(
                        anyio.run(_cancel_trial, mode, workdir, run, backend="trio")
                    )
                    results[mode]["sigkill"].append(_sigkill_trial(mode, workdir, run + "9"))
    finally:
        if saved is None:
            os.environ.pop(CONTAINMENT_ENV, None)
        else:
            os.environ[CONTAINMENT_ENV] = saved
    summary: dict[str, Any] = {}
    for mode, kinds in results.items():
        summary[mode] = {}
        for kind, rows in kinds.items():
            gone = [row["gone_s"] for row in rows if row.get("gone_s") is not None]
            summary[mode][kind] = {
                **(_stats(gone) if gone else {}),
                "trials": len(rows),
                "capped": sum(1 for row in rows if row.get("capped")),
                "errors": [row["error"] for row in rows if "error" in row],
            }
    return {"trials": results, "summary": summary}


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| path | cancel → gone, median (min-max) | SIGKILL → gone, median (min-max) |",
        "|---|---|---|",
    ]
    for mode, kinds in summary.items():
        cells = []
        for kind in ("cancel", "sigkill"):
            row = kinds[kind]
            if "median_s" not in row:
                cells.append("n/a")
                continue
            cell = f"{row['median_s']:.2f} s ({row['min_s']:.2f}-{row['max_s']:.2f})"
            if row["capped"]:
                cell += f", {row['capped']} of {row['trials']} not gone in {CAP_S:.0f} s"
            cells.append(cell)
        lines.append(f"| {mode} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.containment", description=__doc__)
    parser.add_argument("--trials", type=int, default=5, help="trials per path and kind (5)")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    data = measure(args.trials)
    data["machine"] = {"cpus": os.cpu_count(), "load": os.getloadavg(), "platform": sys.platform}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(markdown(data["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
