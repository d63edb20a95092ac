"""Platforms: native Windows is refused at once; the containment path is chosen once, from
``BMAD_TRIO_CONTAINMENT``, recorded, and shown by ``doctor``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bmad_trio import ConfigValueError
from bmad_trio._agents import _cli_processes as layer
from bmad_trio._agents._cli_processes import CLIProcesses, containment_mode
from bmad_trio._commandline import _main
from bmad_trio._commandline._demo import scaffold_demo
from bmad_trio._commandline._doctor import check_containment

# --- native Windows ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--version"], ["doctor"], ["demo"], []])
def test_native_windows_exits_3_at_once_with_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert _main.main(argv) == _main.EXIT_PREFLIGHT
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "native Windows is not supported" in err
    assert "WSL" in err


def test_on_windows_the_message_needs_no_posix_only_module() -> None:
    """The console script's import chain stops at the message: none of the POSIX-only modules
    (absent on Windows) is imported before it."""
    script = textwrap.dedent(
        """
        import sys
        for name in ("fcntl", "termios", "resource", "pwd", "grp", "pty", "tty", "posix"):
            sys.modules[name] = None  # importing it now raises ImportError, as on Windows
        sys.platform = "win32"
        from bmad_trio._commandline._main import main
        sys.exit(main(["run", "1"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().startswith("bmad-trio: native Windows is not supported"), done.stderr


def test_linux_and_macos_are_not_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for platform in ("linux", "darwin"):
        monkeypatch.setattr(sys, "platform", platform)
        with pytest.raises(SystemExit) as exited:
            _main.main(["--version"])
        assert exited.value.code == 0
    assert "not supported" not in capsys.readouterr().err


# --- the containment path ------------------------------------------------------------------------


@pytest.mark.skipif(not layer.linux_native_available(), reason="Linux with /proc only")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "linux-native"),
        ("", "linux-native"),
        ("auto", "linux-native"),
        ("linux-native", "linux-native"),
        ("portable", "portable"),
        (" portable ", "portable"),
    ],
)
def test_the_path_on_linux(value: str | None, expected: str) -> None:
    env = {} if value is None else {"BMAD_TRIO_CONTAINMENT": value}
    assert containment_mode(env) == expected


def test_without_linux_mechanisms_auto_is_portable_and_linux_native_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layer, "linux_native_available", lambda: False)  # as on macOS
    assert containment_mode({}) == "portable"
    assert containment_mode({"BMAD_TRIO_CONTAINMENT": "auto"}) == "portable"
    with pytest.raises(ConfigValueError, match="BMAD_TRIO_CONTAINMENT=linux-native: needs Linux"):
        containment_mode({"BMAD_TRIO_CONTAINMENT": "linux-native"})


def test_an_unknown_value_is_a_one_line_error_naming_the_variable() -> None:
    with pytest.raises(ConfigValueError) as raised:
        containment_mode({"BMAD_TRIO_CONTAINMENT": "bsd"})
    message = str(raised.value)
    assert message == "BMAD_TRIO_CONTAINMENT='bsd': expected auto, linux-native or portable"


def test_the_layer_reads_the_variable_once_and_records_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = tmp_path / "claude"
    cli.write_text("#!/bin/sh\n")
    monkeypatch.setenv("BMAD_TRIO_CONTAINMENT", "portable")
    with CLIProcesses(cli) as processes:
        monkeypatch.setenv("BMAD_TRIO_CONTAINMENT", "bsd")  # read once: no effect any more
        assert processes.containment == "portable"
        assert not processes.native
        env, _tag = processes.session_env()
        assert env["BMAD_TRIO_CONTAINMENT"] == "portable"  # the supervisor follows the path
    monkeypatch.setenv("BMAD_TRIO_CONTAINMENT", "bsd")
    with pytest.raises(ConfigValueError, match="BMAD_TRIO_CONTAINMENT='bsd'"):
        CLIProcesses(cli)
    with CLIProcesses(cli, containment="portable") as chosen:
        assert chosen.containment == "portable"


# --- doctor --------------------------------------------------------------------------------------


def test_doctor_says_which_path_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    portable = check_containment({"BMAD_TRIO_CONTAINMENT": "portable"})
    assert portable.ok
    assert portable.detail.startswith("portable")
    assert "macOS" in portable.detail
    monkeypatch.setattr(layer, "linux_native_available", lambda: True)
    native = check_containment({})
    assert native.ok
    assert native.detail.startswith("linux-native")
    monkeypatch.setattr(layer, "linux_native_available", lambda: False)
    assert check_containment({}).detail.startswith("portable")
    bad = check_containment({"BMAD_TRIO_CONTAINMENT": "bsd"})
    assert not bad.ok
    assert bad.fatal
    assert "BMAD_TRIO_CONTAINMENT" in bad.hint


def test_run_with_an_unknown_containment_path_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """Bad input is exit 2, before the preflight's exit 3 (no credentials here)."""
    project = scaffold_demo(tmp_path / "demo").root
    unset = ("BMAD_TRIO", "ANTHROPIC_", "CLAUDE_CODE_OAUTH")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(unset)},
        "BMAD_TRIO_CONTAINMENT": "bsd",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bmad_trio", "run", "1", "--project", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "bmad-trio: error: BMAD_TRIO_CONTAINMENT='bsd': expected auto, linux-native or portable"
    )
    assert not (project / ".bmad-trio").exists()
