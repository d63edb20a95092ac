"""Preflight checks: fake CLI scripts, the real bundled CLI once, httpx.MockTransport for the API."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from rich.console import Console

from bmad_trio._commandline import _doctor
from bmad_trio._commandline._doctor import (
    CheckResult,
    check_api,
    check_auth,
    check_bmad_layout,
    check_cli,
    check_gate_tools,
    checks_table,
    find_cli,
    format_checks,
    preflight_failed,
    run_checks,
)
from bmad_trio._config import GateCommand

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shell-script fake CLIs")

KEY = "sk-ant-test-0123456789-secret"
Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def fake_cli(tmp_path: Path, body: str, *, name: str = "claude", mode: int = 0o755) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def text_of(results: list[CheckResult]) -> str:
    return "\n".join(format_checks(results))


# --- CLI ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cli_version_from_a_configured_cli(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, 'echo "2.5.1 (Claude Code)"')
    result = await check_cli({}, cli)
    assert result == CheckResult(
        name="Claude Code CLI",
        ok=True,
        detail=f"2.5.1 (Claude Code) at {cli} (configured cli_path)",
    )


@pytest.mark.anyio
async def test_an_old_cli_is_a_warning(tmp_path: Path) -> None:
    result = await check_cli({}, fake_cli(tmp_path, 'echo "1.0.128 (Claude Code)"'))
    assert (result.ok, result.fatal) == (False, False)
    assert "older than 2.0.0" in result.detail


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('echo "boom: missing libfoo" >&2; exit 3', "--version exited 3: boom: missing libfoo"),
        ('echo "hello"', "printed no version: 'hello'"),
    ],
)
async def test_a_broken_cli_is_fatal(tmp_path: Path, body: str, expected: str) -> None:
    result = await check_cli({}, fake_cli(tmp_path, body))
    assert (result.ok, result.fatal) == (False, True)
    assert expected in result.detail
    assert result.hint


@pytest.mark.anyio
async def test_a_hanging_cli_is_killed_after_the_timeout(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, "exec sleep 30")
    result = await check_cli({}, cli, version_timeout_s=0.3)
    assert (result.ok, result.fatal) == (False, True)
    assert result.detail == f"{cli} --version gave no answer within 0.3s"


@pytest.mark.anyio
async def test_a_non_executable_cli_is_fatal(tmp_path: Path) -> None:
    result = await check_cli({}, fake_cli(tmp_path, "echo 2.0.0", mode=0o644))
    assert (result.ok, result.fatal) == (False, True)
    assert "is not an executable file" in result.detail
    missing = await check_cli({}, tmp_path / "nope")
    assert (missing.ok, missing.fatal) == (False, True)


@pytest.mark.anyio
async def test_the_bundled_cli_answers_its_version() -> None:
    path, source = find_cli({})
    assert path is not None
    assert path.name == "claude"
    assert source == "bundled with claude-agent-sdk"
    assert "claude_agent_sdk" in str(path)
    result = await check_cli(dict(os.environ))
    assert result.ok, result
    assert "(Claude Code)" in result.detail
    assert "bundled with claude-agent-sdk" in result.detail


def test_finding_the_cli_does_not_import_the_sdk() -> None:
    import subprocess

    code = (
        "import sys\n"
        "from bmad_trio._commandline._doctor import find_cli\n"
        "path, source = find_cli({})\n"
        "assert path is not None and source.startswith('bundled'), (path, source)\n"
        "assert 'claude_agent_sdk' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.anyio
async def test_without_bundled_cli_path_is_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_doctor, "_bundled_cli", lambda: None)
    assert find_cli({"PATH": str(tmp_path)}) == (None, "")
    result = await check_cli({"PATH": str(tmp_path)})
    assert (result.ok, result.fatal) == (False, True)
    assert "not found" in result.detail
    cli = fake_cli(tmp_path, 'echo "2.1.0 (Claude Code)"')
    assert find_cli({"PATH": str(tmp_path)}) == (cli, "on PATH")


# --- auth ---------------------------------------------------------------------------------------


def test_auth_names_the_variable_never_the_value() -> None:
    for name in _doctor.AUTH_VARIABLES:
        result = check_auth({name: KEY})
        assert result.ok
        assert result.detail.startswith(f"{name} set; runs use the ")
        assert result.detail.endswith(f"({name})")
        assert KEY not in result.detail
    both = check_auth({"ANTHROPIC_API_KEY": KEY, "CLAUDE_CODE_OAUTH_TOKEN": KEY})
    assert both.detail == (
        "ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN set; runs use the API key (ANTHROPIC_API_KEY)"
    )
    missing = check_auth({"ANTHROPIC_API_KEY": "  ", "HOME": "/nonexistent-home"})
    assert (missing.ok, missing.fatal) == (False, True)
    assert "ANTHROPIC_API_KEY" in missing.hint
    assert "claude login" in missing.hint


def test_auth_names_a_claude_login_when_no_variable_is_set(tmp_path: Path) -> None:
    credentials = tmp_path / ".claude" / ".credentials.json"
    credentials.parent.mkdir()
    credentials.write_text('{"claudeAiOauth": {"accessToken": "sk-ant-oat01-secret"}}')
    result = check_auth({"HOME": str(tmp_path)})
    assert result.ok
    assert result.detail == f"runs use your `claude login` ({credentials})"
    assert "secret" not in result.detail
    assert not check_auth({"HOME": str(tmp_path / "elsewhere")}).ok


# --- API ----------------------------------------------------------------------------------------


def answering(status: int, requests: list[httpx.Request] | None = None) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(request)
        return httpx.Response(status, json={"data": []})

    return handler


def raising(error: type[httpx.TransportError]) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return handler


async def api_result(handler: Handler, env: dict[str, str], **kwargs: float) -> CheckResult:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await check_api(env, client=client, **kwargs)


@pytest.mark.anyio
async def test_api_accepts_the_key() -> None:
    requests: list[httpx.Request] = []
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "http://gateway.test:8080/anthropic/"}
    result = await api_result(answering(200, requests), env)
    assert result == CheckResult(
        name="API", ok=True, detail="http://gateway.test:8080 answered, credentials accepted"
    )
    (request,) = requests
    assert request.method == "GET"
    assert str(request.url) == "http://gateway.test:8080/anthropic/v1/models?limit=1"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


@pytest.mark.anyio
async def test_api_default_url_and_bearer_tokens() -> None:
    requests: list[httpx.Request] = []
    await api_result(answering(200, requests), {"ANTHROPIC_AUTH_TOKEN": KEY})
    await api_result(answering(200, requests), {"CLAUDE_CODE_OAUTH_TOKEN": KEY})
    assert [str(r.url) for r in requests] == ["https://api.anthropic.com/v1/models?limit=1"] * 2
    assert [r.headers["authorization"] for r in requests] == [f"Bearer {KEY}"] * 2
    assert "anthropic-beta" not in requests[0].headers
    assert requests[1].headers["anthropic-beta"] == "oauth-2025-04-20"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("handler", "ok", "fatal", "detail"),
    [
        (
            answering(401),
            False,
            True,
            "https://api.anthropic.com refused the credentials (HTTP 401)",
        ),
        (
            answering(403),
            False,
            True,
            "https://api.anthropic.com refused the credentials (HTTP 403)",
        ),
        (
            raising(httpx.ConnectError),
            False,
            True,
            "https://api.anthropic.com unreachable (ConnectError)",
        ),
        (
            raising(httpx.ConnectTimeout),
            False,
            True,
            "https://api.anthropic.com did not answer within 5s",
        ),
        (answering(404), True, False, "has no /v1/models (HTTP 404); key not verified"),
        (answering(529), False, False, "https://api.anthropic.com answered HTTP 529"),
    ],
    ids=["401", "403", "connect-error", "connect-timeout", "404", "529"],
)
async def test_api_outcomes(handler: Handler, ok: bool, fatal: bool, detail: str) -> None:
    result = await api_result(handler, {"ANTHROPIC_API_KEY": KEY})
    assert (result.ok, result.fatal) == (ok, fatal)
    assert detail in result.detail
    assert KEY not in repr(result)


@pytest.mark.anyio
async def test_api_that_hangs_is_unreachable_after_the_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    result = await api_result(hang, {"ANTHROPIC_API_KEY": KEY}, request_timeout_s=0.05)
    assert (result.ok, result.fatal) == (False, True)
    assert result.detail == "https://api.anthropic.com did not answer within 0.05s"


@pytest.mark.anyio
async def test_api_oauth_refusal_is_only_a_warning() -> None:
    result = await api_result(answering(401), {"CLAUDE_CODE_OAUTH_TOKEN": KEY})
    assert (result.ok, result.fatal) == (False, False)


@pytest.mark.anyio
async def test_api_without_credentials_or_with_a_bad_base_url() -> None:
    calls: list[httpx.Request] = []
    unchecked = await api_result(answering(200, calls), {})
    assert (unchecked.ok, unchecked.fatal) == (False, True)
    assert "not checked (no credentials)" in unchecked.detail
    secret_url = f"ftp://user:{KEY}@host.test/"
    bad = await api_result(
        answering(200, calls), {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": secret_url}
    )
    assert (bad.ok, bad.fatal) == (False, True)
    assert KEY not in repr(bad)
    assert calls == []


@pytest.mark.anyio
async def test_api_with_its_own_client_reports_a_refused_connection() -> None:
    # nothing listens on port 9 of loopback
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": f"http://u:{KEY}@127.0.0.1:9"}
    result = await check_api(env, request_timeout_s=3)
    assert (result.ok, result.fatal) == (False, True)
    assert result.detail == "http://127.0.0.1:9 unreachable (ConnectError)"


# --- gates and layout ---------------------------------------------------------------------------


def test_gate_tools(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_cli(bin_dir, "true", name="ruff")
    fake_cli(tmp_path, "true", name="check.sh")
    gates = [
        GateCommand("lint", ("ruff", "check", ".")),
        GateCommand("types", ("no-such-checker-xyz",)),
        GateCommand("local", ("./check.sh",)),
        GateCommand("empty", ()),
    ]
    results = check_gate_tools(tmp_path, gates, {"PATH": str(bin_dir)})
    assert [(r.name, r.ok, r.fatal) for r in results] == [
        ("gate lint", True, False),
        ("gate types", False, False),
        ("gate local", True, False),
        ("gate empty", False, False),
    ]
    assert results[0].detail == f"ruff check .: {bin_dir / 'ruff'}"
    assert results[1].detail == "`no-such-checker-xyz` not found; a run fails this gate"
    assert "--skip-gates" in results[1].hint


def test_bmad_layout(tmp_path: Path) -> None:
    plain = check_bmad_layout(tmp_path)
    assert (plain.ok, plain.fatal) == (False, False)
    assert "plain layout" in plain.detail
    (tmp_path / ".bmad-core").mkdir()
    (tmp_path / ".bmad-core" / "core-config.yaml").write_text("devStoryLocation: docs/stories\n")
    v4 = check_bmad_layout(tmp_path)
    assert v4.ok
    assert (
        v4.detail == f"BMAD v4 at {tmp_path} (.bmad-core/core-config.yaml); stories in docs/stories"
    )
    missing = check_bmad_layout(tmp_path / "missing")
    assert (missing.ok, missing.fatal) == (False, False)


def test_bmad_layout_says_what_it_could_not_place(tmp_path: Path) -> None:
    config = tmp_path / "_bmad" / "bmm" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("implementation_artifacts: /Users/someone/elsewhere/impl\n")
    result = check_bmad_layout(tmp_path)
    assert (result.ok, result.fatal) == (False, False)
    assert result.detail.startswith(f"BMAD v6 at {tmp_path}")
    assert "/Users/someone/elsewhere/impl" in result.detail


# --- everything ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_checks_in_order_and_the_exit_decision(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, 'echo "2.1.330 (Claude Code)"')
    env = {"ANTHROPIC_API_KEY": KEY, "PATH": str(tmp_path)}
    gates = [GateCommand("pytest", ("no-such-pytest-xyz", "-q"))]
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answering(200))) as accepting,
        httpx.AsyncClient(transport=httpx.MockTransport(answering(401))) as refusing,
    ):
        results = await run_checks(tmp_path, env=env, cli_path=cli, gates=gates, client=accepting)
        refused = await run_checks(tmp_path, env=env, cli_path=cli, gates=gates, client=refusing)
    assert [r.name for r in results] == [
        "Claude Code CLI",
        "process containment",
        "auth",
        "API",
        "sandbox",
        "gate pytest",
        "BMAD layout",
        "git",
    ]
    assert not preflight_failed(results)  # a missing gate tool, plain layout, no repo only warn
    assert not results[-1].ok
    assert "git init" in results[-1].detail  # tmp_path is no repository: what run needs
    assert preflight_failed(refused)
    offline = await run_checks(tmp_path, env={}, cli_path=cli, gates=(), api=False)
    names = [
        "Claude Code CLI",
        "process containment",
        "auth",
        "sandbox",
        "gates",
        "BMAD layout",
        "git",
    ]
    assert [r.name for r in offline] == names
    assert not offline[4].ok
    assert "none configured and none detected" in offline[4].detail
    assert preflight_failed(offline)  # no credentials
    text = text_of(results + refused)
    assert KEY not in text
    assert "ok   auth: ANTHROPIC_API_KEY set" in text
    assert "warn gate pytest: `no-such-pytest-xyz` not found; a run fails this gate" in text
    assert "FAIL API: https://api.anthropic.com refused the credentials (HTTP 401)" in text
    assert "     hint: check the key" in text


def test_checks_table_renders_marks_and_hints() -> None:
    results = [
        CheckResult(name="auth", ok=True, detail="ANTHROPIC_API_KEY set"),
        CheckResult(name="API", ok=False, detail="refused", hint="check the key", fatal=True),
        CheckResult(name="gate ruff", ok=False, detail="`ruff` not found", hint="install ruff"),
    ]
    console = Console(
        file=io.StringIO(), width=100, force_terminal=True, color_system=None, record=True
    )
    console.print(checks_table(results))
    text = console.export_text()
    rows = [line for line in text.splitlines() if "│" in line]
    assert any("ok" in row and "ANTHROPIC_API_KEY set" in row for row in rows)
    assert any("FAIL" in row and "refused" in row for row in rows)
    assert any("warn" in row and "`ruff` not found" in row for row in rows)
    assert "hint: check the key" in text


# --- sandbox ------------------------------------------------------------------------------------


def test_sandbox_check_warns_under_auto_fails_under_required_and_names_the_install() -> None:
    from bmad_trio._agents._sandbox import SandboxProbe
    from bmad_trio._commandline._doctor import check_sandbox

    missing = SandboxProbe(
        available=False, detail="bubblewrap (bwrap) not found", install="sudo apt-get install x"
    )
    auto = check_sandbox("auto", missing)
    assert (auto.ok, auto.fatal) == (False, False)
    assert "sudo apt-get install x" in auto.hint
    required = check_sandbox("required", missing)
    assert (required.ok, required.fatal) == (False, True)
    assert check_sandbox("off", missing).ok
    works = check_sandbox("auto", SandboxProbe(available=True, detail="bubblewrap and socat work"))
    assert works.ok
    assert "sandboxed" in works.detail
