"""Where a project keeps its BMAD artifacts: v4 (``.bmad-core/``), v6 (``_bmad/``) or plain.

v4 reads ``.bmad-core/core-config.yaml``; v6 reads ``_bmad/bmm/config.yaml`` and then
``_bmad/config.toml`` (``[modules.bmm]``, overridden by ``_bmad/custom/config.toml``), expanding
``{project-root}``. When both installs exist, v6 wins. Explicit overrides win over everything.
v6 has no QA gate directory of its own: gates go to ``{implementation_artifacts}/qa/gates``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import attrs

from .._errors import ProjectError
from ._textio import ensure_inside
from ._yamlio import load_toml_file, load_yaml_file

__all__ = ["BmadVersion", "Layout", "detect_layout"]

BmadVersion = Literal["v4", "v6", "plain"]

V4_AGENTS = ("sm", "dev", "qa")
V4_TASKS = ("create-next-story", "apply-qa-fixes", "review-story", "qa-gate")
V6_WORKFLOWS = ("create-story", "dev-story", "code-review")
_WORKFLOW_SEARCH_DEPTH = 5


@attrs.frozen(kw_only=True)
class Layout:
    """Resolved locations of one project's BMAD artifacts (all paths absolute, inside the project)."""

    project: Path
    version: BmadVersion
    config_path: Path | None
    """The config file read (None for plain projects or an install without one)."""
    story_dir: Path
    epic_locations: tuple[Path, ...]
    """Epic files and directories to look in, in order of preference (may not exist)."""
    epic_file_pattern: str = "epic-{n}*.md"
    """Glob for sharded epic files inside an epic directory; ``{n}`` is the epic number."""
    qa_dir: Path
    sprint_status_path: Path | None = None
    """v6 ``{implementation_artifacts}/sprint-status.yaml`` (None for v4/plain)."""
    agent_files: Mapping[str, Path] = attrs.field(factory=dict[str, Path])
    """v4: role (``sm``, ``dev``, ``qa``) → installed agent file."""
    task_files: Mapping[str, Path] = attrs.field(factory=dict[str, Path])
    """v4: task name (``create-next-story`` …) → installed task file."""
    workflow_dirs: Mapping[str, Path] = attrs.field(factory=dict[str, Path])
    """v6: workflow (``create-story``, ``dev-story``, ``code-review``) → installed directory."""
    dev_load_always_files: tuple[Path, ...] = ()

    @property
    def gates_dir(self) -> Path:
        return self.qa_dir / "gates"


def _expand(value: str, project: Path, source: Path, key: str) -> Path:
    expanded = value.replace("{project-root}", str(project)).strip()
    if not expanded or "{" in expanded:
        raise ProjectError(f"cannot resolve {key} = {value!r}", path=str(source))
    return ensure_inside(project, Path(expanded), what=f"{key} ({value})")


def _mapping(value: object, source: Path, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProjectError(f"{what} must be a mapping", path=str(source))
    return {str(k): v for k, v in cast(dict[object, Any], value).items()}


def _string(table: Mapping[str, Any], key: str, source: Path) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProjectError(f"key '{key}' must be a string, got {value!r}", path=str(source))
    return value


def _existing(paths: Mapping[str, Path]) -> dict[str, Path]:
    return {name: path for name, path in paths.items() if path.is_file()}


def _v4_layout(project: Path) -> Layout:
    core = project / ".bmad-core"
    config_path = core / "core-config.yaml"
    config: dict[str, Any] = {}
    if config_path.is_file():
        config = _mapping(load_yaml_file(config_path), config_path, "core-config.yaml")
    source = config_path
    story_dir = _expand(
        _string(config, "devStoryLocation", source) or "docs/stories",
        project,
        source,
        "devStoryLocation",
    )
    qa = _mapping(config.get("qa"), source, "key 'qa'")
    qa_dir = _expand(_string(qa, "qaLocation", source) or "docs/qa", project, source, "qaLocation")
    prd = _mapping(config.get("prd"), source, "key 'prd'")
    prd_file = _expand(_string(prd, "prdFile", source) or "docs/prd.md", project, source, "prdFile")
    sharded_dir = _expand(
        _string(prd, "prdShardedLocation", source) or "docs/prd",
        project,
        source,
        "prdShardedLocation",
    )
    sharded = prd.get("prdSharded", True) is not False
    epics = (sharded_dir, prd_file) if sharded else (prd_file, sharded_dir)
    always: object = config.get("devLoadAlwaysFiles") or []
    if not isinstance(always, list) or not all(
        isinstance(a, str) for a in cast(list[object], always)
    ):
        raise ProjectError("key 'devLoadAlwaysFiles' must be a list of paths", path=str(source))
    return Layout(
        project=project,
        version="v4",
        config_path=config_path if config_path.is_file() else None,
        story_dir=story_dir,
        epic_locations=epics,
        epic_file_pattern=_string(prd, "epicFilePattern", source) or "epic-{n}*.md",
        qa_dir=qa_dir,
        agent_files=_existing({role: core / "agents" / f"{role}.md" for role in V4_AGENTS}),
        task_files=_existing({task: core / "tasks" / f"{task}.md" for task in V4_TASKS}),
        dev_load_always_files=tuple(
            _expand(a, project, source, "devLoadAlwaysFiles") for a in cast(list[str], always)
        ),
    )


def _find_workflow_dirs(project: Path, bmad: Path) -> dict[str, Path]:
    wanted = {name: name for name in V6_WORKFLOWS} | {f"bmad-{name}": name for name in V6_WORKFLOWS}
    found: dict[str, Path] = {}
    roots = [bmad, project / ".claude" / "skills"]
    for root in roots:
        if not root.is_dir():
            continue
        base_depth = len(root.parts)
        for current, dirs, _ in os.walk(root):
            dirs.sort()
            here = Path(current)
            if len(here.parts) - base_depth >= _WORKFLOW_SEARCH_DEPTH:
                dirs.clear()
            for name in dirs:
                workflow = wanted.get(name)
                if workflow is not None and workflow not in found:
                    found[workflow] = here / name
    return found


def _v6_values(project: Path, bmad: Path) -> tuple[dict[str, str], Path | None]:
    values: dict[str, str] = {}
    config_path: Path | None = None
    yaml_path = bmad / "bmm" / "config.yaml"
    if yaml_path.is_file():
        table = _mapping(load_yaml_file(yaml_path), yaml_path, "bmm/config.yaml")
        for key in ("output_folder", "planning_artifacts", "implementation_artifacts"):
            value = _string(table, key, yaml_path)
            if value is not None:
                values[key] = value
        config_path = yaml_path
    for toml_path in (bmad / "config.toml", bmad / "custom" / "config.toml"):
        if not toml_path.is_file():
            continue
        data = load_toml_file(toml_path)
        core = _mapping(data.get("core"), toml_path, "[core]")
        modules = _mapping(data.get("modules"), toml_path, "[modules]")
        bmm = _mapping(modules.get("bmm"), toml_path, "[modules.bmm]")
        for table in (core, bmm):
            for key in ("output_folder", "planning_artifacts", "implementation_artifacts"):
                value = _string(table, key, toml_path)
                if value is not None:
                    values[key] = value
        if config_path is None or toml_path.parent == bmad:
            config_path = toml_path
    return values, config_path


def _v6_layout(project: Path) -> Layout:
    bmad = project / "_bmad"
    values, config_path = _v6_values(project, bmad)
    source = config_path or bmad
    output = _expand(
        values.get("output_folder", "{project-root}/_bmad-output"), project, source, "output_folder"
    )
    planning = _expand(
        values.get("planning_artifacts", str(output / "planning-artifacts")),
        project,
        source,
        "planning_artifacts",
    )
    implementation = _expand(
        values.get("implementation_artifacts", str(output / "implementation-artifacts")),
        project,
        source,
        "implementation_artifacts",
    )
    return Layout(
        project=project,
        version="v6",
        config_path=config_path,
        story_dir=implementation,
        epic_locations=(planning / "epics.md", planning / "epics", planning),
        epic_file_pattern="epic*{n}*.md",
        qa_dir=implementation / "qa",
        sprint_status_path=implementation / "sprint-status.yaml",
        workflow_dirs=_find_workflow_dirs(project, bmad),
    )


def _plain_layout(project: Path) -> Layout:
    docs = project / "docs"
    return Layout(
        project=project,
        version="plain",
        config_path=None,
        story_dir=docs / "stories",
        epic_locations=(docs / "prd", docs / "epics", docs / "epics.md", docs / "prd.md"),
        qa_dir=docs / "qa",
    )


def detect_layout(
    project: Path,
    *,
    story_location: str | Path | None = None,
    epic_location: str | Path | None = None,
    qa_location: str | Path | None = None,
) -> Layout:
    """Detect the project's BMAD version and artifact locations; the ``*_location`` overrides win."""
    root = project.resolve()
    if not root.is_dir():
        raise ProjectError("project directory does not exist", path=str(project))
    if (root / "_bmad").is_dir():
        layout = _v6_layout(root)
    elif (root / ".bmad-core").is_dir():
        layout = _v4_layout(root)
    else:
        layout = _plain_layout(root)
    changes: dict[str, Any] = {}
    if story_location is not None:
        changes["story_dir"] = ensure_inside(root, Path(story_location), what="story_location")
    if epic_location is not None:
        changes["epic_locations"] = (
            ensure_inside(root, Path(epic_location), what="epic_location"),
        )
    if qa_location is not None:
        changes["qa_dir"] = ensure_inside(root, Path(qa_location), what="qa_location")
    return attrs.evolve(layout, **changes) if changes else layout
