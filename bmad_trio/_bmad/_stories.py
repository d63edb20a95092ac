"""Story files: finding them by every naming form in use, choosing new paths, and parsing them.

Forms found (see :func:`locate_story_file`): ``2.10.story.md``, ``2.10.some-slug.md``,
``2.10-some-slug.md``, ``2.10.md``, ``story-2.10-some-slug.md``, ``story-2.10.md``, v6
``2-10-some-slug.md`` and ``{key}.md``, in any story directory and its subfolders. New files get
``{story_dir}/{e}.{s}.story.md`` (v4/plain, what BMAD's create-next-story writes) or
``{implementation_artifacts}/{story_key}.md`` (v6).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .._errors import ProjectError
from ._ids import same_story_id, split_story_id, story_key, story_slug, validate_story_id
from ._layout import Layout
from ._markdown import Heading, find_section, scan_headings, section_of
from ._sprint_status import read_sprint_status
from ._status import StoryStatus
from ._status_line import StatusLine, find_status_line, read_story_status
from ._textio import ensure_inside, read_text_doc, split_lines

__all__ = [
    "ReviewFinding",
    "Story",
    "StoryFileChoice",
    "StoryTask",
    "cross_epic_dependency_met",
    "find_story_file",
    "locate_story_file",
    "new_story_path",
    "parse_story",
    "sprint_keys_for",
    "story_dirs_near",
]

_TITLE = re.compile(r"^Story\s+(\d+\.\d+[A-Za-z]?)\b\s*[:\-\u2013\u2014]?\s*(.*)$", re.IGNORECASE)
_CHECKBOX = re.compile(r"^([ \t]*)[-*+][ \t]+\[([ xX])\][ \t]*(.*?)[ \t]*\r?\n?$")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+(.*?)[ \t]*\r?\n?$")
_FINDING_TAGS = re.compile(r"^((?:\[[^\]]*\]\s*)+)(.*)$")
_TASKS = re.compile(r"^Tasks\b", re.IGNORECASE)
_DEV_RECORD = re.compile(r"^Dev\s+Agent\s+Record\b", re.IGNORECASE)
_FILE_LIST = re.compile(r"^File\s+List\b", re.IGNORECASE)
_QA_RESULTS = re.compile(r"^QA\s+Results\b", re.IGNORECASE)
_REVIEW_FINDINGS = re.compile(r"^Review\s+Findings\b", re.IGNORECASE)
_ID_FROM_NAME = re.compile(r"^(?:story[-_]?)?(\d+)[.-](\d+[A-Za-z]?)(?:[.\-_ ]|$)", re.IGNORECASE)


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


@attrs.frozen
class StoryFileChoice:
    """Which file is story ``story_id``'s, and why (for ``plan`` to say)."""

    path: Path | None
    reason: str
    """E.g. ``exact name 1.2.story.md``, ``only file named for 1.2``, ``title matches``."""
    candidates: tuple[Path, ...] = ()
    """Every file that could have been the story's (more than one: a choice was made)."""


_SEARCH_DEPTH = 3
_SUB_STORY = re.compile(r"^[.-]\d+(?:[.-]|$)")
_SIBLING_WORDS = re.compile(
    r"\.(?:validation(?:-report)?|report|context|review|qa|checklist|notes?|summary|bak|backup|old|orig)"
    r"(?:[-.][^.]*)?$",
    re.IGNORECASE,
)
_STORY_SUFFIX = re.compile(r"\.story$", re.IGNORECASE)
_WORD = re.compile(r"\w+")
_HEAD_ID = re.compile(r"^#\s*Story\s+(\d+\.\d+[A-Za-z]?)", re.IGNORECASE)


def _story_files(directory: Path, deep: bool) -> list[Path]:
    """Markdown files in ``directory`` and (``deep``) up to two levels of subfolders."""
    found: list[Path] = []
    base = len(directory.parts)
    for current, dirs, files in os.walk(directory):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not deep or len(here.parts) - base >= _SEARCH_DEPTH - 1:
            dirs.clear()
        found.extend(here / name for name in sorted(files) if name.lower().endswith(".md"))
    return found


def _name_rest(name: str, epic: str, number: str) -> str | None:
    """What follows the id in a file name named for story ``epic.number`` (None: not named so)."""
    match = re.match(
        rf"^(?:story[-_ ]?)?0*{re.escape(epic)}[.-]{re.escape(number)}(?P<rest>[.\-_ ].*)?\.md$",
        name,
        re.IGNORECASE,
    )
    if match is None:
        return None
    return match.group("rest") or ""


def _rest_slug(rest: str) -> str:
    return _STORY_SUFFIX.sub("", rest.lstrip(".-_ ")).lower()


def _heading_names_other_story(path: Path, story_id: str) -> bool:
    """True when the file's first ``# Story N.M`` heading names another story."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = [handle.readline() for _ in range(15)]
    except OSError:
        return False
    for line in head:
        match = _HEAD_ID.match(line.strip())
        if match is not None:
            return not same_story_id(match.group(1), story_id)
    return False


def _title_score(title: str, rest: str) -> float:
    wanted = {w for w in _WORD.findall(title.lower().replace("_", " ")) if len(w) > 1}
    have = {w for w in _WORD.findall(_rest_slug(rest).replace("_", " ")) if len(w) > 1}
    if not wanted or not have:
        return 0.0
    return len(wanted & have) / len(wanted | have)


def story_dirs_near(epic_path: Path) -> tuple[Path, ...]:
    """Story folders beside an epic file (``docs-test/epics/epic-1.md`` → ``docs-test/stories``),
    searched after the configured ones, as tools that take an epic path do."""
    return (epic_path.parent.parent / "stories", epic_path.parent / "stories")


_ARCHIVE = re.compile(r"^archived?s?$|^archive[-_ ]", re.IGNORECASE)
_HEAD_TITLE = re.compile(
    r"^#\s*Story\s+(\d+\.\d+[A-Za-z]?)\s*[:\-\u2013\u2014]?\s*(.*)$", re.IGNORECASE
)
_FRONT_TITLE = re.compile(r"""^title:\s*["']?(.*?)["']?\s*$""")


def _archive_dirs(layout: Layout, directories: Sequence[Path]) -> list[Path]:
    """Folders named ``archive*`` inside or beside the story folders, or under ``docs/``."""
    parents = dict.fromkeys(
        [*directories, *(d.parent for d in directories), layout.project / "docs"]
    )
    found: list[Path] = []
    for parent in parents:
        if not parent.is_dir() or not parent.is_relative_to(layout.project):
            continue
        for child in sorted(parent.iterdir()):
            if child.is_dir() and _ARCHIVE.match(child.name) and child not in found:
                found.append(child)
    return found


def _head(path: Path) -> tuple[str | None, str | None]:
    """(story id, title) from a file's ``# Story N.M: title`` heading or front-matter ``title:``."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = [handle.readline() for _ in range(15)]
    except OSError:
        return None, None
    for line in head:
        match = _HEAD_TITLE.match(line.strip())
        if match is not None:
            return match.group(1), match.group(2).strip()
        front = _FRONT_TITLE.match(line.strip())
        if front is not None:
            return None, front.group(1).strip()
    return None, None


def _archived(
    layout: Layout,
    story_id: str,
    title: str | None,
    directories: Sequence[Path],
    listings: dict[Path, list[Path]],
) -> StoryFileChoice:
    """A finished story moved to an archive folder (``docs/archive/v1.2/story-3.2-….md``).

    Archives also hold stories of an older numbering, so an archived file counts only when its
    title is the epic's (by its ``# Story`` heading, front-matter ``title:`` or its name; a file
    named for another id only by its heading's id and title) and its status says done: it is
    proof that the story is finished, never a file to continue work in."""
    if not title:
        return StoryFileChoice(None, "no file yet")
    epic, number = split_story_id(story_id)
    slug = story_slug(title)
    for folder in _archive_dirs(layout, directories):
        if folder not in listings:
            listings[folder] = _story_files(folder, True)
        for path in listings[folder]:
            rest = _name_rest(path.name, epic, number)
            if rest is not None and _SUB_STORY.match(rest):
                continue
            head_id, heading = _head(path)
            if head_id is not None and not same_story_id(head_id, story_id):
                continue  # its heading names another story (the name is the mistake)
            titled = heading is not None and story_slug(heading) == slug
            if rest is None:  # misnamed (story-5.3.x.md holding "# Story 3.3: x"): heading only
                same = titled and head_id is not None
            else:
                same = titled or _rest_slug(rest) == slug or _title_score(title, rest) >= 0.5
            if not same:
                continue
            safe = ensure_inside(layout.project, path, what=f"story {story_id} file")
            if read_story_status(safe).status is StoryStatus.DONE:
                return StoryFileChoice(safe, f"done, archived as {path.name}", (safe,))
            return StoryFileChoice(
                None, f"no file yet (an unfinished copy is archived: {path.name})"
            )
    return StoryFileChoice(None, "no file yet")


def locate_story_file(
    layout: Layout,
    story_id: str,
    title: str | None = None,
    *,
    keys: Sequence[str] = (),
    listings: dict[Path, list[Path]] | None = None,
) -> StoryFileChoice:
    """Find story ``story_id``'s file in the layout's story directories; never raises for names.

    Exact names win (``keys`` from sprint-status, ``{story_key}.md``, ``{e}.{s}.story.md``,
    ``{e}.{s}.{slug}.md``, ``{e}.{s}.md``, ``story-{e}.{s}.md`` …, first directory first). Else
    every file named for the id counts, except sub-stories (``1.1.2-…``) and sibling files
    (``….validation-report.md``, ``….context.md``, a file whose heading names another story).
    Several left: the title match, then the closest title, then ``.story.md``, then the shallowest.
    None left: a done story with the same title in an ``archive*`` folder (see :func:`_archived`).
    Subfolders are searched in the story location and in folders named ``stories``. ``listings``
    is a cache of directory listings the caller may share between stories (one ``plan``).
    """
    epic, number = split_story_id(story_id)
    slug = story_slug(title) if title else ""
    exact: list[str] = [f"{key}.md" for key in keys]
    if title:
        exact += [f"{story_key(story_id, title)}.md", f"{epic}.{number}.{slug}.md"]
    exact += [f"{epic}.{number}.story.md", f"{epic}.{number}.md", f"story-{epic}.{number}.md"]
    if slug:
        exact += [
            f"{epic}.{number}-{slug}.md",
            f"{epic}.{number}.{slug}.story.md",
            f"story-{epic}.{number}-{slug}.md",
            f"story-{epic}-{number}-{slug}.md",
        ]
    exact.append(f"{epic}-{number}.md")
    wanted = [name.lower() for name in exact]
    directories = [d for d in layout.story_search_dirs if d.is_dir()]
    for directory in directories:  # cheap first: the exact names, as written and lower-cased
        for name in dict.fromkeys(n for pair in zip(exact, wanted, strict=True) for n in pair):
            if (directory / name).is_file():
                path = ensure_inside(
                    layout.project, directory / name, what=f"story {story_id} file"
                )
                return StoryFileChoice(path, f"exact name {name}", (path,))
    if listings is None:
        listings = {}
    for directory in directories:
        if directory not in listings:
            deep = directory == layout.story_dir or directory.name.lower() == "stories"
            listings[directory] = _story_files(directory, deep)
    for directory in directories:
        top = {p.name.lower(): p for p in listings[directory] if p.parent == directory}
        for name in wanted:
            if name in top:
                path = ensure_inside(layout.project, top[name], what=f"story {story_id} file")
                return StoryFileChoice(path, f"exact name {top[name].name}", (path,))
    named: list[tuple[Path, str]] = []
    for directory in directories:
        for path in listings[directory]:
            rest = _name_rest(path.name, epic, number)
            if rest is None or path in (p for p, _ in named):
                continue
            if rest.lower()[1:] in wanted or (slug and _rest_slug(rest) == slug):
                safe = ensure_inside(layout.project, path, what=f"story {story_id} file")
                return StoryFileChoice(safe, f"title matches ({path.name})", (safe,))
            named.append((path, rest))
    candidates = [
        (path, rest)
        for path, rest in named
        if not _SUB_STORY.match(rest) and not _SIBLING_WORDS.search(rest.removesuffix(".md"))
    ]
    stems = {path.stem.lower() for path, _ in candidates}
    candidates = [
        (path, rest)
        for path, rest in candidates
        if not any(path.stem.lower().startswith(f"{stem}.") for stem in stems - {path.stem.lower()})
    ]
    if len(candidates) > 1:
        candidates = [c for c in candidates if not _heading_names_other_story(c[0], story_id)]
    if not candidates:
        if named:
            names = ", ".join(p.name for p, _ in named[:3])
            return StoryFileChoice(None, f"only sub-stories or sibling files ({names})")
        return _archived(layout, story_id, title, directories, listings)
    paths = tuple(
        ensure_inside(layout.project, p, what=f"story {story_id} file") for p, _ in candidates
    )
    if len(candidates) == 1:
        return StoryFileChoice(paths[0], f"only file named for {story_id}", paths)
    depth = {d: len(d.parts) for d in directories}

    def rank(item: tuple[int, tuple[Path, str]]) -> tuple[float, int, int, int]:
        index, (path, rest) = item
        level = min(
            (len(path.parts) - depth[d] for d in directories if path.is_relative_to(d)), default=9
        )
        score = _title_score(title or "", rest)
        return (-score, 0 if rest.lower().endswith(".story.md") or rest == "" else 1, level, index)

    best_index, (_, best_rest) = min(enumerate(candidates), key=rank)
    score = _title_score(title or "", best_rest)
    why = "closest title" if score > 0 else "first by name"
    names = ", ".join(p.name for p, _ in candidates)
    return StoryFileChoice(
        paths[best_index], f"{why} of {len(candidates)} files named for {story_id} ({names})", paths
    )


def find_story_file(
    layout: Layout, story_id: str, title: str | None = None, *, keys: Sequence[str] = ()
) -> Path | None:
    """The existing file of story ``story_id`` (see :func:`locate_story_file`), or None."""
    return locate_story_file(layout, story_id, title, keys=keys).path


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


def sprint_keys_for(development_status: Mapping[str, str], story_id: str) -> tuple[str, ...]:
    """The sprint-status keys of story ``story_id`` (``1-8-…`` for ``1.8``), as written."""
    epic, number = split_story_id(story_id)
    prefix = f"{epic}-{number}-".lower()
    return tuple(
        key
        for key in development_status
        if key.lower().startswith(prefix) or key.lower() == prefix[:-1]
    )


def cross_epic_dependency_met(
    layout: Layout,
    story_id: str,
    *,
    development: Mapping[str, str] | None = None,
    listings: dict[Path, list[Path]] | None = None,
) -> bool:
    """Whether story ``story_id`` (usually of another epic) is finished, read from disk now.

    Done means its story file says Done, or (no readable file) sprint-status.yaml says ``done``.
    A story with no file, or an unreadable one, is not done. ``plan`` and ``run`` both use this;
    ``development`` (sprint-status already read) and ``listings`` only save re-reading.
    """
    if development is None:
        development = {}
        sprint = layout.sprint_status_path
        if sprint is not None and sprint.is_file():
            try:
                development = read_sprint_status(sprint)
            except ProjectError:
                development = {}
    keys = sprint_keys_for(development, story_id)
    path = locate_story_file(layout, story_id, keys=keys, listings=listings).path
    if path is not None:
        try:
            return parse_story(path).status is StoryStatus.DONE
        except ProjectError:
            pass
    return any(development.get(key, "").strip().lower() == "done" for key in keys)
