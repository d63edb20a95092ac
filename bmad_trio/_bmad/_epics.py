"""Epic documents: v4 PRDs and sharded ``epic-{n}*.md`` files, v6 ``epics.md`` and ``epics/*.md``.

Headings follow BMAD's own parser (epic ``^#{1,3} Epic N[:] title``, story
``^#{2,4} Story N.M[a][:] title``). A file without an epic heading is one epic whose number comes
from its stories' ids or from its file name (``epic-3-...md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from .._errors import ProjectError
from ._ids import story_key, story_slug
from ._layout import Layout
from ._markdown import Heading, scan_headings
from ._textio import ensure_inside, read_text_doc, split_lines

__all__ = ["Epic", "EpicStory", "find_epic", "parse_epic", "parse_epic_document", "select_epic"]

_EPIC_HEADING = re.compile(r"^#{1,3}\s*Epic\s+(\d+)\s*:?\s*(.*?)\s*#*\s*$", re.IGNORECASE)
_STORY_HEADING = re.compile(
    r"^#{2,4}\s*Story\s+(\d+)\.(\d+[a-z]?)\s*:?\s*(.*?)\s*#*\s*$", re.IGNORECASE
)
_AC_MARKER = re.compile(
    r"^\s*(?:#{2,6}\s*)?(?:\*\*|__)?\s*Acceptance\s+Criteria\s*:?\s*(?:\*\*|__)?\s*:?\s*$",
    re.IGNORECASE,
)
_SECTION_LABEL = re.compile(r"^(?:\*\*|__)(?!AC\b|AC\d)[^*_]+?:?(?:\*\*|__)\s*:?", re.IGNORECASE)
_DEPENDS = re.compile(
    r"^\s*(?:[-*]\s+)?(?:\*\*|__)?\s*(?:depends\s+on\b\s*(?:\*\*|__)?\s*:?"
    r"|(?:dependencies|dependency|prerequisites?|prereqs?)\s*(?:\*\*|__)?\s*:)(.*)$",
    re.IGNORECASE,
)
_DEP_ID = re.compile(r"(?<![\d.])(\d+)\.(\d+[a-z]?)(?![\d.]*\d)")
_NUMBERED = re.compile(r"^\s*(\d+)[.)]\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_GWT = re.compile(r"^\s*(?:[-*+]\s+)?(?:\*\*|__)?(Given|When|Then|And|But)\b", re.IGNORECASE)
_AS_A = re.compile(r"^\s*(?:\*\*|__)?As\s+an?\b", re.IGNORECASE)
_EPIC_FILE_NUMBER = re.compile(r"epic[-_ ]?(\d+)", re.IGNORECASE)


@attrs.frozen
class EpicStory:
    """One story as the epic declares it."""

    story_id: str
    title: str
    user_story: str
    acceptance_criteria: tuple[str, ...]
    dependencies: tuple[str, ...]
    """Story ids this story declares it depends on, in the order written."""
    line: int
    """1-based line of the story heading in the epic file."""

    @property
    def epic_number(self) -> int:
        return int(self.story_id.partition(".")[0])

    @property
    def slug(self) -> str:
        return story_slug(self.title)

    @property
    def key(self) -> str:
        """The v6 story key ``{e}-{s}-{slug}``."""
        return story_key(self.story_id, self.title)


@attrs.frozen
class Epic:
    """An epic and its stories in the epic's order."""

    number: int
    title: str
    path: Path
    line: int
    """1-based line of the epic heading (0 when the file has none)."""
    stories: tuple[EpicStory, ...]

    def story(self, story_id: str) -> EpicStory:
        """The story with ``story_id``; ProjectError if the epic has none."""
        for story in self.stories:
            if story.story_id == story_id:
                return story
        raise ProjectError(f"epic {self.number} has no story {story_id}", path=str(self.path))


def _clean_title(raw: str) -> str:
    return raw.strip().lstrip(":-\u2013\u2014 ").strip().strip("*_").strip()


_EMPHASIS = re.compile(r"\*\*|__")


def _strip_inline(text: str) -> str:
    return _EMPHASIS.sub("", text).strip()


def _criteria_line(criteria: list[str], raw: str, open_numbered: bool) -> bool:
    """Add one non-blank acceptance-criteria line; return whether a numbered item awaits its Given."""
    text = raw.strip()
    numbered = _NUMBERED.match(raw)
    if numbered is not None:
        criteria.append(_strip_inline(numbered.group(2)))
        return _GWT.match(numbered.group(2)) is None
    gwt = _GWT.match(raw)
    body = _strip_inline(text.lstrip("-*+ "))
    if gwt is not None and gwt.group(1).lower() == "given":
        if open_numbered and criteria:
            criteria[-1] = f"{criteria[-1]} {body}".strip()
        else:
            criteria.append(body)
        return False
    bullet = _BULLET.match(raw)
    if gwt is None and bullet is not None and not raw.startswith((" ", "\t")):
        criteria.append(_strip_inline(bullet.group(1)))
        return False
    if criteria:
        criteria[-1] = f"{criteria[-1]} {body}".strip()
        return open_numbered
    criteria.append(body)
    return False


def _parse_story_section(
    lines: Sequence[str], start: int, end: int
) -> tuple[str, tuple[str, ...], list[str]]:
    """User story text, acceptance criteria and dependency ids of one story section."""
    user_story: list[str] = []
    criteria: list[str] = []
    dependencies: list[str] = []
    mode = ""  # "", "user_story", "criteria"
    open_numbered = False
    for index in range(start, end):
        raw = lines[index].rstrip("\r\n")
        text = raw.strip()
        low = raw.lower()
        depends = _DEPENDS.match(raw) if "depend" in low or "prereq" in low else None
        if depends is not None:
            mode = ""
            dependencies.extend(
                f"{m.group(1)}.{m.group(2)}" for m in _DEP_ID.finditer(depends.group(1))
            )
        elif "acceptance" in low and _AC_MARKER.match(raw):
            mode, open_numbered = "criteria", False
        elif mode == "criteria":
            if text.startswith("#") or (_SECTION_LABEL.match(raw) and not _GWT.match(raw)):
                mode = ""
            elif text:
                open_numbered = _criteria_line(criteria, raw, open_numbered)
        elif mode == "user_story" or (_AS_A.match(raw) and not user_story):
            if not text or text.startswith("#"):
                mode = ""
            else:
                mode = "user_story"
                user_story.append(_strip_inline(text))
    return " ".join(user_story), tuple(criteria), dependencies


def _epic_number_from_name(path: Path) -> int | None:
    match = _EPIC_FILE_NUMBER.search(path.stem)
    return int(match.group(1)) if match is not None else None


def _story_section_end(lines: Sequence[str], headings: Sequence[Heading], position: int) -> int:
    """A story section ends at the next story or epic heading or a heading above its level."""
    level = headings[position].level
    for later in headings[position + 1 :]:
        text = lines[later.index].strip()
        if later.level < level or _STORY_HEADING.match(text) or _EPIC_HEADING.match(text):
            return later.index
        if later.level == level and not _AC_MARKER.match(text):
            return later.index
    return len(lines)


def parse_epic_document(path: Path) -> tuple[Epic, ...]:
    """Every epic in ``path`` (a PRD, ``epics.md`` or a sharded epic file), in document order."""
    doc = read_text_doc(path)
    lines = split_lines(doc.text)
    headings = scan_headings(lines)
    epics: list[tuple[int, str, int, list[EpicStory]]] = []
    current: tuple[int, str, int, list[EpicStory]] | None = None
    seen: dict[str, int] = {}
    for position, heading in enumerate(headings):
        line_text = lines[heading.index].rstrip("\r\n").strip()
        story_match = _STORY_HEADING.match(line_text)
        if story_match is not None:
            story_id = f"{story_match.group(1)}.{story_match.group(2)}"
            line_no = heading.index + 1
            if story_id in seen:
                raise ProjectError(
                    f"duplicate story id {story_id} (first at line {seen[story_id]})",
                    path=str(path),
                    line=line_no,
                )
            seen[story_id] = line_no
            end = _story_section_end(lines, headings, position)
            user_story, criteria, deps = _parse_story_section(lines, heading.index + 1, end)
            dep_ids: list[str] = []
            for dep in deps:
                if dep != story_id and dep not in dep_ids:
                    dep_ids.append(dep)
            story = EpicStory(
                story_id=story_id,
                title=_clean_title(story_match.group(3)),
                user_story=user_story,
                acceptance_criteria=criteria,
                dependencies=tuple(dep_ids),
                line=line_no,
            )
            if current is None:
                number = int(story_match.group(1))
                current = (number, "", 0, [])
                epics.append(current)
            current[3].append(story)
            continue
        epic_match = _EPIC_HEADING.match(line_text)
        if epic_match is not None:
            current = (
                int(epic_match.group(1)),
                _clean_title(epic_match.group(2)),
                heading.index + 1,
                [],
            )
            epics.append(current)
    if not epics:
        number = _epic_number_from_name(path)
        if number is not None:
            epics.append((number, "", 0, []))
    elif epics[0][2] == 0:
        named = _epic_number_from_name(path)
        if named is not None:
            first = epics[0]
            epics[0] = (named, first[1], first[2], first[3])
    return _merge_by_number(path, epics)


def _merge_by_number(
    path: Path, found: list[tuple[int, str, int, list[EpicStory]]]
) -> tuple[Epic, ...]:
    """One Epic per number: an overview heading (``## Epic List`` → ``### Epic 1``) without stories
    merges into the detailed section of the same number."""
    merged: dict[int, Epic] = {}
    for number, title, line, stories in found:
        epic = Epic(number=number, title=title, path=path, line=line, stories=tuple(stories))
        previous = merged.get(number)
        if previous is None:
            merged[number] = epic
        elif not previous.stories:
            merged[number] = attrs.evolve(epic, title=epic.title or previous.title)
        elif stories:
            merged[number] = attrs.evolve(previous, stories=previous.stories + epic.stories)
    return tuple(merged.values())


def _check_epic(epic: Epic) -> Epic:
    if not epic.stories:
        raise ProjectError(
            f"epic {epic.number} has no stories (expected '### Story {epic.number}.1: Title' headings)",
            path=str(epic.path),
            line=epic.line or None,
        )
    ids = {story.story_id for story in epic.stories}
    prefix = f"{epic.number}."
    for story in epic.stories:
        for dep in story.dependencies:
            if dep.startswith(prefix) and dep not in ids:
                raise ProjectError(
                    f"story {story.story_id} depends on {dep}, which epic {epic.number} does not contain",
                    path=str(epic.path),
                    line=story.line,
                )
    _check_acyclic(epic)
    return epic


def _check_acyclic(epic: Epic) -> None:
    graph = {s.story_id: [d for d in s.dependencies if d != s.story_id] for s in epic.stories}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for root in graph:
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, child = stack.pop()
            if child == 0:
                if state.get(node) == 2:
                    continue
                state[node] = 1
            children = graph.get(node, [])
            if child < len(children):
                stack.append((node, child + 1))
                nxt = children[child]
                if state.get(nxt) == 1:
                    line = epic.story(node).line
                    raise ProjectError(
                        f"dependency cycle between stories {node} and {nxt}",
                        path=str(epic.path),
                        line=line,
                    )
                if state.get(nxt) != 2 and nxt in graph:
                    stack.append((nxt, 0))
            else:
                state[node] = 2


def select_epic(epics: Sequence[Epic], path: Path, number: int | None = None) -> Epic:
    """Pick epic ``number`` from ``epics`` (or the only one) and check it has usable stories."""
    if number is not None:
        for epic in epics:
            if epic.number == number:
                return _check_epic(epic)
        raise ProjectError(f"no epic {number} in this file", path=str(path))
    if not epics:
        raise ProjectError("no epic or story headings found", path=str(path))
    if len(epics) > 1:
        numbers = ", ".join(str(e.number) for e in epics)
        raise ProjectError(
            f"the file holds several epics ({numbers}); choose one by number", path=str(path)
        )
    return _check_epic(epics[0])


def parse_epic(path: Path, *, number: int | None = None) -> Epic:
    """Parse the epic in ``path``: epic ``number`` of a multi-epic file, or the file's only epic."""
    return select_epic(parse_epic_document(path), path, number)


def _epic_files_in(directory: Path, pattern: str, number: int | None) -> list[Path]:
    glob = pattern.replace("{n}", str(number) if number is not None else "")
    files = sorted(p for p in directory.glob(glob) if p.is_file())
    if number is None:
        return files
    exact = re.compile(rf"epic\D{{0,3}}0*{number}(?!\d)", re.IGNORECASE)
    return [p for p in files if exact.match(p.name)]


def find_epic(layout: Layout, number: int | None = None) -> Epic:
    """Find epic ``number`` (or the project's only epic) in the layout's epic locations."""
    searched: list[str] = []
    for location in layout.epic_locations:
        if location.is_dir():
            files = _epic_files_in(location, layout.epic_file_pattern, number)
            if number is None and len(files) > 1:
                names = ", ".join(p.name for p in files)
                raise ProjectError(
                    f"several epic files ({names}); choose one by number", path=str(location)
                )
            for path in files:
                safe = ensure_inside(layout.project, path, what="epic file")
                epics = parse_epic_document(safe)
                if number is None or any(e.number == number for e in epics):
                    return select_epic(epics, safe, number)
        elif location.is_file():
            safe = ensure_inside(layout.project, location, what="epic file")
            epics = parse_epic_document(safe)
            if number is None or any(e.number == number for e in epics):
                return select_epic(epics, safe, number)
        searched.append(str(location))
    what = f"epic {number}" if number is not None else "an epic"
    raise ProjectError(
        f"cannot find {what}; looked in: {', '.join(searched)}", path=str(layout.project)
    )
