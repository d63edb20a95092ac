"""Canonical story statuses, every BMAD v4/v6 spelling of them, and writing them back in kind.

Reading is case-, space-, underscore- and hyphen-insensitive. Writing keeps the *spelling family*
of the word already in the file:

==========  ==========================================================================
family      draft / ready_for_dev / in_progress / review / done / failed / blocked
==========  ==========================================================================
v4          Draft / Approved / InProgress / Review / Done / Failed / Blocked
v4-spaced   Draft / Approved / In Progress / Ready for Review / Done / Failed / Blocked
kebab (v6)  draft / ready-for-dev / in-progress / review / done / failed / blocked
snake       draft / ready_for_dev / in_progress / review / done / failed / blocked
==========  ==========================================================================
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "STATUS_SPELLINGS",
    "SpellingFamily",
    "StoryStatus",
    "parse_status_word",
    "spell_status",
    "spelling_family_of",
]


class StoryStatus(enum.StrEnum):
    """The canonical story statuses of CONTRACT.md."""

    DRAFT = "draft"
    READY_FOR_DEV = "ready_for_dev"
    IN_PROGRESS = "in_progress"
    REVIEW = "review"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"


class SpellingFamily(enum.StrEnum):
    """How a file spells its status words."""

    V4 = "v4"
    V4_SPACED = "v4-spaced"
    KEBAB = "kebab"
    SNAKE = "snake"


_S = StoryStatus
STATUS_SPELLINGS: dict[str, StoryStatus] = {
    # key: the word lower-cased with spaces, underscores and hyphens removed
    "draft": _S.DRAFT,
    "backlog": _S.DRAFT,  # v6 sprint word for "not drafted yet"
    "approved": _S.READY_FOR_DEV,
    "readyfordev": _S.READY_FOR_DEV,
    "readyfordevelopment": _S.READY_FOR_DEV,
    "drafted": _S.READY_FOR_DEV,  # legacy v6
    "inprogress": _S.IN_PROGRESS,
    "contexted": _S.IN_PROGRESS,  # legacy v6
    "changesrequired": _S.IN_PROGRESS,  # v4 QA recommendation: back to Dev
    "review": _S.REVIEW,
    "inreview": _S.REVIEW,
    "readyforreview": _S.REVIEW,
    "readyfordone": _S.REVIEW,  # v4 QA recommendation: the orchestrator decides from the gate
    "done": _S.DONE,
    "complete": _S.DONE,
    "completed": _S.DONE,
    "failed": _S.FAILED,
    "blocked": _S.BLOCKED,
}
"""Every accepted spelling (normalised) and its canonical status."""

_WRITE: dict[SpellingFamily, dict[StoryStatus, str]] = {
    SpellingFamily.V4: {
        _S.DRAFT: "Draft",
        _S.READY_FOR_DEV: "Approved",
        _S.IN_PROGRESS: "InProgress",
        _S.REVIEW: "Review",
        _S.DONE: "Done",
        _S.FAILED: "Failed",
        _S.BLOCKED: "Blocked",
    },
    SpellingFamily.V4_SPACED: {
        _S.DRAFT: "Draft",
        _S.READY_FOR_DEV: "Approved",
        _S.IN_PROGRESS: "In Progress",
        _S.REVIEW: "Ready for Review",
        _S.DONE: "Done",
        _S.FAILED: "Failed",
        _S.BLOCKED: "Blocked",
    },
    SpellingFamily.KEBAB: {s: s.value.replace("_", "-") for s in StoryStatus},
    SpellingFamily.SNAKE: {s: s.value for s in StoryStatus},
}

_NOTE_SPLIT = re.compile(r"\s+[-(\u2013\u2014]|\s*[(,;:\u2013\u2014]")
_DECORATION = "*_`'\" \t"


def _normalise(word: str) -> str:
    return re.sub(r"[\s_-]+", "", word).lower()


def parse_status_word(value: str) -> StoryStatus | None:
    """Map a status value (tolerating ``**bold**``, a trailing note or emoji) to its status."""
    word = value.strip().strip(_DECORATION)
    found = STATUS_SPELLINGS.get(_normalise(word))
    if found is not None:
        return found
    head = _NOTE_SPLIT.split(word, maxsplit=1)[0]
    head = re.sub(r"[^\w\s-]+$", "", head).strip().strip(_DECORATION)
    return STATUS_SPELLINGS.get(_normalise(head)) if head else None


def spelling_family_of(
    value: str, *, default: SpellingFamily = SpellingFamily.V4
) -> SpellingFamily:
    """The spelling family of an existing status value (``default`` when it gives no hint)."""
    word = _NOTE_SPLIT.split(value.strip().strip(_DECORATION), maxsplit=1)[0]
    word = re.sub(r"[^\w\s-]+$", "", word).strip().strip(_DECORATION)
    if not word:
        return default
    if "_" in word:
        return SpellingFamily.SNAKE
    if word.islower():
        return SpellingFamily.KEBAB
    if re.search(r"[A-Za-z]\s+[A-Za-z]", word):
        return SpellingFamily.V4_SPACED
    return SpellingFamily.V4


def spell_status(status: StoryStatus, family: SpellingFamily) -> str:
    """The word ``family`` uses for ``status``."""
    return _WRITE[family][status]
