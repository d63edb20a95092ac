"""BMAD v6 code review: what the review left in the story file, and the decision code takes from it.

v6 has no QA gate file. Its code-review workflow writes its findings into the story file and sets
the story's status itself (``done``, or back to ``in-progress``) and syncs sprint-status:

- v6.2+ (``bmad-code-review`` step 4): a ``### Review Findings`` subsection with
  ``- [ ] [Review][Decision] …``, ``- [ ] [Review][Patch] <title> [<file>:<line>]`` and
  ``- [x] [Review][Defer] …`` lines; done when every decision/patch finding is resolved and no
  high/medium finding is open, else in-progress.
- v6.0 (``code-review/instructions.xml`` steps 4 and 5): a ``Review Follow-ups (AI)`` subsection of the
  tasks with ``- [ ] [AI-Review][High|Medium|Low] … [file:line]``; done when every High and Medium
  issue is fixed, else in-progress.

:func:`decide_review` applies those rules to what is on disk, so a review that contradicts itself
(status ``done`` with an open patch finding) goes back to Dev, and a review that left no verdict is a
failed attempt. Pure functions, no I/O.
"""

from __future__ import annotations

import enum
import re

import attrs

from . import Story, StoryStatus, StoryTask

__all__ = ["ReviewItem", "ReviewOutcome", "ReviewVerdict", "decide_review", "review_items"]

_TAGS = re.compile(r"^((?:\[[^\]]*\]\s*)+)")
_TAG = re.compile(r"\[([^\]]*)\]")
_SEVERITIES = ("critical", "high", "medium", "low")
_BLOCKING_SEVERITIES = frozenset({"critical", "high", "medium"})
_FINDINGS_LIMIT = 6000


@attrs.frozen
class ReviewItem:
    """One review finding checkbox of a v6 story (``[Review][…]`` or ``[AI-Review][…]``)."""

    text: str
    """The line's text after the checkbox, tags included."""
    checked: bool
    kind: str
    """``patch``, ``decision``, ``defer``, ``ai-review`` or ``other``."""
    severity: str | None
    line: int

    @property
    def blocking(self) -> bool:
        """Whether this finding keeps the story from done while unchecked."""
        if self.checked or self.kind == "defer":
            return False
        if self.kind in ("patch", "decision"):
            return True
        if self.severity is not None:
            return self.severity in _BLOCKING_SEVERITIES
        return True  # an unrated follow-up or finding: must be fixed (never done while in doubt)


def _classify(text: str) -> tuple[str, str | None] | None:
    """(kind, severity) of a finding line's text, or None when it carries no review tag."""
    found = _TAGS.match(text.strip())
    if found is None:
        return None
    tags = [t.strip().lower() for t in _TAG.findall(found.group(1))]
    severity = next((t for t in tags if t in _SEVERITIES), None)
    if "ai-review" in tags:
        return "ai-review", severity
    if "review" not in tags:
        return None
    kind = next((t for t in tags if t in ("patch", "decision", "defer")), "other")
    return kind, severity


def _flatten(tasks: tuple[StoryTask, ...]) -> list[StoryTask]:
    flat: list[StoryTask] = []
    for task in tasks:
        flat.append(task)
        flat.extend(_flatten(task.subtasks))
    return flat


def review_items(story: Story) -> tuple[ReviewItem, ...]:
    """Every review finding of ``story`` in file order: ``### Review Findings`` lines and tagged
    review follow-up tasks (a finding listed in both places counts once)."""
    items: dict[int, ReviewItem] = {}
    for finding in story.review_findings:
        text = (
            "".join(f"[{t}]" for t in finding.tags) + (" " if finding.tags else "") + finding.text
        )
        kind = _classify(text) or ("other", None)
        items[finding.line] = ReviewItem(text, finding.checked, kind[0], kind[1], finding.line)
    for task in _flatten(story.tasks):
        if task.line in items:
            continue
        kind = _classify(task.text)
        if kind is not None:
            items[task.line] = ReviewItem(task.text, task.checked, kind[0], kind[1], task.line)
    return tuple(items[line] for line in sorted(items))


class ReviewOutcome(enum.Enum):
    DONE = "done"
    IN_PROGRESS = "in_progress"
    """Back to Dev with the open findings."""
    FAILED_ATTEMPT = "failed_attempt"
    """The review left no verdict: run it again (bounded by max_cycles)."""
    AS_WRITTEN = "as_written"
    """The review set a status code review never writes (blocked…): the cycle reads it as usual."""


@attrs.frozen
class ReviewVerdict:
    outcome: ReviewOutcome
    reason: str
    findings: str | None = None
    """For IN_PROGRESS: the text handed to the next Dev session."""


def open_findings_text(story: Story, items: tuple[ReviewItem, ...], *, story_file: str) -> str:
    """The open (unchecked, not deferred) findings, for the next Dev session's prompt."""
    open_items = [i for i in items if not i.checked and i.kind != "defer"]
    lines = [
        f"BMAD code review of story {story.story_id} left {len(open_items)} open finding(s) in "
        f"{story_file}. Resolve each one, then tick its checkbox ('- [x]'):"
    ]
    lines += [f"- line {i.line}: {i.text}" for i in open_items]
    return "\n".join(lines)[:_FINDINGS_LIMIT]


def decide_review(story: Story, *, story_file: str, changed: bool) -> ReviewVerdict:
    """The decision after a v6 code-review session, from the story file alone.

    ``changed``: whether the session changed the story file. The rules, in order:

    1. status ``done`` and no blocking finding open → done;
    2. status ``done`` with a blocking finding open (unchecked ``[Review][Patch]``/``[Decision]``,
       or any other unchecked finding rated critical/high/medium or not rated; ``[Defer]`` and
       low-rated ones never block) → in_progress with the findings;
    3. status ``in-progress`` (or ``ready-for-dev``) → in_progress with the open findings;
    4. status still ``review``: the file changed and a blocking finding is open → in_progress (the
       workflow's own rule; the reviewer only missed the status); otherwise → failed attempt (no
       verdict, never done without the reviewer saying so);
    5. any other status (draft, blocked, failed) → as written.
    """
    items = review_items(story)
    blocking = [i for i in items if i.blocking]
    status = story.status
    findings = open_findings_text(story, items, story_file=story_file)
    if status is StoryStatus.DONE:
        if not blocking:
            return ReviewVerdict(ReviewOutcome.DONE, "code review: done, no open patch finding")
        reason = f"code review set done but left {len(blocking)} blocking finding(s) open"
        return ReviewVerdict(ReviewOutcome.IN_PROGRESS, reason, findings)
    if status in (StoryStatus.IN_PROGRESS, StoryStatus.READY_FOR_DEV):
        if not any(not i.checked and i.kind != "defer" for i in items):
            findings = (
                f"BMAD code review of story {story.story_id} set it back to in-progress without "
                f"an open finding line; read its review notes in {story_file} and address them."
            )
        reason = f"code review: changes requested ({len(blocking)} blocking finding(s))"
        return ReviewVerdict(ReviewOutcome.IN_PROGRESS, reason, findings)
    if status is StoryStatus.REVIEW:
        if changed and blocking:
            reason = f"code review left the status at review with {len(blocking)} open finding(s)"
            return ReviewVerdict(ReviewOutcome.IN_PROGRESS, reason, findings)
        what = "changed the story but set no status" if changed else "wrote nothing"
        return ReviewVerdict(ReviewOutcome.FAILED_ATTEMPT, f"code review {what}")
    return ReviewVerdict(ReviewOutcome.AS_WRITTEN, f"code review set the status {status.value}")
