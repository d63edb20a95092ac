"""The one status line of a story file: finding it, and rewriting it in place (atomically).

Two forms exist: v4's ``## Status`` heading with the value on the next non-blank line, and v6's
plain ``Status: ready-for-dev`` line (also ``**Status:** Draft`` and ``## Status: Draft``). The
first one in the file counts. Rewriting changes only the value on that line, spelled in the
family the file already uses; every other byte (BOM, CRLF, trailing text) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

from .._errors import ProjectError
from ._markdown import Heading, outside_fences, scan_headings
from ._status import (
    SpellingFamily,
    StoryStatus,
    parse_status_word,
    spell_status,
    spelling_family_of,
)
from ._textio import ensure_inside, read_text_doc, split_lines, write_text_atomic

__all__ = ["StatusLine", "find_status_line", "set_story_status"]

_DECOR = r"(?:\*\*|__|`)?"
_LINE_FORM = re.compile(
    rf"^(?P<pre>[ \t]*(?:#{{1,6}}[ \t]+|[-*+][ \t]+)?{_DECOR}Status{_DECOR}[ \t]*:{_DECOR}[ \t]*{_DECOR})"
    rf"(?P<value>.*?)(?P<post>{_DECOR}[ \t]*)$",
    re.IGNORECASE,
)
_HEADING_TITLE = re.compile(r"^Status\s*$", re.IGNORECASE)
_VALUE_LINE = re.compile(
    rf"^(?P<pre>[ \t]*(?:[-*+][ \t]+)?{_DECOR})(?P<value>.*?)(?P<post>{_DECOR}[ \t]*)$"
)
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


@attrs.frozen
class StatusLine:
    """Where the status value sits: line ``index`` (0-based), characters ``start:end`` of it."""

    index: int
    start: int
    end: int
    value: str
    status: StoryStatus
    form: Literal["heading", "line"]


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def _heading_value(
    path: Path, lines: Sequence[str], headings: Sequence[Heading], position: int
) -> tuple[int, re.Match[str]]:
    heading = headings[position]
    stop = headings[position + 1].index if position + 1 < len(headings) else len(lines)
    for index in range(heading.index + 1, stop):
        text = _strip_eol(lines[index])
        if not text.strip() or _COMMENT.match(text):
            continue
        match = _VALUE_LINE.match(text)
        if match is not None and match.group("value").strip():
            return index, match
        break
    raise ProjectError(
        "the Status heading has no value under it", path=str(path), line=heading.index + 1
    )


def find_status_line(
    path: Path, lines: Sequence[str], headings: Sequence[Heading] | None = None
) -> StatusLine:
    """Locate and parse the story's status; no status or an unknown word raises ProjectError."""
    if headings is None:
        headings = scan_headings(lines)
    heading_at = {h.index: pos for pos, h in enumerate(headings)}
    visible = outside_fences(lines)
    for index, line in enumerate(lines):
        if not visible[index]:
            continue
        text = _strip_eol(line)
        position = heading_at.get(index)
        form: Literal["heading", "line"]
        if (
            position is not None
            and headings[position].level <= 3
            and _HEADING_TITLE.match(headings[position].title)
        ):
            index, match = _heading_value(path, lines, headings, position)
            form = "heading"
        else:
            match = _LINE_FORM.match(text)
            if match is None or not match.group("value").strip():
                continue
            form = "line"
        value = match.group("value")
        status = parse_status_word(value)
        if status is None:
            raise ProjectError(
                f"unknown story status {value.strip()!r}", path=str(path), line=index + 1
            )
        return StatusLine(index, match.start("value"), match.end("value"), value, status, form)
    raise ProjectError(
        "story file has no Status ('## Status' heading or 'Status:' line)", path=str(path)
    )


def set_story_status(path: Path, new: StoryStatus, *, project: Path | None = None) -> bool:
    """Set the story's status (one line, in the file's own spelling); return whether it changed.

    With ``project`` the file must resolve inside it. The write is atomic (temp file + os.replace).
    """
    target = (
        ensure_inside(project, path, what="story file") if project is not None else path.resolve()
    )
    doc = read_text_doc(target)
    lines = split_lines(doc.text)
    found = find_status_line(target, lines)
    if found.status == new:
        return False
    default = SpellingFamily.V4 if found.form == "heading" else SpellingFamily.KEBAB
    word = spell_status(new, spelling_family_of(found.value, default=default))
    line = lines[found.index]
    lines[found.index] = line[: found.start] + word + line[found.end :]
    text = "".join(lines)
    check = find_status_line(target, split_lines(text))
    if check.status != new or check.index != found.index:  # pragma: no cover - defensive
        raise ProjectError(
            f"could not rewrite the status as {word!r}", path=str(target), line=found.index + 1
        )
    write_text_atomic(target, text, bom=doc.bom)
    return True
