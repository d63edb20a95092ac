from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad import (
    StoryStatus,
    detect_layout,
    find_epic,
    find_story_file,
    locate_story_file,
    new_story_path,
    parse_story,
    set_story_status,
)

Snapshot = Callable[[Path], dict[str, bytes]]


def test_v4_story_discovery_and_parse(v4_project: Path) -> None:
    layout = detect_layout(v4_project)
    stories = layout.story_dir
    assert find_story_file(layout, "1.1") == stories / "1.1.story.md"
    assert find_story_file(layout, "1.2", "Password Reset") == stories / "1.2.password-reset.md"
    assert find_story_file(layout, "1.2") == stories / "1.2.password-reset.md"  # glob form
    assert find_story_file(layout, "1.3", "Account Settings") is None
    assert new_story_path(layout, "1.3", "Account Settings") == stories / "1.3.story.md"

    story = parse_story(stories / "1.1.story.md")
    assert story.story_id == "1.1"
    assert story.title == "User Registration"
    assert story.status is StoryStatus.DONE
    assert story.status_text == "Done"
    assert story.status_line == 5
    assert [t.text for t in story.tasks] == [
        "Task 1: Registration form (AC: 1)",
        "Task 2: Password policy (AC: 2)",
        "Task 3: Confirmation email (AC: 3)",
    ]
    assert [s.text for s in story.tasks[0].subtasks] == [
        "Subtask 1.1: Email and password fields",
        "Subtask 1.2: Submit handler",
    ]
    assert (story.checked_tasks, story.unchecked_tasks) == (5, 0)
    assert story.file_list == ("src/accounts/register.py", "tests/test_register.py")
    assert story.dev_agent_record is not None
    assert "claude-sonnet-4" in story.dev_agent_record
    assert story.qa_results is not None
    assert "Gate: PASS" in story.qa_results
    assert story.review_findings == ()

    wip = parse_story(stories / "1.2.password-reset.md")
    assert wip.status is StoryStatus.IN_PROGRESS
    assert (wip.checked_tasks, wip.unchecked_tasks) == (2, 2)
    assert wip.tasks[0].subtasks[1].checked is False


def test_v6_story_discovery_and_parse(v6_project: Path) -> None:
    layout = detect_layout(v6_project)
    epic = find_epic(layout, 1)
    first, second, third = epic.stories
    impl = layout.story_dir
    assert find_story_file(layout, first.story_id, first.title) == impl / "1-1-product-list-page.md"
    assert find_story_file(layout, "1.1") == impl / "1-1-product-list-page.md"  # {e}-{s}-*.md
    assert find_story_file(layout, third.story_id, third.title) is None
    assert new_story_path(layout, third.story_id, third.title) == impl / f"{third.key}.md"

    story = parse_story(impl / "1-1-product-list-page.md")
    assert story.status is StoryStatus.DONE
    assert story.status_line == 3
    assert [(f.checked, f.tags, f.text) for f in story.review_findings] == [
        (True, ("Review", "Patch"), "Missing index on products.name [src/shop/catalog.py:12]"),
        (False, ("Review", "Defer"), "Pagination links lack rel attributes"),
    ]
    assert (story.checked_tasks, story.unchecked_tasks) == (3, 0)

    crlf = parse_story(impl / "1-2-product-search.md")
    assert crlf.status is StoryStatus.READY_FOR_DEV
    assert crlf.tasks[0].text == "Task 1: Search endpoint (AC: #1)"
    assert crlf.unchecked_tasks == 2
    assert second.story_id == crlf.story_id


@pytest.mark.parametrize(
    "name",
    ["1.4.story.md", "1.4.some-title.md", "1-4-some-title.md", "story-1.4.md", "1.4.other.md"],
)
def test_every_naming_form_is_found(tmp_path: Path, name: str) -> None:
    stories = tmp_path / "docs/stories"
    stories.mkdir(parents=True)
    (stories / name).write_text("# Story 1.4: Some Title\n\nStatus: draft\n")
    (stories / "1.40.story.md").write_text("# Story 1.40: Other\n\nStatus: draft\n")
    layout = detect_layout(tmp_path)
    assert find_story_file(layout, "1.4", "Some Title") == (stories / name).resolve()


def test_several_glob_matches_pick_one_and_say_why(tmp_path: Path) -> None:
    stories = tmp_path / "docs/stories"
    stories.mkdir(parents=True)
    (stories / "1.1.a.md").write_text("x")
    (stories / "1.1.b.md").write_text("x")
    choice = locate_story_file(detect_layout(tmp_path), "1.1")
    assert choice.path == (stories / "1.1.a.md").resolve()
    assert len(choice.candidates) == 2
    assert "1.1.a.md, 1.1.b.md" in choice.reason


@pytest.mark.parametrize("bad", ["../1.1", "/etc/passwd", "1.1/../../x", "1", "a.b"])
def test_story_id_that_could_escape_is_refused(tmp_path: Path, bad: str) -> None:
    layout = detect_layout(tmp_path)
    with pytest.raises(ProjectError, match="invalid story id"):
        find_story_file(layout, bad)
    with pytest.raises(ProjectError, match="invalid story id"):
        new_story_path(layout, bad, "x")


def test_story_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    stories = project / "docs/stories"
    stories.mkdir(parents=True)
    outside = tmp_path / "secret.md"
    outside.write_text("# Story 1.1: X\n\nStatus: draft\n")
    (stories / "1.1.story.md").symlink_to(outside)
    with pytest.raises(ProjectError, match="escapes the project"):
        find_story_file(detect_layout(project), "1.1")
    with pytest.raises(ProjectError, match="escapes the project"):
        set_story_status(stories / "1.1.story.md", StoryStatus.DONE, project=project)
    assert outside.read_text() == "# Story 1.1: X\n\nStatus: draft\n"


@pytest.mark.parametrize(
    ("text", "status", "line"),
    [
        ("# Story 1.1: T\n\n## Status\n\nApproved\n", StoryStatus.READY_FOR_DEV, 5),
        (
            "# Story 1.1: T\n\n## Status\n<!-- one of Draft, Approved -->\n**Review**\n",
            StoryStatus.REVIEW,
            5,
        ),
        ("# Story 1.1: T\n\nStatus: in-progress\n", StoryStatus.IN_PROGRESS, 3),
        ("# Story 1.1: T\n\n**Status:** Ready for Done\n", StoryStatus.REVIEW, 3),
        ("# Story 1.1: T\n\n## Status: Changes Required\n", StoryStatus.IN_PROGRESS, 3),
        ("# Story 1.1: T\n\n- Status: `Done` ✅\n", StoryStatus.DONE, 3),
        ("# Story 1.1: T\n\nstatus: Draft (awaiting approval)\n", StoryStatus.DRAFT, 3),
        (
            "# Story 1.1: T\n\n```\nStatus: done\n```\n\nStatus: drafted\n",
            StoryStatus.READY_FOR_DEV,
            7,
        ),
    ],
)
def test_status_forms(tmp_path: Path, text: str, status: StoryStatus, line: int) -> None:
    path = tmp_path / "1.1.story.md"
    path.write_text(text, encoding="utf-8")
    story = parse_story(path)
    assert story.status is status
    assert story.status_line == line


def test_story_id_from_file_name_when_no_title(tmp_path: Path) -> None:
    path = tmp_path / "2-3a-thing.md"
    path.write_text("Status: review\n")
    story = parse_story(path)
    assert story.story_id == "2.3a"
    assert story.title == ""


# --- set_story_status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "new", "after"),
    [
        ("## Status\n\nDraft\n", StoryStatus.READY_FOR_DEV, "## Status\n\nApproved\n"),
        ("## Status\n\nApproved\n", StoryStatus.IN_PROGRESS, "## Status\n\nInProgress\n"),
        ("## Status\n\nInProgress\n", StoryStatus.REVIEW, "## Status\n\nReview\n"),
        ("## Status\n\nIn Progress\n", StoryStatus.REVIEW, "## Status\n\nReady for Review\n"),
        ("## Status\n\nReady for Review\n", StoryStatus.IN_PROGRESS, "## Status\n\nIn Progress\n"),
        ("## Status\n\nReview\n", StoryStatus.DONE, "## Status\n\nDone\n"),
        ("## Status\n\n**Review**\n", StoryStatus.FAILED, "## Status\n\n**Failed**\n"),
        ("Status: ready-for-dev\n", StoryStatus.IN_PROGRESS, "Status: in-progress\n"),
        ("Status: review\n", StoryStatus.IN_PROGRESS, "Status: in-progress\n"),
        ("Status: in_progress\n", StoryStatus.READY_FOR_DEV, "Status: ready_for_dev\n"),
        ("Status: Draft\n", StoryStatus.BLOCKED, "Status: Blocked\n"),
        ("**Status:** Draft  \n", StoryStatus.DONE, "**Status:** Done  \n"),
        ("Status: drafted\n", StoryStatus.DONE, "Status: done\n"),
    ],
)
def test_set_story_status_keeps_the_spelling_family(
    tmp_path: Path, before: str, new: StoryStatus, after: str
) -> None:
    path = tmp_path / "1.1.story.md"
    header = "# Story 1.1: T\n\n"
    path.write_bytes((header + before + "\n## Tasks\n").encode())
    assert set_story_status(path, new) is True
    assert path.read_bytes() == (header + after + "\n## Tasks\n").encode()
    assert parse_story(path).status is new


def test_set_story_status_unchanged_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "1.1.story.md"
    path.write_text("# Story 1.1: T\n\nStatus: Ready for Done\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert set_story_status(path, StoryStatus.REVIEW) is False
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert path.read_text() == "# Story 1.1: T\n\nStatus: Ready for Done\n"


def test_set_story_status_in_fixtures_keeps_crlf(v6_project: Path) -> None:
    path = detect_layout(v6_project).story_dir / "1-2-product-search.md"
    before = path.read_bytes()
    assert set_story_status(path, StoryStatus.IN_PROGRESS, project=v6_project) is True
    assert path.read_bytes() == before.replace(
        b"Status: ready-for-dev\r\n", b"Status: in-progress\r\n"
    )
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_set_story_status_keeps_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "1.1.story.md"
    path.write_text("# Story 1.1: T\n\nStatus: draft\n")
    path.chmod(0o640)
    set_story_status(path, StoryStatus.DONE)
    assert path.stat().st_mode & 0o777 == 0o640


# --- bad story files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message", "line"),
    [
        (
            b"# Story 1.1: T\n\n## Status\n\nSomewhat done\n",
            "unknown story status 'Somewhat done'",
            5,
        ),
        (b"# Story 1.1: T\n\nStatus: wip\n", "unknown story status 'wip'", 3),
        (b"# Story 1.1: T\n\n## Story\n\nNo status here.\n", "has no Status", None),
        (b"# Story 1.1: T\n\n## Status\n\n## Story\n", "Status heading has no value", 3),
        (b"# Story 1.1: T\n\nStatus: d\xffne\n", "not valid UTF-8", 3),
    ],
)
def test_bad_story_files(
    tmp_path: Path, snapshot: Snapshot, content: bytes, message: str, line: int | None
) -> None:
    path = tmp_path / "1.1.story.md"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    for action in (lambda: parse_story(path), lambda: set_story_status(path, StoryStatus.DONE)):
        with pytest.raises(ProjectError, match=message) as info:
            action()
        assert info.value.path is not None
        assert info.value.path.endswith(path.name)
        assert info.value.line == line
    assert snapshot(tmp_path) == before


def test_story_without_id_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nStatus: draft\n")
    with pytest.raises(ProjectError, match="cannot tell the story id") as info:
        parse_story(path)
    assert info.value.path == str(path)


def test_enormous_story_file(tmp_path: Path, snapshot: Snapshot) -> None:
    path = tmp_path / "1.1.story.md"
    path.write_bytes(b"# Story 1.1: T\n\nStatus: draft\n" + b"y" * (5 * 1024 * 1024))
    before = snapshot(tmp_path)
    with pytest.raises(ProjectError, match="larger than 5 MB") as info:
        set_story_status(path, StoryStatus.DONE)
    assert info.value.path == str(path.resolve())
    assert snapshot(tmp_path) == before


def test_missing_story_file(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="file not found"):
        parse_story(tmp_path / "1.1.story.md")


def test_fifty_story_files_are_found_and_parsed(tmp_path: Path) -> None:
    # Their speed is measured by `python -m bench.reading`, not asserted here.
    source = Path(__file__).parent / "fixtures/v4/docs/stories/1.1.story.md"
    body = source.read_text().replace("Story 1.1:", "Story 1.{n}:")
    for n in range(1, 51):
        (tmp_path / f"1.{n}.story.md").write_text(body.replace("{n}", str(n)))
    layout = detect_layout(tmp_path, story_location=".")
    stories = [parse_story(find_story_file(layout, f"1.{n}") or tmp_path) for n in range(1, 51)]
    assert [s.story_id for s in stories] == [f"1.{n}" for n in range(1, 51)]


def test_a_done_story_moved_to_an_archive_folder_is_found_not_redrafted(tmp_path: Path) -> None:
    """A finished story moved to ``docs/archive/…`` counts when its title matches the epic's;
    an archived file of another story with the same number (renumbered) does not."""
    from bmad_trio._bmad import detect_layout, locate_story_file

    (tmp_path / "docs/stories").mkdir(parents=True)
    archive = tmp_path / "docs/archive/v1-and-earlier"
    archive.mkdir(parents=True)
    (archive / "story-3.2.user-admin-api.md").write_text(
        "# Story 3.2 : User Admin API and Screens\n\n## Status\n**Done** (2025-01-27)\n",
        encoding="utf-8",
    )
    (archive / "story-3.3-live-ticket.md").write_text(
        "# Story 3.3: Live ticket\n\n## Status\nDone\n", encoding="utf-8"
    )
    (archive / "story-3.4-exports.md").write_text(
        "# Story 3.4: Exports\n\n## Status\nIn Progress\n", encoding="utf-8"
    )
    (archive / "story-4.1-ecologic-format.md").write_text(
        '---\nstory_id: 4.1\ntitle: "CSV Exports"\nstatus: Done\n---\n\n# CSV\n', encoding="utf-8"
    )
    (archive / "story-5.5.signup-check.md").write_text(
        "# Story 3.5: Signup check\n\n- **Statut**: Done\n", encoding="utf-8"
    )
    layout = detect_layout(tmp_path)
    misnamed = locate_story_file(layout, "3.5", "Signup check")
    assert misnamed.path == (archive / "story-5.5.signup-check.md").resolve()
    assert locate_story_file(layout, "5.5", "Signup check").path is None  # heading says 3.5
    front = locate_story_file(layout, "4.1", "CSV Exports")
    assert front.path == (archive / "story-4.1-ecologic-format.md").resolve()
    found = locate_story_file(layout, "3.2", "User Admin API and Screens")
    assert found.path == (archive / "story-3.2.user-admin-api.md").resolve()
    assert "archive" in found.reason
    renumbered = locate_story_file(layout, "3.3", "Signup validation")
    assert renumbered.path is None
    unfinished = locate_story_file(layout, "3.4", "Exports")
    assert unfinished.path is None
    assert "story-3.4-exports.md" in unfinished.reason
