"""``bmad-trio plan``: what a run would do, read from disk; no model call, nothing written.

One story whose file is odd (unreadable status, bad UTF-8 …) never stops the plan: it is shown
with the reason as ``problem``, and ``run`` would treat it as blocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._bmad import (
    BmadVersion,
    Epic,
    EpicStory,
    Layout,
    SprintEntry,
    StoryStatus,
    cross_epic_dependency_met,
    locate_story_file,
    read_sprint_entries,
    read_story_state,
    sprint_keys_for,
)
from .._config import RunConfig
from .._errors import ProjectError
from .._git import story_branch_name
from .._state._paths import state_dir
from .._workflow._prepare import prepare_run
from .._workflow._prompts import rel
from .._workflow._quality_gate_detection import quality_gate_rows
from .._workflow._story_order import run_order
from .._workflow._workspace import GitRecord, read_record

__all__ = ["make_plan", "next_action"]

_NEXT: dict[StoryStatus | None, str] = {
    None: "SM drafts the story file",
    StoryStatus.DRAFT: "approve (auto) → Dev",
    StoryStatus.READY_FOR_DEV: "Dev implements",
    StoryStatus.IN_PROGRESS: "Dev continues (with QA findings if any)",
    StoryStatus.REVIEW: "QA reviews and writes the gate",
    StoryStatus.DONE: "nothing (done)",
    StoryStatus.FAILED: "nothing (failed; fix by hand, then resume)",
    StoryStatus.BLOCKED: "nothing (blocked)",
}
# v6 has no QA gate: its skill chain is create-story → dev-story → code-review, and code review
# sets the story's status itself (done, or back to in-progress).
_NEXT_V6: dict[StoryStatus | None, str] = {
    None: "create-story drafts the story file",
    StoryStatus.IN_PROGRESS: "Dev continues (with review findings if any)",
    StoryStatus.REVIEW: "code review (done, or back to in-progress)",
}
_STOPPED = (StoryStatus.DONE, StoryStatus.FAILED, StoryStatus.BLOCKED)


def next_action(
    status: StoryStatus | None, *, auto_approve: bool = True, version: BmadVersion = "v4"
) -> str:
    """The decision table's next step for a story in ``status``, worded for the BMAD ``version``."""
    if status is StoryStatus.DRAFT and not auto_approve:
        return "wait for approval (auto_approve is off)"
    if version == "v6" and status in _NEXT_V6:
        return _NEXT_V6[status]
    return _NEXT[status]


def _sprint_entries(layout: Layout, notes: list[str]) -> dict[str, SprintEntry]:
    path = layout.sprint_status_path
    if path is None or not path.is_file():
        return {}
    try:
        return read_sprint_entries(path)
    except ProjectError as exc:
        notes.append(f"sprint status not read: {exc}")
        return {}


def _story_row(
    layout: Layout,
    epic: Epic,
    story: EpicStory,
    entries: dict[str, SprintEntry],
    listings: dict[Path, list[Path]],
    done: set[str],
    config: RunConfig,
) -> dict[str, Any]:
    development = {key: entry.word for key, entry in entries.items()}
    keys = sprint_keys_for(development, story.story_id)
    choice = locate_story_file(layout, story.story_id, story.title, keys=keys, listings=listings)
    # The same reading `run` acts on: the file's status, sprint-status where it is corroborated,
    # and whether a review already passed. One odd file is this row's problem, never the plan's.
    state = read_story_state(
        layout,
        story.story_id,
        story.title,
        choice.path,
        sprint_entries=entries,
        strict_concerns=config.strict_concerns,
    )
    status = state.status
    problem = state.unreadable
    if status is StoryStatus.DONE:
        done.add(story.story_id)
    declared = {s.story_id for s in epic.stories}
    waiting = [
        dep
        for dep in story.dependencies
        if dep not in done
        and (
            dep in declared
            or not cross_epic_dependency_met(
                layout, dep, development=development, listings=listings
            )
        )
    ]
    if problem is not None:
        action = "blocked: fix the story file (see problem)"
    elif status is StoryStatus.REVIEW and state.review is not None and state.review.finished:
        rerun = "review" if layout.version == "v6" else "QA"
        action = f"done: its review already passed (no {rerun} re-run)"
    else:
        action = next_action(status, auto_approve=config.auto_approve, version=layout.version)
        if waiting and status is not StoryStatus.DONE:
            action = f"after {', '.join(waiting)}: {action}"
    multiple = len(choice.candidates) > 1
    read = state.as_json(layout.project)
    return {
        "story_id": story.story_id,
        "epic": epic.number,
        "title": story.title,
        "file": rel(layout, choice.path) if choice.path is not None else None,
        "file_reason": choice.reason if multiple or choice.path is None else None,
        "status": read["status"],
        "status_source": read["status_source"],
        "status_line": read["status_line"],
        "sprint_status": read["sprint_status"],
        "conflict": read["conflict"],
        "gate": read["gate"],
        "review_finished": read["review_finished"],
        "problem": problem,
        "dependencies": list(story.dependencies),
        "waiting_for": waiting,
        "next": action,
        "branch": (
            story_branch_name(f"{config.branch_prefix}epic-{epic.number}", story.story_id)
            if config.workspace == "worktrees"
            else None
        ),
        "worktree": None,
        "merged_commit": None,
    }


def _latest_git_record(config: RunConfig, branch: str | None) -> GitRecord | None:
    """The git record of the newest run of this epic (its branch), if any: where each story's
    worktree is and what landed. ``plan`` only reads it."""
    if branch is None:
        return None
    runs = state_dir(config.project) / "runs"
    records = sorted(runs.glob("*/git.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in records if runs.is_dir() else []:
        record = read_record(path.parent)
        if record is not None and record.branch == branch:
            return record
    return None


def make_plan(config: RunConfig) -> dict[str, Any]:
    """Stories, their files, statuses, dependencies and next steps, as JSON-able data.

    Raises ConfigError/ProjectError for bad input (no epic, bad config), like ``run`` would;
    a problem with one story's file is reported in that story's row instead.
    """
    prepared = prepare_run(config, several_epics=True)
    layout = prepared.layout
    epics = prepared.epics if len(prepared.epics) > 1 else (prepared.epic,)
    notes: list[str] = list(layout.notes)
    for epic in epics:
        notes.extend(w for w in epic.warnings if w not in notes)
    entries = _sprint_entries(layout, notes)
    listings: dict[Path, list[Path]] = {}
    done: set[str] = set()
    stories: list[dict[str, Any]] = []
    first_runnable: str | None = None
    for epic in epics:
        selected = prepared.stories if epic is prepared.epic else epic.stories
        for story in run_order(selected):  # the order the run takes them in
            row = _story_row(layout, epic, story, entries, listings, done, config)
            status = (
                StoryStatus(row["status"]) if row["problem"] is None and row["status"] else None
            )
            if (
                first_runnable is None
                and not row["waiting_for"]
                and row["problem"] is None
                and status not in _STOPPED
            ):
                first_runnable = story.story_id
            stories.append(row)
    branch = (
        f"{config.branch_prefix}epic-{prepared.epic.number}"
        if config.workspace == "worktrees"
        else None
    )
    if branch is not None:
        from .._git import describe_git_needs

        notes.extend(describe_git_needs(config.project))
        record = _latest_git_record(config, branch)
        for row in stories if record is not None else []:
            known = record.stories.get(row["story_id"]) if record is not None else None
            if known is not None:
                row["worktree"] = known.worktree or None
                row["merged_commit"] = known.merged_commit or None
    return {
        "epic": rel(layout, prepared.epic.path),
        "branch": branch,
        "epics": [epic.number for epic in epics],
        "layout": layout.version,
        "story_dir": rel(layout, layout.story_dir),
        "qa_dir": rel(layout, layout.qa_dir),
        "stories": stories,
        "runs_next": first_runnable,
        "notes": notes,
        "gates": [] if config.skip_gates else quality_gate_rows(config),
    }
