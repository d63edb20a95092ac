"""Epic documents: v4 PRDs and sharded ``epic-{n}*.md`` files, v6 ``epics.md`` and ``epics/*.md``.

Headings follow BMAD's own parser (epic ``^#{1,3} Epic N[:] title``, story
``^#{2,4} Story N.M[a][:] title``). A file without an epic heading is one epic whose number comes
from its stories' ids or from its file name (``epic-3-...md``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from .._errors import ProjectError
from ._ids import story_key, story_slug
from ._layout import Layout
from ._markdown import Heading, scan_structure
from ._textio import ensure_inside, read_text_doc, split_lines

__all__ = [
    "Epic",
    "EpicStory",
    "epic_candidates",
    "find_epic",
    "parse_epic",
    "parse_epic_document",
    "resolve_epics",
    "select_epic",
]

_NUMBERING = r"(?:\d+(?:\.\d+)*\.?\s+)?"  # "## 5.1 Epic 1: …" (numbered PRD sections)
_EPIC_HEADING = re.compile(
    rf"^#{{1,3}}\s*{_NUMBERING}Epic\s+(\d+)(?![\w.])\s*[:\-\u2013\u2014]?\s*(.*?)\s*#*\s*$",
    re.IGNORECASE,
)
_STORY_HEADING = re.compile(
    rf"^#{{2,4}}\s*{_NUMBERING}Story\s+(\d+)\.(\d+[A-Za-z]?)(?![\w.])\s*[:\-\u2013\u2014]?\s*(.*?)\s*#*\s*$",
    re.IGNORECASE,
)
_BOLD_STORY = re.compile(
    r"^\s*(?:\*\*|__)Story\s+(\d+)\.(\d+[A-Za-z]?)(?![\w.])\s*[:\-\u2013\u2014]\s*(.*?)(?:\*\*|__)(.*)$",
    re.IGNORECASE,
)
_LOOKS_LIKE_STORY = re.compile(r"^#+\s*\W*\s*" + _NUMBERING + r"Story\s+[A-Za-z]?\d", re.IGNORECASE)
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
_DEP_ID = re.compile(
    r"(?<![\d.])(\d+)\.(\d+[A-Za-z]?)(?![\w.]*\d)(?:\s*(?:-|\u2013|to|through)\s*(\d+)\.(\d+)(?![\w.]*\d))?"
)
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
    warnings: tuple[str, ...] = ()
    """Things in the file that were not read as written (``file:line: …``): odd headings, stories
    filed under another epic's heading."""

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
            for m in _DEP_ID.finditer(depends.group(1)):
                dependencies.append(f"{m.group(1)}.{m.group(2)}")
                if m.group(3) == m.group(1) and m.group(2).isdigit():
                    # "Stories 1.1-1.11": every story in between
                    first, last = int(m.group(2)), int(m.group(4))
                    dependencies.extend(f"{m.group(1)}.{n}" for n in range(first + 1, last + 1))
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


_BOLD_LEVEL = 7  # a "**Story 1.2: Title**" paragraph ranks below every heading


def _entries(lines: Sequence[str]) -> list[Heading]:
    """Headings and bold-paragraph story lines, in document order."""
    headings, paragraphs = scan_structure(lines)
    bold = [
        Heading(_BOLD_LEVEL, lines[index].strip(), index)
        for index in paragraphs
        if "story" in lines[index].lower() and _BOLD_STORY.match(lines[index])
    ]
    if not bold:
        return headings
    return sorted([*headings, *bold], key=lambda h: h.index)


def _story_match(entry: Heading) -> re.Match[str] | None:
    if entry.level == _BOLD_LEVEL:
        return _BOLD_STORY.match(entry.title)
    return _STORY_HEADING.match(entry.source)


def _story_section_end(entries: Sequence[Heading], position: int, total: int) -> int:
    """A story section ends at the next story or epic heading or a heading above its level."""
    level = entries[position].level
    for later in entries[position + 1 :]:
        if later.level == _BOLD_LEVEL:
            if _BOLD_STORY.match(later.title):
                return later.index
            continue
        text = later.source
        if later.level < level or _STORY_HEADING.match(text) or _EPIC_HEADING.match(text):
            return later.index
        if later.level == level and not _AC_MARKER.match(text):
            return later.index
    return total


@attrs.define
class _Draft:
    number: int
    title: str
    line: int
    stories: list[EpicStory] = attrs.field(factory=list[EpicStory])


def parse_epic_document(path: Path) -> tuple[Epic, ...]:
    """Every epic in ``path`` (a PRD, ``epics.md`` or a sharded epic file), in document order.

    Stories are filed under their own epic number (``### Story 2.1`` under ``## Epic 1`` goes to
    epic 2, with a warning); a heading that looks like a story but does not parse is a warning
    (``Epic.warnings``), never silently dropped.
    """
    doc = read_text_doc(path)
    lines = split_lines(doc.text)
    entries = _entries(lines)
    drafts: list[_Draft] = []
    current: _Draft | None = None
    seen: dict[str, int] = {}
    warnings: list[str] = []
    named = _epic_number_from_name(path)
    for position, entry in enumerate(entries):
        line_no = entry.index + 1
        story_match = _story_match(entry)
        if story_match is not None:
            story_id = f"{story_match.group(1)}.{story_match.group(2)}"
            key = story_id.lower()
            if key in seen:
                warnings.append(
                    f"{path}:{line_no}: story {story_id} again (first at line {seen[key]}); "
                    "the first one is used"
                )
                continue
            seen[key] = line_no
            end = _story_section_end(entries, position, len(lines))
            user_story, criteria, deps = _parse_story_section(lines, entry.index + 1, end)
            dep_ids: list[str] = []
            for dep in deps:
                if dep.lower() != key and dep not in dep_ids:
                    dep_ids.append(dep)
            story = EpicStory(
                story_id=story_id,
                title=_clean_title(story_match.group(3)),
                user_story=user_story,
                acceptance_criteria=criteria,
                dependencies=tuple(dep_ids),
                line=line_no,
            )
            number = int(story_match.group(1))
            target = current
            if target is None or target.number != number:
                if target is not None and target.line != 0:
                    warnings.append(
                        f"{path}:{line_no}: story {story_id} is under the heading of epic "
                        f"{target.number}; filed under epic {number}"
                    )
                target = next((d for d in drafts if d.number == number), None)
                if target is None:
                    target = _Draft(number, "", 0)
                    drafts.append(target)
                if current is None:
                    current = target
            target.stories.append(story)
            continue
        if entry.level == _BOLD_LEVEL:
            continue
        epic_match = _EPIC_HEADING.match(entry.source)
        if epic_match is not None:
            current = _Draft(int(epic_match.group(1)), _clean_title(epic_match.group(2)), line_no)
            drafts.append(current)
        elif _LOOKS_LIKE_STORY.match(entry.source):
            warnings.append(
                f"{path}:{line_no}: heading {entry.title!r} looks like a story but is not "
                "'Story N.M: Title' (ignored)"
            )
    if not drafts:
        if named is not None:
            drafts.append(_Draft(named, "", 0))
    elif drafts[0].line == 0 and named is not None and len({d.number for d in drafts}) == 1:
        first = drafts[0]
        if first.number != named and first.stories:
            warnings.append(
                f"{path}: the file name says epic {named}; its stories say epic {first.number}"
            )
        else:
            first.number = named
    return _merge_by_number(path, drafts, tuple(warnings))


def _merge_by_number(
    path: Path, found: list[_Draft], warnings: tuple[str, ...]
) -> tuple[Epic, ...]:
    """One Epic per number: an overview heading (``## Epic List`` → ``### Epic 1``) without stories
    merges into the detailed section of the same number."""
    merged: dict[int, Epic] = {}
    for draft in found:
        epic = Epic(
            number=draft.number,
            title=draft.title,
            path=path,
            line=draft.line,
            stories=tuple(draft.stories),
            warnings=warnings,
        )
        previous = merged.get(draft.number)
        if previous is None:
            merged[draft.number] = epic
        elif not previous.stories:
            merged[draft.number] = attrs.evolve(epic, title=epic.title or previous.title)
        elif draft.stories:
            merged[draft.number] = attrs.evolve(previous, stories=previous.stories + epic.stories)
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
    missing: list[str] = []
    for story in epic.stories:
        for dep in story.dependencies:
            if dep.startswith(prefix) and dep not in ids:
                missing.append(
                    f"{epic.path}:{story.line}: story {story.story_id} depends on {dep}, which "
                    f"epic {epic.number} does not declare (met only when its file says done)"
                )
    _check_acyclic(epic)
    if missing:
        return attrs.evolve(epic, warnings=(*epic.warnings, *missing))
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


def _epic_files(location: Path) -> list[Path]:
    """Markdown files in an epic directory and its subfolders (two levels), hidden ones skipped."""
    found: list[Path] = []
    base = len(location.parts)
    for current, dirs, files in os.walk(location):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(here.parts) - base >= 2:
            dirs.clear()
        found.extend(here / name for name in sorted(files) if name.lower().endswith(".md"))
    return found


def _named_for(path: Path, pattern: str, number: int) -> bool:
    """Whether the file name is the configured shard name of epic ``number`` (``epic-3-x.md``)."""
    glob = pattern.replace("{n}", str(number))
    exact = re.compile(rf"epic\D{{0,3}}0*{number}(?!\d)", re.IGNORECASE)
    return path.match(glob) and exact.match(path.name) is not None


_NOT_AN_EPIC_FILE = re.compile(
    r"retro|tech-spec|validation|report|summary|context|proposal|checklist|alignment|decision"
    r"|inventory|learning|architecture|handoff|session",
    re.IGNORECASE,
)


def _could_hold_epics(path: Path) -> bool:
    """Epic documents by name: ``epic*.md``, ``epics-*.md``, ``5-epic-details.md``, a PRD."""
    name = path.name.lower()
    if "epic" not in name and not name.startswith("prd"):
        return False
    return _NOT_AN_EPIC_FILE.search(name) is None


def _mentions(path: Path, number: int) -> bool:
    """Cheap pre-filter: does the text name epic ``number`` or one of its stories?"""
    try:
        text = read_text_doc(path).text
    except ProjectError:
        return False
    return re.search(rf"(?:Epic|Story)\s+{number}(?:\.\d|\b)", text, re.IGNORECASE) is not None


def epic_candidates(layout: Layout, number: int) -> list[Epic]:
    """Every epic ``number`` with stories in the layout's epic locations, best first.

    A file named for the epic by the configured pattern (``epic-3-x.md``) ranks before a file
    holding several epics (a PRD, ``epics.md``, ``epic-details.md``, ``epics-*.md``)."""
    files: list[Path] = []
    for location in layout.epic_locations:
        if location.is_dir():
            files.extend(_epic_files(location))
        elif location.is_file():
            files.append(location)
    found: list[tuple[int, Epic]] = []
    seen: set[Path] = set()
    errors: list[ProjectError] = []
    for path in files:
        if path not in layout.epic_locations and not _could_hold_epics(path):
            continue
        safe = ensure_inside(layout.project, path, what="epic file")
        if safe in seen or not _mentions(safe, number):
            continue
        seen.add(safe)
        try:
            epics = parse_epic_document(safe)
        except ProjectError as exc:  # one broken document among many does not hide the others
            errors.append(exc)
            continue
        for epic in epics:
            if epic.number == number and epic.stories:
                rank = 0 if _named_for(safe, layout.epic_file_pattern, number) else 1
                found.append((rank, epic))
    if not found and errors:
        raise errors[0]
    found.sort(key=lambda item: item[0])
    return [epic for _, epic in found]


def find_epic(layout: Layout, number: int | None = None) -> Epic:
    """Find epic ``number`` (or the project's only epic) in the layout's epic locations.

    Two files named for the same epic are a ProjectError naming both; a file named for the epic
    wins over a multi-epic document (the others are named in ``Epic.warnings``)."""
    if number is None:
        return _only_epic(layout)
    found = epic_candidates(layout, number)
    if not found:
        searched = ", ".join(str(location) for location in layout.epic_locations)
        raise ProjectError(
            f"cannot find epic {number}; looked in: {searched}", path=str(layout.project)
        )
    best = found[0]
    rivals = [e for e in found[1:] if e.path != best.path]
    same_rank = (
        [e for e in rivals if _named_for(e.path, layout.epic_file_pattern, number)]
        if _named_for(best.path, layout.epic_file_pattern, number)
        else rivals
    )
    if same_rank:
        names = ", ".join(str(e.path) for e in (best, *same_rank))
        raise ProjectError(
            f"epic {number} is declared in several files: {names}; pass the file to use",
            path=str(best.path),
        )
    if rivals:
        others = ", ".join(e.path.name for e in rivals)
        best = attrs.evolve(
            best,
            warnings=(*best.warnings, f"epic {number} is also in {others}; using {best.path.name}"),
        )
    return _check_epic(best)


def _only_epic(layout: Layout) -> Epic:
    searched: list[str] = []
    for location in layout.epic_locations:
        if location.is_dir():
            files = sorted(
                p for p in location.glob(layout.epic_file_pattern.replace("{n}", "")) if p.is_file()
            )
            if len(files) > 1:
                names = ", ".join(p.name for p in files)
                raise ProjectError(
                    f"several epic files ({names}); choose one by number", path=str(location)
                )
            for path in files:
                safe = ensure_inside(layout.project, path, what="epic file")
                return select_epic(parse_epic_document(safe), safe, None)
        elif location.is_file():
            safe = ensure_inside(layout.project, location, what="epic file")
            return select_epic(parse_epic_document(safe), safe, None)
        searched.append(str(location))
    raise ProjectError(
        f"cannot find an epic; looked in: {', '.join(searched)}", path=str(layout.project)
    )


def resolve_epics(
    layout: Layout, argument: Path | None, number: int | None = None
) -> tuple[Path, tuple[Epic, ...]]:
    """The epics an EPIC argument names: a number (found in any epic file; a stray file named
    like the number never wins over a real epic file), or a file (all its epics, or epic
    ``number`` of it). Raises ProjectError when nothing is found."""
    if argument is not None and argument.name.isdigit() and not argument.is_file():
        argument, number = None, int(argument.name)
    elif argument is not None and argument.name.isdigit():
        try:
            epic = find_epic(layout, int(argument.name))
        except ProjectError:
            pass  # no real epic of that number: the file it is
        else:
            return epic.path, (epic,)
    if argument is None:
        epic = find_epic(layout, number)
        return epic.path, (epic,)
    safe = ensure_inside(layout.project, argument, what="epic file")
    epics = parse_epic_document(safe)
    if number is not None:
        return safe, (select_epic(epics, safe, number),)
    with_stories = tuple(e for e in epics if e.stories)
    if len(with_stories) > 1:
        return safe, tuple(_check_epic(e) for e in with_stories)
    return safe, (select_epic(epics, safe, None),)
