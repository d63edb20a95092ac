"""The real Claude Code CLI (bundled in claude-agent-sdk) against FakeAnthropicAPI."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from bmad_trio.testing import (
    FakeAnthropicAPI,
    Fault,
    Reply,
    Rule,
    Scenario,
    bmad_actor_scenario,
)

RunCli = Callable[..., Awaitable[Any]]

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    return project


async def test_text_reply_costs_money(tmp_path: Path, run_cli: RunCli) -> None:
    scenario = Scenario(responders=[Rule(prompt_contains="hello", reply=Reply.text("Hi there!"))])
    async with FakeAnthropicAPI(scenario) as api:
        run = await run_cli(api, _project(tmp_path), "hello")
    assert run.error is None, run.stderr[-20:]
    assert run.result.result == "Hi there!"
    assert run.result.total_cost_usd is not None
    assert run.result.total_cost_usd > 0
    request = api.message_requests[0]
    assert request.query == {"beta": "true"}
    assert request.stream
    assert request.headers.get("x-api-key") == "<redacted>"


async def test_write_creates_the_file(tmp_path: Path, run_cli: RunCli) -> None:
    project = _project(tmp_path)
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(Reply.write("out/hello.txt", "hello world\n"))),
            Rule(turn=2, tool_result_contains="hello.txt", reply=Reply.text("written")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api:
        run = await run_cli(api, project, "write it")
    assert run.result.result == "written", run.stderr[-20:]
    assert (project / "out" / "hello.txt").read_text() == "hello world\n"


async def test_edit_after_read_and_several_tools_in_one_message(
    tmp_path: Path, run_cli: RunCli
) -> None:
    project = _project(tmp_path)
    (project / "a.txt").write_text("alpha\n")
    (project / "b.txt").write_text("beta\n")
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(Reply.read("a.txt"), Reply.read("b.txt"))),
            Rule(
                turn=2,
                reply=Reply.tools(
                    Reply.edit("a.txt", "alpha", "ALPHA"),
                    Reply.edit("b.txt", "beta", "BETA"),
                    Reply.bash("echo ran > c.txt"),
                ),
            ),
            Rule(turn=3, reply=Reply.text("edited")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api:
        run = await run_cli(api, project, "edit them")
    assert run.result.result == "edited", run.stderr[-20:]
    assert (project / "a.txt").read_text() == "ALPHA\n"
    assert (project / "b.txt").read_text() == "BETA\n"
    assert (project / "c.txt").read_text() == "ran\n"
    third = api.message_requests[2]
    assert len(third.tool_results) == 3
    assert not any(r.is_error for r in third.tool_results)


async def test_stream_error_falls_back_to_non_streaming(tmp_path: Path, run_cli: RunCli) -> None:
    scenario = Scenario(
        responders=[
            Rule(stream=True, fault=Fault(kind="stream_error"), times=1),
            Rule(reply=Reply.text("fallback ok")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api:
        run = await run_cli(api, _project(tmp_path), "hi", env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    assert run.result.result == "fallback ok", run.stderr[-20:]
    streams = [r.stream for r in api.message_requests]
    assert streams[0] is True
    assert False in streams


async def test_429_then_success_with_retries(tmp_path: Path, run_cli: RunCli) -> None:
    scenario = Scenario(
        responders=[
            Rule(request_number=1, fault=Fault.http(429, "slow down", retry_after_s=0)),
            Rule(reply=Reply.text("after retry")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api:
        run = await run_cli(api, _project(tmp_path), "hi", env={"CLAUDE_CODE_MAX_RETRIES": "2"})
    assert run.result.result == "after retry", run.stderr[-20:]
    assert len(api.message_requests) == 2


async def test_400_fails_fast(tmp_path: Path, run_cli: RunCli) -> None:
    scenario = Scenario(responders=[Rule(fault=Fault.http(400, "bad request from the fake"))])
    async with FakeAnthropicAPI(scenario) as api:
        start = anyio.current_time()
        run = await run_cli(api, _project(tmp_path), "hi")
        elapsed = anyio.current_time() - start
    assert run.result.is_error
    assert run.error is not None
    assert "bad request from the fake" in " ".join(run.texts)
    # No backoff: the CLI only re-sends at once with fewer beta headers (6 requests measured).
    assert elapsed < 10
    assert 1 <= len(api.message_requests) <= 8


EPIC = """# Epic 1: Greetings

## Stories

### Story 1.1: Add greeting

As a user, I want a greeting function, so that the app can say hello.

#### Acceptance Criteria

1. `add_greeting("X")` returns a greeting for X.
2. The function is covered by unit tests.
"""


def _context(role: str, **extra: str) -> str:
    lines = [
        "## Context",
        f"- role: {role}",
        "- story: 1.1",
        "- story title: Add greeting",
        "- story file: docs/stories/1.1.add-greeting.md",
        "- epic file: docs/prd/epic-1.md",
        "- gate file: docs/qa/gates/1.1-add-greeting.yml",
        "- package: src/sample_app",
    ]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in extra.items()]
    return f"You are the {role} agent. Do your job for the story below.\n\n" + "\n".join(lines)


async def test_bmad_actor_sm_dev_qa(tmp_path: Path, run_cli: RunCli) -> None:
    project = _project(tmp_path)
    (project / "docs" / "prd").mkdir(parents=True)
    (project / "docs" / "prd" / "epic-1.md").write_text(EPIC)
    (project / "src" / "sample_app").mkdir(parents=True)
    (project / "src" / "sample_app" / "__init__.py").write_text("")
    story = project / "docs" / "stories" / "1.1.add-greeting.md"
    gate = project / "docs" / "qa" / "gates" / "1.1-add-greeting.yml"
    async with FakeAnthropicAPI(bmad_actor_scenario({"1.1"})) as api:
        sm = await run_cli(api, project, _context("sm"))
        assert sm.error is None, sm.stderr[-20:]
        text = story.read_text()
        assert text.startswith("# Story 1.1: Add greeting\n")
        assert "## Status\n\nDraft\n" in text
        assert "As a user, I want a greeting function" in text
        assert '1. `add_greeting("X")` returns a greeting for X.' in text
        assert "- [ ] Task 1" in text
        assert "  - [ ] " in text

        story.write_text(text.replace("\nDraft\n", "\nApproved\n"))
        dev = await run_cli(api, project, _context("dev"))
        assert dev.error is None, dev.stderr[-20:]
        text = story.read_text()
        assert "## Status\n\nReview\n" in text
        assert "- [ ]" not in text
        assert "- src/sample_app/add_greeting.py" in text
        module = project / "src" / "sample_app" / "add_greeting.py"
        assert "def add_greeting" in module.read_text()
        assert (project / "tests" / "test_add_greeting.py").is_file()

        qa = await run_cli(api, project, _context("qa", review="first"))
        assert qa.error is None, qa.stderr[-20:]
        data = yaml.safe_load(gate.read_text())
        assert data["gate"] == "FAIL"
        assert data["story"] == "1.1"
        assert data["top_issues"]
        text = story.read_text()
        assert "## Status\n\nReview\n" in text  # QA never changes Status
        assert "Gate: FAIL" in text

        dev2 = await run_cli(api, project, _context("dev", findings="cover the empty name"))
        assert dev2.error is None, dev2.stderr[-20:]
        story.write_text(story.read_text())
        qa2 = await run_cli(api, project, _context("qa", review="again"))
        assert qa2.error is None, qa2.stderr[-20:]
        assert yaml.safe_load(gate.read_text())["gate"] == "PASS"

    costs = [run.result.total_cost_usd or 0.0 for run in (sm, dev, qa, dev2, qa2)]
    assert all(cost > 0 for cost in costs)
    for command in (
        [sys.executable, "-m", "unittest", "discover", "-s", "tests"],
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
    ):
        done = await anyio.run_process(command, cwd=project, check=False)
        assert done.returncode == 0, (command, done.stdout.decode(), done.stderr.decode())


async def test_usage_limit_is_not_retried(tmp_path: Path, run_cli: RunCli) -> None:
    scenario = Scenario(responders=[Rule(fault=Fault.usage_limit(reset_in_s=600))])
    async with FakeAnthropicAPI(scenario) as api:
        run = await run_cli(api, _project(tmp_path), "hi", env={"CLAUDE_CODE_MAX_RETRIES": "2"})
    assert run.result.is_error
    assert "usage limit" in " ".join(run.texts)
    assert len(api.message_requests) == 1  # measured: the CLI does not retry a usage limit


async def test_bmad_actor_fixer(tmp_path: Path, run_cli: RunCli) -> None:
    project = _project(tmp_path)
    (project / "src").mkdir()
    target = project / "src" / "messy.py"
    target.write_text("x = 1   \ny = 2\t\n")
    prompt = (
        "Fix the failing gate.\n\n## Context\n- role: fixer\n"
        "- gate command: ruff check .\n  src/messy.py:1:6: W291 Trailing whitespace\n"
    )
    async with FakeAnthropicAPI(bmad_actor_scenario()) as api:
        run = await run_cli(api, project, prompt)
    assert run.error is None, run.stderr[-20:]
    assert target.read_text() == "x = 1\ny = 2\n"
    assert "tidied src/messy.py" in run.result.result
