"""Where a project keeps its BMAD artifacts: v4 (``.bmad-core/``), v6 (``_bmad/``) or plain.

v4 reads ``.bmad-core/core-config.yaml``; v6 reads ``_bmad/bmm/config.yaml`` (v6-alpha installs:
``bmad/bmm/config.yaml``) and then ``_bmad/config.toml`` (``[modules.bmm]``, overridden by
``_bmad/custom/config.toml``), expanding ``{project-root}``. When both installs exist, v6 wins and
v4's locations are searched after v6's. Explicit overrides win over everything. v6 has no QA gate
directory of its own: gates go to ``{implementation_artifacts}/qa/gates``.

Story files are searched in ``story_dirs`` (the configured story location first, then the v6
``story_location`` of sprint-status.yaml, ``sprint_artifacts``, implementation artifacts,
``{output_folder}/sprint-artifacts`` (early v6) and their ``stories/`` folders). A configured absolute path from another machine is re-rooted in the project
when its tail exists here; what cannot be placed is said in ``notes``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    """Where new story files are written (and the first place searched)."""
    story_dirs: tuple[Path, ...] = ()
    """Every directory searched for story files, ``story_dir`` first (may not exist)."""
    notes: tuple[str, ...] = ()
    """Plain sentences about configured locations that could not be used as written."""
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

    @property
    def story_search_dirs(self) -> tuple[Path, ...]:
        """``story_dir`` then the other ``story_dirs``, without repeats."""
        return tuple(dict.fromkeys((self.story_dir, *self.story_dirs)))

    def rerooted(self, root: Path) -> Layout:
        """The same layout in another checkout of the project (a story's git worktree): every path
        inside the project moves under ``root``; paths outside it stay as they are."""

        def move(path: Path) -> Path:
            try:
                return root / path.relative_to(self.project)
            except ValueError:
                return path

        def move_all(paths: Mapping[str, Path]) -> dict[str, Path]:
            return {key: move(path) for key, path in paths.items()}

        return attrs.evolve(
            self,
            project=root,
            config_path=None if self.config_path is None else move(self.config_path),
            story_dir=move(self.story_dir),
            story_dirs=tuple(move(p) for p in self.story_dirs),
            epic_locations=tuple(move(p) for p in self.epic_locations),
            qa_dir=move(self.qa_dir),
            sprint_status_path=(
                None if self.sprint_status_path is None else move(self.sprint_status_path)
            ),
            agent_files=move_all(self.agent_files),
            task_files=move_all(self.task_files),
            workflow_dirs=move_all(self.workflow_dirs),
            dev_load_always_files=tuple(move(p) for p in self.dev_load_always_files),
        )


def _expand(value: str, project: Path, source: Path, key: str) -> Path:
    expanded = value.replace("{project-root}", str(project)).strip()
    if not expanded or "{" in expanded:
        raise ProjectError(f"cannot resolve {key} = {value!r}", path=str(source))
    return ensure_inside(project, Path(expanded), what=f"{key} ({value})")


def _rebase(project: Path, path: Path) -> Path | None:
    """An absolute path from another machine (``/Users/x/proj/docs/stories``) re-rooted here:
    the longest tail of it that exists inside ``project``."""
    parts = path.parts[1:]
    for start in range(len(parts)):
        candidate = project.joinpath(*parts[start:])
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _place(
    value: str, project: Path, source: Path, key: str, notes: list[str], **names: str
) -> Path | None:
    """Resolve a configured location, or None with a note saying why it cannot be used.

    ``{project-root}`` and the names given (``{output_folder}`` …) are expanded; a relative path
    that climbs out of the project is still refused (ProjectError), like any other escape."""
    expanded = value.replace("{project-root}", str(project)).strip()
    for name, replacement in names.items():
        expanded = expanded.replace("{" + name + "}", replacement)
    where = f"{source.name}: {key} = {value!r}"
    if not expanded or "{" in expanded:
        notes.append(f"{where} cannot be resolved; using the default")
        return None
    path = Path(expanded)
    if path.is_absolute():
        resolved = path.resolve()
        root = project.resolve()
        if resolved != root and not resolved.is_relative_to(root):
            rebased = _rebase(root, path)
            if rebased is None:
                notes.append(f"{where} is outside the project; using the default")
            else:
                notes.append(f"{where} is outside the project; using {rebased.relative_to(root)}")
            return rebased
    return ensure_inside(project, path, what=f"{key} ({value})")


def _sprint_story_location(project: Path, sprint_status: Path, notes: list[str]) -> Path | None:
    """The ``story_location:`` of a sprint-status.yaml (None when absent or unreadable)."""
    if not sprint_status.is_file():
        return None
    try:
        loaded = load_yaml_file(sprint_status)
    except ProjectError as exc:
        notes.append(f"{sprint_status.name}: {exc}")
        return None
    if not isinstance(loaded, dict):
        return None
    value = cast(dict[object, Any], loaded).get("story_location")
    if not isinstance(value, str):
        return None
    return _place(value, project, sprint_status, "story_location", notes)


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
        story_dirs=tuple(dict.fromkeys((story_dir, project / "docs" / "stories"))),
        epic_locations=tuple(
            dict.fromkeys((*epics, project / "docs" / "epics", project / "docs" / "epics.md"))
        ),
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
    roots = [bmad, project / ".claude" / "skills", project / ".agents" / "skills"]
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


_V6_KEYS = (
    "output_folder",
    "planning_artifacts",
    "implementation_artifacts",
    "sprint_artifacts",
    "dev_story_location",
    "story_location",
)


def _v6_values(project: Path, bmad: Path) -> tuple[dict[str, str], Path | None]:
    values: dict[str, str] = {}
    config_path: Path | None = None
    yaml_path = bmad / "bmm" / "config.yaml"
    if yaml_path.is_file():
        table = _mapping(load_yaml_file(yaml_path), yaml_path, "bmm/config.yaml")
        for key in _V6_KEYS:
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
            for key in _V6_KEYS:
                value = _string(table, key, toml_path)
                if value is not None:
                    values[key] = value
        if config_path is None or toml_path.parent == bmad:
            config_path = toml_path
    return values, config_path


def _first_file(paths: Sequence[Path]) -> Path | None:
    return next((path for path in paths if path.is_file()), None)


def _v6_layout(project: Path, bmad: Path) -> Layout:
    values, config_path = _v6_values(project, bmad)
    source = config_path or bmad
    notes: list[str] = []
    alpha = bmad.name == "bmad"  # v6-alpha installs wrote everything under docs/ by default

    def place(key: str, default: Path, **names: str) -> Path:
        value = values.get(key)
        placed = None if value is None else _place(value, project, source, key, notes, **names)
        return placed if placed is not None else default

    output = place("output_folder", project / ("docs" if alpha else "_bmad-output"))
    names = {"output_folder": str(output)}
    planning = place(
        "planning_artifacts", output if alpha else output / "planning-artifacts", **names
    )
    implementation = place(
        "implementation_artifacts",
        output if alpha else output / "implementation-artifacts",
        **names,
    )
    names |= {"implementation_artifacts": str(implementation)}
    sprint = place("sprint_artifacts", implementation, **names)
    # Early v6 (6.0 betas) kept sprint-status.yaml and the stories in
    # ``{output_folder}/sprint-artifacts`` even when the config names an implementation folder.
    early = output / "sprint-artifacts"
    sprint_status = _first_file(
        [
            implementation / "sprint-status.yaml",
            sprint / "sprint-status.yaml",
            early / "sprint-status.yaml",
            output / "sprint-status.yaml",
        ]
    ) or (implementation / "sprint-status.yaml")
    configured = place(
        "dev_story_location", place("story_location", implementation, **names), **names
    )
    from_sprint = _sprint_story_location(project, sprint_status, notes)
    if "dev_story_location" in values or "story_location" in values or from_sprint is None:
        story_dir = configured
    else:
        story_dir = from_sprint
    story_dirs = [
        story_dir,
        *([from_sprint] if from_sprint is not None else []),
        implementation,
        implementation / "stories",
        sprint,
        sprint / "stories",
        early,
        early / "stories",
        output / "stories",
        project / "docs" / "stories",
    ]
    return Layout(
        project=project,
        version="v6",
        config_path=config_path,
        story_dir=story_dir,
        story_dirs=tuple(dict.fromkeys(story_dirs)),
        notes=tuple(notes),
        epic_locations=tuple(
            dict.fromkeys(
                (
                    planning / "epics.md",
                    planning / "epics",
                    planning,
                    output / "epics.md",
                    output / "epics",
                    output / "prd",
                    output,
                )
            )
        ),
        epic_file_pattern="epic*{n}*.md",
        qa_dir=implementation / "qa",
        sprint_status_path=sprint_status,
        workflow_dirs=_find_workflow_dirs(project, bmad),
    )


def _plain_layout(project: Path) -> Layout:
    docs = project / "docs"
    notes: list[str] = []
    sprint_status = _first_file(
        [
            docs / "sprint-artifacts" / "sprint-status.yaml",
            docs / "sprint-status.yaml",
            project / "_bmad-output" / "implementation-artifacts" / "sprint-status.yaml",
        ]
    )
    from_sprint = (
        None if sprint_status is None else _sprint_story_location(project, sprint_status, notes)
    )
    story_dirs = [
        *([from_sprint] if from_sprint is not None else []),
        docs / "stories",
        docs / "sprint-artifacts" / "stories",
        docs / "sprint-artifacts",
        project / "_bmad-output" / "implementation-artifacts",
    ]
    return Layout(
        project=project,
        version="plain",
        config_path=None,
        story_dir=from_sprint or docs / "stories",
        story_dirs=tuple(dict.fromkeys(story_dirs)),
        notes=tuple(notes),
        epic_locations=(docs / "prd", docs / "epics", docs / "epics.md", docs / "prd.md"),
        qa_dir=docs / "qa",
        sprint_status_path=sprint_status,
    )


def _merge_v4(layout: Layout, project: Path) -> Layout:
    """Both installs: v6 wins, v4's story and epic locations are searched after v6's."""
    v4 = _v4_layout(project)
    return attrs.evolve(
        layout,
        story_dirs=tuple(dict.fromkeys((*layout.story_search_dirs, *v4.story_search_dirs))),
        epic_locations=tuple(dict.fromkeys((*layout.epic_locations, *v4.epic_locations))),
        notes=layout.notes + v4.notes,
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
    v6_dir = next(
        (
            root / name
            for name in ("_bmad", "bmad")
            if (root / name / "bmm").is_dir() or (name == "_bmad" and (root / name).is_dir())
        ),
        None,
    )
    if v6_dir is not None:
        layout = _v6_layout(root, v6_dir)
        if (root / ".bmad-core").is_dir():
            layout = _merge_v4(layout, root)
    elif (root / ".bmad-core").is_dir():
        layout = _v4_layout(root)
    else:
        layout = _plain_layout(root)
    changes: dict[str, Any] = {}
    if story_location is not None:
        changes["story_dir"] = ensure_inside(root, Path(story_location), what="story_location")
        changes["story_dirs"] = ()
    if epic_location is not None:
        changes["epic_locations"] = (
            ensure_inside(root, Path(epic_location), what="epic_location"),
        )
    if qa_location is not None:
        changes["qa_dir"] = ensure_inside(root, Path(qa_location), what="qa_location")
    return attrs.evolve(layout, **changes) if changes else layout
