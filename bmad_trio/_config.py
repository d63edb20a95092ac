"""Run configuration: :class:`RunConfig` and loading it from TOML and the command line.

Sources, weakest first: built-in defaults, ``[tool.bmad-trio]`` in the project's ``pyproject.toml``,
``bmad-trio.toml`` in the project, the file given with ``--config``, then command-line flags.
Unknown keys and wrong types raise :class:`ConfigError` naming the file and key. Nothing here does I/O
beyond reading those files.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import attrs

from ._errors import ConfigError

__all__ = [
    "GateCommand",
    "RunConfig",
    "effective_jobs",
    "load_config",
    "load_explicit",
    "resumed_config",
]

ProgressMode = Literal["auto", "rich", "plain", "jsonl"]
Backend = Literal["trio", "asyncio"]
PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions"]
Workspace = Literal["worktrees", "checkout"]
FinishMode = Literal["merge", "branch", "push"]
SandboxMode = Literal["auto", "required", "off"]
Engine = Literal["local", "dbos"]


@attrs.frozen
class GateCommand:
    """A quality gate: a name and the argv run in the project directory.

    ``source`` says where it came from (a config file's ``gates``, or what detection read, e.g.
    ``package.json scripts.test``); a ``detected`` gate whose program is missing is skipped with a
    warning, a configured one fails.
    """

    name: str
    argv: tuple[str, ...]
    timeout_s: float = 900.0
    source: str = attrs.field(default="configured", eq=False)
    detected: bool = attrs.field(default=False, eq=False)


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything ``bmad-trio run`` takes. Paths are resolved against ``project``."""

    epic: Path | None = attrs.field(default=None, converter=_optional_path)
    """The epic file (or PRD), or an epic number looked up in the layout's epic locations."""
    epic_number: int | None = None
    """Which epic of a file holding several (a PRD, v6 ``epics.md``); None: the file's only one."""
    project: Path = attrs.field(factory=Path.cwd, converter=Path)
    max_cycles: int = attrs.field(default=10, validator=_positive)
    model: str | None = None
    budget_usd: float | None = attrs.field(default=None, validator=_positive)
    stories: tuple[str, ...] = ()
    """Only these story ids (empty: all)."""
    skip_gates: bool = False
    session_timeout: float = attrs.field(default=2700.0, validator=_positive)
    idle_timeout: float = attrs.field(default=600.0, validator=_positive)
    """A session that sends no message for this long is stopped."""
    jobs: int | None = attrs.field(default=None, validator=_positive)
    """Stories run at once; None: the smaller of 4 and the most stories that can run at once
    (see :func:`effective_jobs`), and 1 for a ``checkout`` run, whose stories share one tree."""
    progress: ProgressMode = "auto"
    backend: Backend = "trio"
    notify: str | None = None
    auto_approve: bool = True
    strict_concerns: bool = False
    stop_on_failure: bool = False
    """Stop the whole run when one story fails (default: independent stories go on)."""
    gates: tuple[GateCommand, ...] | None = None
    """The quality gates; None (the default) detects them from the project when the run starts
    (see ``bmad_trio._workflow._quality_gate_detection``); an empty tuple runs none."""
    gate_fix_attempts: int = attrs.field(default=2, validator=_positive)
    gates_after_each_story: bool = False
    permission_mode: PermissionMode = "acceptEdits"
    rate_limit_backoff: float = attrs.field(default=30.0, validator=_positive)
    """Seconds new sessions wait after a rate/usage limit that named no reset time."""
    max_turns: int | None = attrs.field(default=200, validator=_positive)
    story_location: str | None = None
    epic_location: str | None = None
    qa_location: str | None = None
    cli_path: Path | None = attrs.field(default=None, converter=_optional_path)
    """Claude Code CLI to run (default: the one bundled in claude-agent-sdk)."""
    workspace: Workspace = "worktrees"
    """``worktrees`` (the default; needs a git repository with a commit): the run integrates on its
    own branch in its own worktree, each story works in its own branch and worktree, and the
    user's checkout is left alone until ``finish``. ``checkout``: the agents edit the project
    folder itself, nothing is committed (for folders that are not git repositories; one story's
    agents at a time is the only safe ``jobs`` there)."""
    allow_dirty: bool = False
    """Start although the checkout has uncommitted changes (the run starts from HEAD; the changes
    are not part of it)."""
    finish: FinishMode = "merge"
    """What happens to the run's branch at the end: ``merge`` fast-forwards the user's branch when
    it has not moved and the checkout is clean (else prints the command), ``branch`` leaves it,
    ``push`` pushes it to ``remote`` (then runs ``pr_command``, if set)."""
    branch_prefix: str = "bmad/"
    """The run's branches: ``<prefix>epic-<n>`` integrates, ``<prefix>epic-<n>-story-<id>`` holds one story."""
    remote: str = "origin"
    """Where ``finish = "push"`` pushes the run's branch."""
    pr_command: str | None = None
    """Run after a push, e.g. ``gh pr create --head {branch} --base {base} --title {title}``
    (placeholders substituted per argument; never through a shell)."""
    merge_attempts: int = attrs.field(default=2, validator=_positive)
    """Resolver sessions a story gets when it conflicts with the integration branch."""
    engine: Engine = "local"
    """Where the story cycles run: ``local`` (this process) or ``dbos`` (enqueued in the DBOS
    database ``database``, taken by ``bmad-trio worker`` processes on any machine; needs the
    ``distributed`` extra)."""
    database: str | None = None
    """The engine's database URL (``engine = "dbos"``): ``postgresql://…``. Prefer a password from
    ``PGPASSWORD`` or ``~/.pgpass`` to one in the URL, which the run's stored settings keep."""
    sandbox: SandboxMode = "auto"
    """The agents' OS sandbox for shell commands: ``auto`` (where the platform has it, else a
    warning), ``required`` (missing: exit 3) or ``off``."""
    sandbox_allowed_domains: tuple[str, ...] = ()
    """Hosts the agents' shell commands may reach (none by default)."""
    sandbox_deny_read: tuple[str, ...] = ()
    """Paths the agents' shell may not read, besides the built-in credential places."""


DEFAULT_MAX_JOBS = 4
"""The default ``jobs`` never exceeds this: each CLI session holds ~200 MB and the tests its agents
run want CPU."""


def effective_jobs(config: RunConfig, can_run_at_once: int) -> int:
    """``config.jobs``, or its default for a run in which ``can_run_at_once`` stories can run at once."""
    if config.jobs is not None:
        return config.jobs
    if config.workspace == "checkout":
        return 1
    return max(1, min(DEFAULT_MAX_JOBS, can_run_at_once))


# key -> (python type(s) accepted, description for error messages)
_SCALAR_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "epic": ((str,), "a path"),
    "epic_number": ((int,), "an integer"),
    "max_cycles": ((int,), "an integer"),
    "model": ((str,), "a string"),
    "budget_usd": ((int, float), "a number"),
    "skip_gates": ((bool,), "true or false"),
    "session_timeout": ((int, float), "a number of seconds"),
    "idle_timeout": ((int, float), "a number of seconds"),
    "jobs": ((int,), "an integer"),
    "progress": ((str,), "one of auto, rich, plain, jsonl"),
    "backend": ((str,), "trio or asyncio"),
    "notify": ((str,), "a URL"),
    "auto_approve": ((bool,), "true or false"),
    "strict_concerns": ((bool,), "true or false"),
    "stop_on_failure": ((bool,), "true or false"),
    "gate_fix_attempts": ((int,), "an integer"),
    "gates_after_each_story": ((bool,), "true or false"),
    "permission_mode": ((str,), "a permission mode"),
    "rate_limit_backoff": ((int, float), "a number of seconds"),
    "max_turns": ((int,), "an integer"),
    "story_location": ((str,), "a path"),
    "epic_location": ((str,), "a path"),
    "qa_location": ((str,), "a path"),
    "cli_path": ((str,), "a path"),
    "workspace": ((str,), "worktrees or checkout"),
    "allow_dirty": ((bool,), "true or false"),
    "finish": ((str,), "one of merge, branch, push"),
    "branch_prefix": ((str,), "a branch name prefix"),
    "remote": ((str,), "a git remote name or URL"),
    "pr_command": ((str,), "a command line"),
    "merge_attempts": ((int,), "an integer"),
    "sandbox": ((str,), "one of auto, required, off"),
    "engine": ((str,), "local or dbos"),
    "database": ((str,), "a database URL"),
}
_LIST_KEYS: dict[str, str] = {
    "stories": "an array of story ids",
    "sandbox_allowed_domains": "an array of host names",
    "sandbox_deny_read": "an array of paths",
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "progress": ("auto", "rich", "plain", "jsonl"),
    "backend": ("trio", "asyncio"),
    "permission_mode": ("default", "acceptEdits", "plan", "bypassPermissions"),
    "workspace": ("worktrees", "checkout"),
    "finish": ("merge", "branch", "push"),
    "sandbox": ("auto", "required", "off"),
    "engine": ("local", "dbos"),
}
CONFIG_KEYS: tuple[str, ...] = (*sorted(_SCALAR_KEYS), "gates", *sorted(_LIST_KEYS))
"""Every key the config file accepts (the docs' reference is checked against this)."""


def _check_scalar(source: str, key: str, value: object) -> object:
    types, what = _SCALAR_KEYS[key]
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{source}: key '{key}' must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{source}: key '{key}' must be {what}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{source}: key '{key}' must be {what}, got {value!r}")
    if key == "cli_path" or key == "epic":
        return Path(str(value))
    return value


def _parse_gates(source: str, value: object) -> tuple[GateCommand, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: key 'gates' must be an array of tables")
    gates: list[GateCommand] = []
    for index, item in enumerate(value):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        where = f"{source}: key 'gates[{index}]'"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table with name and command")
        entry: dict[str, object] = {str(k): v for k, v in item.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        unknown = sorted(set(entry) - {"name", "command", "timeout"})
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}'")
        name, command, timeout = entry.get("name"), entry.get("command"), entry.get("timeout", 900)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name must be a non-empty string")
        if isinstance(command, str):
            import shlex

            argv = tuple(shlex.split(command))
        elif isinstance(command, list) and all(isinstance(a, str) for a in command):  # pyright: ignore[reportUnknownVariableType]
            argv = tuple(str(a) for a in command)  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        else:
            raise ConfigError(f"{where}.command must be a string or an array of strings")
        if not argv:
            raise ConfigError(f"{where}.command is empty")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{where}.timeout must be a positive number")
        gates.append(GateCommand(name, argv, float(timeout), source=f"{source} gates[{index}]"))
    return tuple(gates)


def parse_config_table(source: str, table: Mapping[str, object]) -> dict[str, object]:
    """Validate one config table; return RunConfig keyword arguments. Raises ConfigError."""
    values: dict[str, object] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key == "gates":
            values["gates"] = _parse_gates(source, value)
        elif key == "stories":
            items = cast(list[object], value) if isinstance(value, list) else None
            if items is None or not all(isinstance(s, str | int | float) for s in items):
                raise ConfigError(f"{source}: key 'stories' must be an array of story ids")
            values["stories"] = tuple(str(s) for s in items)
        elif key in _LIST_KEYS:
            items = cast(list[object], value) if isinstance(value, list) else None
            if items is None or not all(isinstance(s, str) and s.strip() for s in items):
                raise ConfigError(f"{source}: key '{raw_key}' must be {_LIST_KEYS[key]}")
            values[key] = tuple(str(s).strip() for s in items)
        elif key in _SCALAR_KEYS:
            values[key] = _check_scalar(source, key, value)
        else:
            raise ConfigError(f"{source}: unknown key '{raw_key}'")
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load_config(
    project: Path,
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> RunConfig:
    """Build a RunConfig from the project's config files, ``config_file`` and ``overrides``."""
    project = project.resolve()
    if not project.is_dir():
        raise ConfigError(f"{project}: project directory does not exist")
    values: dict[str, object] = {}
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        tool: object = _read_toml(pyproject).get("tool", {})
        table = cast(dict[str, object], tool).get("bmad-trio") if isinstance(tool, dict) else None
        if table is not None:
            if not isinstance(table, dict):
                raise ConfigError(f"{pyproject}: [tool.bmad-trio] must be a table")
            values.update(
                parse_config_table(f"{pyproject} [tool.bmad-trio]", cast(dict[str, object], table))
            )
    for path in (project / "bmad-trio.toml", config_file):
        if path is not None and (path.is_file() or path is config_file):
            values.update(parse_config_table(str(path), _read_toml(path)))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    epic = values.get("epic")
    if isinstance(epic, Path) and not epic.is_absolute():
        values["epic"] = (project / epic) if (project / epic).exists() else epic.resolve()
    try:
        return RunConfig(project=project, **values)  # pyright: ignore[reportArgumentType]
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def load_explicit(
    project: Path,
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Only what the user gave explicitly: ``config_file``'s keys, then ``overrides`` (non-None).

    The project's own config files are not read (``resume`` runs with the stored settings; see
    :func:`resumed_config`). Raises ConfigError naming the file and key.
    """
    project = project.resolve()
    values: dict[str, object] = {}
    if config_file is not None:
        values.update(parse_config_table(str(config_file), _read_toml(config_file)))
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    epic = values.get("epic")
    if isinstance(epic, Path) and not epic.is_absolute():
        values["epic"] = (project / epic) if (project / epic).exists() else epic.resolve()
    return values


def resumed_config(
    stored: RunConfig, given: RunConfig, overrides: Iterable[str] | None = None
) -> tuple[RunConfig, tuple[str, ...]]:
    """The settings a resumed run uses, and the keys ``given`` changed (sorted).

    The stored run's settings, except ``project`` (always ``given``'s: where the run is now) and
    the keys named in ``overrides``, whose values come from ``given``. With ``overrides`` None,
    every field of ``given`` that differs from RunConfig's default counts as named (so a field
    cannot be set back to its default that way: name it). Raises ConfigError for an unknown key.
    """
    names = [field.name for field in attrs.fields(RunConfig)]
    if overrides is None:
        default = RunConfig(project=given.project)
        chosen = [name for name in names if getattr(given, name) != getattr(default, name)]
    else:
        chosen = list(overrides)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ConfigError(f"resume_overrides: unknown key '{unknown[0]}'")
    changed = sorted(
        name for name in set(chosen) - {"project"} if getattr(given, name) != getattr(stored, name)
    )
    values = {name: getattr(given, name) for name in changed}
    return attrs.evolve(stored, project=given.project, **values), tuple(changed)
