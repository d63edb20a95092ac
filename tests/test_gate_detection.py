"""Quality gates detected from the project's language when none are configured (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from _disk_agent import DiskAgent, make_project
from _git_project import init_repository

from bmad_trio import GateCommand, ProjectError, RunConfig, run_epic
from bmad_trio._commandline._doctor import check_gate_tools, format_checks
from bmad_trio._config import load_config
from bmad_trio._workflow._quality_gate_detection import (
    detect_quality_gates,
    effective_quality_gates,
    package_manager,
    quality_gate_rows,
)

NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _package(root: Path, scripts: dict[str, str], **extra: object) -> None:
    _write(root, "package.json", json.dumps({"name": "app", "scripts": scripts, **extra}))


def _summary(project: Path) -> list[tuple[str, tuple[str, ...], str]]:
    return [(g.name, g.argv, g.source) for g in detect_quality_gates(project)]


def test_a_project_with_nothing_recognisable_gets_no_gates(tmp_path: Path) -> None:
    _write(tmp_path, "README.md", "hello\n")
    assert detect_quality_gates(tmp_path) == ()


def test_package_json_scripts_run_with_npm(tmp_path: Path) -> None:
    _package(tmp_path, {"test": "vitest run", "lint": "eslint .", "typecheck": "tsc --noEmit"})
    _write(tmp_path, "package-lock.json", "{}")
    assert _summary(tmp_path) == [
        ("npm-lint", ("npm", "run", "lint"), "package.json scripts.lint"),
        ("npm-typecheck", ("npm", "run", "typecheck"), "package.json scripts.typecheck"),
        ("npm-test", ("npm", "run", "test"), "package.json scripts.test"),
    ]
    assert all(g.detected for g in detect_quality_gates(tmp_path))


@pytest.mark.parametrize(
    ("lockfile", "manager"),
    [
        ("pnpm-lock.yaml", "pnpm"),
        ("yarn.lock", "yarn"),
        ("bun.lockb", "bun"),
        ("bun.lock", "bun"),
        ("package-lock.json", "npm"),
    ],
)
def test_the_lockfile_names_the_package_manager(
    tmp_path: Path, lockfile: str, manager: str
) -> None:
    _package(tmp_path, {"test": "jest"})
    _write(tmp_path, lockfile, "")
    assert _summary(tmp_path) == [
        (f"{manager}-test", (manager, "run", "test"), "package.json scripts.test")
    ]
    assert package_manager(tmp_path) == (manager, lockfile)


def test_package_manager_field_without_lockfile(tmp_path: Path) -> None:
    _package(tmp_path, {"lint": "biome check"}, packageManager="pnpm@9.1.0")
    assert _summary(tmp_path) == [
        ("pnpm-lint", ("pnpm", "run", "lint"), "package.json scripts.lint")
    ]


def test_the_default_npm_test_script_is_ignored(tmp_path: Path) -> None:
    _package(tmp_path, {"test": NPM_PLACEHOLDER})
    assert detect_quality_gates(tmp_path) == ()
    _package(tmp_path, {"test": 'echo "Error: no test specified" && exit 1 ', "lint": "eslint ."})
    assert [g.name for g in detect_quality_gates(tmp_path)] == ["npm-lint"]


def test_typescript_without_a_typecheck_script_gets_tsc(tmp_path: Path) -> None:
    _package(tmp_path, {"test": "vitest run"}, devDependencies={"typescript": "^5.6.0"})
    _write(tmp_path, "tsconfig.json", "{}")
    _write(tmp_path, "yarn.lock", "")
    assert _summary(tmp_path) == [
        ("tsc", ("yarn", "tsc", "--noEmit"), "tsconfig.json + typescript dependency"),
        ("yarn-test", ("yarn", "run", "test"), "package.json scripts.test"),
    ]


def test_a_tsc_script_counts_as_the_typecheck(tmp_path: Path) -> None:
    _package(tmp_path, {"tsc": "tsc -p ."}, devDependencies={"typescript": "5"})
    _write(tmp_path, "tsconfig.json", "{}")
    assert _summary(tmp_path) == [("npm-tsc", ("npm", "run", "tsc"), "package.json scripts.tsc")]


def test_python_tools_from_pyproject(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "pyproject.toml",
        '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n[tool.mypy]\nstrict = true\n'
        '[tool.basedpyright]\ntypeCheckingMode = "strict"\n[tool.pytest.ini_options]\n'
        'addopts = "-q"\n',
    )
    assert _summary(tmp_path) == [
        ("ruff", ("ruff", "check", "."), "pyproject.toml [tool.ruff]"),
        ("mypy", ("mypy", "."), "pyproject.toml [tool.mypy]"),
        ("basedpyright", ("basedpyright",), "pyproject.toml [tool.basedpyright]"),
        ("pytest", ("pytest", "-q"), "pyproject.toml [tool.pytest.ini_options]"),
    ]


def test_python_tools_from_their_own_files(tmp_path: Path) -> None:
    _write(tmp_path, "ruff.toml", "line-length = 90\n")
    _write(tmp_path, "mypy.ini", "[mypy]\nstrict = True\n")
    _write(tmp_path, "pyrightconfig.json", "{}")
    _write(tmp_path, "pytest.ini", "[pytest]\n")
    assert _summary(tmp_path) == [
        ("ruff", ("ruff", "check", "."), "ruff.toml"),
        ("mypy", ("mypy", "."), "mypy.ini"),
        ("pyright", ("pyright",), "pyrightconfig.json"),
        ("pytest", ("pytest", "-q"), "pytest.ini"),
    ]


def test_mypy_with_files_pytest_in_setup_cfg_and_pyright_table(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", '[tool.mypy]\nfiles = ["src"]\n[tool.pyright]\n')
    _write(tmp_path, "setup.cfg", "[tool:pytest]\naddopts = -q\n")
    assert _summary(tmp_path) == [
        ("mypy", ("mypy",), "pyproject.toml [tool.mypy]"),
        ("pyright", ("pyright",), "pyproject.toml [tool.pyright]"),
        ("pytest", ("pytest", "-q"), "setup.cfg [tool:pytest]"),
    ]


def test_a_tests_directory_with_python_tests_means_pytest(tmp_path: Path) -> None:
    _write(tmp_path, "tests/test_app.py", "def test_x():\n    pass\n")
    assert _summary(tmp_path) == [("pytest", ("pytest", "-q"), "tests/ (Python test files)")]


def test_a_tests_directory_without_python_tests_is_not_pytest(tmp_path: Path) -> None:
    _write(tmp_path, "tests/app.test.ts", "test('x', () => {})\n")
    _write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n')
    assert detect_quality_gates(tmp_path) == ()


def test_cargo_and_go(tmp_path: Path) -> None:
    _write(tmp_path, "Cargo.toml", '[package]\nname = "x"\nversion = "0.1.0"\n')
    _write(tmp_path, "go.mod", "module example.com/x\n\ngo 1.22\n")
    assert _summary(tmp_path) == [
        ("cargo-clippy", ("cargo", "clippy", "--all-targets"), "Cargo.toml"),
        ("cargo-test", ("cargo", "test"), "Cargo.toml"),
        ("go-vet", ("go", "vet", "./..."), "go.mod"),
        ("go-test", ("go", "test", "./..."), "go.mod"),
    ]


def test_a_mixed_project_gets_every_ecosystem(tmp_path: Path) -> None:
    _write(tmp_path, "pyproject.toml", "[tool.ruff]\n[tool.pytest.ini_options]\n")
    _package(tmp_path, {"test": "vitest run", "lint": "eslint ."})
    _write(tmp_path, "pnpm-lock.yaml", "")
    _write(tmp_path, "go.mod", "module x\n")
    names = [g.name for g in detect_quality_gates(tmp_path)]
    assert names == ["ruff", "pytest", "pnpm-lint", "pnpm-test", "go-vet", "go-test"]
    assert len(set(names)) == len(names)


def test_broken_package_json_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "package.json", '{\n  "scripts": {\n    "test": "jest",\n  }\n}\n')
    with pytest.raises(ProjectError) as caught:
        detect_quality_gates(tmp_path)
    message = str(caught.value)
    assert "package.json" in message
    assert ":4" in message or "line 4" in message


def test_configured_gates_win_entirely(tmp_path: Path) -> None:
    _package(tmp_path, {"test": "jest", "lint": "eslint ."})
    _write(
        tmp_path,
        "pyproject.toml",
        '[tool.ruff]\n[tool.bmad-trio]\n[[tool.bmad-trio.gates]]\nname = "unit"\ncommand = "make test"\n',
    )
    config = load_config(tmp_path)
    gates = effective_quality_gates(config)
    assert [(g.name, g.argv, g.detected) for g in gates] == [("unit", ("make", "test"), False)]
    assert gates[0].source.endswith("pyproject.toml [tool.bmad-trio] gates[0]")
    # An explicit empty list means no gates at all, not "detect".
    assert effective_quality_gates(RunConfig(project=tmp_path, gates=())) == ()


def test_unset_gates_are_detected_and_rows_say_where_from(tmp_path: Path) -> None:
    _package(tmp_path, {"test": "jest"})
    config = load_config(tmp_path)
    assert config.gates is None
    assert quality_gate_rows(config) == [
        {
            "name": "npm-test",
            "command": ["npm", "run", "test"],
            "source": "package.json scripts.test",
            "detected": True,
        }
    ]


def test_doctor_shows_each_gate_with_its_source(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\nexit 0\n")
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    _package(tmp_path, {"test": "jest"})
    _write(tmp_path, "go.mod", "module x\n")
    results = check_gate_tools(tmp_path, detect_quality_gates(tmp_path), {"PATH": str(bin_dir)})
    lines = format_checks(results)
    assert f"ok   gate npm-test: npm run test (from package.json scripts.test): {npm}" in lines
    assert "warn gate go-vet: `go` not found (from go.mod); a run skips this detected gate" in lines


# --- in a run --------------------------------------------------------------------------------


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.anyio
async def test_a_detected_gate_whose_tool_is_missing_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(tmp_path / "p")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "git")  # git stays on the short PATH
    _script(bin_dir / "pnpm", "import sys; sys.exit(0)")  # pnpm present, go missing
    monkeypatch.setenv("PATH", str(bin_dir))
    _package(project, {"test": "vitest run"})
    _write(project, "pnpm-lock.yaml", "")
    _write(project, "go.mod", "module x\n")
    init_repository(project)  # the gates run on the run's merged branch, in its worktree
    config = RunConfig(epic=project / "docs" / "prd" / "epic-1.md", project=project, max_cycles=3)
    with caplog.at_level("WARNING", logger="bmad_trio"):
        report = await run_epic(config, runner=DiskAgent().runner())
    assert report.status == "done", report.failure_reason
    assert report.exit_code == 0
    rows = [(g.name, g.passed, g.skipped) for g in report.gates]
    assert rows == [("pnpm-test", True, False), ("go-vet", False, True), ("go-test", False, True)]
    assert "go.mod" in report.gates[1].detail
    assert "command not found: go" in report.gates[1].detail
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("go-vet" in w and "skipped" in w for w in warnings), warnings


@pytest.mark.anyio
async def test_a_configured_gate_whose_tool_is_missing_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    _package(project, {"test": "vitest run"})
    monkeypatch.setenv("PATH", os.defpath)
    gates = (GateCommand("lint", ("no-such-linter-xyz", "check")),)
    config = RunConfig(
        epic=project / "docs" / "prd" / "epic-1.md",
        project=project,
        max_cycles=3,
        gates=gates,
        workspace="checkout",
    )
    report = await run_epic(config, runner=DiskAgent().runner())
    assert report.status == "failed"
    assert [(g.name, g.passed, g.skipped) for g in report.gates] == [("lint", False, False)]


def test_plan_lists_the_detected_gates_and_their_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bmad_trio._commandline._main import main

    project = make_project(tmp_path)
    _package(project, {"test": "vitest run", "lint": "eslint ."})
    _write(project, "bun.lockb", "")
    assert main(["plan", "docs/prd/epic-1.md", "--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert "bun-lint: bun run lint  (package.json scripts.lint)" in out
    assert "bun-test: bun run test  (package.json scripts.test)" in out
    assert main(["plan", "docs/prd/epic-1.md", "--project", str(project), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["gates"]
    assert [(r["name"], r["source"], r["detected"]) for r in rows] == [
        ("bun-lint", "package.json scripts.lint", True),
        ("bun-test", "package.json scripts.test", True),
    ]
    assert not (project / ".bmad-trio").exists()


def test_doctor_command_shows_detected_gates_and_sources(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # closed once the block ends: the API check fails fast
    _package(tmp_path, {"test": "vitest run"})
    _write(tmp_path, "yarn.lock", "")
    _write(tmp_path, "Cargo.toml", '[package]\nname = "x"\n')
    env = {
        "PATH": os.defpath,
        "HOME": str(tmp_path),
        "COLUMNS": "250",
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bmad_trio", "doctor", "--project", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    out = " ".join(done.stdout.split())
    assert "gate yarn-test" in out
    assert "(from package.json scripts.test); a run skips this detected gate" in out
    assert "gate cargo-clippy" in out
    assert "gate cargo-test" in out
    assert "(from Cargo.toml)" in out
