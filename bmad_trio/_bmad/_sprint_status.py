"""v6 ``sprint-status.yaml``: the sprint's record of progress. Reading it, reconciling it with a
story file, and moving one key forward in place (one writer at a time).

Keys are made the way BMAD's own sprint planner makes them (``bmad-sprint-planning``'s
``sprint_plan.py``): ``{epic}-{story}-{slug}``, the slug Unicode-aware (lower case, runs of
non-word characters → ``-``, at most 60 characters) and, when nothing is left (a title of only
punctuation or emoji), the first 8 hex digits of the title's SHA-256.

Writing edits only the value on the key's own line (quotes, indentation and the trailing comment
kept; the comment keeps its column when there is room) and never moves a status backwards:
backlog < ready-for-dev < in-progress < review < done (legacy ``drafted`` = ready-for-dev,
``contexted`` = in-progress). Concurrent writers in one run go through one
:class:`SprintStatusFile`, whose lock makes each read-modify-write whole.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, cast

import attrs

from .._errors import ProjectError
from ._ids import split_story_id, story_key
from ._status import StoryStatus
from ._status_line import StatusReading
from ._textio import ensure_inside, read_text_doc, split_lines, write_text_atomic
from ._yamlio import load_yaml_text, yaml_key_lines

__all__ = [
    "SPRINT_ORDER",
    "EffectiveStatus",
    "SprintEntry",
    "SprintStatusFile",
    "bmad_story_key",
    "effective_status",
    "read_sprint_entries",
    "read_sprint_status",
    "set_sprint_status",
    "sprint_key_for",
    "sprint_status_of",
    "sprint_word_for",
]

SPRINT_ORDER: tuple[str, ...] = ("backlog", "ready-for-dev", "in-progress", "review", "done")
_LEGACY = {"drafted": "ready-for-dev", "contexted": "in-progress"}
_CANONICAL_TO_SPRINT: dict[StoryStatus, str] = {
    StoryStatus.DRAFT: "backlog",
    StoryStatus.READY_FOR_DEV: "ready-for-dev",
    StoryStatus.IN_PROGRESS: "in-progress",
    StoryStatus.REVIEW: "review",
    StoryStatus.DONE: "done",
}
_SPRINT_TO_CANONICAL: dict[str, StoryStatus] = {w: s for s, w in _CANONICAL_TO_SPRINT.items()}
_TOP_KEY = re.compile(r"^(?P<key>[^\s#:][^:#]*?)[ \t]*:")


def bmad_story_key(story_id: str, title: str) -> str:
    """The sprint-status key BMAD v6 makes for ``### Story {e}.{s}: {title}`` (see story_key)."""
    return story_key(story_id, title)


def _rank(word: str) -> int | None:
    word = _LEGACY.get(word, word)
    return SPRINT_ORDER.index(word) if word in SPRINT_ORDER else None


def sprint_word_for(status: StoryStatus) -> str | None:
    """The sprint-status word for a canonical status (None for failed/blocked: nothing to write)."""
    return _CANONICAL_TO_SPRINT.get(status)


def sprint_status_of(word: str) -> StoryStatus | None:
    """The canonical status of a sprint-status word (legacy words included); None if unknown."""
    word = word.strip().lower()
    return _SPRINT_TO_CANONICAL.get(_LEGACY.get(word, word))


@attrs.frozen
class SprintEntry:
    """One ``development_status`` entry: ``word`` lower-cased as written, ``line`` 1-based."""

    path: Path
    key: str
    word: str
    line: int | None

    @property
    def status(self) -> StoryStatus | None:
        """The canonical status (None for an unknown word, or an epic/retrospective word)."""
        return sprint_status_of(self.word)

    def where(self) -> str:
        """``file:line`` of the entry."""
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


def _section(loaded: object, path: Path, *, strict: bool) -> dict[str, str]:
    if not isinstance(loaded, dict):
        if strict:
            raise ProjectError("sprint status must be a YAML mapping", path=str(path))
        return {}
    section: object = cast(dict[object, Any], loaded).get("development_status")
    if section is None:
        return {}
    if not isinstance(section, dict):
        if strict:
            raise ProjectError("'development_status' must be a mapping", path=str(path))
        return {}
    return {str(k): str(v).strip().lower() for k, v in cast(dict[object, Any], section).items()}


def read_sprint_status(path: Path) -> dict[str, str]:
    """``development_status`` as key → value (values as written, lower-cased)."""
    return _section(load_yaml_text(read_text_doc(path).text, path), path, strict=True)


def read_sprint_status_text(text: str, path: Path) -> dict[str, str]:
    """Like :func:`read_sprint_status` on text already in memory (lenient about the shape)."""
    return _section(load_yaml_text(text, path), path, strict=False)


def read_sprint_entries(path: Path) -> dict[str, SprintEntry]:
    """``development_status`` entries with their lines; malformed YAML raises ProjectError
    naming the file and line."""
    text = read_text_doc(path).text
    words = _section(load_yaml_text(text, path), path, strict=True)
    lines = yaml_key_lines(text, path, "development_status")
    return {k: SprintEntry(path, k, w, lines.get(k)) for k, w in words.items()}


def sprint_key_for(
    statuses: Mapping[str, object], story_id: str, title: str | None = None
) -> str | None:
    """The key of ``story_id`` in ``statuses``: BMAD's exact key for ``title`` when present, else
    the one key that is exactly ``{e}-{s}`` or starts with ``{e}-{s}-`` (None when 0 or several)."""
    if title is not None:
        exact = bmad_story_key(story_id, title)
        if exact in statuses:
            return exact
    epic, number = split_story_id(story_id)
    bares = {f"{epic}-{number}".lower(), f"{int(epic)}-{number}".lower()}
    matches = [
        k
        for k in statuses
        if k.lower() in bares or any(k.lower().startswith(b + "-") for b in bares)
    ]
    return matches[0] if len(matches) == 1 else None


# -- reconciling with the story file ----------------------------------------------------------

EffectiveSource = Literal["story", "sprint-status", "unreadable", "none"]


@attrs.frozen
class EffectiveStatus:
    """The status the workflow acts on, where it came from, and any disagreement to report."""

    status: StoryStatus | None
    """None: no story file yet (the SM drafts it), or an unreadable status (see ``conflict``)."""
    source: EffectiveSource
    conflict: str | None = None


def _story_rank(status: StoryStatus) -> int | None:
    word = sprint_word_for(status)
    return _rank(word) if word is not None else None


def effective_status(
    story: StatusReading | StoryStatus | None,
    sprint: SprintEntry | None,
    *,
    review_passed: bool = False,
) -> EffectiveStatus:
    """Reconcile the story file's status with its sprint-status entry.

    - The more advanced state is followed only when corroborated: sprint-status says ``done``,
      or ``review_passed`` (a passing QA gate / clean v6 review for the story). Otherwise the story
      file wins and the disagreement is reported in ``conflict``.
    - Never backwards: a sprint-status entry behind the story file changes nothing (reported).
    - A story file that is missing: sprint ``done`` means done; otherwise there is nothing to
      follow (None). A story file whose status is unreadable: the sprint-status word is the only
      record, so it is followed (reported); with no usable entry the result is ``unreadable``.
    - failed/blocked in the story file stay, unless sprint-status says done.
    """
    reading = story if isinstance(story, StatusReading) else None
    mine = reading.status if reading is not None else cast(StoryStatus | None, story)
    theirs = sprint.status if sprint is not None else None
    unknown = (
        f"unknown sprint status {sprint.word!r} for {sprint.key!r} ({sprint.where()})"
        if sprint is not None and theirs is None
        else None
    )
    if reading is not None and mine is None:
        if theirs is not None and sprint is not None:
            return EffectiveStatus(
                theirs,
                "sprint-status",
                f"story status {reading.describe()}; following sprint-status "
                f"{sprint.key}: {sprint.word} ({sprint.where()})",
            )
        return EffectiveStatus(None, "unreadable", reading.describe())
    if theirs is None or sprint is None:
        return EffectiveStatus(mine, "story" if mine is not None else "none", unknown)
    said = f"sprint-status says {sprint.key}: {sprint.word} ({sprint.where()})"
    if mine is None:
        if theirs is StoryStatus.DONE:
            return EffectiveStatus(theirs, "sprint-status", f"no story file, but {said}")
        if theirs is StoryStatus.DRAFT:
            return EffectiveStatus(None, "none")
        return EffectiveStatus(None, "none", f"no story file, but {said}; drafting it")
    mine_rank, theirs_rank = _story_rank(mine), _story_rank(theirs)
    if mine_rank is None:  # failed / blocked in the story file
        if theirs is StoryStatus.DONE:
            return EffectiveStatus(theirs, "sprint-status", f"story file says {mine}, but {said}")
        return EffectiveStatus(mine, "story")
    assert theirs_rank is not None  # every sprint word has a rank
    if theirs_rank == mine_rank:
        return EffectiveStatus(mine, "story")
    if theirs_rank < mine_rank:
        return EffectiveStatus(
            mine, "story", f"story file says {mine}, {said} (behind; statuses never move back)"
        )
    if theirs is StoryStatus.DONE or review_passed:
        why = "done in sprint-status" if theirs is StoryStatus.DONE else "the review passed"
        return EffectiveStatus(
            theirs, "sprint-status", f"story file says {mine}, {said}; following it ({why})"
        )
    return EffectiveStatus(
        mine,
        "story",
        f"story file says {mine}, {said}; not followed (not corroborated by done or a passed review)",
    )


# -- writing --------------------------------------------------------------------------------


def _line_pattern(key: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?P<indent>[ \t]+)(?P<q>['\"]?){re.escape(key)}(?P=q)[ \t]*:[ \t]*"
        rf"(?P<vq>['\"]?)(?P<value>[A-Za-z_-]+)(?P=vq)(?P<gap>[ \t]*)(?P<comment>#.*?)?(?P<eol>\r?\n?)$"
    )


def set_sprint_status(
    path: Path,
    key_or_story_id: str,
    status: StoryStatus | str,
    *,
    project: Path | None = None,
    title: str | None = None,
) -> bool:
    """Move one ``development_status`` entry forward to ``status``; return whether the file changed.

    ``key_or_story_id`` is a key (``1-2-login``, ``epic-1``) or a story id (``1.2``; ``title``
    picks BMAD's exact key). Moving backwards, or to failed/blocked, changes nothing. A missing key
    raises ProjectError. Not safe against a concurrent writer of the same file: in a run, write
    through the run's :class:`SprintStatusFile`.
    """
    target = ensure_inside(project, path, what="sprint status") if project is not None else path
    word = sprint_word_for(status) if isinstance(status, StoryStatus) else status.strip().lower()
    if word is None:
        return False
    new_rank = _rank(word)
    if new_rank is None:
        raise ProjectError(f"unknown sprint status {word!r}", path=str(target))
    doc = read_text_doc(target)
    statuses = _section(load_yaml_text(doc.text, target), target, strict=True)
    key = key_or_story_id
    if key not in statuses and re.fullmatch(r"\d+\.\d+[A-Za-z]?", key):
        key = sprint_key_for(statuses, key, title) or key
    if key not in statuses:
        raise ProjectError(f"no development_status entry for {key_or_story_id!r}", path=str(target))
    old_rank = _rank(statuses[key])
    if old_rank is not None and old_rank >= new_rank:
        return False
    lines = split_lines(doc.text)
    pattern = _line_pattern(key)
    in_section = False
    for index, line in enumerate(lines):
        top = _TOP_KEY.match(line)
        if top is not None:
            in_section = top.group("key").strip("'\"") == "development_status"
            continue
        match = pattern.match(line) if in_section else None
        if match is None:
            continue
        gap, comment = match.group("gap"), match.group("comment")
        if comment:
            width = len(match.group("value")) + len(gap)
            gap = " " * max(1, width - len(word))
        lines[index] = (
            line[: match.start("value")]
            + word
            + match.group("vq")
            + gap
            + (comment or "")
            + match.group("eol")
        )
        text = "".join(lines)
        if read_sprint_status_text(text, target).get(key) != word:  # pragma: no cover - defensive
            raise ProjectError(f"could not rewrite {key!r}", path=str(target), line=index + 1)
        write_text_atomic(target, text, bom=doc.bom)
        return True
    raise ProjectError(
        f"cannot edit {key!r}: its line is not a simple 'key: value' under development_status",
        path=str(target),
    )


class SupportsLock(Protocol):
    """A blocking lock usable in ``with`` (``threading.Lock`` or a wrapper around one)."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> object: ...


class SprintStatusFile:
    """The run's one writer of one ``sprint-status.yaml``.

    Create one per file per run (the run's services own it) and send every write through it:
    the lock makes each read-modify-write + atomic replace whole, so two stories finishing at once
    both land (without it, each thread read the old file and the later replace dropped the other's
    change). The methods block and are meant for worker threads (``anyio.to_thread.run_sync``); a
    waiter is never cancelled mid-wait, and the wait is bounded by one short file rewrite.
    """

    def __init__(
        self, path: Path, *, project: Path | None = None, lock: SupportsLock | None = None
    ) -> None:
        self.path = path
        self.project = project
        self._lock: SupportsLock = lock if lock is not None else threading.Lock()

    def entries(self) -> dict[str, SprintEntry]:
        """The current entries (see :func:`read_sprint_entries`)."""
        with self._lock:
            return read_sprint_entries(self.path)

    def entry_for(self, story_id: str, title: str | None = None) -> SprintEntry | None:
        """The story's entry, or None when the file has none for it."""
        entries = self.entries()
        key = sprint_key_for(entries, story_id, title)
        return entries.get(key) if key is not None else None

    def advance(
        self, key_or_story_id: str, status: StoryStatus | str, *, title: str | None = None
    ) -> bool:
        """:func:`set_sprint_status` under the file's lock; True when the file changed."""
        with self._lock:
            return set_sprint_status(
                self.path, key_or_story_id, status, project=self.project, title=title
            )
