"""Story file names as real BMAD projects write them (each form seen in a public project)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmad_trio._bmad import detect_layout, find_story_file, locate_story_file


def _write(root: Path, relative: str, text: str = "") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text or "# Story\n\nStatus: Draft\n")
    return path.resolve()


@pytest.mark.parametrize(
    "name",
    [
        "2.10.story.md",
        "2.10.some-slug.md",
        "2.10-some-slug.md",
        "2.10.md",
        "story-2.10-some-slug.md",
        "story-2.10.md",
        "2-10-some-slug.md",
        "2.10.some-slug.story.md",
    ],
)
def test_every_naming_form_is_found(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, f"docs/stories/{name}")
    _write(tmp_path, "docs/stories/2.1.story.md")  # 2.1 is a prefix of 2.10 and never taken
    layout = detect_layout(tmp_path)
    assert find_story_file(layout, "2.10", "Some Slug") == path
    assert find_story_file(layout, "2.10") == path


def test_sub_stories_and_validation_reports_are_not_the_story(tmp_path: Path) -> None:
    story = _write(tmp_path, "docs/stories/1.1.boutons-prix.story.md")
    _write(tmp_path, "docs/stories/1.1.1-tracage-boutons.story.md")
    _write(tmp_path, "docs/stories/1.1.2-fix-transaction-bug.story.md")
    _write(tmp_path, "docs/stories/1.1.boutons-prix.validation-report.md")
    choice = locate_story_file(detect_layout(tmp_path), "1.1", "Boutons prix prédéfinis")
    assert choice.path == story
    assert choice.reason == "only file named for 1.1"


def test_only_sub_stories_means_no_file(tmp_path: Path) -> None:
    _write(tmp_path, "docs/stories/1.1.1-tracage.story.md")
    choice = locate_story_file(detect_layout(tmp_path), "1.1")
    assert choice.path is None
    assert "sub-stories" in choice.reason


def test_v6_unicode_key_beside_its_validation_report(tmp_path: Path) -> None:
    (tmp_path / "_bmad/bmm").mkdir(parents=True)
    impl = "_bmad-output/implementation-artifacts"
    story = _write(tmp_path, f"{impl}/1-8-platform-forwarding-与审计边界.md")
    _write(tmp_path, f"{impl}/1-8-platform-forwarding-与审计边界.validation-report.md")
    layout = detect_layout(tmp_path)
    assert find_story_file(layout, "1.8", "Platform Forwarding 与审计边界") == story
    assert find_story_file(layout, "1.8") == story


def test_title_decides_between_several_files(tmp_path: Path) -> None:
    _write(tmp_path, "docs/stories/1.7-audit-references.md", "# Audit\n")
    _write(tmp_path, "docs/stories/1.7-deployment-staging-guide.md", "# Guide\n")
    story = _write(tmp_path, "docs/stories/1.7.renommage-global-recyclique.story.md")
    layout = detect_layout(tmp_path)
    choice = locate_story_file(layout, "1.7", "Renommage global Recyclique")
    assert choice.path == story
    loose = locate_story_file(layout, "1.7", "Renommage global")
    assert loose.path == story
    assert loose.reason.startswith("closest title of 3 files")


def test_a_file_whose_heading_names_another_story_is_skipped(tmp_path: Path) -> None:
    _write(tmp_path, "docs/stories/3.1-notes.md", "# Story 3.10: Other\n")
    story = _write(tmp_path, "docs/stories/3.1-real.md", "# Story 3.1: Real\n")
    assert locate_story_file(detect_layout(tmp_path), "3.1").path == story


def test_letter_suffixed_ids_in_either_case(tmp_path: Path) -> None:
    upper = _write(tmp_path, "docs/stories/story-1.12B-chunking.md")
    lower = _write(tmp_path, "docs/stories/3.4a.split-things.story.md")
    _write(tmp_path, "docs/stories/1.12.story.md")
    layout = detect_layout(tmp_path)
    assert find_story_file(layout, "1.12B", "Chunking") == upper
    assert find_story_file(layout, "3.4A") == lower
    assert find_story_file(layout, "1.12") == (tmp_path / "docs/stories/1.12.story.md").resolve()


def test_nested_folders_under_the_story_location(tmp_path: Path) -> None:
    (tmp_path / ".bmad-core").mkdir()
    (tmp_path / ".bmad-core/core-config.yaml").write_text("devStoryLocation: docs/epics\n")
    story = _write(tmp_path, "docs/epics/epic-1-foundation/stories/1.2.wallet-connection.md")
    assert find_story_file(detect_layout(tmp_path), "1.2", "Wallet Connection") == story


def test_top_level_exact_name_beats_an_archived_copy(tmp_path: Path) -> None:
    _write(tmp_path, "docs/stories/archive/1.3.story.md")
    story = _write(tmp_path, "docs/stories/1.3.story.md")
    assert find_story_file(detect_layout(tmp_path), "1.3") == story


def test_sprint_status_story_location_is_searched(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "docs/sprint-artifacts/sprint-status.yaml",
        'story_location: "{project-root}/docs/sprint-artifacts/stories"\n'
        "development_status:\n  1-1-scaffolding: done\n",
    )
    story = _write(tmp_path, "docs/sprint-artifacts/stories/1-1-scaffolding.md")
    layout = detect_layout(tmp_path)
    assert layout.story_dir == story.parent
    assert find_story_file(layout, "1.1", "Scaffolding") == story


def test_v6_alpha_install_under_bmad(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "bmad/bmm/config.yaml",
        "dev_story_location: '{project-root}/docs/stories'\noutput_folder: '{project-root}/docs'\n",
    )
    story = _write(tmp_path, "docs/stories/story-2.1-hybrid-search.md")
    layout = detect_layout(tmp_path)
    assert layout.version == "v6"
    assert layout.story_dir == story.parent
    assert find_story_file(layout, "2.1", "Hybrid Search Integration") == story


def test_foreign_absolute_story_location_is_rerooted_with_a_note(tmp_path: Path) -> None:
    impl = "_bmad-output/implementation-artifacts"
    (tmp_path / "_bmad/bmm").mkdir(parents=True)
    _write(
        tmp_path,
        f"{impl}/sprint-status.yaml",
        f"story_location: /Users/someone/proj/{impl}\ndevelopment_status: {{}}\n",
    )
    story = _write(tmp_path, f"{impl}/2-1-thing.md")
    layout = detect_layout(tmp_path)
    assert find_story_file(layout, "2.1", "Thing") == story
    assert any("outside the project" in note for note in layout.notes)
