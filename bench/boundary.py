"""The agent boundary: what ``ClaudeAgentRunner`` costs over driving the same CLI directly.

- :func:`boundary_case` — N one-turn sessions through :meth:`ClaudeAgentRunner.run_session` and N
  through plain ``claude_agent_sdk.query()`` with equivalent options (same environment, the same
  Claude Code system prompt, no tools, ``setting_sources=[]``, same model, one config directory per
  arm), interleaved A/B/B/A in one run against the same in-process server (latency 0). Reports the
  ratio of the medians and the per-session difference.
- :func:`cancel_boundary_case` — cancel-to-gone: a session whose scripted model starts a long Bash
  tool (``python -c "import time; time.sleep(60)"``; the CLI refuses ``sleep N``); once the tool
  process exists, the caller's cancel scope is cancelled, and the clock runs until the call has
  returned **and** no process carrying the session's tag is left (``/proc/*/environ``). The same
  for plain ``query()`` cancelled by a scope and left with ``break``, for contrast, each bounded by
  a cap (15 s).

Every process a trial starts carries ``BENCH_RUN_TAG=<unique>`` (through the session's
environment); the runner's own tag, ``BMAD_TRIO_SESSION``, is read from the tool process.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from bench.procs import BENCH_TAG
from bench.server import MODEL, percentiles
from bmad_trio import ClaudeAgentRunner
from bmad_trio._agents._claude_runner import OFFLINE_SAFE_ENV
from bmad_trio._agents._runner import Role, SessionSpec
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

__all__ = ["LONG_TOOL", "boundary_case", "cancel_boundary_case", "plain_options"]

PROMPT = "Reply with OK."
LONG_TOOL = 'python -c "import time; time.sleep(60)"'
LONG_TOOL_MARKER = "BENCH-LONG-TOOL"
TOOL_WAIT_S = 120.0
CANCEL_CAP_S = 15.0
_SESSION_TAG = b"BMAD_TRIO_SESSION="


def plain_options(
    api: FakeAnthropicAPI,
    cwd: Path,
    config_dir: Path,
    *,
    tools: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """``ClaudeAgentOptions`` equivalent to what the runner builds, minus its own machinery.

    Same environment (the offline-safe variables, the server's, a config directory), the same
    Claude Code system prompt preset, the same tools, permission mode, buffer size and
    ``setting_sources=[]``; no ``can_use_tool``, no hook, no stderr callback, no CLI wrapper.
    """
    from claude_agent_sdk import ClaudeAgentOptions

    allowed = list(tools or [])
    return ClaudeAgentOptions(
        cwd=str(cwd),
        model=MODEL,
        system_prompt={"type": "preset", "preset": "claude_code"},
        tools=allowed,
        allowed_tools=allowed,
        permission_mode="acceptEdits",
        env={
            **OFFLINE_SAFE_ENV,
            **api.env(),
            "CLAUDE_CONFIG_DIR": str(config_dir),
            **(extra_env or {}),
        },
        setting_sources=[],
        max_buffer_size=16 * 1024 * 1024,
    )


# -- A/B: per-session overhead ------------------------------------------------------------------


async def _plain_session(api: FakeAnthropicAPI, cwd: Path, config_dir: Path) -> tuple[float, bool]:
    from claude_agent_sdk import ResultMessage, query

    ok = False
    started = time.perf_counter()
    try:
        async for message in query(prompt=PROMPT, options=plain_options(api, cwd, config_dir)):
            if isinstance(message, ResultMessage):
                ok = not message.is_error
    except Exception:  # a figure, not a test
        ok = False
    return time.perf_counter() - started, ok


async def _runner_session(runner: ClaudeAgentRunner, cwd: Path) -> tuple[float, bool, float]:
    spec = SessionSpec(role=Role.DEV, prompt=PROMPT, cwd=cwd, label="bench-ab", model=MODEL)
    started = time.perf_counter()
    result = await runner.run_session(spec)
    return time.perf_counter() - started, result.outcome == "ok", result.duration_s


async def boundary_case(workdir: Path, pairs: int) -> dict[str, Any]:
    """``pairs`` runner sessions and ``pairs`` plain ones, interleaved (A B, then B A, …)."""
    root = workdir / f"boundary-{uuid.uuid4().hex[:8]}"
    project = root / "project"
    plain_config = root / "plain-config"
    project.mkdir(parents=True)
    plain_config.mkdir()
    runner_s: list[float] = []
    runner_inner_s: list[float] = []
    plain_s: list[float] = []
    diffs: list[float] = []
    requests = {"runner": [], "plain": []}
    failures = {"runner": 0, "plain": 0}
    order: list[str] = []
    scenario = Scenario(default=Reply.text("OK"), model=MODEL)
    async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env=api.env()) as runner:
        for index in range(pairs + 1):  # pair 0 warms both paths up and is dropped
            arms = ("runner", "plain") if index % 2 == 0 else ("plain", "runner")
            got: dict[str, float] = {}
            for arm in arms:
                before = len(api.message_requests)
                if arm == "runner":
                    wall, ok, inner = await _runner_session(runner, project)
                else:
                    wall, ok = await _plain_session(api, project, plain_config)
                    inner = wall
                if index == 0:
                    continue
                order.append(arm)
                requests[arm].append(len(api.message_requests) - before)
                if not ok:
                    failures[arm] += 1
                    continue
                got[arm] = wall
                if arm == "runner":
                    runner_s.append(wall)
                    runner_inner_s.append(inner)
                else:
                    plain_s.append(wall)
            if len(got) == 2:
                diffs.append(got["runner"] - got["plain"])
    runner_stats = percentiles(runner_s)
    plain_stats = percentiles(plain_s)
    ratio = (
        runner_stats["median"] / plain_stats["median"]
        if runner_stats["median"] and plain_stats["median"]
        else None
    )
    return {
        "pairs": pairs,
        "warmup_dropped": 1,
        "order": "".join("R" if arm == "runner" else "P" for arm in order),
        "runner_s": runner_stats,
        "runner_inner_duration_s": percentiles(runner_inner_s),
        "plain_s": plain_stats,
        "ratio_of_medians": ratio,
        "difference_ms": percentiles([d * 1000 for d in diffs]),
        "median_difference_ms_of_medians": (
            (runner_stats["median"] - plain_stats["median"]) * 1000 if ratio is not None else None
        ),
        "runner_samples_s": runner_s,
        "plain_samples_s": plain_s,
        "model_requests_per_session": {
            arm: statistics.median(values) if values else None for arm, values in requests.items()
        },
        "failures": failures,
    }


# -- cancel-to-gone -----------------------------------------------------------------------------


def _scan(bench_tag: str) -> list[tuple[int, list[bytes], bytes]]:
    """(pid, environ entries, cmdline) of live processes carrying ``BENCH_RUN_TAG=bench_tag``."""
    needle = f"{BENCH_TAG}={bench_tag}".encode()
    own = os.getpid()
    found: list[tuple[int, list[bytes], bytes]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
            if needle not in environ:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        found.append((int(entry.name), environ, cmdline))
    return found


def _is_tool(cmdline: bytes) -> bool:
    argv = cmdline.split(b"\0")
    return os.path.basename(argv[0]).startswith(b"python") and b"time.sleep(60)" in cmdline


def _session_tag(environ: list[bytes]) -> bytes | None:
    return next((e for e in environ if e.startswith(_SESSION_TAG)), None)


def _count(bench_tags: list[str]) -> int:
    return sum(len(_scan(tag)) for tag in bench_tags)


def _kill(bench_tag: str) -> int:
    killed = 0
    for pid, _environ, _cmd in _scan(bench_tag):
        try:
            os.kill(pid, 9)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed


async def _one_cancel(
    victim: Callable[[anyio.CancelScope, anyio.Event], Any],
    bench_tag: str,
    *,
    by_session_tag: bool,
    cancel: bool = True,
) -> dict[str, Any]:
    """Start ``victim``; once the tool runs, cancel its scope; time until returned and gone.

    With ``cancel=False`` the scope is left alone and only ``leave`` is set (the ``break``
    variant: the victim leaves its ``async for`` itself).
    """
    scope = anyio.CancelScope()
    leave = anyio.Event()  # for the ``break`` variant: the victim breaks out when this is set
    returned: list[float] = []
    trial: dict[str, Any] = {}

    async def run() -> None:
        try:
            await victim(scope, leave)
        except Exception as exc:  # a figure, not a test
            trial["victim_error"] = f"{type(exc).__name__}: {exc}"
        returned.append(time.perf_counter())

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        tag: bytes | None = None
        procs: list[tuple[int, list[bytes], bytes]] = []
        tools: list[tuple[int, list[bytes], bytes]] = []
        with anyio.move_on_after(TOOL_WAIT_S) as waiting:
            while True:
                procs = await anyio.to_thread.run_sync(_scan, bench_tag)
                tools = [p for p in procs if _is_tool(p[2])]
                if tools:
                    tag = _session_tag(tools[0][1])
                    break
                if returned:
                    break
                await anyio.sleep(0.02)
        if waiting.cancelled_caught or not tools:
            trial["error"] = "the long tool never started"
            scope.cancel()
            leave.set()
            _kill(bench_tag)
            return trial
        trial["tool_started_after_s"] = time.perf_counter() - started
        trial["processes_at_cancel"] = len(procs)
        if by_session_tag and tag is None:
            trial["error"] = "the tool process carries no BMAD_TRIO_SESSION tag"
        needle = tag if by_session_tag and tag is not None else None
        cancelled = time.perf_counter()
        if cancel:
            scope.cancel()
        leave.set()
        tool_gone: float | None = None
        gone: float | None = None
        while True:
            procs = await anyio.to_thread.run_sync(_scan, bench_tag)
            now = time.perf_counter()
            if tool_gone is None and not any(_is_tool(p[2]) for p in procs):
                tool_gone = now
            tagged = [p for p in procs if needle is None or needle in p[1]]
            if returned and not tagged:
                gone = now
                break
            if now - cancelled > CANCEL_CAP_S:
                trial["capped"] = True
                trial["left_at_cap"] = len(tagged)
                trial["returned_by_cap"] = bool(returned)
                break
            await anyio.sleep(0.01)
        trial["returned_s"] = returned[0] - cancelled if returned else None
        trial["tool_gone_s"] = tool_gone - cancelled if tool_gone is not None else None
        trial["gone_s"] = gone - cancelled if gone is not None else None
        if trial.get("capped"):
            trial["killed_after_cap"] = await anyio.to_thread.run_sync(_kill, bench_tag)
    returned_late = returned[0] - cancelled if returned else None
    if trial.get("capped"):
        trial["returned_after_kill_s"] = returned_late
    return trial


def _summary(trials: list[dict[str, Any]], cap: float) -> dict[str, Any]:
    done = [t for t in trials if "error" not in t]
    gone = [t["gone_s"] for t in done if t.get("gone_s") is not None]
    returned = [t["returned_s"] for t in done if t.get("returned_s") is not None]
    tool_gone = [t["tool_gone_s"] for t in done if t.get("tool_gone_s") is not None]
    return {
        "trials": len(trials),
        "errors": [t["error"] for t in trials if "error" in t],
        "capped": sum(1 for t in done if t.get("capped")),
        "cap_s": cap,
        "returned_s": percentiles(returned),
        "tool_gone_s": percentiles(tool_gone),
        "gone_s": percentiles(gone),
        "tool_started_after_s": percentiles([t["tool_started_after_s"] for t in done]),
        "samples": trials,
    }


def _long_tool_scenario() -> Scenario:
    return Scenario(
        responders=(
            Rule(
                prompt_contains=LONG_TOOL_MARKER, turn=1, reply=Reply.tools(Reply.bash(LONG_TOOL))
            ),
        ),
        default=Reply.text("done"),
        model=MODEL,
    )


async def cancel_boundary_case(workdir: Path, trials: int, *, sdk_trials: int) -> dict[str, Any]:
    """Cancel-to-gone: ``trials`` with the runner, ``sdk_trials`` each with plain ``query()``."""
    from claude_agent_sdk import AssistantMessage, query

    root = workdir / f"cancel-boundary-{uuid.uuid4().hex[:8]}"
    project = root / "project"
    project.mkdir(parents=True)
    prompt = f"{LONG_TOOL_MARKER}: run the long command."
    out: dict[str, Any] = {"tool_command": LONG_TOOL, "cap_s": CANCEL_CAP_S}
    async with FakeAnthropicAPI(_long_tool_scenario()) as api:
        runner_trials: list[dict[str, Any]] = []
        tags: list[str] = []
        async with ClaudeAgentRunner(env=api.env()) as runner:
            for _ in range(trials):
                bench_tag = uuid.uuid4().hex
                tags.append(bench_tag)
                spec = SessionSpec(
                    role=Role.DEV,
                    prompt=prompt,
                    cwd=project,
                    label="bench-cancel",
                    model=MODEL,
                    allowed_tools=("Bash",),
                    env={BENCH_TAG: bench_tag},
                )
                outcome: list[str] = []

                async def run_session(
                    scope: anyio.CancelScope,
                    _leave: anyio.Event,
                    spec: SessionSpec = spec,
                    outcome: list[str] = outcome,
                ) -> None:
                    with scope:
                        result = await runner.run_session(spec)
                        outcome.append(f"returned {result.outcome} (not cancelled)")

                trial = await _one_cancel(run_session, bench_tag, by_session_tag=True)
                if outcome:
                    trial["error"] = outcome[0]
                runner_trials.append(trial)
            # What is left of the cancelled sessions while the runner is still open: the
            # untagged lifeline watcher of each killed wrapper (it carries our BENCH_RUN_TAG).
            left_open = await anyio.to_thread.run_sync(_count, tags)
        await anyio.sleep(0.5)
        left_closed = await anyio.to_thread.run_sync(_count, tags)
        for bench_tag in tags:
            _kill(bench_tag)
        out["runner"] = _summary(runner_trials, CANCEL_CAP_S)
        out["runner"]["untagged_left_while_runner_open"] = left_open
        out["runner"]["left_0_5s_after_runner_close"] = left_closed

        for mode in ("cancel", "break"):
            sdk: list[dict[str, Any]] = []
            for index in range(sdk_trials):
                bench_tag = uuid.uuid4().hex
                config_dir = root / f"sdk-config-{mode}-{index}"
                config_dir.mkdir()
                options = plain_options(
                    api, project, config_dir, tools=["Bash"], extra_env={BENCH_TAG: bench_tag}
                )

                async def plain(
                    scope: anyio.CancelScope,
                    leave: anyio.Event,
                    options: Any = options,
                    mode: str = mode,
                ) -> None:
                    with scope:
                        async for message in query(prompt=prompt, options=options):
                            if mode == "break" and isinstance(message, AssistantMessage):
                                with anyio.CancelScope(shield=True):
                                    await leave.wait()
                                break

                sdk.append(
                    await _one_cancel(
                        plain, bench_tag, by_session_tag=False, cancel=mode == "cancel"
                    )
                )
                gc.collect()
            out[f"sdk_{mode}"] = _summary(sdk, CANCEL_CAP_S)
    return out
