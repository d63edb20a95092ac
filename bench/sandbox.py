"""``python -m bench.sandbox``: what the agents' OS sandbox costs per session, measured in one run.

The same scripted Dev sessions (the real Claude Code CLI against the scripted model server, through
``ClaudeAgentRunner``) run alternately with and without the sandbox: a session whose model runs
``--commands`` Bash commands (one a turn) and writes one file, and a session that runs no command
(the sandbox should cost nothing there). Prints the median session time of each and the ratios, and
writes them as JSON with ``--out``. Never asserts a time.

    python -m bench.sandbox                      # 5 rounds, 3 commands a session, trio
    python -m bench.sandbox --rounds 3 --backend asyncio --out /tmp/sandbox.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bmad_trio import Outcome, Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio._agents._sandbox import Sandbox, probe_sandbox
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

COMMANDS = ("echo hello", "python3 -c 'print(6 * 7)'", "ls -la", "cat src/app.py", "pwd")


def _scenario(commands: int) -> Scenario:
    rules = [
        Rule(turn=index + 1, reply=Reply.tools(Reply.bash(COMMANDS[index % len(COMMANDS)])))
        for index in range(commands)
    ]
    rules.append(Rule(turn=commands + 1, reply=Reply.tools(Reply.write("src/out.py", "X = 1\n"))))
    rules.append(Rule(turn=commands + 2, reply=Reply.text("done")))
    return Scenario(responders=rules)


async def _session(root: Path, home: Path, commands: int, sandboxed: bool) -> float:
    project = Path(tempfile.mkdtemp(dir=root))
    (project / "src").mkdir()
    (project / "src" / "app.py").write_text("VALUE = 1\n")
    spec = SessionSpec(
        role=Role.DEV,
        prompt="implement",
        cwd=project,
        allowed_tools=("Read", "Write", "Edit", "Bash"),
        sandbox=Sandbox() if sandboxed else None,
        timeout_s=300.0,
        idle_timeout_s=120.0,
    )
    async with FakeAnthropicAPI(_scenario(commands)) as api:
        env = {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0", "HOME": str(home)}
        async with ClaudeAgentRunner(env=env) as runner:
            start = time.perf_counter()
            result = await runner.run_session(spec)
            elapsed = time.perf_counter() - start
    if result.outcome is not Outcome.OK:
        raise RuntimeError(f"session failed: {result.outcome} {result.error}")
    return elapsed


async def measure(rounds: int, commands: int) -> dict[str, object]:
    """Alternate sandboxed and plain sessions (so load drifts hit both alike); medians, ratios."""
    times: dict[str, list[float]] = {key: [] for key in ("on", "off", "on-idle", "off-idle")}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as temp:
        root = Path(temp)
        home = root / "home"
        home.mkdir()
        await _session(root, home, 1, True)  # warm the page cache for both
        for index in range(rounds):
            order = (True, False) if index % 2 == 0 else (False, True)
            for sandboxed in order:
                key = "on" if sandboxed else "off"
                times[key].append(await _session(root, home, commands, sandboxed))
                times[f"{key}-idle"].append(await _session(root, home, 0, sandboxed))
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "rounds": rounds,
        "commands_per_session": commands,
        "median_s": median,
        "ratio_with_commands": median["on"] / median["off"],
        "ratio_without_commands": median["on-idle"] / median["off-idle"],
        "per_command_extra_s": (median["on"] - median["off"]) / max(commands, 1),
        "samples_s": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--commands", type=int, default=3)
    parser.add_argument("--backend", choices=("trio", "asyncio"), default="trio")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    probe = probe_sandbox()
    if not probe.available:
        print(f"no OS sandbox here: {probe.detail}", file=sys.stderr)
        return 2
    figures = anyio.run(measure, args.rounds, args.commands, backend=args.backend)
    median = figures["median_s"]
    assert isinstance(median, dict)
    print(
        f"session with {args.commands} Bash commands: sandbox {median['on']:.2f} s, "
        f"none {median['off']:.2f} s, ratio {figures['ratio_with_commands']:.2f}"
    )
    print(
        f"session with no command: sandbox {median['on-idle']:.2f} s, "
        f"none {median['off-idle']:.2f} s, ratio {figures['ratio_without_commands']:.2f}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps({"backend": args.backend, **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
