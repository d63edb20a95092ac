"""The agents' OS sandbox through the real CLI: a scripted agent tries every escape we know in one
session per role; each is refused, reported (``SessionResult.refusals``), leaves nothing outside
the role's area, and the session ends normally. Skips (saying so) where the platform's sandbox is
missing; CI installs it (.ci/run), and the unit tests of the settings run everywhere."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmad_trio import Outcome, Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio._agents._sandbox import Sandbox, probe_sandbox
from bmad_trio._workflow._prompts import ROLE_TOOLS
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

_PROBE = probe_sandbox()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.usefixtures("no_leftover_cli"),
    pytest.mark.skipif(
        not _PROBE.available, reason=f"the OS sandbox is missing here: {_PROBE.detail}"
    ),
]

SECRET = "SSH-SECRET-4e1b"


class Listener:
    """A TCP listener on another loopback port: counts the connections that reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


def _layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    project, home, outside = tmp_path / "project", tmp_path / "home", tmp_path / "outside"
    folders = (project / "src", project / "docs" / "qa" / "gates", project / ".bmad-trio")
    for directory in (*folders, home / ".ssh", outside):
        directory.mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"{SECRET}\n")
    (project / "src" / "app.py").write_text("VALUE = 1\n")
    (project / "link").symlink_to(outside)
    return project, home, outside


async def _session(
    spec: SessionSpec, commands: list[str], home: Path, *extra: object
) -> tuple[Outcome, list[str], tuple[object, ...], str | None]:
    """Run the scripted commands (one turn each), then "done"; the tool results, in order."""
    blocks = [Reply.bash(command) for command in commands]
    rules = [Rule(turn=index + 1, reply=Reply.tools(b)) for index, b in enumerate(blocks)]
    turn = len(blocks) + 1
    rules += [Rule(turn=turn + i, reply=Reply.tools(x)) for i, x in enumerate(extra)]  # type: ignore[arg-type]
    rules.append(Rule(turn=turn + len(extra), reply=Reply.text("done")))
    async with FakeAnthropicAPI(Scenario(responders=rules)) as api:
        env = {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0", "HOME": str(home)}
        async with ClaudeAgentRunner(env=env) as runner:
            result = await runner.run_session(spec)
    last = api.message_requests[-1]
    results = last.all_tool_results()
    texts = [results[use.id].text for use in last.tool_uses()]
    return result.outcome, texts, result.refusals, result.error


async def test_dev_shell_escapes_are_refused_and_reported(
    tmp_path: Path, listener: Listener
) -> None:
    project, home, outside = _layout(tmp_path)
    escapes = [
        f"echo x > {home}/planted.txt; echo rc=$?",  # $HOME is the CLI's HOME
        "echo x > link/planted.txt; echo rc=$?",  # a symlink in the project pointing out
        "echo x > ../outside/dotdot.txt; echo rc=$?",
        f"echo x > /proc/self/root{outside}/proc.txt; echo rc=$?",
        "cat ~/.ssh/id_rsa; echo rc=$?",
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
        f'{listener.port}), timeout=5)"; echo rc=$?',
        "echo x > .bmad-trio/state.db; echo rc=$?",  # the run store
    ]
    allowed = [
        'echo "key=${ANTHROPIC_API_KEY:-absent}"',
        "echo made > src/new.py && echo rc=$?",
    ]
    spec = SessionSpec(
        role=Role.DEV,
        prompt="implement",
        cwd=project,
        allowed_tools=ROLE_TOOLS[Role.DEV],
        sandbox=Sandbox(),
        timeout_s=120.0,
        idle_timeout_s=90.0,
    )
    outcome, texts, refusals, error = await _session(spec, escapes + allowed, home)

    assert outcome is Outcome.OK, error
    for command, text in zip(escapes, texts[: len(escapes)], strict=True):
        assert "rc=0" not in text, (command, text)
    key_text, made_text = texts[len(escapes) :]
    assert "key=absent" in key_text  # the API key is not in the shell's environment
    assert "rc=0" in made_text
    assert (project / "src" / "new.py").read_text() == "made\n"
    # nothing outside the project, nothing through the link, nothing in .git, no secret, no socket
    assert sorted(p.name for p in outside.iterdir()) == []
    assert not (home / "planted.txt").exists()
    assert not (project / ".bmad-trio" / "state.db").exists()
    assert SECRET not in "\n".join(texts)
    assert listener.accepted == 0
    # and the sandbox's own scratch (its write log, empty mount points) is gone with the session
    assert sorted(p.name for p in project.iterdir()) == [".bmad-trio", "docs", "link", "src"]
    reasons = "\n".join(f"{r.target} | {r.reason}" for r in refusals)  # type: ignore[attr-defined]
    assert reasons.count("write outside the role's area") == 5, reasons
    assert "read of a secret location" in reasons, reasons
    assert "no network" in reasons, reasons


async def test_qa_cannot_edit_code_through_its_shell_but_writes_its_gate(tmp_path: Path) -> None:
    project, home, _ = _layout(tmp_path)
    spec = SessionSpec(
        role=Role.QA,
        prompt="review",
        cwd=project,
        allowed_tools=ROLE_TOOLS[Role.QA],
        writable_paths=("docs/qa/gates/*", "docs/stories/1.1.story.md"),
        sandbox=Sandbox(),
        writable_roots=(),
        timeout_s=120.0,
        idle_timeout_s=90.0,
    )
    commands = [
        "echo 'VALUE = 2' > src/app.py; echo rc=$?",
        "sed -i s/1/3/ src/app.py; echo rc=$?",
        "echo x > conftest.py; echo rc=$?",
        "echo 'gate: PASS' > docs/qa/gates/1.1-shell.yml; echo rc=$?",
    ]
    gate = Reply.write("docs/qa/gates/1.1-gate.yml", "gate: PASS\n")
    outcome, texts, refusals, error = await _session(spec, commands, home, gate)

    assert outcome is Outcome.OK, error
    for command, text in zip(commands, texts[: len(commands)], strict=True):
        assert "rc=0" not in text, (command, text)
    assert (project / "src" / "app.py").read_text() == "VALUE = 1\n"
    assert not (project / "conftest.py").exists()
    assert not (project / "docs" / "qa" / "gates" / "1.1-shell.yml").exists()
    # the gate file, written with the file tool the policy confines to the gate files
    assert (project / "docs" / "qa" / "gates" / "1.1-gate.yml").read_text() == "gate: PASS\n"
    assert len(refusals) >= 3, refusals


async def test_subprocess_env_scrub_in_the_users_environment_does_not_open_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1`` (exported by the user) puts the CLI in its subprocess
    isolation mode: its own bwrap policy, which lets the shell write /home, /root, /tmp and more,
    takes over from our sandbox, and the CLI creates empty files (.bashrc, package.json, .env,
    ...) in HOME and the project at start. The runner turns it off for every session."""
    project, home, _ = _layout(tmp_path)
    monkeypatch.setenv("CLAUDE_CODE_SUBPROCESS_ENV_SCRUB", "1")
    spec = SessionSpec(
        role=Role.DEV,
        prompt="implement",
        cwd=project,
        allowed_tools=ROLE_TOOLS[Role.DEV],
        sandbox=Sandbox(),
        timeout_s=120.0,
        idle_timeout_s=90.0,
    )
    command = f"echo x > {home}/planted.txt; echo rc=$?"
    outcome, texts, _, error = await _session(spec, [command], home)

    assert outcome is Outcome.OK, error
    assert "rc=0" not in texts[0], texts
    # no file at the top of HOME (the CLI's own folders, .claude, .cache, ..., are expected)
    assert sorted(p.name for p in home.iterdir() if not p.is_dir()) == []
    assert sorted(p.name for p in project.iterdir()) == [".bmad-trio", "docs", "link", "src"]


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/root is Linux's")
def test_probe_reports_linux_sandbox() -> None:
    assert _PROBE.available
    assert "bubblewrap" in _PROBE.detail
