"""Which quality gates a run uses: the configured ``gates``, else gates detected from the project.

Detection reads only the project's root: ``package.json`` scripts (run with the package manager its
lockfile names), the Python tools it configures (ruff, mypy, pyright/basedpyright, pytest), Cargo and
Go. A project may mix them; each detected gate records where it came from (``source``) and is
skipped with a warning when its program is missing (a configured one fails instead). Pure file
reading, no subprocess; a broken ``package.json`` or ``pyproject.toml`` is a ProjectError naming the
file and line.
"""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import attrs

from .._config import GateCommand, RunConfig
from .._errors import ProjectError

__all__ = [
    "detect_quality_gates",
    "effective_quality_gates",
    "package_manager",
    "quality_gate_rows",
]

_LOCKFILES: tuple[tuple[str, str], ...] = (
    ("bun.lockb", "bun"),
    ("bun.lock", "bun"),
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
)
_MANAGERS = ("npm", "pnpm", "yarn", "bun")
_NPM_PLACEHOLDER = re.compile(r'^\s*echo\s+\\?"Error: no test specified\\?"\s*&&\s*exit\s+1\s*$')
_TSC_RUNNERS: Mapping[str, tuple[str, ...]] = {
    "npm": ("npx",),
    "pnpm": ("pnpm", "exec"),
    "yarn": ("yarn",),
    "bun": ("bunx",),
}
_TYPECHECK_SCRIPTS = ("typecheck", "type-check", "check-types", "types", "tsc")


def effective_quality_gates(config: RunConfig) -> tuple[GateCommand, ...]:
    """The gates a run of ``config`` uses: ``config.gates`` when set (even empty), else detected.

    Raises ProjectError when a project file detection needs is unreadable.
    """
    if config.gates is not None:
        return config.gates
    return detect_quality_gates(config.project)


def quality_gate_rows(config: RunConfig) -> list[dict[str, Any]]:
    """JSON-able rows for ``plan``/``doctor``: name, command, source and whether it was detected."""
    return [
        {
            "name": gate.name,
            "command": list(gate.argv),
            "source": gate.source,
            "detected": gate.detected,
        }
        for gate in effective_quality_gates(config)
    ]


def detect_quality_gates(project: Path) -> tuple[GateCommand, ...]:
    """Gates for the languages found in ``project`` (may be empty): Python, JS/TS, Rust, Go."""
    gates = [*_python_gates(project), *_node_gates(project), *_cargo_gates(project)]
    gates += _go_gates(project)
    return tuple(gates)


def _detected(name: str, argv: tuple[str, ...], source: str) -> GateCommand:
    return GateCommand(name, argv, source=source, detected=True)


# --- JavaScript / TypeScript ---------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: object = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProjectError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise ProjectError("must be a JSON object", path=str(path))
    return {str(k): v for k, v in cast(dict[object, Any], data).items()}


def package_manager(project: Path, package: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """(manager, why) for a JS project: its lockfile, else ``packageManager``, else npm."""
    for name, manager in _LOCKFILES:
        if (project / name).is_file():
            return manager, name
    declared = (package or {}).get("packageManager")
    if isinstance(declared, str):
        manager = declared.split("@", 1)[0].strip()
        if manager in _MANAGERS:
            return manager, "package.json packageManager"
    return "npm", "no lockfile"


def _node_gates(project: Path) -> Iterator[GateCommand]:
    path = project / "package.json"
    if not path.is_file():
        return
    package = _read_json(path)
    manager, _ = package_manager(project, package)
    raw_scripts: object = package.get("scripts") or {}
    scripts: dict[str, str] = {}
    if isinstance(raw_scripts, dict):
        for key, value in cast(dict[object, object], raw_scripts).items():
            if isinstance(value, str) and value.strip():
                scripts[str(key)] = value

    def script_gate(script: str) -> GateCommand:
        return _detected(
            f"{manager}-{script}", (manager, "run", script), f"package.json scripts.{script}"
        )

    if "lint" in scripts:
        yield script_gate("lint")
    typecheck = next((s for s in _TYPECHECK_SCRIPTS if s in scripts), None)
    if typecheck is not None:
        yield script_gate(typecheck)
    elif (project / "tsconfig.json").is_file() and _depends_on(package, "typescript"):
        runner = _TSC_RUNNERS[manager]
        yield _detected(
            "tsc", (*runner, "tsc", "--noEmit"), "tsconfig.json + typescript dependency"
        )
    test = scripts.get("test")
    if test is not None and not _NPM_PLACEHOLDER.match(test):
        yield script_gate("test")


def _depends_on(package: Mapping[str, Any], name: str) -> bool:
    for key in ("dependencies", "devDependencies"):
        table: object = package.get(key)
        if isinstance(table, dict) and name in cast(dict[str, object], table):
            return True
    return False


# --- Python --------------------------------------------------------------------------------------


def _pyproject_tools(project: Path) -> dict[str, Any]:
    path = project / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise ProjectError(f"invalid TOML: {exc}", path=str(path), line=line) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read: {exc}", path=str(path)) from None
    tool: object = data.get("tool")
    return (
        {str(k): v for k, v in cast(dict[object, Any], tool).items()}
        if isinstance(tool, dict)
        else {}
    )


def _ini_has(path: Path, *sections: str) -> bool:
    if not path.is_file():
        return False
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return False
    return any(parser.has_section(section) for section in sections)


def _has_python_tests(project: Path) -> bool:
    tests = project / "tests"
    if not tests.is_dir():
        return False
    patterns = ("test_*.py", "*_test.py", "conftest.py")
    return any(next(tests.rglob(pattern), None) is not None for pattern in patterns)


def _python_gates(project: Path) -> Iterator[GateCommand]:
    tools = _pyproject_tools(project)
    if "ruff" in tools:
        yield _detected("ruff", ("ruff", "check", "."), "pyproject.toml [tool.ruff]")
    else:
        ruff_file = next((n for n in ("ruff.toml", ".ruff.toml") if (project / n).is_file()), None)
        if ruff_file is not None:
            yield _detected("ruff", ("ruff", "check", "."), ruff_file)
    mypy_source = (
        "pyproject.toml [tool.mypy]"
        if "mypy" in tools
        else next((n for n in ("mypy.ini", ".mypy.ini") if (project / n).is_file()), None)
    )
    if mypy_source is None and _ini_has(project / "setup.cfg", "mypy"):
        mypy_source = "setup.cfg [mypy]"
    if mypy_source is not None:
        mypy_table: object = tools.get("mypy")
        has_files = isinstance(mypy_table, dict) and "files" in cast(dict[str, object], mypy_table)
        yield _detected("mypy", ("mypy",) if has_files else ("mypy", "."), mypy_source)
    if "basedpyright" in tools:
        yield _detected("basedpyright", ("basedpyright",), "pyproject.toml [tool.basedpyright]")
    elif "pyright" in tools:
        yield _detected("pyright", ("pyright",), "pyproject.toml [tool.pyright]")
    elif (project / "pyrightconfig.json").is_file():
        yield _detected("pyright", ("pyright",), "pyrightconfig.json")
    pytest_source = _pytest_source(project, tools)
    if pytest_source is not None:
        yield _detected("pytest", ("pytest", "-q"), pytest_source)


def _pytest_source(project: Path, tools: Mapping[str, Any]) -> str | None:
    pytest_table: object = tools.get("pytest")
    if isinstance(pytest_table, dict):
        inner = cast(dict[str, object], pytest_table)
        return (
            "pyproject.toml [tool.pytest.ini_options]"
            if "ini_options" in inner
            else "pyproject.toml [tool.pytest]"
        )
    for name in ("pytest.ini", ".pytest.ini"):
        if (project / name).is_file():
            return name
    if _ini_has(project / "setup.cfg", "tool:pytest"):
        return "setup.cfg [tool:pytest]"
    if _ini_has(project / "tox.ini", "pytest"):
        return "tox.ini [pytest]"
    if _has_python_tests(project):
        return "tests/ (Python test files)"
    return None


# --- Rust and Go ---------------------------------------------------------------------------------


def _cargo_gates(project: Path) -> Iterator[GateCommand]:
    if (project / "Cargo.toml").is_file():
        yield _detected("cargo-clippy", ("cargo", "clippy", "--all-targets"), "Cargo.toml")
        yield _detected("cargo-test", ("cargo", "test"), "Cargo.toml")


def _go_gates(project: Path) -> Iterator[GateCommand]:
    if (project / "go.mod").is_file():
        yield _detected("go-vet", ("go", "vet", "./..."), "go.mod")
        yield _detected("go-test", ("go", "test", "./..."), "go.mod")


def with_effective_quality_gates(config: RunConfig) -> RunConfig:
    """``config`` with ``gates`` filled in (detected when unset); what a run stores and uses."""
    return (
        config
        if config.gates is not None
        else attrs.evolve(config, gates=effective_quality_gates(config))
    )
