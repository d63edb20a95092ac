"""The ``bmad-trio`` command line without the real Claude Code CLI: help, exit codes, one-line
errors, ``plan``, ``demo --no-run``, ``doctor`` against a closed port and ``fake-api``.

Process-level checks run ``python -m bmad_trio`` in a subprocess with a controlled environment (no
credentials unless a test adds them); help and parsing run ``main([...])`` in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, cast

import httpx
import pytest

from bmad_trio import __version__
from bmad_trio._commandline._demo import DEMO_EPIC, scaffold_demo
from bmad_trio._commandline._main import build_parser, main

AUTH_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
COMMANDS = ("run", "resume", "status", "plan", "demo", "doctor", "fake-api")
RUN_OPTIONS = (
    "--max-cycles",
    "--model",
    "--budget-usd",
    "--story",
    "--skip-gates",
    "--session-timeout",
    "--jobs",
    "--progress",
    "--backend",
    "--notify",
    "--config",
    "--debug",
)
COMMAND_OPTIONS: dict[str, tuple[str, ...]] = {
    "run": ("EPIC", "--project", *RUN_OPTIONS),
    "resume": ("RUN_ID", "--project", *RUN_OPTIONS),
    "status": ("RUN_ID", "--project", "--json"),
    "plan": ("EPIC", "--project", "--json", "--config"),
    "demo": ("DIR", "--no-run", *RUN_OPTIONS),
    "doctor": ("--project",),
    "fake-api": ("--host", "--port", "--scenario"),
}
WAIT_S = 60.0
"""Bound on any single wait for a subprocess (never a timing assertion)."""


# -- helpers -------------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without credentials or a base URL, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in AUTH_VARIABLES and k != "ANTHROPIC_BASE_URL" and not k.startswith("BMAD_TRIO")
    }
    env.update(extra)
    return env


def cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m bmad_trio ARGS`` to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "bmad_trio", *args],
        env=dict(env if env is not None else clean_env()),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    """Exit ``code``, exactly one ``bmad-trio: error:`` line on stderr, no traceback; the line."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bmad-trio: error: "), lines[0]
    return lines[0]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative POSIX path → content)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A freshly scaffolded demo project (three stories, stdlib-only gates)."""
    return scaffold_demo(tmp_path / "demo").root


def write_story(project: Path, story_id: str, title: str, status: str) -> None:
    path = project / "docs" / "stories" / f"{story_id}.story.md"
    path.write_text(
        f"# Story {story_id}: {title}\n\n## Status\n\n{status}\n\n## Story\n\n"
        f"As a developer, I want {title.lower()}, so that the demo grows.\n"
    )


# -- help, version, parsing ----------------------------------------------------------------------


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bmad-trio")
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\s+\S", out, re.MULTILINE), command
    assert "--version" in out
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert code in out  # the exit codes are explained


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_names_its_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bmad-trio {command}")
    for option in COMMAND_OPTIONS[command]:
        assert option in out, (command, option)
    # every option has a help text (argparse prints a bare option line otherwise)
    parser = build_parser()
    choices = next(
        cast(dict[str, argparse.ArgumentParser], a.choices)
        for a in parser._actions  # pyright: ignore[reportPrivateUsage]
        if a.dest == "command"
    )
    sub = choices[command]
    for action in sub._actions:  # pyright: ignore[reportPrivateUsage]
        assert action.help, f"{command}: {action.dest} has no help text"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bmad-trio {__version__}"


def test_version_as_a_process() -> None:
    done = cli(["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bmad-trio {__version__}"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: bmad-trio")
    for command in COMMANDS:
        assert command in out


def test_no_command_as_a_process() -> None:
    done = cli([])
    assert done.returncode == 2
    assert "usage: bmad-trio" in done.stdout + done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["run"],  # EPIC missing
        ["run", "epic.md", "--progress", "fancy"],
        ["run", "epic.md", "--jobs", "many"],
        ["status", "--bogus"],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: bmad-trio" in err
    assert "error:" in err


# -- one-line errors with the contract's exit codes ----------------------------------------------


def test_bad_config_key_exits_2_naming_file_and_key(demo_dir: Path) -> None:
    config = demo_dir / "bmad-trio.toml"
    config.write_text("max_cycles = 3\nmax_cylces = 4\n")
    before = tree(demo_dir)
    for argv in (
        ["run", DEMO_EPIC, "--project", str(demo_dir)],
        ["plan", DEMO_EPIC, "--project", str(demo_dir)],
    ):
        done = cli(argv, env=clean_env(ANTHROPIC_API_KEY="sk-test-unused"))
        line = assert_one_line_error(done, 2)
        assert str(config) in line
        assert "max_cylces" in line
    assert not (demo_dir / ".bmad-trio").exists()
    assert tree(demo_dir) == before


def test_wrong_type_in_pyproject_exits_2_naming_the_key(demo_dir: Path) -> None:
    pyproject = demo_dir / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[tool.bmad-trio]\n", '[tool.bmad-trio]\njobs = "two"\n')
    )
    done = cli(["plan", DEMO_EPIC, "--project", str(demo_dir)])
    line = assert_one_line_error(done, 2)
    assert "pyproject.toml" in line
    assert "jobs" in line
    assert not (demo_dir / ".bmad-trio").exists()


def test_debug_shows_the_traceback(demo_dir: Path) -> None:
    (demo_dir / "bmad-trio.toml").write_text("bogus = 1\n")
    done = cli(
        ["run", DEMO_EPIC, "--project", str(demo_dir), "--debug"],
        env=clean_env(ANTHROPIC_API_KEY="sk-test-unused"),
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "ConfigError" in done.stderr
    assert "bogus" in done.stderr


def test_the_dbos_engine_without_its_database_exits_2_before_anything_is_written(
    demo_dir: Path,
) -> None:
    before = tree(demo_dir)
    done = cli(
        ["run", DEMO_EPIC, "--project", str(demo_dir), "--engine", "dbos"],
        env=clean_env(ANTHROPIC_API_KEY="sk-test-unused"),
    )
    line = assert_one_line_error(done, 2)
    assert "--database" in line
    assert not (demo_dir / ".bmad-trio").exists()
    assert tree(demo_dir) == before


def test_a_worker_with_a_bad_jobs_count_exits_2() -> None:
    done = cli(["worker", "--database", "postgresql://x/y", "--repo", "/r", "--jobs", "0"])
    assert_one_line_error(done, 2)


def test_plan_missing_epic_exits_2(demo_dir: Path) -> None:
    done = cli(["plan", "docs/prd/no-such-epic.md", "--project", str(demo_dir)])
    line = assert_one_line_error(done, 2)
    assert "no-such-epic.md" in line
    assert not (demo_dir / ".bmad-trio").exists()


def test_run_missing_epic_exits_2_and_writes_nothing(demo_dir: Path) -> None:
    """With credentials set, so the preflight passes and the epic check is what fails.

    Fails today: the ConfigError is raised inside ``anyio.run`` under the CLI's two task groups
    (``_run_with_progress.main`` and ``_drive``) and reaches ``main()`` wrapped in
    ExceptionGroups, so ``except BmadError`` misses it: traceback and exit 1.
    """
    done = cli(
        ["run", "docs/prd/no-such-epic.md", "--project", str(demo_dir)],
        env=clean_env(ANTHROPIC_API_KEY="sk-test-unused"),
    )
    line = assert_one_line_error(done, 2)
    assert "no-such-epic.md" in line
    assert not (demo_dir / ".bmad-trio").exists()


def test_plan_missing_config_file_exits_2(demo_dir: Path) -> None:
    missing = demo_dir / "missing.toml"
    done = cli(["plan", DEMO_EPIC, "--project", str(demo_dir), "--config", str(missing)])
    line = assert_one_line_error(done, 2)
    assert "missing.toml" in line


def test_status_without_runs_exits_2(tmp_path: Path) -> None:
    done = cli(["status", "--project", str(tmp_path)])
    line = assert_one_line_error(done, 2)
    assert "no bmad-trio runs" in line
    assert not (tmp_path / ".bmad-trio").exists()
    done = cli(["status", "--json"], cwd=tmp_path)
    assert_one_line_error(done, 2)


def test_resume_with_nothing_to_resume_exits_2_and_writes_nothing(demo_dir: Path) -> None:
    """Fails today, two bugs: the StateError reaches ``main()`` inside ExceptionGroups (traceback,
    exit 1; see test_run_missing_epic_exits_2_and_writes_nothing), and ``Run._run`` opens (creates)
    ``.bmad-trio/state.db`` before it finds there is nothing to resume."""
    done = cli(
        ["resume", "--project", str(demo_dir)],
        env=clean_env(ANTHROPIC_API_KEY="sk-test-unused"),
    )
    line = assert_one_line_error(done, 2)
    assert "resume" in line
    assert not (demo_dir / ".bmad-trio").exists()


def test_run_without_auth_exits_3_and_writes_nothing(demo_dir: Path) -> None:
    before = tree(demo_dir)
    done = cli(["run", DEMO_EPIC, "--project", str(demo_dir)])
    line = assert_one_line_error(done, 3)
    for name in AUTH_VARIABLES:
        assert name in line
    assert not (demo_dir / ".bmad-trio").exists()
    assert tree(demo_dir) == before


def test_resume_without_auth_exits_3(demo_dir: Path) -> None:
    done = cli(["resume", "--project", str(demo_dir)])
    assert_one_line_error(done, 3)
    assert not (demo_dir / ".bmad-trio").exists()


def test_doctor_against_an_unreachable_api_exits_3_naming_the_check(demo_dir: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = cli(
        ["doctor", "--project", str(demo_dir)],
        env=clean_env(
            ANTHROPIC_API_KEY="sk-test-secret-value", ANTHROPIC_BASE_URL=url, COLUMNS="200"
        ),
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    rows = [line for line in done.stdout.splitlines() if "FAIL" in line]
    assert rows, done.stdout
    assert any("API" in row and url in row and "unreachable" in row for row in rows), rows
    checks = ("Claude Code CLI", "process containment", "auth", "gate compile", "gate unittest")
    for check in (*checks, "BMAD layout"):
        assert check in done.stdout
    assert "sk-test-secret-value" not in done.stdout + done.stderr
    assert not (demo_dir / ".bmad-trio").exists()


# -- plan ----------------------------------------------------------------------------------------


def test_plan_json_on_the_demo(demo_dir: Path) -> None:
    before = tree(demo_dir)
    done = cli(["plan", DEMO_EPIC, "--project", str(demo_dir), "--json"])
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["epic"] == DEMO_EPIC
    assert plan["layout"] == "plain"
    assert plan["story_dir"] == "docs/stories"
    assert [g["name"] for g in plan["gates"]] == ["compile", "unittest"]
    assert plan["gates"][0]["source"].endswith("pyproject.toml [tool.bmad-trio] gates[0]")
    assert not plan["gates"][0]["detected"]
    assert [s["story_id"] for s in plan["stories"]] == ["1.1", "1.2", "1.3"]
    assert [s["title"] for s in plan["stories"]] == ["Add greeting", "Add farewell", "Add shout"]
    assert all(s["file"] is None and s["status"] is None for s in plan["stories"])
    assert [s["dependencies"] for s in plan["stories"]] == [[], [], ["1.1"]]
    assert plan["stories"][0]["next"] == "SM drafts the story file"
    assert plan["stories"][2]["next"] == "after 1.1: SM drafts the story file"
    assert plan["runs_next"] == "1.1"
    assert tree(demo_dir) == before  # nothing written, no .bmad-trio


def test_plan_json_with_story_files_in_various_statuses(demo_dir: Path) -> None:
    write_story(demo_dir, "1.1", "Add greeting", "Done")
    write_story(demo_dir, "1.2", "Add farewell", "Review")
    before = tree(demo_dir)
    done = cli(["plan", DEMO_EPIC, "--project", str(demo_dir), "--json"])
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    stories = {s["story_id"]: s for s in plan["stories"]}
    assert stories["1.1"]["file"] == "docs/stories/1.1.story.md"
    assert stories["1.1"]["status"] == "done"
    assert stories["1.1"]["next"] == "nothing (done)"
    assert stories["1.2"]["file"] == "docs/stories/1.2.story.md"
    assert stories["1.2"]["status"] == "review"
    assert stories["1.2"]["next"] == "QA reviews and writes the gate"
    assert stories["1.3"]["file"] is None
    assert stories["1.3"]["dependencies"] == ["1.1"]
    assert stories["1.3"]["next"] == "SM drafts the story file"  # 1.1 is done: not waiting
    assert plan["runs_next"] == "1.2"
    assert tree(demo_dir) == before


def test_plan_json_draft_in_progress_and_no_auto_approve(demo_dir: Path) -> None:
    write_story(demo_dir, "1.1", "Add greeting", "In Progress")
    write_story(demo_dir, "1.2", "Add farewell", "Draft")
    done = cli(["plan", DEMO_EPIC, "--project", str(demo_dir), "--json"])
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    stories = {s["story_id"]: s for s in plan["stories"]}
    assert stories["1.1"]["status"] == "in_progress"
    assert stories["1.1"]["next"].startswith("Dev continues")
    assert stories["1.2"]["status"] == "draft"
    assert stories["1.2"]["next"] == "approve (auto) → Dev"
    assert stories["1.3"]["next"] == "after 1.1: SM drafts the story file"
    assert plan["runs_next"] == "1.1"

    (demo_dir / "bmad-trio.toml").write_text("auto_approve = false\n")
    done = cli(["plan", DEMO_EPIC, "--project", str(demo_dir), "--json"])
    assert done.returncode == 0, done.stderr
    stories = {s["story_id"]: s for s in json.loads(done.stdout)["stories"]}
    assert stories["1.2"]["next"] == "wait for approval (auto_approve is off)"
    assert not (demo_dir / ".bmad-trio").exists()


def test_plan_table_in_process(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_story(demo_dir, "1.1", "Add greeting", "Done")
    assert main(["plan", DEMO_EPIC, "--project", str(demo_dir)]) == 0
    out = capsys.readouterr().out
    assert "plan for docs/prd/epic-1-greetings.md" in out
    for story_id in ("1.1", "1.2", "1.3"):
        assert story_id in out
    assert not (demo_dir / ".bmad-trio").exists()


# -- demo --no-run -------------------------------------------------------------------------------


def test_demo_no_run_scaffolds_and_prints_instructions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "sample"
    assert main(["demo", str(target), "--no-run"]) == 0
    out = capsys.readouterr().out
    assert f"Scaffolded the demo project in {target}" in out
    assert "bmad-trio demo" in out
    assert "bmad-trio fake-api" in out
    assert "bmad-trio run" in out
    assert "bmad-trio status" in out
    assert (target / DEMO_EPIC).is_file()
    assert (target / "demo-scenario.toml").is_file()
    assert not (target / ".bmad-trio").exists()


def test_demo_no_run_refuses_a_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    done = cli(["demo", str(target), "--no-run"])
    line = assert_one_line_error(done, 2)
    assert str(target) in line
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


# -- fake-api ------------------------------------------------------------------------------------


class _Lines:
    """Collects a pipe's lines in a thread (so reads never block the test unboundedly)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    found = re.search(pattern, line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise AssertionError(f"no line matching {pattern!r} in {self.lines!r}")
                self._cond.wait(min(left, 0.5))

    def join(self) -> None:
        self._thread.join(WAIT_S)


@pytest.fixture
def fake_api_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], _Lines, _Lines]]:
    with subprocess.Popen(
        [sys.executable, "-m", "bmad_trio", "fake-api", "--port", "0"],
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        try:
            yield proc, out, err
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT_S)
            out.join()
            err.join()


def test_fake_api_serves_messages_and_stops_on_sigint(
    fake_api_process: tuple[subprocess.Popen[str], _Lines, _Lines],
) -> None:
    proc, out, err = fake_api_process
    url = out.wait_for(r"scripted Anthropic API on (http://127\.0\.0\.1:\d+)").group(1)
    assert out.wait_for(r"^export ANTHROPIC_BASE_URL=(\S+)").group(1) == url
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": False,
        "messages": [{"role": "user", "content": "hello"}],
    }
    with httpx.Client(timeout=WAIT_S) as client:
        response = client.post(
            f"{url}/v1/messages",
            json=body,
            headers={"x-api-key": "offline", "anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"]
    assert message["content"][0]["type"] == "text"
    assert message["usage"]["output_tokens"] >= 0

    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT_S) == 0
    err.join()
    assert "Traceback" not in "".join(err.lines), err.lines


def test_fake_api_with_the_demo_scenario(demo_dir: Path) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bmad_trio",
            "fake-api",
            "--port",
            "0",
            "--scenario",
            str(demo_dir / "demo-scenario.toml"),
        ],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        try:
            out.wait_for(r"scripted Anthropic API on http://127\.0\.0\.1:\d+")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT_S)
            out.join()
            err.join()
    assert "Traceback" not in "".join(err.lines)


def test_fake_api_bad_scenario_exits_2(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("[[responders]]\nbuiltin = 'nope'\n")
    done = cli(["fake-api", "--port", "0", "--scenario", str(scenario)])
    assert_one_line_error(done, 2)
