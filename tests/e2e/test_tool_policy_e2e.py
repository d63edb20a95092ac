"""The file-tool policy through the real CLI: a scripted QA agent tries to read, list and write
outside its area; every attempt is refused, nothing leaks and the session ends normally."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmad_trio import Outcome, Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio._workflow._prompts import ROLE_TOOLS
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario, ToolUseBlock

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]

SECRET = "HOME-SECRET-7f3a"
OUTSIDE_SECRET = "OUTSIDE-SECRET-91c2"
INSIDE = "INSIDE-MARKER-5d0e"


async def test_escapes_through_the_real_cli_are_refused_and_nothing_leaks(tmp_path: Path) -> None:
    project = tmp_path / "project"
    home = tmp_path / "home"  # the CLI's HOME: ours, never the machine's
    outside = tmp_path / "outside"
    for directory in (project / "docs" / "qa" / "gates", project / "src", home / ".ssh", outside):
        directory.mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"{SECRET}\n")
    (home / ".profile").write_text(f"{SECRET}\n")
    (outside / "notes.txt").write_text(f"{OUTSIDE_SECRET}\n")
    (project / "src" / "app.py").write_text(f"# {INSIDE}\n")
    escapes = (
        ToolUseBlock("Grep", {"pattern": "SECRET", "path": "~/.ssh", "output_mode": "content"}),
        ToolUseBlock(
            "Grep", {"pattern": "SECRET", "path": "~/../outside", "output_mode": "content"}
        ),
        ToolUseBlock("Glob", {"pattern": f"{home}/.*"}),  # the /root/.* shape
        ToolUseBlock("Glob", {"pattern": "*", "path": "~"}),
        ToolUseBlock("Read", {"file_path": " ~/.ssh/id_rsa"}),
        Reply.write("docs/qa/gates/sub/evil.py", "EVIL = 1\n"),
        Reply.write("tests/docs/qa/gates/conftest.py", "EVIL = 1\n"),
        Reply.write(f"{outside}/planted.txt", "x\n"),
    )
    allowed = (
        ToolUseBlock("Grep", {"pattern": "INSIDE-MARKER", "path": "src", "output_mode": "content"}),
        Reply.write("docs/qa/gates/1.1-ok.yml", "gate: PASS\n"),
    )
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(*escapes, *allowed)),
            Rule(turn=2, reply=Reply.text("review finished")),
        ]
    )
    spec = SessionSpec(
        role=Role.QA,
        prompt="review",
        cwd=project,
        allowed_tools=ROLE_TOOLS[Role.QA],
        writable_paths=("docs/qa/gates/*", "docs/stories/1.1.story.md"),
        timeout_s=90.0,
        idle_timeout_s=60.0,
    )
    async with FakeAnthropicAPI(scenario) as api:
        env = {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0", "HOME": str(home)}
        async with ClaudeAgentRunner(env=env) as runner:
            result = await runner.run_session(spec)

    assert result.outcome is Outcome.OK, result.error
    assert result.final_text == "review finished"
    last = api.message_requests[-1]
    results = last.all_tool_results()
    by_call = [(use, results[use.id]) for use in last.tool_uses()]
    assert len(by_call) == len(escapes) + len(allowed)
    for use, outcome in by_call[: len(escapes)]:
        assert "bmad-trio policy" in outcome.text, (use, outcome)
    grep_inside, gate_write = (outcome for _, outcome in by_call[len(escapes) :])
    assert INSIDE in grep_inside.text  # the tools work; only the escapes were refused
    assert not gate_write.is_error, gate_write
    # nothing outside the project (or outside QA's area) was written ...
    assert (project / "docs" / "qa" / "gates" / "1.1-ok.yml").read_text() == "gate: PASS\n"
    assert not (project / "docs" / "qa" / "gates" / "sub").exists()
    assert not (project / "tests").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in home.iterdir()) == [".profile", ".ssh"]
    # ... and nothing from outside reached the model, not even a file name
    sent = "\n".join(str(request.body) for request in api.message_requests)
    for leak in (SECRET, OUTSIDE_SECRET, ".profile"):
        assert leak not in sent, leak


async def test_tilde_is_resolved_with_the_clis_home_not_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our HOME is the project itself, so ``~/.ssh`` would look inside to a policy that used it;
    the CLI runs with another HOME (set in the runner's env) and the policy must use that one."""
    project = tmp_path / "project"
    home = tmp_path / "home"
    (project / ".ssh").mkdir(parents=True)
    (project / ".ssh" / "harmless").write_text("nothing here\n")
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"{SECRET}\n")
    monkeypatch.setenv("HOME", str(project))
    grep = ToolUseBlock("Grep", {"pattern": "SECRET", "path": "~/.ssh", "output_mode": "content"})
    scenario = Scenario(
        responders=[Rule(turn=1, reply=Reply.tools(grep)), Rule(turn=2, reply=Reply.text("done"))]
    )
    spec = SessionSpec(
        role=Role.QA,
        prompt="look",
        cwd=project,
        allowed_tools=ROLE_TOOLS[Role.QA],
        timeout_s=90.0,
        idle_timeout_s=60.0,
    )
    async with FakeAnthropicAPI(scenario) as api:
        env = {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0", "HOME": str(home)}
        async with ClaudeAgentRunner(env=env) as runner:
            result = await runner.run_session(spec)
    assert result.outcome is Outcome.OK, result.error
    [refusal] = api.message_requests[-1].tool_results
    assert "bmad-trio policy" in refusal.text, refusal
    assert SECRET not in "\n".join(str(request.body) for request in api.message_requests)
