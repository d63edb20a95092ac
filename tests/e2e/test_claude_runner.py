"""ClaudeAgentRunner driving the real Claude Code CLI against the scripted model server."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import psutil
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from bmad_trio import AgentMessage, Outcome, Role, SessionResult, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio._agents._cli_processes import orchestrator_pids, tagged_pids
from bmad_trio.testing import FakeAnthropicAPI, Fault, Reply, Rule, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]

SLOW_TOOL = f"{sys.executable} -c 'import time; time.sleep(60)'"
TOOLS = ("Read", "Write", "Edit", "Bash")


def _spec(project: Path, prompt: str, **overrides: object) -> SessionSpec:
    fields: dict[str, object] = {
        "role": Role.DEV,
        "prompt": prompt,
        "cwd": project,
        "allowed_tools": TOOLS,
        "timeout_s": 60.0,
        "idle_timeout_s": 30.0,
    }
    fields.update(overrides)
    return SessionSpec(**fields)  # pyright: ignore[reportArgumentType]


def _runner(api: FakeAnthropicAPI, **env: str) -> ClaudeAgentRunner:
    return ClaudeAgentRunner(env={**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0", **env})


def _sleepers(orchestrator: int | None = None) -> list[int]:
    """Our slow tools: processes started for this test process (or ``orchestrator``) running one."""
    found: list[int] = []
    for pid in orchestrator_pids(orchestrator or os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"time.sleep(60)" in handle.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _describe(pid: int) -> str:
    """A leftover process, for failure messages."""
    try:
        proc = psutil.Process(pid)
        return f"{pid} (parent {proc.ppid()}, {proc.status()}): {' '.join(proc.cmdline())[:200]}"
    except psutil.Error as exc:
        return f"{pid}: {exc}"


async def test_text_session_reports_cost_tokens_and_messages(tmp_path: Path) -> None:
    scenario = Scenario(responders=[Rule(prompt_contains="hello", reply=Reply.text("Hi there!"))])
    send, receive = anyio.create_memory_object_stream[AgentMessage](100)
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "hello"), send)
    with receive:
        messages = [m async for m in receive]
    assert result.outcome is Outcome.OK, result.error
    assert result.final_text == "Hi there!"
    assert result.cost_usd > 0
    assert result.input_tokens > 0
    assert result.output_tokens > 0
    assert result.turns == 1
    assert [m.kind for m in messages if m.kind in ("text", "result")] == ["text", "result"]
    assert messages[-1].data["type"] == "ResultMessage"


async def test_3_consecutive_and_8_concurrent_sessions_leave_nothing_behind(tmp_path: Path) -> None:
    async with (
        FakeAnthropicAPI(Scenario(default=Reply.text("done"))) as api,
        _runner(api) as runner,
    ):
        sequential = [await runner.run_session(_spec(tmp_path, f"task {i}")) for i in range(3)]
        concurrent: list[SessionResult] = []

        async def one(i: int) -> None:
            concurrent.append(await runner.run_session(_spec(tmp_path, f"parallel {i}")))

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
    assert [r.outcome for r in sequential + concurrent] == [Outcome.OK] * 11
    assert len(api.message_requests) == 11


async def test_tools_write_inside_and_are_refused_outside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    outside = tmp_path / "outside.txt"
    scenario = Scenario(
        responders=[
            Rule(
                turn=1,
                reply=Reply.tools(
                    Reply.write("src/app.py", "print('hi')\n"), Reply.write(str(outside), "x")
                ),
            ),
            Rule(turn=2, reply=Reply.text("wrote")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(project, "write"))
    assert result.outcome is Outcome.OK, result.error
    assert (project / "src" / "app.py").read_text() == "print('hi')\n"
    assert not outside.exists()
    denial = api.message_requests[-1].tool_results
    assert any("outside the project directory" in r.text for r in denial), denial
    assert [t.name for t in result.tools] == ["Write", "Write"]


async def test_cancel_mid_tool_kills_cli_and_tool_and_next_session_runs(tmp_path: Path) -> None:
    scenario = Scenario(
        responders=[Rule(prompt_contains="SLOW", turn=1, reply=Reply.tools(Reply.bash(SLOW_TOOL)))],
        default=Reply.text("fine"),
    )
    before = set(_sleepers())
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_the_tool_runs() -> None:
                    while not set(_sleepers()) - before:  # noqa: ASYNC110 - polling another process
                        await anyio.sleep(0.05)
                    scope.cancel(reason="the test cancels mid-tool")

                tg.start_soon(cancel_when_the_tool_runs)
                await runner.run_session(_spec(tmp_path, "SLOW work"))
        assert scope.cancelled_caught
        assert not set(_sleepers()) - before, "the Bash tool outlived its cancelled session"
        # nothing of that session is left, not even its lifeline watcher, while the runner lives on
        left = orchestrator_pids(os.getpid())
        assert left == [], [_describe(pid) for pid in left]
        follow_up = await runner.run_session(_spec(tmp_path, "next"))
    assert follow_up.outcome is Outcome.OK
    assert follow_up.final_text == "fine"


async def test_idle_timeout_stops_a_stalled_stream(tmp_path: Path) -> None:
    scenario = Scenario(responders=[Rule(fault=Fault(kind="stall"))])
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "stall", idle_timeout_s=2.0))
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "no message from the agent for 2 s"


async def test_session_timeout(tmp_path: Path) -> None:
    scenario = Scenario(responders=[Rule(turn=1, reply=Reply.tools(Reply.bash(SLOW_TOOL)))])
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "slow", timeout_s=3.0))
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "session exceeded its 3 s limit"


@pytest.mark.parametrize(
    ("fault", "category", "status"),
    [
        (Fault.http(400, "bad request body"), "invalid_request", 400),
        (Fault.http(401, "invalid x-api-key"), "authentication_failed", 401),
        (Fault.http(429, "slow down", retry_after_s=1), "rate_limit", 429),
        (Fault.usage_limit(reset_in_s=600), "usage_limit", 429),
    ],
)
async def test_api_errors_become_outcomes(
    tmp_path: Path, fault: Fault, category: str, status: int
) -> None:
    scenario = Scenario(responders=[Rule(fault=fault)])
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "hi"))
    assert result.outcome is Outcome.API_ERROR, result
    assert result.api_error_category == category
    assert result.api_status == status
    assert result.error


async def test_max_turns_outcome(tmp_path: Path) -> None:
    scenario = Scenario(default=Reply.tools(Reply.read("missing.txt")))
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "loop", max_turns=2))
    assert result.outcome is Outcome.MAX_TURNS
    assert result.cost_usd > 0


async def test_budget_outcome(tmp_path: Path) -> None:
    scenario = Scenario(
        default=Reply(blocks=Reply.tools(Reply.read("x")).blocks, output_tokens=50_000)
    )
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "spend", max_budget_usd=0.01))
    assert result.outcome is Outcome.BUDGET_EXHAUSTED
    assert result.cost_usd >= 0.01


async def test_cli_failure_carries_its_real_stderr(tmp_path: Path) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\necho 'fatal: config is broken here' >&2\nexit 3\n")
    broken.chmod(0o755)
    async with ClaudeAgentRunner(cli_path=broken) as runner:
        result = await runner.run_session(_spec(tmp_path, "hi"))
    assert result.outcome is Outcome.CLI_ERROR
    assert "fatal: config is broken here" in (result.error or "")


def test_cli_and_tools_die_when_the_orchestrator_is_sigkilled(tmp_path: Path) -> None:
    """A separate orchestrator process starts a session with a long tool, then is SIGKILLed."""
    script = tmp_path / "orchestrator.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, anyio
            from pathlib import Path
            from bmad_trio import Role, SessionSpec
            from bmad_trio._agents._claude_runner import ClaudeAgentRunner
            from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

            async def main():
                scenario = Scenario(responders=[Rule(turn=1, reply=Reply.tools(Reply.bash({SLOW_TOOL!r})))])
                async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env=api.env()) as runner:
                    spec = SessionSpec(role=Role.DEV, prompt="go", cwd=Path({str(tmp_path)!r}),
                                       allowed_tools=("Bash",))
                    await runner.run_session(spec)

            anyio.run(main, backend=sys.argv[1])
            """
        )
    )
    child = subprocess.Popen([sys.executable, str(script), "trio"])
    try:
        deadline = time.monotonic() + 60
        while not _sleepers(child.pid) and time.monotonic() < deadline:
            assert child.poll() is None, "the orchestrator exited early"
            time.sleep(0.1)
        assert _sleepers(child.pid), "the tool never started"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        while orchestrator_pids(child.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        # the CLI, its Bash tool and the tool's own children all carried the orchestrator's tag
        assert not orchestrator_pids(child.pid), "a CLI or tool survived the orchestrator"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_tagged_pids_ignores_other_processes() -> None:
    assert tagged_pids("no-such-session-tag") == []


# --- How a session ends (issue 13): a ResultMessage ends it; deadlines and cancel beat a stalled
# consumer; outside text is made safe; an oversized message fails fast; no SDK noise when we stop.


async def test_result_ends_the_session_even_with_a_background_tool(tmp_path: Path) -> None:
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(Reply.bash(SLOW_TOOL, background=True))),
            Rule(turn=2, reply=Reply.text("started it")),
        ]
    )
    before = set(_sleepers())
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "background", idle_timeout_s=20.0))
        # the background tool was the session's: it is gone as soon as run_session returns
        assert not set(_sleepers()) - before, "the background tool outlived its session"
    assert result.outcome is Outcome.OK, result
    assert result.final_text == "started it"
    assert [t.name for t in result.tools] == ["Bash"]


async def _stalled_consumer(
    receive: MemoryObjectReceiveStream[AgentMessage], got_one: anyio.Event
) -> None:
    """Takes one message, then stops reading without closing its end (a wedged transcript writer)."""
    with receive:
        await receive.receive()
        got_one.set()
        await anyio.sleep_forever()


async def test_a_stalled_consumer_does_not_hold_off_the_idle_timeout(tmp_path: Path) -> None:
    scenario = Scenario(default=Reply.text("never relayed"))
    send, receive = anyio.create_memory_object_stream[AgentMessage](0)
    got_one = anyio.Event()
    started = time.monotonic()
    results: list[SessionResult] = []
    async with (
        FakeAnthropicAPI(scenario) as api,
        _runner(api) as runner,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_stalled_consumer, receive, got_one)
        # The idle deadline also covers the CLI's start-up, which takes seconds on a loaded
        # machine: 8 s leaves room for it, and stays far below the session deadline.
        spec = _spec(tmp_path, "hello", idle_timeout_s=8.0, timeout_s=60.0)
        results.append(await runner.run_session(spec, send))
        tg.cancel_scope.cancel(reason="the session is over")
    [result] = results
    assert got_one.is_set()
    assert result.outcome is Outcome.TIMEOUT, result
    assert result.error == "no message from the agent for 8 s"
    assert time.monotonic() - started < 60.0, "only the session deadline (or later) ended it"


async def test_cancel_beats_a_stalled_consumer(tmp_path: Path) -> None:
    scenario = Scenario(default=Reply.text("never relayed"))
    send, receive = anyio.create_memory_object_stream[AgentMessage](0)
    got_one = anyio.Event()
    elapsed = 0.0
    async with (
        FakeAnthropicAPI(scenario) as api,
        _runner(api) as runner,
        anyio.create_task_group() as consumers,
    ):
        # the consumer lives outside the cancelled scope: it stays wedged, never closing its end
        consumers.start_soon(_stalled_consumer, receive, got_one)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_once_stalled() -> None:
                    nonlocal elapsed
                    await got_one.wait()
                    # cancel only once the runner is blocked relaying the next message
                    while not send.statistics().tasks_waiting_send:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    elapsed = time.monotonic()
                    scope.cancel(reason="the caller gave up")

                tg.start_soon(cancel_once_stalled)
                await runner.run_session(_spec(tmp_path, "hello", timeout_s=20.0), send)
        elapsed = time.monotonic() - elapsed
        consumers.cancel_scope.cancel(reason="the test is over")
    assert scope.cancelled_caught
    assert elapsed < 10.0, f"cancel took {elapsed:.1f} s against a stalled consumer"


async def test_lone_surrogates_from_the_api_are_replaced_at_the_boundary(tmp_path: Path) -> None:
    scenario = Scenario(default=Reply.text("broken \ud800 text"))
    send, receive = anyio.create_memory_object_stream[AgentMessage](100)
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "hello"), send)
    with receive:
        messages = [m async for m in receive]
    assert result.outcome is Outcome.OK, result
    assert result.final_text == "broken \ufffd text"
    texts = [m.text for m in messages if m.kind == "text"]
    assert texts == ["broken \ufffd text"]
    for message in messages:  # what the transcript writer does with each message must not fail
        json.dumps(message.data, ensure_ascii=False).encode()
        message.text.encode()


async def test_an_oversized_message_is_a_prompt_cli_error_without_leaks(tmp_path: Path) -> None:
    scenario = Scenario(
        default=Reply(blocks=Reply.text("x" * 3_000_000).blocks, delta_chars=100_000)
    )
    async with (
        FakeAnthropicAPI(scenario) as api,
        ClaudeAgentRunner(
            env={**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0"}, max_buffer_size=1024 * 1024
        ) as runner,
    ):
        result = await runner.run_session(_spec(tmp_path, "big"))
    gc.collect()  # an unclosed subprocess transport would warn (ResourceWarning) right here
    assert result.outcome is Outcome.CLI_ERROR, result
    assert "maximum buffer size" in (result.error or "")
    # the SDK's own close waits 5 s for a CLI that can never exit (blocked writing the message)
    assert result.duration_s < 5.0, f"took {result.duration_s:.1f} s"


async def test_aclose_during_a_session_reports_cancelled(tmp_path: Path) -> None:
    scenario = Scenario(default=Reply.tools(Reply.bash(SLOW_TOOL)))
    before = set(_sleepers())
    results: list[SessionResult] = []
    async with FakeAnthropicAPI(scenario) as api:
        runner = _runner(api)
        async with anyio.create_task_group() as tg:

            async def session() -> None:
                results.append(await runner.run_session(_spec(tmp_path, "slow")))

            tg.start_soon(session)
            while not set(_sleepers()) - before:  # noqa: ASYNC110 - polling another process
                await anyio.sleep(0.05)
            await runner.aclose()
    assert [r.outcome for r in results] == [Outcome.CANCELLED], results
    assert results[0].error == "the runner was closed"
    assert orchestrator_pids(os.getpid()) == []


@pytest.mark.parametrize("how", ["cancel", "timeout", "result"])
async def test_no_sdk_error_is_logged_when_we_stop_a_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(Reply.bash(SLOW_TOOL, background=how == "result"))),
            Rule(turn=2, reply=Reply.text("done")),
        ]
    )
    before = set(_sleepers())
    caplog.set_level(logging.WARNING, logger="claude_agent_sdk")
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                if how == "cancel":

                    async def cancel_when_the_tool_runs() -> None:
                        while not set(_sleepers()) - before:  # noqa: ASYNC110
                            await anyio.sleep(0.05)
                        scope.cancel(reason="the test cancels mid-tool")

                    tg.start_soon(cancel_when_the_tool_runs)
                timeout = 3.0 if how == "timeout" else 30.0
                result = await runner.run_session(_spec(tmp_path, "go", timeout_s=timeout))
                assert result.outcome is (Outcome.TIMEOUT if how == "timeout" else Outcome.OK)
    assert scope.cancelled_caught is (how == "cancel")
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("claude_agent_sdk")]
    assert noise == []
