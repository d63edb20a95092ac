"""One story's state as the workflow and ``plan`` see it: its file's status (or why it cannot be
read), its sprint-status entry, the status acted on, its newest QA gate, and whether its review is
already finished. Pure reading; never raises for one story's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._layout import Layout
from ._qa_gates import QaGateReport, ReviewVerdict, review_already_passed, story_qa_gate
from ._sprint_status import EffectiveStatus, SprintEntry, effective_status, sprint_key_for
from ._status import StoryStatus
from ._status_line import StatusReading, read_story_status

__all__ = ["StoryState", "read_story_state"]


@attrs.frozen(kw_only=True)
class StoryState:
    """Everything read about one story (see :func:`read_story_state`)."""

    story_id: str
    path: Path | None
    """The story file (None: not written yet)."""
    reading: StatusReading | None
    """The file's own status (None when there is no file)."""
    sprint: SprintEntry | None
    effective: EffectiveStatus
    gate: QaGateReport | None
    review: ReviewVerdict | None
    """For a story at review: whether its review already passed (no QA re-run)."""

    @property
    def status(self) -> StoryStatus | None:
        """The status to act on (None: no file yet, or unreadable — see :attr:`unreadable`)."""
        return self.effective.status

    @property
    def unreadable(self) -> str | None:
        """``unreadable: reason (file:line: text)`` when the status cannot be known, else None.

        ``run`` blocks such a story with this reason and goes on with the others."""
        return self.effective.conflict if self.effective.source == "unreadable" else None

    def as_json(self, root: Path) -> dict[str, Any]:
        """JSON-able fields for ``plan --json`` (paths relative to ``root``)."""

        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

        reading = self.reading
        return {
            "status": (
                self.status.value
                if self.status is not None
                else ("unreadable" if self.unreadable else None)
            ),
            "status_source": self.effective.source,
            "status_text": reading.value if reading is not None else None,
            "status_line": reading.line if reading is not None else None,
            "unreadable": reading.reason if reading is not None and not reading.readable else None,
            "sprint_status": (
                {"key": self.sprint.key, "value": self.sprint.word, "line": self.sprint.line}
                if self.sprint is not None
                else None
            ),
            "conflict": self.effective.conflict,
            "gate": self.gate.as_json(root) if self.gate is not None else None,
            "review_finished": self.review.finished if self.review is not None else None,
            "review_reason": self.review.reason if self.review is not None else None,
            "file": rel(self.path) if self.path is not None else None,
        }


def read_story_state(
    layout: Layout,
    story_id: str,
    title: str,
    path: Path | None,
    *,
    sprint_entries: Mapping[str, SprintEntry] | None = None,
    strict_concerns: bool = False,
    review_passed: bool | None = None,
) -> StoryState:
    """Read one story's state. ``path`` is its file as found (None: none yet).

    ``sprint_entries``: the v6 sprint-status entries (read once per run/plan with
    :func:`read_sprint_entries` or :meth:`SprintStatusFile.entries`). ``review_passed`` overrides
    the gate-based check (v6: a clean code review); by default a story at review has finished its
    review when :func:`review_already_passed` says so, and that corroborates a sprint-status entry
    ahead of the story file.
    """
    reading = read_story_status(path) if path is not None else None
    key = sprint_key_for(sprint_entries, story_id, title) if sprint_entries else None
    sprint = sprint_entries.get(key) if sprint_entries is not None and key is not None else None
    gate = story_qa_gate(layout, story_id, title)
    review: ReviewVerdict | None = None
    if reading is not None and reading.status is StoryStatus.REVIEW:
        if gate is not None and gate.gate is None:
            review = ReviewVerdict(False, f"the gate cannot be read: {gate.problem}")
        else:
            review = review_already_passed(
                reading, gate.gate if gate is not None else None, strict_concerns=strict_concerns
            )
    passed = review_passed if review_passed is not None else bool(review and review.finished)
    effective = effective_status(reading, sprint, review_passed=passed)
    return StoryState(
        story_id=story_id,
        path=path,
        reading=reading,
        sprint=sprint,
        effective=effective,
        gate=gate,
        review=review,
    )
