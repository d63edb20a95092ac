"""``bmad-trio doctor`` (and ``run_checks``) against the scripted model server on loopback.

The server (:class:`FakeAnthropicAPI`, with ``api_key`` set so it refuses every other key) runs in
this test's event loop; ``python -m bmad_trio doctor`` runs as a subprocess awaited with
``anyio.run_process``, so the loop keeps serving while it runs. The real bundled Claude Code CLI
answers the CLI check. Every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from _git_project import init_repository

from bmad_trio._commandline._doctor import format_checks, preflight_failed, run_checks
from bmad_trio._config import GateCommand
from bmad_trio.testing import FakeAnthropicAPI

pytestmark = pytest.mark.anyio

AUTH_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
GOOD_KEY = "sk-ant-api03-good-key-0123456789abcdef"
BAD_KEY = "sk-ant-api03-stale-key-fedcba9876543210"
WAIT_S = 120.0
"""Bound on one ``doctor`` subprocess (it starts the real CLI for ``--version``)."""


def doctor_env(base_url: str, key: str) -> dict[str, str]:
    """This process's environment with only ``key`` as credential, pointed at ``base_url``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in AUTH_VARIABLES and k != "ANTHROPIC_BASE_URL" and not k.startswith("BMAD_TRIO")
    }
    # a wide console: the table's result column never folds a line in two
    env.update(ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY=key, COLUMNS="200", NO_COLOR="1")
    return env


async def doctor(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(WAIT_S):
        return await anyio.run_process(
            [sys.executable, "-m", "bmad_trio", "doctor", "--project", str(project)],
            env=env,
            cwd=project,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def api_row(stdout: str) -> str:
    rows = [line for line in stdout.splitlines() if "│ API " in line]
    assert len(rows) == 1, stdout
    return rows[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "_bmad").mkdir(parents=True)
    (root / "_bmad" / "README.md").write_text("installed\n")
    return init_repository(root)  # what `run` needs: doctor's git line is ok


async def test_doctor_accepts_the_servers_key(project: Path) -> None:
    async with FakeAnthropicAPI(api_key=GOOD_KEY) as api:
        done = await doctor(project, doctor_env(api.url, GOOD_KEY))
        requests = list(api.requests)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, (out, err)
    assert "bmad-trio doctor" in out
    row = api_row(out)
    assert "│ ok " in row
    assert f"{api.url} answered, credentials accepted" in row
    assert "BMAD v6" in out
    assert GOOD_KEY not in out + err
    (request,) = requests
    assert (request.method, request.path, request.query) == ("GET", "/v1/models", {"limit": "1"})
    assert request.headers["x-api-key"] == "<redacted>"
    assert request.headers["anthropic-version"] == "2023-06-01"


async def test_doctor_with_a_refused_key_exits_3_and_never_prints_it(project: Path) -> None:
    async with FakeAnthropicAPI(api_key=GOOD_KEY) as api:
        done = await doctor(project, doctor_env(api.url, BAD_KEY))
        statuses = len(api.requests)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 3, (out, err)
    row = api_row(out)
    assert "│ FAIL " in row
    assert f"{api.url} refused the credentials (HTTP 401)" in row
    assert "hint: check the key" in out
    assert "auth" in out
    assert "ANTHROPIC_API_KEY set" in out
    for secret in (BAD_KEY, GOOD_KEY, BAD_KEY[-12:]):
        assert secret not in out + err
    assert "Traceback" not in err
    assert statuses == 1


async def test_doctor_with_the_api_unreachable_exits_3(project: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = await doctor(project, doctor_env(url, GOOD_KEY))
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 3, (out, err)
    row = api_row(out)
    assert "│ FAIL " in row
    assert f"{url} unreachable (ConnectError)" in row
    assert GOOD_KEY not in out + err
    assert "Traceback" not in err


async def test_run_checks_against_the_scripted_server(project: Path) -> None:
    gates = [GateCommand("py", (sys.executable, "-c", "pass"))]
    async with FakeAnthropicAPI(api_key=GOOD_KEY) as api:
        good = await run_checks(project, env=doctor_env(api.url, GOOD_KEY), gates=gates)
        bad = await run_checks(project, env=doctor_env(api.url, BAD_KEY), gates=gates)
        bearer_env = doctor_env(api.url, "")
        bearer_env["ANTHROPIC_AUTH_TOKEN"] = GOOD_KEY
        bearer = await run_checks(project, env=bearer_env, gates=gates)
        assert [r.headers.get("authorization") for r in api.requests] == [
            None,
            None,
            "<redacted>",
        ]
    unreachable = await run_checks(
        project, env=doctor_env(f"http://127.0.0.1:{closed_port()}", GOOD_KEY), gates=gates
    )
    assert [r.name for r in good] == [
        "Claude Code CLI",
        "process containment",
        "auth",
        "API",
        "sandbox",
        "gate py",
        "BMAD layout",
        "git",
    ]
    assert all(r.ok for r in good), good
    assert not preflight_failed(good)
    assert not preflight_failed(bearer)

    bad_api = next(r for r in bad if r.name == "API")
    assert (bad_api.ok, bad_api.fatal) == (False, True)
    assert bad_api.detail == f"{api.url} refused the credentials (HTTP 401)"
    assert preflight_failed(bad)
    down = next(r for r in unreachable if r.name == "API")
    assert (down.ok, down.fatal) == (False, True)
    assert "unreachable (ConnectError)" in down.detail
    assert preflight_failed(unreachable)
    text = "\n".join(format_checks([*good, *bad, *bearer, *unreachable]))
    assert BAD_KEY not in text
    assert GOOD_KEY not in text
