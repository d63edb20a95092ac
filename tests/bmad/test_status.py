from __future__ import annotations

import tempfile
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmad_trio._bmad import (
    SpellingFamily,
    StoryStatus,
    parse_status_word,
    parse_story,
    set_story_status,
    spell_status,
    spelling_family_of,
)

S = StoryStatus
MAPPING: dict[str, StoryStatus] = {
    "Draft": S.DRAFT,
    "backlog": S.DRAFT,
    "Approved": S.READY_FOR_DEV,
    "ready-for-dev": S.READY_FOR_DEV,
    "drafted": S.READY_FOR_DEV,
    "InProgress": S.IN_PROGRESS,
    "In Progress": S.IN_PROGRESS,
    "in-progress": S.IN_PROGRESS,
    "in_progress": S.IN_PROGRESS,
    "contexted": S.IN_PROGRESS,
    "Changes Required": S.IN_PROGRESS,
    "Review": S.REVIEW,
    "Ready for Review": S.REVIEW,
    "Ready for Done": S.REVIEW,
    "Done": S.DONE,
    "Completed": S.DONE,
    "Failed": S.FAILED,
    "Blocked": S.BLOCKED,
}


@pytest.mark.parametrize(("word", "status"), MAPPING.items())
def test_every_spelling_maps(word: str, status: StoryStatus) -> None:
    assert parse_status_word(word) is status
    assert parse_status_word(f"**{word}**") is status
    assert parse_status_word(f"{word} (see notes)") is status


@pytest.mark.parametrize("word", ["", "Not done", "Somewhat done", "optional", "Draftish", "pass"])
def test_unknown_words(word: str) -> None:
    assert parse_status_word(word) is None


@pytest.mark.parametrize(
    ("word", "family"),
    [
        ("Draft", SpellingFamily.V4),
        ("InProgress", SpellingFamily.V4),
        ("In Progress", SpellingFamily.V4_SPACED),
        ("Ready for Review", SpellingFamily.V4_SPACED),
        ("in-progress", SpellingFamily.KEBAB),
        ("review", SpellingFamily.KEBAB),
        ("in_progress", SpellingFamily.SNAKE),
        ("Approved (waiting)", SpellingFamily.V4),
    ],
)
def test_spelling_family(word: str, family: SpellingFamily) -> None:
    assert spelling_family_of(word) is family


def _respell(word: str, data: st.DataObject) -> str:
    out: list[str] = []
    for char in word:
        if char in " _-":
            out.append(data.draw(st.sampled_from([" ", "_", "-", "", "  "])))
        else:
            out.append(char.upper() if data.draw(st.booleans()) else char.lower())
    return "".join(out)


@given(st.sampled_from(sorted(MAPPING)), st.data())
def test_case_space_underscore_hyphen_insensitive(word: str, data: st.DataObject) -> None:
    assert parse_status_word(_respell(word, data)) is MAPPING[word]


@given(st.sampled_from(list(StoryStatus)), st.sampled_from(list(SpellingFamily)))
def test_spelled_words_read_back(status: StoryStatus, family: SpellingFamily) -> None:
    word = spell_status(status, family)
    assert parse_status_word(word) is status
    again = spell_status(status, spelling_family_of(word))
    assert parse_status_word(again) is status


# --- round trip through a file ------------------------------------------------------------------

_SAFE_PREFIX = st.text(
    # No "<" either: a line such as "<!A" or "<script" opens an HTML block that, in CommonMark
    # (and so in every Markdown reader), runs on over the Status heading and hides it.
    alphabet=st.characters(blacklist_characters="#:`~<\r\n", blacklist_categories=("Cs",)),
    max_size=40,
)
_HEADING_WORDS = [
    "Draft",
    "Approved",
    "InProgress",
    "In Progress",
    "Review",
    "Ready for Review",
    "Done",
]
_LINE_WORDS = ["backlog", "ready-for-dev", "in-progress", "review", "done", "drafted", "Draft"]


@st.composite
def story_documents(draw: st.DrawFn) -> tuple[bytes, str, bytes]:
    """(file bytes, the status word written, bytes after the status line)."""
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.booleans())
    heading = draw(st.booleans())
    word = draw(st.sampled_from(_HEADING_WORDS if heading else _LINE_WORDS))
    prefix_lines = draw(st.lists(_SAFE_PREFIX, max_size=4))
    suffix = draw(st.text(max_size=200))
    head = f"# Story 1.1: Title{eol}{eol}" + "".join(line + eol for line in prefix_lines)
    status = f"## Status{eol}{eol}{word}{eol}" if heading else f"Status: {word}{eol}"
    text = head + status + suffix
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    return data, word, suffix.encode()


@settings(max_examples=150, deadline=None)
@given(story_documents(), st.sampled_from(list(StoryStatus)))
def test_round_trip_changes_only_the_status(
    document: tuple[bytes, str, bytes], new: StoryStatus
) -> None:
    data, word, suffix = document
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1.1.story.md"
        path.write_bytes(data)
        before = parse_story(path)
        changed = set_story_status(path, new)
        after = parse_story(path)
        written = path.read_bytes()
        leftovers = sorted(p.name for p in Path(tmp).iterdir())
    assert leftovers == ["1.1.story.md"]
    assert after.status is new
    assert changed == (before.status is not new)
    assert attrs.evolve(after, status=before.status, status_text=before.status_text) == before
    if not changed:
        assert written == data
        return
    # exactly one span differs: the status word
    start = data.index(word.encode(), len(data) - len(suffix) - len(word.encode()) - 2)
    new_word = after.status_text.encode()
    assert written[:start] == data[:start]
    assert written[start : start + len(new_word)] == new_word
    assert written[start + len(new_word) :] == data[start + len(word.encode()) :]
    assert written.endswith(suffix)
