"""Preflight checks (``bmad-trio doctor``, and before ``run``): CLI, auth, API, gate tools, BMAD layout.

Every check returns a :class:`CheckResult`; none raises for the condition it checks. A failed check
with ``fatal=True`` (no CLI, no credentials, API unreachable or key refused) means ``run`` must not
start (exit 3); the others are warnings with a hint. Secrets are never part of a result: the auth
check names the variable, never its value, and URLs are shown as scheme, host and port only.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio
import attrs
import httpx
from rich.table import Table
from rich.text import Text

from .._agents._sandbox import SandboxMode, SandboxProbe, probe_sandbox
from .._config import GateCommand

__all__ = [
    "AUTH_VARIABLES",
    "DEFAULT_API_URL",
    "CheckResult",
    "check_api",
    "check_auth",
    "check_bmad_layout",
    "check_cli",
    "check_containment",
    "check_gate_tools",
    "check_sandbox",
    "checks_table",
    "find_cli",
    "format_checks",
    "preflight_failed",
    "run_checks",
]

DEFAULT_API_URL: Final = "https://api.anthropic.com"
AUTH_VARIABLES: Final = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
"""Credentials the Claude Code CLI reads from the environment, in the order we check them."""
ANTHROPIC_VERSION: Final = "2023-06-01"
OAUTH_BETA: Final = "oauth-2025-04-20"
MINIMUM_CLI_VERSION: Final = (2, 0, 0)
"""Oldest CLI the claude-agent-sdk supports (its own MINIMUM_CLAUDE_CODE_VERSION)."""

_VERSION_RE: Final = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@attrs.frozen(kw_only=True)
class CheckResult:
    """One check's outcome. ``fatal`` says whether a failure (``ok=False``) must stop ``run``."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    fatal: bool = False


def preflight_failed(results: Sequence[CheckResult]) -> bool:
    """True when a fatal check failed: ``run`` exits 3 without spending anything."""
    return any(result.fatal and not result.ok for result in results)


def _safe_origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


def _first_line(text: str, limit: int = 200) -> str:
    stripped = text.strip()
    line = stripped.splitlines()[0] if stripped else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- Claude Code CLI ------------------------------------------------------------------------------


def _bundled_cli() -> Path | None:
    """The CLI bundled in claude-agent-sdk, located without importing the SDK."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return None
    name = "claude.exe" if sys.platform == "win32" else "claude"
    path = Path(spec.origin).parent / "_bundled" / name
    return path if path.is_file() else None


def find_cli(env: Mapping[str, str], cli_path: Path | None = None) -> tuple[Path | None, str]:
    """The CLI the run would use and where it came from: ``cli_path``, the SDK's bundled one, PATH.

    The order mirrors claude-agent-sdk's own search (bundled first, then PATH).
    """
    if cli_path is not None:
        return cli_path, "configured cli_path"
    bundled = _bundled_cli()
    if bundled is not None:
        return bundled, "bundled with claude-agent-sdk"
    found = shutil.which("claude", path=env.get("PATH"))
    if found is not None:
        return Path(found), "on PATH"
    return None, ""


def _cli_failure(detail: str, hint: str) -> CheckResult:
    """A failed (fatal) CLI check: no run can start without a working CLI."""
    return CheckResult(name="Claude Code CLI", ok=False, detail=detail, hint=hint, fatal=True)


async def check_cli(
    env: Mapping[str, str], cli_path: Path | None = None, *, version_timeout_s: float = 10.0
) -> CheckResult:
    """Find the CLI and run ``<cli> --version`` (killed after ``version_timeout_s`` seconds).

    Cancellation kills the subprocess.
    """
    path, source = find_cli(env, cli_path)
    if path is None:
        return _cli_failure(
            "not found (no bundled CLI in claude-agent-sdk, no `claude` on PATH)",
            "pip install --force-reinstall claude-agent-sdk, or install Claude Code and "
            "put `claude` on PATH, or set cli_path in the config",
        )
    if not path.is_file() or not os.access(path, os.X_OK):
        return _cli_failure(
            f"{path} ({source}) is not an executable file",
            "check cli_path in the config, or reinstall claude-agent-sdk",
        )
    try:
        with anyio.fail_after(version_timeout_s):
            process = await anyio.run_process(
                [str(path), "--version"],
                check=False,
                env=dict(env),
                stdin=subprocess.DEVNULL,
            )
    except TimeoutError:
        return _cli_failure(
            f"{path} --version gave no answer within {version_timeout_s:g}s",
            "run it by hand to see what it waits for",
        )
    except OSError as exc:
        return _cli_failure(
            f"{path} could not start: {exc.strerror or exc}",
            "reinstall claude-agent-sdk, or point cli_path at a working `claude`",
        )
    output = process.stdout.decode(errors="replace")
    if process.returncode != 0:
        error = _first_line(process.stderr.decode(errors="replace") or output)
        return _cli_failure(
            f"{path} --version exited {process.returncode}: {error}",
            "run it by hand to see the full error",
        )
    version = _first_line(output, 80)
    match = _VERSION_RE.search(output)
    if match is None:
        return _cli_failure(
            f"{path} --version printed no version: {version!r}",
            "is cli_path really Claude Code?",
        )
    numbers = tuple(int(part) for part in match.groups())
    if numbers < MINIMUM_CLI_VERSION:
        minimum = ".".join(map(str, MINIMUM_CLI_VERSION))
        return CheckResult(
            name="Claude Code CLI",
            ok=False,
            detail=f"{version} at {path} is older than {minimum}",
            hint="update Claude Code (or unset cli_path to use the bundled CLI)",
        )
    return CheckResult(name="Claude Code CLI", ok=True, detail=f"{version} at {path} ({source})")


# --- auth and API ---------------------------------------------------------------------------------


def _present(env: Mapping[str, str]) -> list[str]:
    return [name for name in AUTH_VARIABLES if env.get(name, "").strip()]


_KINDS: Final = {
    "ANTHROPIC_API_KEY": "the API key",
    "ANTHROPIC_AUTH_TOKEN": "the auth token",
    "CLAUDE_CODE_OAUTH_TOKEN": "the OAuth token",
}


def _login_token(env: Mapping[str, str]) -> str | None:
    """The access token of the user's ``claude login`` (never shown), if there is one."""
    import json

    from .._agents._login import login_source

    source = login_source(env)
    if source is None:
        return None
    try:
        data: object = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    token = oauth.get("accessToken") if isinstance(oauth, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return token if isinstance(token, str) and token.strip() else None


def check_auth(env: Mapping[str, str]) -> CheckResult:
    """Which credential a run uses: a variable (by name only), else the user's ``claude login``."""
    present = _present(env)
    if present:
        uses = f"runs use {_KINDS[present[0]]} ({present[0]})"
        return CheckResult(name="auth", ok=True, detail=", ".join(present) + f" set; {uses}")
    from .._agents._login import login_source

    source = login_source(env)
    if source is not None:
        return CheckResult(name="auth", ok=True, detail=f"runs use your `claude login` ({source})")
    return CheckResult(
        name="auth",
        ok=False,
        detail="none of " + ", ".join(AUTH_VARIABLES) + " is set, and no `claude login`",
        hint="export ANTHROPIC_API_KEY=… (or run `claude login`, or `claude setup-token` and "
        "export CLAUDE_CODE_OAUTH_TOKEN)",
        fatal=True,
    )


def _auth_headers(env: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """Headers as the CLI would send them, and whether only an OAuth token is available."""
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    api_key = env.get("ANTHROPIC_API_KEY", "").strip()
    auth_token = env.get("ANTHROPIC_AUTH_TOKEN", "").strip()
    oauth_token = env.get("CLAUDE_CODE_OAUTH_TOKEN", "").strip()
    if api_key:
        headers["x-api-key"] = api_key
    if auth_token:
        headers["authorization"] = f"Bearer {auth_token}"
    if not api_key and not auth_token and not oauth_token:
        oauth_token = _login_token(env) or ""
    if not api_key and not auth_token and oauth_token:
        headers["authorization"] = f"Bearer {oauth_token}"
        headers["anthropic-beta"] = OAUTH_BETA
        return headers, True
    return headers, False


async def check_api(
    env: Mapping[str, str],
    *,
    client: httpx.AsyncClient | None = None,
    request_timeout_s: float = 5.0,
) -> CheckResult:
    """One cheap authenticated request: ``GET {ANTHROPIC_BASE_URL}/v1/models?limit=1``.

    200 → ok; 401/403 → key refused; no answer → unreachable (all fatal). A 404/405 (a proxy or the
    scripted server without a models endpoint), 429 or 5xx means the API is there: a warning.
    Cancellation abandons the request (and closes a client opened here).
    """
    raw_base = env.get("ANTHROPIC_BASE_URL", "").strip() or DEFAULT_API_URL
    try:
        base = httpx.URL(raw_base)
    except httpx.InvalidURL:
        base = None
    if base is None or base.scheme not in ("http", "https") or not base.host:
        return CheckResult(
            name="API",
            ok=False,
            detail="ANTHROPIC_BASE_URL is not an http(s) URL",
            hint="fix or unset ANTHROPIC_BASE_URL",
            fatal=True,
        )
    where = _safe_origin(base)
    if not _present(env) and _login_token(env) is None:
        return CheckResult(
            name="API", ok=False, detail=f"{where}: not checked (no credentials)", fatal=True
        )
    headers, oauth_only = _auth_headers(env)
    url = base.join(base.path.rstrip("/") + "/v1/models")
    try:
        with anyio.fail_after(request_timeout_s):
            if client is None:
                async with httpx.AsyncClient(timeout=request_timeout_s) as own_client:
                    response = await own_client.get(url, params={"limit": 1}, headers=headers)
            else:
                response = await client.get(
                    url, params={"limit": 1}, headers=headers, timeout=request_timeout_s
                )
    except (TimeoutError, httpx.TimeoutException):
        return CheckResult(
            name="API",
            ok=False,
            detail=f"{where} did not answer within {request_timeout_s:g}s",
            hint="check the network, a proxy (HTTPS_PROXY) or ANTHROPIC_BASE_URL",
            fatal=True,
        )
    except httpx.TransportError as exc:
        return CheckResult(
            name="API",
            ok=False,
            detail=f"{where} unreachable ({type(exc).__name__})",
            hint="check the network, a proxy (HTTPS_PROXY) or ANTHROPIC_BASE_URL",
            fatal=True,
        )
    status = response.status_code
    if response.is_success:
        return CheckResult(name="API", ok=True, detail=f"{where} answered, credentials accepted")
    if status in (401, 403):
        if oauth_only:
            return CheckResult(
                name="API",
                ok=False,
                detail=f"{where} answered HTTP {status} to the OAuth token on /v1/models",
                hint="the CLI may still accept it; if runs fail with 401, run `claude setup-token`",
            )
        return CheckResult(
            name="API",
            ok=False,
            detail=f"{where} refused the credentials (HTTP {status})",
            hint="check the key (or token) and that it belongs to this API endpoint",
            fatal=True,
        )
    if status in (404, 405):
        detail = f"{where} answered, but has no /v1/models (HTTP {status}); key not verified"
        return CheckResult(name="API", ok=True, detail=detail)
    return CheckResult(
        name="API",
        ok=False,
        detail=f"{where} answered HTTP {status}",
        hint="the API is reachable but unhappy (rate limit or outage); runs wait and retry",
    )


# --- sandbox ------------------------------------------------------------------------------------


def check_sandbox(mode: SandboxMode, probe: SandboxProbe) -> CheckResult:
    """Whether the agents' OS sandbox works (``probe`` ran a sandboxed command), and how to
    install it if not: a warning under ``auto``, fatal under ``required``, ok under ``off``."""
    if mode == "off":
        return CheckResult(
            name="sandbox", ok=True, detail="off (sandbox = off): file-tool policy only"
        )
    if probe.available:
        return CheckResult(
            name="sandbox", ok=True, detail=f"{probe.detail}: agents' shell sandboxed"
        )
    hint = f"install it: {probe.install}" if probe.install else "no OS sandbox on this platform"
    if mode == "auto":
        hint += " (or set sandbox = off to silence this)"
    return CheckResult(
        name="sandbox",
        ok=False,
        detail=f"{probe.detail}: agents' shell commands would run unsandboxed",
        hint=hint,
        fatal=mode == "required",
    )


# --- gates and layout -----------------------------------------------------------------------------


def check_gate_tools(
    project: Path, gates: Sequence[GateCommand], env: Mapping[str, str]
) -> list[CheckResult]:
    """One result per gate a run would use: its program (``argv[0]``) and where the gate came from.

    A missing program is a warning: a configured gate would fail the run, a detected one is skipped.
    """
    results: list[CheckResult] = []
    for gate in gates:
        name = f"gate {gate.name}"
        origin = f" (from {gate.source})" if gate.source != "configured" else ""
        if not gate.argv:
            results.append(
                CheckResult(name=name, ok=False, detail="empty command", hint="fix the gate config")
            )
            continue
        program = gate.argv[0]
        if os.sep in program or (os.altsep is not None and os.altsep in program):
            candidate = (project / program).resolve()
            found = str(candidate) if os.access(candidate, os.X_OK) else None
        else:
            found = shutil.which(program, path=env.get("PATH"))
        if found is None:
            effect = "a run skips this detected gate" if gate.detected else "a run fails this gate"
            results.append(
                CheckResult(
                    name=name,
                    ok=False,
                    detail=f"`{program}` not found{origin}; {effect}",
                    hint=f"install {program}, change the {gate.name!r} gate, or use --skip-gates",
                )
            )
        else:
            command = shlex.join(gate.argv)
            results.append(CheckResult(name=name, ok=True, detail=f"{command}{origin}: {found}"))
    return results


def no_gates_result() -> CheckResult:
    """The warning ``doctor`` shows when no gate is configured and none was detected."""
    return CheckResult(
        name="gates",
        ok=False,
        detail="none configured and none detected (no package.json, Python tool config, "
        "Cargo.toml or go.mod)",
        hint="configure [tool.bmad-trio] gates, or the run ends without quality gates",
    )


def check_bmad_layout(project: Path) -> CheckResult:
    """Report the project's BMAD layout as a run would read it (never fatal).

    A project without BMAD installed is a warning; so is a configured location the reader could
    not use as written (the layout's notes say which and what it did instead).
    """
    from .._bmad import detect_layout  # imported here: `--help` and the other checks stay fast
    from .._errors import ProjectError

    try:
        layout = detect_layout(project)
    except ProjectError as exc:
        return CheckResult(name="BMAD layout", ok=False, detail=str(exc), hint="pass --project DIR")
    if layout.version == "plain":
        return CheckResult(
            name="BMAD layout",
            ok=False,
            detail="no BMAD install found (.bmad-core/, _bmad/ or bmad/); plain layout",
            hint="fine for plain epic files; otherwise install BMAD (npx bmad-method install)",
        )
    where = layout.config_path.relative_to(layout.project) if layout.config_path else "no config"
    stories = _relative(layout.story_dir, layout.project)
    detail = f"BMAD {layout.version} at {project} ({where}); stories in {stories}"
    if not layout.notes:
        return CheckResult(name="BMAD layout", ok=True, detail=detail)
    return CheckResult(
        name="BMAD layout",
        ok=False,
        detail=f"{detail}; " + "; ".join(layout.notes),
        hint="set the location in the BMAD config or bmad-trio's story_location/epic_location",
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def check_git(project: Path) -> CheckResult:
    """What ``run`` needs from git (a work tree with a commit, a clean checkout, a branch), without
    changing anything. Not fatal here: ``run`` itself refuses (exit 2) and says the same."""
    from .._git import describe_git_needs  # imported here: `--help` and the other checks stay fast

    needs = describe_git_needs(project)
    if not needs:
        return CheckResult(
            name="git", ok=True, detail="a git work tree with a commit; ready to run"
        )
    return CheckResult(
        name="git",
        ok=False,
        detail="; ".join(needs),
        hint="run needs a git repository with a commit and a clean checkout (or --allow-dirty)",
    )


# --- process containment ---------------------------------------------------------------------------

_CONTAINMENT_DETAIL: Final = {
    "linux-native": "linux-native (child subreaper, lifeline pipe)",
    "portable": "portable (process tree and session ids, polling; the path macOS uses)",
}


def check_containment(env: Mapping[str, str]) -> CheckResult:
    """Which process-containment path a run would use (``BMAD_TRIO_CONTAINMENT`` in ``env``)."""
    from .._agents._cli_processes import CONTAINMENT_ENV, containment_mode
    from .._errors import ConfigError

    name = "process containment"
    try:
        mode = containment_mode(env)
    except ConfigError as error:
        hint = f"unset {CONTAINMENT_ENV}, or set it to auto, linux-native or portable"
        return CheckResult(name=name, ok=False, detail=str(error), hint=hint, fatal=True)
    return CheckResult(name=name, ok=True, detail=_CONTAINMENT_DETAIL[mode])


# --- all together ---------------------------------------------------------------------------------


async def run_checks(
    project: Path,
    *,
    env: Mapping[str, str],
    cli_path: Path | None = None,
    gates: Sequence[GateCommand],
    client: httpx.AsyncClient | None = None,
    api: bool = True,
    cli_timeout_s: float = 10.0,
    api_timeout_s: float = 5.0,
    sandbox: SandboxMode = "auto",
) -> list[CheckResult]:
    """Every check, in a fixed order: CLI, containment, auth, API (unless ``api=False``), sandbox,
    gates, layout, git.

    The CLI, API and sandbox checks run concurrently. Cancellation stops them (the subprocesses
    are killed; the sandbox probe's thread is abandoned and ends within its own timeout).
    """
    cli_result: list[CheckResult] = []
    api_result: list[CheckResult] = []

    async def cli_check() -> None:
        cli_result.append(await check_cli(env, cli_path, version_timeout_s=cli_timeout_s))

    async def api_check() -> None:
        api_result.append(await check_api(env, client=client, request_timeout_s=api_timeout_s))

    async def sandbox_check() -> None:
        probe = await anyio.to_thread.run_sync(probe_sandbox, abandon_on_cancel=True)
        sandbox_result.append(check_sandbox(sandbox, probe))

    sandbox_result: list[CheckResult] = []
    async with anyio.create_task_group() as group:
        group.start_soon(cli_check)
        if api:
            group.start_soon(api_check)
        group.start_soon(sandbox_check)
    return [
        *cli_result,
        check_containment(env),
        check_auth(env),
        *api_result,
        *sandbox_result,
        *(check_gate_tools(project, gates, env) if gates else [no_gates_result()]),
        check_bmad_layout(project),
        check_git(project),
    ]


def _mark(result: CheckResult) -> str:
    if result.ok:
        return "ok"
    return "FAIL" if result.fatal else "warn"


def format_checks(results: Sequence[CheckResult]) -> list[str]:
    """Plain lines: ``ok   auth: ANTHROPIC_API_KEY set``, hints indented below failures."""
    lines: list[str] = []
    for result in results:
        lines.append(f"{_mark(result):<4} {result.name}: {result.detail}")
        if not result.ok and result.hint:
            lines.append(f"     hint: {result.hint}")
    return lines


def checks_table(results: Sequence[CheckResult]) -> Table:
    """The same as a Rich table for ``doctor`` on a terminal."""
    table = Table(title="bmad-trio doctor", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result", overflow="fold")
    styles = {"ok": "green", "FAIL": "bold red", "warn": "yellow"}
    for result in results:
        mark = _mark(result)
        detail = Text(result.detail)
        if not result.ok and result.hint:
            detail.append(f"\nhint: {result.hint}", style="dim")
        table.add_row(Text(mark, style=styles[mark]), result.name, detail)
    return table
