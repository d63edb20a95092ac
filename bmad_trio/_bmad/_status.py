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

import attrs

__all__ = [
    "QA_PASSED_SPELLINGS",
    "STATUS_SPELLINGS",
    "SpellingFamily",
    "StatusPhrase",
    "StoryStatus",
    "find_status_phrase",
    "parse_status_word",
    "spell_like",
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
    # key: the phrase lower-cased with spaces, underscores, hyphens and apostrophes removed
    "draft": _S.DRAFT,
    "backlog": _S.DRAFT,  # v6 sprint word for "not drafted yet"
    "proposed": _S.DRAFT,
    "planned": _S.DRAFT,
    "todo": _S.DRAFT,
    "new": _S.DRAFT,
    "notstarted": _S.DRAFT,
    # French (seen in real projects: "**Statut:** Approuvée")
    "brouillon": _S.DRAFT,
    "àfaire": _S.DRAFT,
    "àplanifier": _S.DRAFT,
    "défini": _S.DRAFT,
    "définie": _S.DRAFT,
    "approved": _S.READY_FOR_DEV,
    "ready": _S.READY_FOR_DEV,
    "readyfordev": _S.READY_FOR_DEV,
    "readyfordevelopment": _S.READY_FOR_DEV,
    "readyforimplementation": _S.READY_FOR_DEV,
    "readytostart": _S.READY_FOR_DEV,
    "drafted": _S.READY_FOR_DEV,  # legacy v6
    "approuvé": _S.READY_FOR_DEV,
    "approuvée": _S.READY_FOR_DEV,
    "prêt": _S.READY_FOR_DEV,
    "prête": _S.READY_FOR_DEV,
    "prêtpourdéveloppement": _S.READY_FOR_DEV,
    "prêtpourledéveloppement": _S.READY_FOR_DEV,
    "inprogress": _S.IN_PROGRESS,
    "indevelopment": _S.IN_PROGRESS,
    "indev": _S.IN_PROGRESS,
    "workinprogress": _S.IN_PROGRESS,
    "started": _S.IN_PROGRESS,
    "implementing": _S.IN_PROGRESS,
    "inimplementation": _S.IN_PROGRESS,
    "contexted": _S.IN_PROGRESS,  # legacy v6
    "changesrequired": _S.IN_PROGRESS,  # v4 QA recommendation: back to Dev
    "changesrequested": _S.IN_PROGRESS,
    "encours": _S.IN_PROGRESS,
    "endéveloppement": _S.IN_PROGRESS,
    "review": _S.REVIEW,
    "inreview": _S.REVIEW,
    "underreview": _S.REVIEW,
    "codereview": _S.REVIEW,
    "readyforreview": _S.REVIEW,
    "awaitingreview": _S.REVIEW,
    "pendingreview": _S.REVIEW,
    "readyforqa": _S.REVIEW,
    "readyforqavalidation": _S.REVIEW,
    "inqa": _S.REVIEW,
    "qa": _S.REVIEW,
    "readyfordone": _S.REVIEW,  # v4: QA passed; the gate (or the owner) makes it Done
    "reviewpassed": _S.REVIEW,
    "qapassed": _S.REVIEW,
    "passedqa": _S.REVIEW,
    "qaapproved": _S.REVIEW,
    "enrevue": _S.REVIEW,
    "prêtpourreview": _S.REVIEW,
    "prêtpourrevue": _S.REVIEW,
    "done": _S.DONE,
    "complete": _S.DONE,
    "completed": _S.DONE,
    "closed": _S.DONE,
    "finished": _S.DONE,
    "delivered": _S.DONE,
    "merged": _S.DONE,
    "shipped": _S.DONE,
    "released": _S.DONE,
    "implementationcomplete": _S.DONE,
    "developmentcomplete": _S.DONE,
    "documentationcomplete": _S.DONE,
    "storycomplete": _S.DONE,
    "readyforproduction": _S.DONE,
    "terminé": _S.DONE,
    "terminée": _S.DONE,
    "fait": _S.DONE,
    "validé": _S.DONE,
    "validée": _S.DONE,
    "fermé": _S.DONE,
    "fermée": _S.DONE,
    "finalisé": _S.DONE,
    "finalisée": _S.DONE,
    "complété": _S.DONE,
    "complétée": _S.DONE,
    "failed": _S.FAILED,
    "blocked": _S.BLOCKED,
    "onhold": _S.BLOCKED,
    "paused": _S.BLOCKED,
    "deferred": _S.BLOCKED,
    "postponed": _S.BLOCKED,
    "cancelled": _S.BLOCKED,
    "canceled": _S.BLOCKED,
    "superseded": _S.BLOCKED,
    "obsolete": _S.BLOCKED,
    "bloqué": _S.BLOCKED,
    "bloquée": _S.BLOCKED,
    "annulé": _S.BLOCKED,
    "annulée": _S.BLOCKED,
}
"""Every accepted spelling (normalised) and its canonical status."""

QA_PASSED_SPELLINGS: frozenset[str] = frozenset(
    {"readyfordone", "reviewpassed", "qapassed", "passedqa", "qaapproved"}
)
"""Spellings (normalised) that say QA already passed: canonical ``review``, but no QA re-run."""

_EMOJI_ONLY: dict[str, StoryStatus] = {
    "\u2705": _S.DONE,  # white heavy check mark
    "\u2714": _S.DONE,  # heavy check mark
    "\U0001f6a7": _S.IN_PROGRESS,  # construction sign
    "\u26d4": _S.BLOCKED,  # no entry
    "\U0001f6ab": _S.BLOCKED,  # prohibited
}
_MAX_PHRASE_WORDS = 5

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

_PHRASE = re.compile(r"[\w'\u2019]+(?:(?:[ \t]+|[-_])[\w'\u2019]+)*")
_WORD = re.compile(r"[\w'\u2019]+")


@attrs.frozen
class StatusPhrase:
    """The status words inside a value: ``value[start:end]`` is ``text``."""

    status: StoryStatus
    start: int
    end: int
    text: str
    qa_passed: bool
    """The words say QA already passed (``Ready for Done``, ``Review Passed``)."""


def _normalise(word: str) -> str:
    return re.sub(r"[\s_'\u2019-]+", "", word).lower()


def _longest_prefix(value: str, segment: re.Match[str]) -> StatusPhrase | None:
    words = list(_WORD.finditer(value, segment.start(), segment.end()))
    for count in range(min(len(words), _MAX_PHRASE_WORDS), 0, -1):
        start, end = words[0].start(), words[count - 1].end()
        key = _normalise(value[start:end])
        status = STATUS_SPELLINGS.get(key)
        if status is not None:
            return StatusPhrase(status, start, end, value[start:end], key in QA_PASSED_SPELLINGS)
    return None


def find_status_phrase(value: str) -> StatusPhrase | None:
    """Find the status words in a value such as ``✅ **COMPLETED** - 2025-08-08``.

    The value is cut into phrases at everything that is not a word, a space between words or a
    hyphen/underscore inside a word (so ``**``, emoji, `` - ``, ``(``, ``,`` … separate phrases).
    The first phrase whose leading words (up to five) spell a status wins: ``Draft - Awaiting PM
    Review`` is draft, ``ALL CRITERIA MET - READY FOR REVIEW`` is review. A value with no words at
    all may be a lone ✅ (done) or 🚧 (in progress). None when nothing reads as a status.
    """
    segments = list(_PHRASE.finditer(value))
    for segment in segments:
        found = _longest_prefix(value, segment)
        if found is not None:
            return found
    if not segments:
        for char, status in _EMOJI_ONLY.items():
            index = value.find(char)
            if index >= 0:
                return StatusPhrase(status, index, index + len(char), char, False)
    return None


def parse_status_word(value: str) -> StoryStatus | None:
    """Map a status value (tolerating ``**bold**``, a trailing note or emoji) to its status."""
    found = find_status_phrase(value)
    return found.status if found is not None else None


def spelling_family_of(
    value: str, *, default: SpellingFamily = SpellingFamily.V4
) -> SpellingFamily:
    """The spelling family of an existing status value (``default`` when it gives no hint)."""
    found = find_status_phrase(value)
    word = found.text if found is not None else value.strip()
    if not re.search(r"[^\W\d_]", word):
        return default
    if "_" in word:
        return SpellingFamily.SNAKE
    if word.isupper():
        return SpellingFamily.KEBAB if "-" in word else SpellingFamily.V4_SPACED
    if word.islower():
        return SpellingFamily.KEBAB
    if re.search(r"[^\W\d_]\s+[^\W\d_]", word):
        return SpellingFamily.V4_SPACED
    return SpellingFamily.V4


def spell_status(status: StoryStatus, family: SpellingFamily) -> str:
    """The word ``family`` uses for ``status``."""
    return _WRITE[family][status]


def spell_like(
    status: StoryStatus, existing: str, *, default: SpellingFamily = SpellingFamily.V4
) -> str:
    """``status`` spelled the way ``existing`` is (family and, for ``DONE``-style, upper case)."""
    found = find_status_phrase(existing)
    word = spell_status(status, spelling_family_of(existing, default=default))
    if found is not None and found.text.isupper():
        word = word.upper()
    return word
