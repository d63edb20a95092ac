"""v6 sprint-status.yaml as the sprint's record of progress (issue 14 points 5 and 10)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad._ids import story_slug
from bmad_trio._bmad._sprint_status import (
    SprintEntry,
    SprintStatusFile,
    bmad_story_key,
    effective_status,
    read_sprint_entries,
    sprint_key_for,
)
from bmad_trio._bmad._status import StoryStatus
from bmad_trio._bmad._status_line import read_story_status

S = StoryStatus


@pytest.mark.parametrize(
    ("story_id", "title", "key"),
    [
        ("1.1", "User Authentication", "1-1-user-authentication"),
        ("1.10", "Intake 语义提交门", "1-10-intake-语义提交门"),
        ("2.6", "跨 Campaign 的模型边界冒烟测试", "2-6-跨-campaign-的模型边界冒烟测试"),
        ("3.2", "Café — crème brûlée!", "3-2-café-crème-brûlée"),
        ("4.1", "Don't   repeat_yourself", "4-1-don-t-repeat_yourself"),
        ("5.2a", "Split story", "5-2a-split-story"),
        ("01.3", "Leading zero epic", "1-3-leading-zero-epic"),
    ],
)
def test_story_keys_like_bmad(story_id: str, title: str, key: str) -> None:
    assert bmad_story_key(story_id, title) == key


def test_slug_is_cut_at_60_then_trimmed() -> None:
    title = "word " * 20  # "word-word-…": the cut lands after a hyphen
    slug = story_slug(title)
    assert len(slug) <= 60
    assert not slug.endswith("-")
    assert slug == ("word-" * 12).rstrip("-")


@pytest.mark.parametrize("title", ["🚀 ✨", "!!!", "—"])
def test_nothing_left_falls_back_to_a_hash(title: str) -> None:
    digest = hashlib.sha256(title.encode("utf-8")).hexdigest()[:8]
    assert story_slug(title) == ""
    assert bmad_story_key("2.1", title) == f"2-1-{digest}"


def test_key_lookup() -> None:
    keys = {
        "epic-1": "in-progress",
        "1-1-intake-语义提交门": "done",
        "1-2-login": "review",
        "1-2-login-old": "backlog",
        "1-3-search": "ready-for-dev",
    }
    assert sprint_key_for(keys, "1.1", "Intake 语义提交门") == "1-1-intake-语义提交门"
    assert sprint_key_for(keys, "1.1") == "1-1-intake-语义提交门"  # the one 1-1-… key
    assert sprint_key_for(keys, "1.2", "Login") == "1-2-login"  # exact key wins
    assert sprint_key_for(keys, "1.2") is None  # two candidates: no guess
    assert sprint_key_for(keys, "1.3", "Search (renamed)") == "1-3-search"
    assert sprint_key_for(keys, "1.4") is None


SPRINT = """\
# generated: 2026-01-01
# story_location: _bmad-output/implementation-artifacts
development_status:
  epic-1: in-progress
  1-1-login: done
  1-2-search: review   # Dev finished
  1-3-export: drafted
  1-4-audit: shipped-ish
  epic-1-retrospective: optional
"""


def test_entries_carry_lines(tmp_path: Path) -> None:
    path = tmp_path / "sprint-status.yaml"
    path.write_text(SPRINT)
    entries = read_sprint_entries(path)
    assert entries["1-2-search"] == SprintEntry(path, "1-2-search", "review", 6)
    assert entries["1-3-export"].status is S.READY_FOR_DEV  # legacy drafted
    assert entries["1-4-audit"].status is None
    assert entries["1-4-audit"].where() == f"{path}:8"
    assert SprintStatusFile(path).entry_for("1.2", "Search") == entries["1-2-search"]


def test_malformed_sprint_status_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "sprint-status.yaml"
    path.write_text("development_status:\n  1-1-login: done\n  1-2-x: [review\n")
    with pytest.raises(ProjectError, match="malformed YAML") as info:
        read_sprint_entries(path)
    assert info.value.path == str(path)
    assert info.value.line is not None


def _entry(word: str) -> SprintEntry:
    return SprintEntry(Path("sprint-status.yaml"), "1-2-search", word, 6)


@pytest.mark.parametrize(
    ("story", "sprint", "review_passed", "status", "source", "conflict"),
    [
        # agreement
        (S.REVIEW, "review", False, S.REVIEW, "story", None),
        (S.READY_FOR_DEV, "drafted", False, S.READY_FOR_DEV, "story", None),
        # sprint ahead and done: corroborated, followed
        (S.REVIEW, "done", False, S.DONE, "sprint-status", "following it (done in sprint-status)"),
        (S.IN_PROGRESS, "done", False, S.DONE, "sprint-status", "following it"),
        # sprint ahead, not done: followed only with a passed review
        (S.IN_PROGRESS, "review", False, S.IN_PROGRESS, "story", "not followed"),
        (S.IN_PROGRESS, "review", True, S.REVIEW, "sprint-status", "the review passed"),
        # sprint behind: never backwards
        (S.DONE, "review", False, S.DONE, "story", "never move back"),
        (S.REVIEW, "backlog", True, S.REVIEW, "story", "behind"),
        # failed / blocked stay unless done
        (S.BLOCKED, "in-progress", False, S.BLOCKED, "story", None),
        (S.FAILED, "done", False, S.DONE, "sprint-status", "story file says failed"),
        # no story file
        (None, "backlog", False, None, "none", None),
        (None, "done", False, S.DONE, "sprint-status", "no story file"),
        (None, "in-progress", False, None, "none", "drafting it"),
        # unknown sprint word: the story file, with the problem named
        (S.REVIEW, "shipped-ish", False, S.REVIEW, "story", "unknown sprint status 'shipped-ish'"),
    ],
)
def test_effective_status(
    story: StoryStatus | None,
    sprint: str,
    review_passed: bool,
    status: StoryStatus | None,
    source: str,
    conflict: str | None,
) -> None:
    result = effective_status(story, _entry(sprint), review_passed=review_passed)
    assert (result.status, result.source) == (status, source)
    if conflict is None:
        assert result.conflict is None
    else:
        assert result.conflict is not None
        assert conflict in result.conflict
        assert "sprint-status.yaml:6" in result.conflict


def test_no_sprint_entry_is_the_story_file() -> None:
    assert effective_status(S.REVIEW, None).status is S.REVIEW
    assert effective_status(None, None).source == "none"


def test_unreadable_story_status(tmp_path: Path) -> None:
    path = tmp_path / "1-2-search.md"
    path.write_text("# Story 1.2: Search\n\nStatus: who knows\n")
    reading = read_story_status(path)
    followed = effective_status(reading, _entry("review"))
    assert (followed.status, followed.source) == (S.REVIEW, "sprint-status")
    assert followed.conflict is not None
    assert "unreadable" in followed.conflict
    alone = effective_status(reading, None)
    assert (alone.status, alone.source) == (None, "unreadable")
    assert alone.conflict == reading.describe()
    assert f"{path}:3" in alone.conflict
    readable = read_story_status(tmp_path / "missing.md")
    assert effective_status(readable, _entry("done")).status is S.DONE
