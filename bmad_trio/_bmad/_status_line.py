"""The one status of a story file: reading it (never raising for one story) and rewriting it in place.

Forms read, the first one in the file counts (fenced code is skipped):

- front matter: ``status: done`` between the leading ``---`` lines;
- a ``## Status`` heading (``#`` to ``###``, decorated titles such as ``## 📊 Status`` too) with
  the value on the next non-blank line, which may itself be a label line
  (``**Status**: Ready for Done``, the form autoBMAD writes);
- a label line: ``Status: ready-for-dev``, ``**Status:** Draft``, ``**Status**: Done``,
  ``**Status: Done**``, ``- **Status**: ...``, ``> Status: ...``, ``## Status: Draft``,
  ``**Story Status:** ...``;
- a table row whose first cell is ``Status``: ``| Status | Done |``;
- an HTML comment: ``<!-- Status: done -->``.

Within the value, the status *words* are found by :func:`find_status_phrase` (bold, emoji and
trailing notes around them are tolerated). Rewriting replaces only those words, spelled the way the
file already spells them; every other byte (BOM, CRLF, bold, emoji, the note) is kept.

A story whose status cannot be read is not an error of the run: :func:`read_status` returns a
:class:`StatusReading` with ``status=None``, the reason and the line, and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

from .._errors import ProjectError
from ._markdown import Heading, outside_fences, scan_headings
from ._status import SpellingFamily, StoryStatus, find_status_phrase, spell_like
from ._textio import ensure_inside, read_text_doc, split_lines, write_text_atomic

__all__ = [
    "StatusForm",
    "StatusLine",
    "StatusReading",
    "find_status_line",
    "read_status",
    "read_story_status",
    "set_story_status",
]

StatusForm = Literal["front-matter", "heading", "heading-label", "line", "table", "comment"]

_LABEL = r"(?:Story[ \t]+)?(?:Status|Statut)"
_DECOR = r"(?:\*\*|__|\*|_|`)?"
_LINE_FORM = re.compile(
    rf"^(?P<pre>[ \t]*(?:>[ \t]*)*(?:#{{1,6}}[ \t]+|[-*+][ \t]+)?{_DECOR}{_LABEL}{_DECOR}[ \t]*:"
    rf"{_DECOR}[ \t]*)(?P<value>.*?)[ \t]*$",
    re.IGNORECASE,
)
_HEADING_LABEL = re.compile(
    rf"^(?P<pre>[ \t]*(?:>[ \t]*)*(?:[-*+][ \t]+)?{_DECOR}[\w \t]*Statu[st]{_DECOR}[ \t]*:"
    rf"{_DECOR}[ \t]*)(?P<value>.*?)[ \t]*$",
    re.IGNORECASE,
)
_HEADING_TITLE = re.compile(rf"^\W*{_LABEL}\W*$", re.IGNORECASE)
_TABLE_ROW = re.compile(
    rf"^[ \t]*\|[ \t]*{_DECOR}{_LABEL}{_DECOR}[ \t]*:?[ \t]*\|(?P<value>[^|]*)\|?", re.IGNORECASE
)
_COMMENT_FORM = re.compile(
    rf"^[ \t]*<!--[ \t]*{_LABEL}[ \t]*:[ \t]*(?P<value>.*?)[ \t]*-->[ \t]*$", re.IGNORECASE
)
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")
_FRONT_STATUS = re.compile(
    r"""^status[ \t]*:[ \t]*(?P<q>['"]?)(?P<value>[^'"#\r\n]*?)(?P=q)[ \t]*(?:#.*)?$""",
    re.IGNORECASE,
)
_FRONT_FENCE = re.compile(r"^---[ \t]*$")
_LINE_FORMS: tuple[tuple[re.Pattern[str], StatusForm], ...] = (
    (_LINE_FORM, "line"),
    (_TABLE_ROW, "table"),
    (_COMMENT_FORM, "comment"),
)
_NO_STATUS = (
    "story file has no Status ('## Status' heading, 'Status:' line or front matter 'status:')"
)


@attrs.frozen
class StatusLine:
    """Where the status words sit: line ``index`` (0-based), characters ``start:end`` of it."""

    index: int
    start: int
    end: int
    value: str
    """The whole value as written (bold markers, emoji and notes included)."""
    status: StoryStatus
    form: StatusForm
    qa_passed: bool = False


@attrs.frozen(kw_only=True)
class StatusReading:
    """What a story file says about its status; ``status`` is None when it cannot be read."""

    path: Path
    status: StoryStatus | None
    line: int | None
    """1-based line of the value (or of the problem); None when no candidate line exists."""
    text: str | None = None
    """That line as written (no line ending)."""
    value: str | None = None
    """The status value as written."""
    form: StatusForm | None = None
    reason: str | None = None
    """Why the status is unreadable (None when it was read)."""
    qa_passed: bool = False
    """The words say QA already passed (``Ready for Done``, ``Review Passed``); status is review."""

    @property
    def readable(self) -> bool:
        """True when ``status`` was read."""
        return self.status is not None

    def describe(self) -> str:
        """One line: ``done`` or ``unreadable: <reason> (<file>:<line>: <text>)``."""
        if self.status is not None:
            return self.status.value
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        shown = f": {self.text.strip()[:120]}" if self.text and self.text.strip() else ""
        return f"unreadable: {self.reason} ({where}{shown})"


@attrs.frozen
class _Problem:
    reason: str
    index: int | None


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def _candidate(
    index: int, match: re.Match[str], form: StatusForm, line: str
) -> StatusLine | _Problem:
    value = match.group("value")
    phrase = find_status_phrase(value)
    if phrase is None:
        return _Problem(f"unknown story status {value.strip()!r}", index)
    offset = match.start("value")
    return StatusLine(
        index,
        offset + phrase.start,
        offset + phrase.end,
        value,
        phrase.status,
        form,
        phrase.qa_passed,
    )


def _front_matter(lines: Sequence[str]) -> StatusLine | _Problem | None:
    if not lines or not _FRONT_FENCE.match(_strip_eol(lines[0])):
        return None
    for index in range(1, min(len(lines), 200)):
        text = _strip_eol(lines[index])
        if _FRONT_FENCE.match(text) or text.strip() == "...":
            return None
        match = _FRONT_STATUS.match(text)
        if match is not None and match.group("value").strip():
            return _candidate(index, match, "front-matter", text)
    return None


def _heading_value(
    lines: Sequence[str], headings: Sequence[Heading], position: int
) -> StatusLine | _Problem:
    heading = headings[position]
    stop = headings[position + 1].index if position + 1 < len(headings) else len(lines)
    for index in range(heading.index + 1, stop):
        text = _strip_eol(lines[index])
        if not text.strip() or _COMMENT.match(text):
            continue
        label = _HEADING_LABEL.match(text)
        if label is not None and label.group("value").strip():
            return _candidate(index, label, "heading-label", text)
        whole = re.match(r"^(?P<value>.*?)[ \t]*$", text)
        assert whole is not None  # matches every line
        return _candidate(index, whole, "heading", text)
    return _Problem("the Status heading has no value under it", heading.index)


def _locate(lines: Sequence[str], headings: Sequence[Heading] | None) -> StatusLine | _Problem:
    front = _front_matter(lines)
    if front is not None:
        return front
    if headings is None:
        headings = scan_headings(lines)
    heading_at = {h.index: pos for pos, h in enumerate(headings)}
    visible = outside_fences(lines)
    for index, line in enumerate(lines):
        if not visible[index]:
            continue
        text = _strip_eol(line)
        position = heading_at.get(index)
        if (
            position is not None
            and headings[position].level <= 3
            and _HEADING_TITLE.match(headings[position].title)
        ):
            return _heading_value(lines, headings, position)
        for pattern, form in _LINE_FORMS:
            match = pattern.match(text)
            if match is not None and match.group("value").strip():
                return _candidate(index, match, form, text)
    return _Problem(_NO_STATUS, None)


def read_status(
    path: Path, lines: Sequence[str], headings: Sequence[Heading] | None = None
) -> StatusReading:
    """The story's status from its lines; never raises (an unreadable status has ``reason``)."""
    found = _locate(lines, headings)
    if isinstance(found, _Problem):
        text = _strip_eol(lines[found.index]) if found.index is not None else None
        return StatusReading(
            path=path,
            status=None,
            line=found.index + 1 if found.index is not None else None,
            text=text,
            reason=found.reason,
        )
    return StatusReading(
        path=path,
        status=found.status,
        line=found.index + 1,
        text=_strip_eol(lines[found.index]),
        value=found.value,
        form=found.form,
        qa_passed=found.qa_passed,
    )


def read_story_status(path: Path) -> StatusReading:
    """Read ``path`` and its status; a file that cannot be read (missing, not UTF-8, too big)
    is an unreadable status too. Never raises ProjectError: one story never stops an epic."""
    try:
        doc = read_text_doc(path)
    except ProjectError as exc:
        reason = str(exc)
        prefix = f"{exc.path}:{exc.line}: " if exc.line is not None else f"{exc.path}: "
        reason = reason.removeprefix(prefix)
        return StatusReading(path=path, status=None, line=exc.line, reason=reason)
    return read_status(path, split_lines(doc.text))


def find_status_line(
    path: Path, lines: Sequence[str], headings: Sequence[Heading] | None = None
) -> StatusLine:
    """Locate and parse the story's status; no status or an unknown word raises ProjectError.

    Prefer :func:`read_status`, which reports an unreadable status instead of raising.
    """
    found = _locate(lines, headings)
    if isinstance(found, _Problem):
        line = found.index + 1 if found.index is not None else None
        raise ProjectError(found.reason, path=str(path), line=line)
    return found


def set_story_status(path: Path, new: StoryStatus, *, project: Path | None = None) -> bool:
    """Set the story's status (only its status words, in the file's own spelling); return whether
    the file changed. An unreadable status raises ProjectError naming the line (nothing written).

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
    default = SpellingFamily.KEBAB if found.form == "line" else SpellingFamily.V4
    line = lines[found.index]
    word = spell_like(new, line[found.start : found.end], default=default)
    lines[found.index] = line[: found.start] + word + line[found.end :]
    text = "".join(lines)
    check = _locate(split_lines(text), None)
    if isinstance(check, _Problem) or check.status != new or check.index != found.index:
        raise ProjectError(
            f"could not rewrite the status as {word!r} (the line would not read back)",
            path=str(target),
            line=found.index + 1,
        )
    write_text_atomic(target, text, bom=doc.bom)
    return True
