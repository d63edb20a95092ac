"""Every status form seen in real BMAD projects (issue 14 points 4 and 9); synthetic files.

Reading maps each form to a canonical status, or reports it as unreadable with the reason and the
line (never raising). Writing changes only the status words and keeps the line's own form.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmad_trio import ProjectError
from bmad_trio._bmad._status import StoryStatus, find_status_phrase
from bmad_trio._bmad._status_line import (
    find_status_line,
    read_status,
    read_story_status,
    set_story_status,
)
from bmad_trio._bmad._textio import split_lines

S = StoryStatus
HEAD = "# Story 1.2: Login\n\n"
TAIL = "\n## Story\n\nAs a user, I want to log in.\n\n## QA Results\n\n**Status**: PASS\n"

# (body between HEAD and TAIL, canonical status, form, 1-based line of the value, qa_passed)
FORMS: list[tuple[str, StoryStatus, str, int, bool]] = [
    ("## Status\n\nDraft\n", S.DRAFT, "heading", 5, False),
    ("## Status\nApproved\n", S.READY_FOR_DEV, "heading", 4, False),
    (
        "## Status\n\n**Status**: Ready for Done\n\n**Last Updated**: 2025-01-01 10:00\n",
        S.REVIEW,
        "heading-label",
        5,
        True,
    ),
    ("### Status\n\n**Status:** In Development\n", S.IN_PROGRESS, "heading-label", 5, False),
    ("## Status\n\n<!-- set by Dev -->\n\n✅ COMPLETED\n", S.DONE, "heading", 7, False),
    ("## Status\n\n**Done** (2025-01-27)\n", S.DONE, "heading", 5, False),
    (
        "## Status\n\n✅ **COMPLETED** - Signed off by Product Owner (2025-08-10)\n",
        S.DONE,
        "heading",
        5,
        False,
    ),
    ("## Status\n\n**COMPLETE** ✅ (2025-08-14)\n", S.DONE, "heading", 5, False),
    ("## Status\n\nDraft - Awaiting PM Review\n", S.DRAFT, "heading", 5, False),
    ("## Status\n\nReady for Review (QA Fixes Applied)\n", S.REVIEW, "heading", 5, False),
    (
        "## Status\n\nIn Development - Tasks 1-7 completed, Tests pending\n",
        S.IN_PROGRESS,
        "heading",
        5,
        False,
    ),
    ("## Status\n\nON HOLD\n", S.BLOCKED, "heading", 5, False),
    ("## 📊 Status\n\nProposed\n", S.DRAFT, "heading", 5, False),
    (
        "## Status\n\nPlanning Complete (Ready for Implementation)\n",
        S.READY_FOR_DEV,
        "heading",
        5,
        False,
    ),
    ("Status: ready-for-dev\n", S.READY_FOR_DEV, "line", 3, False),
    ("Status: in-progress\n", S.IN_PROGRESS, "line", 3, False),
    ("Status: review\n", S.REVIEW, "line", 3, False),
    ("Status: done\n", S.DONE, "line", 3, False),
    ("Status: drafted\n", S.READY_FOR_DEV, "line", 3, False),
    ("Status: contexted\n", S.IN_PROGRESS, "line", 3, False),
    ("Status: backlog\n", S.DRAFT, "line", 3, False),
    ("**Status:** Ready\n", S.READY_FOR_DEV, "line", 3, False),
    ("**Status**: Review Passed\n", S.REVIEW, "line", 3, True),
    ("**Status: CONCERNS fixed, Done**\n", S.DONE, "line", 3, False),
    ("**Status:** ✅ APPROVED\n", S.READY_FOR_DEV, "line", 3, False),
    ("**Status**: 📋 **Planned**\n", S.DRAFT, "line", 3, False),
    ("**Status:** done *(Pending: PM approval for ADR-004)*\n", S.DONE, "line", 3, False),
    ("- **Status**: ✅ Complete\n", S.DONE, "line", 3, False),
    ("> **Status:** In Progress\n", S.IN_PROGRESS, "line", 3, False),
    ("## Status: Draft\n", S.DRAFT, "line", 3, False),
    ("**Story Status:** Ready for Review (QA fixes applied)\n", S.REVIEW, "line", 3, False),
    ("**Status:** ✅ ALL CRITERIA MET - READY FOR REVIEW\n", S.REVIEW, "line", 3, False),
    ("- **Statut**: Approuvée\n", S.READY_FOR_DEV, "line", 3, False),
    ("**Statut :** ✅ Terminé et Validé\n", S.DONE, "line", 3, False),
    ("**Statut:** En cours\n", S.IN_PROGRESS, "line", 3, False),
    ("| Field | Value |\n|---|---|\n| Status | **Done** |\n", S.DONE, "table", 5, False),
    ("<!-- Status: review -->\n", S.REVIEW, "comment", 3, False),
    ("**Status**: Ready for QA Validation\n", S.REVIEW, "line", 3, False),
    ("**Status**: CLOSED ✅\n", S.DONE, "line", 3, False),
    ("Status: Failed\n", S.FAILED, "line", 3, False),
    ("Status: Blocked - waiting on the API key\n", S.BLOCKED, "line", 3, False),
    ("**Status**: Changes Required\n", S.IN_PROGRESS, "line", 3, False),
]


@pytest.mark.parametrize(("body", "status", "form", "line", "qa_passed"), FORMS)
def test_every_form_reads(
    tmp_path: Path, body: str, status: StoryStatus, form: str, line: int, qa_passed: bool
) -> None:
    path = tmp_path / "1.2.story.md"
    path.write_text(HEAD + body + TAIL, encoding="utf-8")
    reading = read_story_status(path)
    assert (reading.status, reading.form, reading.line, reading.qa_passed) == (
        status,
        form,
        line,
        qa_passed,
    ), reading
    assert reading.reason is None
    assert reading.describe() == status.value


def test_front_matter_status(tmp_path: Path) -> None:
    path = tmp_path / "story-debt.md"
    path.write_text("---\nstory_id: debt.x\nstatus: Done\n---\n\n### Objectif\n\nStatus: Draft\n")
    reading = read_story_status(path)
    assert (reading.status, reading.form, reading.line) == (S.DONE, "front-matter", 3)


def test_status_in_code_fence_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "1.2.story.md"
    path.write_text(HEAD + "```\nStatus: done\n```\n\n## Status\n\nDraft\n")
    assert read_story_status(path).status is S.DRAFT


# --- unreadable: reported, never raised ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason", "line"),
    [
        ("## Status\n\nWaiting for the stars to align\n", "unknown story status", 5),
        ("**Status:** CRITICAL - see remediation plan\n", "unknown story status", 3),
        ("## Status\n\n## Story\n", "no value under it", 3),
        ("Nothing here.\n", "has no Status", None),
    ],
)
def test_unreadable_status_is_reported(
    tmp_path: Path, body: str, reason: str, line: int | None
) -> None:
    path = tmp_path / "1.2.story.md"
    path.write_text(HEAD + body)
    reading = read_story_status(path)
    assert reading.status is None
    assert not reading.readable
    assert reading.reason is not None
    assert reason in reading.reason
    assert reading.line == line
    described = reading.describe()
    assert described.startswith("unreadable: ")
    assert str(path) in described
    if line is not None:
        assert reading.text == (HEAD + body).split("\n")[line - 1]
        assert f"{path}:{line}: {reading.text.strip()}" in described
    with pytest.raises(ProjectError, match=reason):  # the old raising API stays for callers
        find_status_line(path, split_lines(path.read_text()))
    before = path.read_bytes()
    with pytest.raises(ProjectError):  # nothing is written over an unreadable status
        set_story_status(path, S.DONE)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("data", "reason", "line"),
    [
        (b"# Story 1.2\n\nStatus: \xff\xfe done\n", "file is not valid UTF-8", 3),
        (None, "file not found", None),
    ],
)
def test_unreadable_file_is_an_unreadable_status(
    tmp_path: Path, data: bytes | None, reason: str, line: int | None
) -> None:
    path = tmp_path / "1.2.story.md"
    if data is not None:
        path.write_bytes(data)
    reading = read_story_status(path)
    assert reading.status is None
    assert reading.reason == reason
    assert reading.line == line


def test_read_status_on_lines_never_raises() -> None:
    reading = read_status(Path("x.md"), ["## Status\n"])
    assert reading.status is None
    assert reading.line == 1


# --- writing keeps the form ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "new", "expected"),
    [
        ("**Status**: Ready for Done\n", S.DONE, "**Status**: Done\n"),
        ("✅ **COMPLETED** - 2025-08-08\n", S.IN_PROGRESS, "✅ **IN PROGRESS** - 2025-08-08\n"),
        ("**Done** (2025-01-27)\n", S.REVIEW, "**Review** (2025-01-27)\n"),
        ("Status: ready-for-dev\n", S.IN_PROGRESS, "Status: in-progress\n"),
        ("Status: ready_for_dev\n", S.REVIEW, "Status: review\n"),
        (
            "**Status:** In Development - tasks 1-3\n",
            S.REVIEW,
            "**Status:** Ready for Review - tasks 1-3\n",
        ),
        ("| Status | Draft |\n", S.READY_FOR_DEV, "| Status | Approved |\n"),
        ("<!-- Status: review -->\n", S.DONE, "<!-- Status: done -->\n"),
        ("- **Statut**: Approuvée\n", S.IN_PROGRESS, "- **Statut**: InProgress\n"),
        ("Status: ON-HOLD\n", S.IN_PROGRESS, "Status: IN-PROGRESS\n"),
    ],
)
def test_write_changes_only_the_status_words(
    tmp_path: Path, line: str, new: StoryStatus, expected: str
) -> None:
    heading = not line.lower().lstrip("-*> |<!").lstrip().startswith(("status", "statut"))
    body = ("## Status\n\n" + line) if heading else line
    path = tmp_path / "1.2.story.md"
    path.write_text(HEAD + body + TAIL)
    assert set_story_status(path, new)
    assert path.read_text() == HEAD + body.replace(line, expected) + TAIL
    assert read_story_status(path).status is new


def test_front_matter_write(tmp_path: Path) -> None:
    path = tmp_path / "story.md"
    path.write_text("---\ntitle: x\nstatus: 'Draft'  # by SM\n---\n\nbody\n")
    assert set_story_status(path, S.READY_FOR_DEV)
    assert path.read_text() == "---\ntitle: x\nstatus: 'Approved'  # by SM\n---\n\nbody\n"


# --- Hypothesis: every form, every status, round trip -----------------------------------------

_TEMPLATES = [
    "## Status\n\n{v}\n",
    "### Status\n{v}\n",
    "## Status\n\n**Status**: {v}\n\n**Last Updated**: 2025-01-01 10:00:00\n",
    "Status: {v}\n",
    "**Status:** {v}\n",
    "**Status**: {v}\n",
    "- **Status**: {v}\n",
    "> **Status:** {v}\n",
    "## Status: {v}\n",
    "| Status | {v} |\n",
    "<!-- Status: {v} -->\n",
    "**Statut :** {v}\n",
    "**Story Status:** {v}\n",
]
_FRONT = "---\nstory_id: x\nstatus: {v}\n---\n"
_DECORATIONS = [
    "{w}",
    "**{w}**",
    "✅ {w}",
    "✅ **{w}**",
    "{w} ✅",
    "**{w}** (2025-01-27)",
    "{w} - see the notes below",
    "{w} (QA fixes applied)",
    "📋 **{w}**",
    "`{w}`",
]
_WORDS = [
    "Draft", "Proposed", "backlog", "Approved", "Ready", "ready-for-dev", "READY",
    "Ready for Development", "drafted", "InProgress", "In Progress", "in-progress", "in_progress",
    "In Development", "contexted", "Review", "Ready for Review", "review", "Ready for Done",
    "Review Passed", "Done", "done", "DONE", "Complete", "COMPLETED", "Closed", "Failed",
    "Blocked", "ON HOLD", "Approuvée", "Terminé", "En cours",
]  # fmt: skip


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, str, str]:
    """(file text, its status value, eol)."""
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    word = draw(st.sampled_from(_WORDS))
    value = draw(st.sampled_from(_DECORATIONS)).format(w=word)
    front = draw(st.booleans()) and "**" not in value and "`" not in value
    template = _FRONT if front else draw(st.sampled_from(_TEMPLATES))
    body = template.format(v=value)
    text = body if front else HEAD + body
    text = text + TAIL
    return text.replace("\n", eol), value, eol


@settings(max_examples=400, deadline=None)
@given(documents(), st.sampled_from(list(StoryStatus)), st.booleans())
def test_round_trip_every_form(document: tuple[str, str, str], new: StoryStatus, bom: bool) -> None:
    text, value, _eol = document
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1.2.story.md"
        path.write_bytes(data)
        before = read_story_status(path)
        assert before.status is not None, before.describe()
        phrase = find_status_phrase(value)
        assert phrase is not None
        assert before.status is phrase.status
        changed = set_story_status(path, new)
        after = read_story_status(path)
        written = path.read_bytes()
        leftovers = sorted(p.name for p in Path(tmp).iterdir())
    assert leftovers == ["1.2.story.md"]
    assert after.status is new
    assert (after.form, after.line) == (before.form, before.line)
    assert changed == (before.status is not new)
    if not changed:
        assert written == data
        return
    old_lines = data.split(b"\n")
    new_lines = written.split(b"\n")
    assert len(old_lines) == len(new_lines)
    index = (before.line or 0) - 1
    differing = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    assert differing == [index]
    # only the status words changed: what is around them on the line is kept
    old_line, new_line = old_lines[index].decode(), new_lines[index].decode()
    assert before.text is not None
    assert after.text is not None
    start = old_line.index(value) + phrase.start
    end = start + len(phrase.text)
    assert new_line.startswith(old_line[:start])
    assert new_line.endswith(old_line[end:])
