"""Story files: finding them by every naming form in use, choosing new paths, and parsing them.

Names found (first match wins): ``{e}.{s}.story.md``, ``{e}.{s}.{slug}.md``, ``{story_key}.md``,
``story-{e}.{s}.md``, then the globs ``{e}.{s}.*.md`` and ``{e}-{s}-*.md``. New files get
``{story_dir}/{e}.{s}.story.md`` (v4/plain, what BMAD's create-next-story writes) or
``{implementation_artifacts}/{story_key}.md`` (v6).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from .._errors import ProjectError
from ._ids import split_story_id, story_key, story_slug, validate_story_id
from ._layout import Layout
from ._markdown import Heading, find_section, scan_headings, section_of
from ._status import StoryStatus
from ._status_line import StatusLine, find_status_line
from ._textio import ensure_inside, read_text_doc, split_lines

__all__ = [
    "ReviewFinding",
    "Story",
    "StoryTask",
    "find_story_file",
    "new_story_path",
    "parse_story",
]

_TITLE = re.compile(r"^Story\s+(\d+\.\d+[a-z]?)\s*:?\s*(.*)$", re.IGNORECASE)
_CHECKBOX = re.compile(r"^([ \t]*)[-*+][ \t]+\[([ xX])\][ \t]*(.*?)[ \t]*\r?\n?$")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+(.*?)[ \t]*\r?\n?$")
_FINDING_TAGS = re.compile(r"^((?:\[[^\]]*\]\s*)+)(.*)$")
_TASKS = re.compile(r"^Tasks\b", re.IGNORECASE)
_DEV_RECORD = re.compile(r"^Dev\s+Agent\s+Record\b", re.IGNORECASE)
_FILE_LIST = re.compile(r"^File\s+List\b", re.IGNORECASE)
_QA_RESULTS = re.compile(r"^QA\s+Results\b", re.IGNORECASE)
_REVIEW_FINDINGS = re.compile(r"^Review\s+Findings\b", re.IGNORECASE)
_ID_FROM_NAME = re.compile(r"^(?:story-)?(\d+)[.-](\d+[a-z]?)(?:[.-]|$)")


@attrs.frozen
class StoryTask:
    """A checkbox task (or subtask) of ``## Tasks / Subtasks``."""

    text: str
    checked: bool
    line: int
    subtasks: tuple[StoryTask, ...] = ()


@attrs.frozen
class ReviewFinding:
    """A v6 ``### Review Findings`` checkbox, e.g. ``- [ ] [Review][Patch] fix the null check``."""

    text: str
    checked: bool
    tags: tuple[str, ...]
    line: int


@attrs.frozen(kw_only=True)
class Story:
    """What the workflow needs from a story file."""

    path: Path
    story_id: str
    title: str
    status: StoryStatus
    status_text: str
    """The status value exactly as written."""
    status_line: int
    tasks: tuple[StoryTask, ...]
    checked_tasks: int
    """Checked boxes in the tasks section, subtasks included."""
    unchecked_tasks: int
    dev_agent_record: str | None
    file_list: tuple[str, ...]
    qa_results: str | None
    review_findings: tuple[ReviewFinding, ...]


def find_story_file(layout: Layout, story_id: str, title: str | None = None) -> Path | None:
    """The existing file of story ``story_id`` (``title`` adds the slug forms), or None.

    Exact names win in the documented order; otherwise one glob match is taken, and several
    glob matches (e.g. ``1.2.a.md`` and ``1.2.b.md``) are a ProjectError.
    """
    epic, number = split_story_id(story_id)
    directory = layout.story_dir
    exact = [f"{epic}.{number}.story.md"]
    if title:
        exact += [f"{epic}.{number}.{story_slug(title)}.md", f"{story_key(story_id, title)}.md"]
    exact.append(f"story-{epic}.{number}.md")
    for name in exact:
        if (directory / name).is_file():
            return ensure_inside(layout.project, directory / name, what=f"story {story_id} file")
    if not directory.is_dir():
        return None
    found = sorted(
        {p for p in directory.glob(f"{epic}.{number}.*.md") if p.is_file()}
        | {p for p in directory.glob(f"{epic}-{number}-*.md") if p.is_file()}
    )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ProjectError(f"several files could be story {story_id}: {names}", path=str(directory))
    if not found:
        return None
    return ensure_inside(layout.project, found[0], what=f"story {story_id} file")


def new_story_path(layout: Layout, story_id: str, title: str) -> Path:
    """Where a story with no file yet is created (a name :func:`find_story_file` finds)."""
    validate_story_id(story_id)
    name = f"{story_key(story_id, title)}.md" if layout.version == "v6" else f"{story_id}.story.md"
    return ensure_inside(layout.project, layout.story_dir / name, what=f"story {story_id} file")


def _tasks(lines: list[str], start: int, end: int) -> tuple[tuple[StoryTask, ...], int, int]:
    entries: list[tuple[int, StoryTask]] = []
    checked = unchecked = 0
    for index in range(start, end):
        match = _CHECKBOX.match(lines[index])
        if match is None:
            continue
        indent = len(match.group(1).expandtabs(4))
        is_checked = match.group(2) != " "
        checked += is_checked
        unchecked += not is_checked
        entries.append((indent, StoryTask(match.group(3), is_checked, index + 1)))
    return _nest(entries), checked, unchecked


def _nest(entries: list[tuple[int, StoryTask]]) -> tuple[StoryTask, ...]:
    if not entries:
        return ()
    top = min(indent for indent, _ in entries)
    result: list[StoryTask] = []
    children: list[tuple[int, StoryTask]] = []
    for indent, task in entries:
        if indent == top or not result:
            if children:
                result[-1] = attrs.evolve(result[-1], subtasks=_nest(children))
                children = []
            result.append(task)
        else:
            children.append((indent, task))
    if children:
        result[-1] = attrs.evolve(result[-1], subtasks=_nest(children))
    return tuple(result)


def _section_text(
    lines: list[str], headings: list[Heading], pattern: re.Pattern[str]
) -> str | None:
    section = find_section(headings, len(lines), pattern)
    if section is None:
        return None
    return "".join(lines[section.start : section.end]).strip()


def _file_list(lines: list[str], headings: list[Heading]) -> tuple[str, ...]:
    section = find_section(headings, len(lines), _FILE_LIST)
    if section is None:
        return ()
    items: list[str] = []
    for line in lines[section.start : section.end]:
        match = _LIST_ITEM.match(line)
        if match is not None and match.group(1):
            items.append(match.group(1).replace("`", "").strip())
    return tuple(items)


def _review_findings(lines: list[str], headings: list[Heading]) -> tuple[ReviewFinding, ...]:
    findings: list[ReviewFinding] = []
    for position, heading in enumerate(headings):
        if not _REVIEW_FINDINGS.search(heading.title):
            continue
        section = section_of(headings, position, len(lines))
        for index in range(section.start, section.end):
            match = _CHECKBOX.match(lines[index])
            if match is None:
                continue
            body = match.group(3)
            tagged = _FINDING_TAGS.match(body)
            tags: tuple[str, ...] = ()
            if tagged is not None:
                tags = tuple(re.findall(r"\[([^\]]*)\]", tagged.group(1)))
                body = tagged.group(2)
            findings.append(ReviewFinding(body.strip(), match.group(2) != " ", tags, index + 1))
    return tuple(findings)


def _title_and_id(path: Path, lines: list[str], headings: list[Heading]) -> tuple[str, str]:
    for heading in headings:
        if heading.level == 1:
            match = _TITLE.match(heading.title)
            if match is not None:
                story_id = validate_story_id(match.group(1), path=str(path), line=heading.index + 1)
                return story_id, match.group(2).strip()
    named = _ID_FROM_NAME.match(path.name)
    if named is None:
        raise ProjectError(
            "cannot tell the story id: no '# Story N.M: Title' heading and no id in the file name",
            path=str(path),
        )
    title = headings[0].title if headings and headings[0].level == 1 else ""
    return f"{named.group(1)}.{named.group(2)}", title


def parse_story(path: Path) -> Story:
    """Parse a story file. No status, an unknown status word, bad UTF-8 … raise ProjectError."""
    doc = read_text_doc(path)
    lines = split_lines(doc.text)
    headings = scan_headings(lines)
    story_id, title = _title_and_id(path, lines, headings)
    status_line: StatusLine = find_status_line(path, lines, headings)
    tasks_section = find_section(headings, len(lines), _TASKS)
    tasks: tuple[StoryTask, ...] = ()
    checked = unchecked = 0
    if tasks_section is not None:
        tasks, checked, unchecked = _tasks(lines, tasks_section.start, tasks_section.end)
    return Story(
        path=path,
        story_id=story_id,
        title=title,
        status=status_line.status,
        status_text=status_line.value,
        status_line=status_line.index + 1,
        tasks=tasks,
        checked_tasks=checked,
        unchecked_tasks=unchecked,
        dev_agent_record=_section_text(lines, headings, _DEV_RECORD),
        file_list=_file_list(lines, headings),
        qa_results=_section_text(lines, headings, _QA_RESULTS),
        review_findings=_review_findings(lines, headings),
    )
