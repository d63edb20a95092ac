"""Markdown structure of BMAD files, read with a CommonMark parser (markdown-it-py).

Only top-level ATX headings (``## Title``) count: headings inside fenced or indented code blocks,
HTML blocks, list items and setext underlines (``Title`` over ``---``) do not. Every heading keeps its 0-based
line index, so errors can still name file and line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import attrs
from markdown_it import MarkdownIt

__all__ = [
    "Heading",
    "Section",
    "find_section",
    "outside_fences",
    "paragraph_starts",
    "scan_headings",
    "scan_structure",
    "section_of",
]


@attrs.frozen
class Heading:
    """An ATX heading: ``index`` is its 0-based line index, ``title`` its text without ``#``."""

    level: int
    title: str
    index: int

    @property
    def source(self) -> str:
        """The heading as a plain ATX line (``### Story 1.2: Title``), whatever its indentation."""
        return f"{'#' * self.level} {self.title}"


@attrs.frozen
class Section:
    """A heading and the lines under it up to the next heading of the same or a higher level."""

    heading: Heading
    start: int
    """Index of the first line after the heading."""
    end: int
    """Index one past the last line of the section."""


@functools.cache
def _parser() -> MarkdownIt:
    # Plain CommonMark, block level only: inline parsing (emphasis, links) is most of the cost
    # and tells nothing about headings or code blocks.
    # Lists and setext headings are off too: nested lists are most of the block parser's time on
    # long story files, and neither changes where ATX headings or code blocks are (a heading
    # inside a list item is not one we read; an indented fence is still a fence).
    parser = MarkdownIt("commonmark")
    parser.core.ruler.disable(["inline", "text_join"])
    parser.block.ruler.disable(["list", "lheading"])
    return parser


def _blocks(lines: Sequence[str]) -> tuple[tuple[str, str, int, int, str], ...]:
    """(type, markup, first line, end line, inline text) of headings, paragraphs, code blocks."""
    return _blocks_of("".join(lines))


@functools.lru_cache(maxsize=16)
def _blocks_of(text: str) -> tuple[tuple[str, str, int, int, str], ...]:
    # Memoised (a pure function of the text): reading one story asks for headings, fences and
    # paragraphs of the same text from three places.
    tokens = _parser().parse(text)
    found: list[tuple[str, str, int, int, str]] = []
    for position, token in enumerate(tokens):
        if token.map is None:
            continue
        if token.type == "heading_open":
            inline = tokens[position + 1]
            found.append(("heading", token.markup, token.map[0], token.map[1], inline.content))
        elif token.type == "paragraph_open":
            found.append(("paragraph", "", token.map[0], token.map[1], ""))
        elif token.type in ("fence", "code_block"):
            found.append((token.type, token.markup, token.map[0], token.map[1], ""))
    return tuple(found)


def scan_headings(lines: Sequence[str]) -> list[Heading]:
    """Every ATX heading outside code blocks, in order."""
    return [
        Heading(len(markup), text.strip(), first)
        for kind, markup, first, _, text in _blocks(lines)
        if kind == "heading" and markup.startswith("#")
    ]


def paragraph_starts(lines: Sequence[str]) -> list[int]:
    """The first line index of every paragraph outside code blocks (list items included)."""
    return scan_structure(lines)[1]


def scan_structure(lines: Sequence[str]) -> tuple[list[Heading], list[int]]:
    """ATX headings and paragraph starts, from one parse."""
    blocks = _blocks(lines)
    headings = [
        Heading(len(markup), text.strip(), first)
        for kind, markup, first, _, text in blocks
        if kind == "heading" and markup.startswith("#")
    ]
    return headings, [first for kind, _, first, _, _ in blocks if kind == "paragraph"]


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
    flags = [True] * len(lines)
    for kind, _, first, end, _ in _blocks(lines):
        if kind == "fence":
            for index in range(first, min(end, len(lines))):
                flags[index] = False
    return flags
