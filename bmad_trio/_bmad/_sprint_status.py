"""v6 ``sprint-status.yaml``: reading ``development_status`` and moving one key forward in place.

Writing edits only the value on the key's own line (quotes, indentation and the trailing comment
kept; the comment keeps its column when there is room) and never moves a status backwards:
backlog < ready-for-dev < in-progress < review < done (legacy ``drafted`` = ready-for-dev,
``contexted`` = in-progress).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from .._errors import ProjectError
from ._ids import split_story_id
from ._status import StoryStatus
from ._textio import ensure_inside, read_text_doc, split_lines, write_text_atomic
from ._yamlio import load_yaml_text

__all__ = [
    "SPRINT_ORDER",
    "read_sprint_status",
    "set_sprint_status",
    "sprint_key_for",
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
_TOP_KEY = re.compile(r"^(?P<key>[^\s#:][^:#]*?)[ \t]*:")


def _rank(word: str) -> int | None:
    word = _LEGACY.get(word, word)
    return SPRINT_ORDER.index(word) if word in SPRINT_ORDER else None


def sprint_word_for(status: StoryStatus) -> str | None:
    """The sprint-status word for a canonical status (None for failed/blocked: nothing to write)."""
    return _CANONICAL_TO_SPRINT.get(status)


def read_sprint_status(path: Path) -> dict[str, str]:
    """``development_status`` as key → value (values as written, lower-cased)."""
    loaded = load_yaml_text(read_text_doc(path).text, path)
    if not isinstance(loaded, dict):
        raise ProjectError("sprint status must be a YAML mapping", path=str(path))
    section: object = cast(dict[object, Any], loaded).get("development_status")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ProjectError("'development_status' must be a mapping", path=str(path))
    return {str(k): str(v).strip().lower() for k, v in cast(dict[object, Any], section).items()}


def sprint_key_for(statuses: Mapping[str, str], story_id: str) -> str | None:
    """The key of ``story_id`` (``{e}-{s}-…`` or exactly ``{e}-{s}``) in ``statuses``, if any."""
    epic, number = split_story_id(story_id)
    bare = f"{epic}-{number}"
    matches = [k for k in statuses if k == bare or k.startswith(bare + "-")]
    return matches[0] if len(matches) == 1 else None


def _line_pattern(key: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?P<indent>[ \t]+)(?P<q>['\"]?){re.escape(key)}(?P=q)[ \t]*:[ \t]*"
        rf"(?P<vq>['\"]?)(?P<value>[A-Za-z_-]+)(?P=vq)(?P<gap>[ \t]*)(?P<comment>#.*?)?(?P<eol>\r?\n?)$"
    )


def set_sprint_status(
    path: Path, key_or_story_id: str, status: StoryStatus | str, *, project: Path | None = None
) -> bool:
    """Move one ``development_status`` entry forward to ``status``; return whether the file changed.

    ``key_or_story_id`` is a key (``1-2-login``, ``epic-1``) or a story id (``1.2``). Moving
    backwards, or to failed/blocked, changes nothing. A missing key raises ProjectError.
    """
    target = ensure_inside(project, path, what="sprint status") if project is not None else path
    word = sprint_word_for(status) if isinstance(status, StoryStatus) else status.strip().lower()
    if word is None:
        return False
    new_rank = _rank(word)
    if new_rank is None:
        raise ProjectError(f"unknown sprint status {word!r}", path=str(target))
    doc = read_text_doc(target)
    statuses = read_sprint_status(target)
    key = key_or_story_id
    if key not in statuses and re.fullmatch(r"\d+\.\d+[a-z]?", key):
        key = sprint_key_for(statuses, key) or key
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
        else:
            gap = match.group("gap")
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


def read_sprint_status_text(text: str, path: Path) -> dict[str, str]:
    """Like :func:`read_sprint_status` on text already in memory."""
    loaded = load_yaml_text(text, path)
    section: object = (
        cast(dict[object, Any], loaded).get("development_status")
        if isinstance(loaded, dict)
        else None
    )
    if not isinstance(section, dict):
        return {}
    return {str(k): str(v).strip().lower() for k, v in cast(dict[object, Any], section).items()}
