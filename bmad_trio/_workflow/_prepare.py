"""Before a run: its settings checked and read (``prepare_run``), kept as JSON for ``resume``,
and the agents' OS sandbox probed. Nothing here writes anything.

Below the run (``_run.py``) and the engines that run its story cycles (``_distributed``), which
both start from here.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import anyio
import attrs
import cattrs

from .._agents._sandbox import Sandbox, probe_sandbox, run_sandbox
from .._bmad import Epic, EpicStory, Layout, detect_layout, resolve_epics, story_dirs_near
from .._config import RunConfig
from .._converter import make_converter
from .._errors import ConfigError, ProjectError, StateError
from ._quality_gate_detection import with_effective_quality_gates

__all__ = ["PreparedRun", "config_from_json", "config_to_json", "prepare_run", "run_sandbox_for"]


def config_to_json(config: RunConfig) -> str:
    """The run's config as JSON for the store (so ``resume`` runs with the same settings)."""
    converter = make_converter()
    data: dict[str, Any] = converter.unstructure(config)
    return json.dumps(data, default=str)


def config_from_json(text: str, **overrides: object) -> RunConfig:
    """Rebuild a stored config; ``overrides`` (non-None values) win."""
    converter = make_converter()
    try:
        data: dict[str, Any] = json.loads(text)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return converter.structure(data, RunConfig)
    except (ValueError, cattrs.BaseValidationError) as exc:
        raise StateError(f"the stored configuration of this run is unreadable: {exc}") from None


@attrs.define
class PreparedRun:
    config: RunConfig
    layout: Layout
    epic: Epic
    stories: tuple[EpicStory, ...]
    epics: tuple[Epic, ...] = attrs.field(factory=tuple[Epic, ...])
    """Every epic of a multi-epic file given without a number (``plan`` only)."""


def prepare_run(config: RunConfig, *, several_epics: bool = False) -> PreparedRun:
    """Validate everything before anything is written (bad input → ConfigError/ProjectError).

    ``several_epics``: a file holding several epics, given without a number, yields them all
    (``plan`` shows them); otherwise that is an error naming the numbers."""
    layout = detect_layout(
        config.project,
        story_location=config.story_location,
        epic_location=config.epic_location,
        qa_location=config.qa_location,
    )
    if config.engine != "local":
        _check_engine(config)
    epic_arg = config.epic
    if epic_arg is None and config.epic_number is None:
        raise ConfigError("no epic given: pass an epic file or an epic number")
    epic_path = (
        None
        if epic_arg is None
        else (epic_arg if epic_arg.is_absolute() else config.project / epic_arg)
    )
    if (
        epic_arg is not None
        and epic_path is not None
        and not epic_path.is_file()
        and not epic_arg.name.isdigit()
    ):
        raise ConfigError(f"{epic_arg}: epic file not found")
    where, epics = resolve_epics(layout, epic_path, config.epic_number)
    if len(epics) > 1 and not several_epics:
        numbers = ", ".join(str(e.number) for e in epics)
        raise ProjectError(
            f"the file holds several epics ({numbers}); pass the epic's number instead",
            path=str(where),
        )
    epic = next(iter(epics))  # resolve_epics returns at least one
    if config.story_location is None:
        near = story_dirs_near(epic.path)
        layout = attrs.evolve(layout, story_dirs=(*layout.story_search_dirs, *near))
    stories = epic.stories
    if config.stories:
        known = {s.story_id for s in epic.stories}
        unknown = [s for s in config.stories if s not in known]
        if unknown:
            raise ConfigError(f"--story {unknown[0]}: no such story in {epic.path.name}")
        stories = tuple(s for s in epic.stories if s.story_id in config.stories)
    # Unset gates are detected now, so the run stores and shows the gates it will run.
    return PreparedRun(with_effective_quality_gates(config), layout, epic, stories, epics)


def _check_engine(config: RunConfig) -> None:
    """A run on an engine needs its database, git worktrees and the engine's library."""
    if not config.database:
        raise ConfigError(f"engine = {config.engine} needs the engine's database: --database URL")
    if config.workspace != "worktrees":
        raise ConfigError(f"engine = {config.engine} needs workspace = worktrees")
    if importlib.util.find_spec("dbos") is None:
        raise ConfigError(
            f"engine = {config.engine} needs the distributed extra: "
            "pip install 'bmad-trio[distributed]'"
        )


async def run_sandbox_for(config: RunConfig) -> tuple[Sandbox | None, str | None]:
    """The run's OS sandbox for agents' shells: probed once per run (a few ms in a worker thread;
    cancellation abandons the wait, the probe's own timeout ends it). Raises PreflightError for
    ``sandbox = required`` without one."""
    probe = None
    if config.sandbox != "off":
        probe = await anyio.to_thread.run_sync(probe_sandbox, abandon_on_cancel=True)
    return run_sandbox(
        config.sandbox,
        probe,
        allowed_domains=config.sandbox_allowed_domains,
        deny_read=config.sandbox_deny_read,
    )
