"""``bmad-trio plan``: what a run would do, read from disk; no model call, nothing written."""

from __future__ import annotations

from typing import Any

from ._bmad import StoryStatus, find_story_file, parse_story
from ._config import RunConfig
from ._prompts import rel
from ._run import prepare_run
from ._story_order import run_order

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


def next_action(status: StoryStatus | None, *, auto_approve: bool = True) -> str:
    """The decision table's next step for a story in ``status``."""
    if status is StoryStatus.DRAFT and not auto_approve:
        return "wait for approval (auto_approve is off)"
    return _NEXT[status]


def make_plan(config: RunConfig) -> dict[str, Any]:
    """Stories, their files, statuses, dependencies and next steps, as JSON-able data.

    Raises ConfigError/ProjectError for bad input, like ``run`` would, before anything else.
    """
    prepared = prepare_run(config)
    layout = prepared.layout
    stories: list[dict[str, Any]] = []
    done: set[str] = set()
    first_runnable: str | None = None
    for story in run_order(prepared.stories):  # the order the run takes them in
        path = find_story_file(layout, story.story_id, story.title)
        status = parse_story(path).status if path is not None else None
        if status is StoryStatus.DONE:
            done.add(story.story_id)
        waiting = [d for d in story.dependencies if d not in done]
        action = next_action(status, auto_approve=config.auto_approve)
        if waiting and status is not StoryStatus.DONE:
            action = f"after {', '.join(waiting)}: {action}"
        elif first_runnable is None and status not in (
            StoryStatus.DONE,
            StoryStatus.FAILED,
            StoryStatus.BLOCKED,
        ):
            first_runnable = story.story_id
        stories.append(
            {
                "story_id": story.story_id,
                "title": story.title,
                "file": rel(layout, path) if path is not None else None,
                "status": status.value if status is not None else None,
                "dependencies": list(story.dependencies),
                "next": action,
            }
        )
    return {
        "epic": rel(layout, prepared.epic.path),
        "layout": layout.version,
        "story_dir": rel(layout, layout.story_dir),
        "qa_dir": rel(layout, layout.qa_dir),
        "stories": stories,
        "runs_next": first_runnable,
        "gates": [] if config.skip_gates else [g.name for g in config.gates],
    }
