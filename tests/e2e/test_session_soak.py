"""200 consecutive sessions in one task, mixing completion, cancellation at random points, timeouts
and API errors: zero errors, zero warnings (filterwarnings=error), zero leftover processes."""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from bmad_trio import ClaudeAgentRunner, Outcome, Role, SessionSpec
from bmad_trio._agents._cli_processes import orchestrator_pids
from bmad_trio.testing import FakeAnthropicAPI, Fault, Reply, Rule, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]

SESSIONS = 200
SLOW = f"{sys.executable} -c 'import time; time.sleep(30)'"


async def test_200_mixed_sessions_in_one_task(tmp_path: Path) -> None:
    rng = random.Random(2026)
    scenario = Scenario(
        responders=[
            Rule(prompt_contains="KIND=api", fault=Fault.http(400, "bad request")),
            Rule(prompt_contains="KIND=stall", fault=Fault(kind="stall")),
            Rule(prompt_contains="KIND=cancel", turn=1, reply=Reply.tools(Reply.bash(SLOW))),
        ],
        default=Reply.text("done"),
    )
    kinds = rng.choices(["ok", "cancel", "stall", "api"], weights=[55, 20, 10, 15], k=SESSIONS)
    seen: Counter[str] = Counter()
    env = {"CLAUDE_CODE_MAX_RETRIES": "0"}
    async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env={**api.env(), **env}) as r:
        for index, kind in enumerate(kinds):
            spec = SessionSpec(
                role=Role.DEV,
                prompt=f"session {index} KIND={kind}",
                cwd=tmp_path,
                allowed_tools=("Bash",),
                timeout_s=60,
                idle_timeout_s=1.0 if kind == "stall" else 30,
            )
            with anyio.CancelScope() as scope:
                if kind == "cancel":
                    scope.deadline = anyio.current_time() + rng.uniform(0.05, 1.5)
                result = await r.run_session(spec)
            if scope.cancelled_caught:
                seen["cancelled"] += 1
            else:
                expected = {"ok": Outcome.OK, "stall": Outcome.TIMEOUT, "api": Outcome.API_ERROR}
                if kind in expected:
                    assert result.outcome is expected[kind], (index, kind, result)
                seen[result.outcome.value] += 1
    assert sum(seen.values()) == SESSIONS
    assert seen["ok"] >= kinds.count("ok")
    assert seen["timeout"] == kinds.count("stall")
    assert seen["api_error"] == kinds.count("api")
    assert seen["cancelled"] >= 1
    assert not orchestrator_pids(os.getpid()), "a session left a process behind"
