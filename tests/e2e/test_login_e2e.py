"""A ``claude login`` user (no key or token in the environment): the sessions authenticate with the
login's OAuth token, copied alone into the runner's isolated config dir, and nothing of the user's
own Claude settings reaches the agents."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bmad_trio import Outcome, Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]

TOKEN = "sk-ant-oat01-fake-login-token-3c9d"


def _login(home: Path) -> Path:
    claude = home / ".claude"
    claude.mkdir(parents=True)
    credentials = claude / ".credentials.json"
    oauth = {
        "accessToken": TOKEN,
        "refreshToken": "sk-ant-ort01-fake-refresh",
        "expiresAt": int((time.time() + 86400) * 1000),
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "pro",
    }
    credentials.write_text(json.dumps({"claudeAiOauth": oauth}))
    credentials.chmod(0o600)
    # the user's own settings: a hook that would leave a mark if it ever ran
    (claude / "settings.json").write_text(
        json.dumps(
            {
                "hooks": {
                    "PreToolUse": [
                        {"hooks": [{"type": "command", "command": f"touch {home}/HOOK-RAN"}]}
                    ]
                }
            }
        )
    )
    return credentials


async def test_a_claude_login_user_runs_with_that_login_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    credentials = _login(home)
    before = credentials.read_bytes()
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(Reply.bash("echo ran"))),
            Rule(turn=2, reply=Reply.text("done")),
        ]
    )
    spec = SessionSpec(
        role=Role.DEV,
        prompt="go",
        cwd=project,
        allowed_tools=("Bash",),
        timeout_s=90.0,
        idle_timeout_s=60.0,
    )
    async with FakeAnthropicAPI(scenario, api_key=TOKEN) as api:  # only this token is accepted
        env = {k: v for k, v in api.env().items() if k != "ANTHROPIC_API_KEY"}
        env |= {"CLAUDE_CODE_MAX_RETRIES": "0", "HOME": str(home)}
        async with ClaudeAgentRunner(env=env) as runner:
            result = await runner.run_session(spec)
            directory = runner._ensure_processes().directory  # pyright: ignore[reportPrivateUsage]
            copies = list(directory.glob("config/.credentials.json"))
            modes = [path.stat().st_mode & 0o777 for path in copies]

    assert result.outcome is Outcome.OK, result.error
    assert result.final_text == "done"
    assert len(api.message_requests) == 2  # every request carried the login's bearer token
    assert all(r.headers.get("authorization") == "<redacted>" for r in api.message_requests)
    assert modes == [0o600]  # the copy, private ...
    assert not copies[0].exists()  # ... and gone with the runner
    assert credentials.read_bytes() == before  # the user's file untouched
    assert not (home / "HOOK-RAN").exists()  # the user's settings (a hook) never loaded
