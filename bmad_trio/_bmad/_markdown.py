"""Minimal Markdown structure for BMAD files: ATX headings outside code fences, and sections."""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

__all__ = ["Heading", "Section", "find_section", "outside_fences", "scan_headings", "section_of"]

_HEADING = re.compile(r"^[ ]{0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*\r?\n?$")
_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


@attrs.frozen
class Heading:
    """An ATX heading: ``index`` is its 0-based line index."""

    level: int
    title: str
    index: int


@attrs.frozen
class Section:
    """A heading and the lines under it up to the next heading of the same or a higher level."""

    heading: Heading
    start: int
    """Index of the first line after the heading."""
    end: int
    """Index one past the last line of the section."""


def scan_headings(lines: Sequence[str]) -> list[Heading]:
    """Every ATX heading outside fenced code blocks, in order."""
    headings: list[Heading] = []
    fence: str | None = None
    for index, line in enumerate(lines):
        fence_match = _FENCE.match(line)
        if fence_match is not None:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None or "#" not in line[:4]:
            continue
        match = _HEADING.match(line)
        if match is not None:
            headings.append(Heading(len(match.group(1)), match.group(2).strip(), index))
    return headings


def section_of(headings: Sequence[Heading], position: int, total: int) -> Section:
    """The section of ``headings[position]`` in a document of ``total`` lines."""
    heading = headings[position]
    end = total
    for later in headings[position + 1 :]:
        if later.level <= heading.level:
            end = later.index
            break
    return Section(heading, heading.index + 1, end)


def find_section(
    headings: Sequence[Heading],
    total: int,
    pattern: re.Pattern[str],
    *,
    levels: range = range(1, 7),
) -> Section | None:
    """The first section whose heading title matches ``pattern`` (at one of ``levels``)."""
    for position, heading in enumerate(headings):
        if heading.level in levels and pattern.search(heading.title):
            return section_of(headings, position, total)
    return None


def outside_fences(lines: Sequence[str]) -> list[bool]:
    """For each line: True when it is not inside (or a delimiter of) a fenced code block."""
    flags: list[bool] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if match is not None:
            marker = match.group(1)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
            flags.append(False)
            continue
        flags.append(fence is None)
    return flags
