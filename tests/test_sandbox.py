"""The sandbox's pieces without the CLI: per-role settings, the run's decision (auto, required,
off), how refusals are read from tool results, the config keys, the login copy, and the run's
wiring (specs get the sandbox and their role's area; refusals become ToolRefused events)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _disk_agent import DiskAgent, make_project
from _git_project import init_repository

from bmad_trio import (
    AgentMessage,
    ConfigError,
    PreflightError,
    Role,
    RunConfig,
    RunStarted,
    SessionSpec,
    ToolCall,
    ToolRefused,
    open_run,
)
from bmad_trio._agents._login import expose_login
from bmad_trio._agents._refusals import refusals_in
from bmad_trio._agents._sandbox import (
    DEFAULT_DENY_READ,
    Sandbox,
    SandboxProbe,
    run_sandbox,
    sandbox_settings,
    secret_env_names,
)
from bmad_trio._config import load_config
from bmad_trio._state._paths import run_dir
from bmad_trio._workflow import _prepare
from bmad_trio.testing import MockAgentRunner

WORKS = SandboxProbe(available=True, detail="bubblewrap and socat work")
MISSING = SandboxProbe(
    available=False, detail="bubblewrap (bwrap) not found", install="sudo apt-get install x"
)


# -- settings per role ---------------------------------------------------------------------------


def test_dev_writes_its_project_but_not_the_store_or_the_repository(tmp_path: Path) -> None:
    settings = sandbox_settings(Sandbox(), cwd=tmp_path, writable_roots=None, env={})
    fs = settings["filesystem"]  # type: ignore[typeddict-item]
    root = os.path.realpath(tmp_path)
    assert fs["denyWrite"] == [f"{root}/.bmad-trio", f"{root}/.git"]
    assert fs["allowWrite"] == []
    assert settings["allowUnsandboxedCommands"] is False
    assert settings["excludedCommands"] == []
    assert settings["network"] == {"allowedDomains": [], "strictAllowlist": True}
    assert list(DEFAULT_DENY_READ) == fs["denyRead"][: len(DEFAULT_DENY_READ)]


def test_qa_gets_a_read_only_project_and_an_outside_root_is_granted(tmp_path: Path) -> None:
    project, scratch = tmp_path / "project", tmp_path / "scratch"
    project.mkdir()
    scratch.mkdir()
    qa = sandbox_settings(Sandbox(), cwd=project, writable_roots=(), env={})
    assert qa["filesystem"]["denyWrite"] == [os.path.realpath(project)]  # type: ignore[typeddict-item]
    both = sandbox_settings(Sandbox(), cwd=project, writable_roots=(project, scratch), env={})
    assert both["filesystem"]["allowWrite"] == [os.path.realpath(scratch)]  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="deny wins"):
        sandbox_settings(Sandbox(), cwd=project, writable_roots=(project / "docs",), env={})


def test_secret_variables_and_env_files_above_are_hidden(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TOKEN=x\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("LOCAL=1\n")
    env = {"MY_SERVICE_TOKEN": "x", "DB_PASSWORD": "y", "PATH": "/bin", "EDITOR": "vi"}
    names = secret_env_names(env)
    assert {"ANTHROPIC_API_KEY", "MY_SERVICE_TOKEN", "DB_PASSWORD"} <= set(names)
    assert "PATH" not in names
    assert "EDITOR" not in names
    settings = sandbox_settings(
        Sandbox(allowed_domains=("pypi.org",), deny_read=("~/.ssh",)),
        cwd=project,
        writable_roots=None,
        env=env,
        deny_read_extra=("/tmp/config",),
    )
    assert settings["filesystem"]["denyRead"] == [  # type: ignore[typeddict-item]
        "~/.ssh",
        "/tmp/config",
        str(tmp_path / ".env"),
    ]
    assert settings["network"]["allowedDomains"] == ["pypi.org"]  # type: ignore[typeddict-item]
    denied = settings["credentials"]["envVars"]  # type: ignore[typeddict-item]
    assert {"name": "MY_SERVICE_TOKEN", "mode": "deny"} in denied


def test_what_the_sandbox_leaves_behind_is_removed_but_nothing_that_was_there(
    tmp_path: Path,
) -> None:
    from bmad_trio._agents._sandbox import existing_leftovers, remove_leftovers

    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / ".profile").write_text("mine\n")
    (tmp_path / ".npmrc").write_text("")  # the user's own, empty: it was there before
    before = existing_leftovers(tmp_path, str(home))
    (tmp_path / ".bashrc").write_text("")  # a mount point the CLI left
    (tmp_path / ".yarnrc.yml").write_text("kept: it has content\n")
    (home / ".zshrc").write_text("")
    (tmp_path / ".claude" / ".cc-writes").mkdir(parents=True)
    removed = remove_leftovers(tmp_path, str(home), before)
    assert {p.name for p in removed} == {".bashrc", ".zshrc", ".cc-writes", ".claude"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".npmrc",
        ".profile",
        ".yarnrc.yml",
        "home",
    ]


# -- the run's decision --------------------------------------------------------------------------


def test_auto_off_and_required() -> None:
    assert run_sandbox("off", None) == (None, None)
    policy, warning = run_sandbox("auto", WORKS, allowed_domains=["pypi.org"], deny_read=["~/x"])
    assert warning is None
    assert policy is not None
    assert policy.allowed_domains == ("pypi.org",)
    assert policy.deny_read == (*DEFAULT_DENY_READ, "~/x")
    policy, warning = run_sandbox("auto", MISSING)
    assert policy is None
    assert warning is not None
    assert "bubblewrap (bwrap) not found" in warning
    assert "sudo apt-get install x" in warning
    with pytest.raises(PreflightError, match="sudo apt-get install x"):
        run_sandbox("required", MISSING)


# -- reading refusals ----------------------------------------------------------------------------


def test_refusals_are_read_from_policy_sandbox_and_os_errors() -> None:
    policy = refusals_in(
        "Write", "/etc/x", "bmad-trio policy: this role may not write x", sandboxed=False
    )
    assert [(r.tool, r.target, r.reason) for r in policy] == [
        ("Write", "/etc/x", "policy: this role may not write x")
    ]
    network = refusals_in(
        "Bash",
        "curl http://example.com",
        "403\n<sandbox_violations>\ndeny network-outbound example.com:80 (host is not on the "
        "allow list)\n</sandbox_violations>",
        sandboxed=True,
    )
    assert [r.reason for r in network] == [
        "sandbox: deny network-outbound example.com:80 (host is not on the allow list)"
    ]
    writes = refusals_in(
        "Bash",
        "echo x > ../o",
        "/bin/bash: line 1: ../o: Read-only file system\n"
        "mv: cannot move 'a' to 'b': Read-only file system\nrc=1",
        sandboxed=True,
    )
    assert [r.target for r in writes] == ["../o", "b"]
    secret = refusals_in(
        "Bash",
        "cat ~/.ssh/id_rsa",
        "cat: /h/.ssh/id_rsa: No such file or directory",
        sandboxed=True,
        command="cat ~/.ssh/id_rsa",
        deny_read=("~/.ssh",),
        home="/h",
    )
    assert [r.reason for r in secret] == ["sandbox: read of a secret location"]
    socket = refusals_in(
        "Bash", "python3 -c ...", "ConnectionRefusedError: [Errno 111]", sandboxed=True
    )
    assert [r.reason for r in socket] == ["sandbox: no network for shell commands"]
    # an unsandboxed command's OS errors are its own business
    assert refusals_in("Bash", "x", "x: Read-only file system", sandboxed=False) == []
    assert refusals_in("Bash", "ls", "a\nb\n", sandboxed=True) == []


# -- config --------------------------------------------------------------------------------------


def test_config_keys_are_checked(tmp_path: Path) -> None:
    (tmp_path / "bmad-trio.toml").write_text(
        'sandbox = "required"\nsandbox_allowed_domains = ["pypi.org"]\n'
        'sandbox_deny_read = ["~/.secrets"]\n'
    )
    config = load_config(tmp_path)
    assert config.sandbox == "required"
    assert config.sandbox_allowed_domains == ("pypi.org",)
    assert config.sandbox_deny_read == ("~/.secrets",)
    assert load_config(tmp_path, overrides={"sandbox": "off"}).sandbox == "off"
    for bad, key in (
        ('sandbox = "sometimes"', "sandbox"),
        ('sandbox_allowed_domains = "pypi.org"', "sandbox_allowed_domains"),
        ("sandbox_deny_read = [1]", "sandbox_deny_read"),
    ):
        (tmp_path / "bmad-trio.toml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match=f"bmad-trio.toml: key '{key}'"):
            load_config(tmp_path)


# -- the login copy ------------------------------------------------------------------------------


def test_the_login_is_copied_private_only_without_a_credential_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    home, config = tmp_path / "home", tmp_path / "config"
    (home / ".claude").mkdir(parents=True)
    config.mkdir()
    source = home / ".claude" / ".credentials.json"
    source.write_text(json.dumps({"claudeAiOauth": {"accessToken": "old"}}))
    assert expose_login(config, {"HOME": str(home), "ANTHROPIC_API_KEY": "k"}) is None
    copy = expose_login(config, {"HOME": str(home)})
    assert copy is not None
    assert copy.copy.read_text() == source.read_text()
    assert copy.copy.stat().st_mode & 0o777 == 0o600
    # the CLI refreshed the token in the copy: it goes back to the user's file
    copy.copy.write_text(json.dumps({"claudeAiOauth": {"accessToken": "new"}}))
    copy.write_back()
    assert "new" in source.read_text()
    assert source.stat().st_mode & 0o777 == 0o600
    # but never over a file the user changed meanwhile
    again = expose_login(config, {"HOME": str(home)})
    assert again is not None
    source.write_text("user's own change")
    again.copy.write_text("refreshed")
    again.write_back()
    assert source.read_text() == "user's own change"


# -- the run's wiring ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_run_gives_each_role_its_area_and_reports_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_prepare, "probe_sandbox", lambda: WORKS)
    project = init_repository(make_project(tmp_path))

    def refused(spec: SessionSpec) -> list[AgentMessage]:
        if spec.role is not Role.QA:
            return []
        return [
            AgentMessage(
                kind="refusal",
                tool=ToolCall("Bash", "src/app.py"),
                text="sandbox: write outside the role's area",
            )
        ]

    runner = MockAgentRunner(DiskAgent().handle, messages=refused)
    config = RunConfig(
        epic=project / "docs" / "prd" / "epic-1.md",
        project=project,
        skip_gates=True,
        stories=("1.1",),
        sandbox_allowed_domains=("pypi.org",),
    )
    async with open_run(config, runner=runner) as run:
        events = [event async for event in run.events]
    roots = {spec.role: spec.writable_roots for spec in runner.calls}
    assert roots == {Role.SM: (), Role.DEV: None, Role.QA: ()}
    assert all(spec.sandbox is not None for spec in runner.calls)
    assert runner.calls[0].sandbox.allowed_domains == ("pypi.org",)  # type: ignore[union-attr]
    [started] = [e for e in events if isinstance(e, RunStarted)]
    assert started.warnings == ()
    [refusal] = [e for e in events if isinstance(e, ToolRefused)]
    assert (refusal.story_id, refusal.role, refusal.tool) == ("1.1", "qa", "Bash")
    assert refusal.reason == "sandbox: write outside the role's area"
    assert run.run_id is not None
    transcript = (run_dir(project, run.run_id) / "transcripts" / "1.1-1-qa.jsonl").read_text()
    assert '"kind":"refusal"' in transcript
    assert "write outside the role's area" in transcript


@pytest.mark.anyio
async def test_auto_without_a_sandbox_warns_and_required_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_prepare, "probe_sandbox", lambda: MISSING)
    project = init_repository(make_project(tmp_path))
    runner = MockAgentRunner(DiskAgent().handle)
    config = RunConfig(
        epic=project / "docs" / "prd" / "epic-1.md",
        project=project,
        skip_gates=True,
        stories=("1.1",),
    )
    async with open_run(config, runner=runner) as run:
        events = [event async for event in run.events]
    [started] = [e for e in events if isinstance(e, RunStarted)]
    assert len(started.warnings) == 1
    assert "sudo apt-get install x" in started.warnings[0]
    assert all(spec.sandbox is None for spec in runner.calls)
    strict = RunConfig(
        epic=project / "docs" / "prd" / "epic-1.md",
        project=project,
        skip_gates=True,
        sandbox="required",
    )
    with pytest.raises(PreflightError, match="bubblewrap"):
        async with open_run(strict, runner=MockAgentRunner(DiskAgent().handle)):
            pass


# -- command line --------------------------------------------------------------------------------


def test_resume_keeps_the_stored_sandbox_unless_the_flag_is_given(tmp_path: Path) -> None:
    from bmad_trio._config import resumed_config

    stored = RunConfig(project=tmp_path, sandbox="off", sandbox_allowed_domains=("pypi.org",))
    kept, changed = resumed_config(stored, RunConfig(project=tmp_path), frozenset())
    assert (kept.sandbox, kept.sandbox_allowed_domains, changed) == ("off", ("pypi.org",), ())
    flagged, changed = resumed_config(
        stored, RunConfig(project=tmp_path, sandbox="required"), frozenset({"sandbox"})
    )
    assert (flagged.sandbox, changed) == ("required", ("sandbox",))


def test_run_with_sandbox_required_and_none_exits_3_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bmad_trio._agents import _sandbox
    from bmad_trio._commandline._main import main

    monkeypatch.setattr(_sandbox, "probe_sandbox", lambda: MISSING)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    project = init_repository(make_project(tmp_path))
    epic = str(project / "docs" / "prd" / "epic-1.md")
    code = main(["run", epic, "--project", str(project), "--sandbox", "required"])
    assert code == 3
    assert "sudo apt-get install x" in capsys.readouterr().err
    assert not (project / ".bmad-trio").exists()
