"""Epic documents as real BMAD projects write them (each form seen in a public project)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad import detect_layout, find_epic, parse_epic, parse_epic_document


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_numbered_prd_sections(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "docs/prd/5-epic-details.md",
        "# 5. Epic Details\n\n## 5.1 Epic 1: Foundation\n\n### Story 1.1: Setup\n\n"
        "## 5.2 Epic 2: Scoring\n\n### Story 2.1: Score\n\n### Story 2.2: More\n",
    )
    epics = parse_epic_document(path)
    assert [(e.number, e.title, len(e.stories)) for e in epics] == [
        (1, "Foundation", 1),
        (2, "Scoring", 2),
    ]


def test_bold_paragraph_stories(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "docs/epics.md",
        "## Epic 4: Enhancements\n\n**Story 4.6: Quality Framework** ✅ COMPLETE\n\nAs a user, I want x.\n\n"
        "**Story 4.6 Completion Criteria:**\n\n- done\n\n### Story 4.7: API Layer\n\n"
        "**Prerequisites:** Story 4.6 (quality validation complete)\n",
    )
    epic = parse_epic(path, number=4)
    assert [(s.story_id, s.title) for s in epic.stories] == [
        ("4.6", "Quality Framework"),
        ("4.7", "API Layer"),
    ]
    assert epic.stories[1].dependencies == ("4.6",)


def test_letter_ids_and_ranges_in_dependencies(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "epic-1.md",
        "## Epic 1: A\n\n### Story 1.1: One\n\n### Story 1.2: Two\n\n### Story 1.3: Three\n\n"
        "## Story 1.12A: Test set\n\n## Story 1.12B: Tracking\n\n"
        "**Dependencies:** Story 1.12A (test set must exist), All Stories 1.1-1.3\n",
    )
    epic = parse_epic(path)
    assert epic.stories[-1].story_id == "1.12B"
    assert epic.stories[-1].dependencies == ("1.12A", "1.1", "1.2", "1.3")


def test_stories_are_filed_under_their_own_epic_with_a_warning(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "docs/prd/epic-5.md",
        "# Epic 5: E\n\n### Story 5.1: A\n\n### Story 3.2: Stray\n\n#### Story 5: no id\n\n"
        "```markdown\n### Story 5.9: in a code block\n```\n",
    )
    epics = {e.number: e for e in parse_epic_document(path)}
    assert [s.story_id for s in epics[5].stories] == ["5.1"]
    assert [s.story_id for s in epics[3].stories] == ["3.2"]
    warnings = "\n".join(epics[5].warnings)
    assert f"{path}:5: story 3.2 is under the heading of epic 5" in warnings
    assert f"{path}:7: heading 'Story 5: no id' looks like a story" in warnings
    assert "5.9" not in warnings


def test_epic_number_found_in_epics_star_and_epic_details(tmp_path: Path) -> None:
    (tmp_path / "_bmad/bmm").mkdir(parents=True)
    planning = "_bmad-output/planning-artifacts"
    _write(tmp_path, f"{planning}/epics.md", "## Epic 1: A\n\n### Story 1.1: One\n")
    _write(
        tmp_path,
        f"{planning}/epics-agent-adoption.md",
        "## Epic 22: B\n\n### Story 22.1: Two\n\n## Epic 23: C\n\n### Story 23.1: Three\n",
    )
    _write(tmp_path, f"{planning}/epic-22-retro.md", "### Story 22.1: Retro copy\n")
    epic = find_epic(detect_layout(tmp_path), 23)
    assert epic.path.name == "epics-agent-adoption.md"
    assert [s.story_id for s in epic.stories] == ["23.1"]


def test_v4_epic_details_and_shard_name_the_shard_wins(tmp_path: Path) -> None:
    (tmp_path / ".bmad-core").mkdir()
    _write(tmp_path, "docs/prd/epic-details.md", "## Epic 2: Big\n\n### Story 2.1: A\n")
    _write(tmp_path, "docs/prd/epic-2.md", "# Epic 2: Big\n\n### Story 2.1: A\n")
    epic = find_epic(detect_layout(tmp_path), 2)
    assert epic.path.name == "epic-2.md"
    assert any("also in epic-details.md" in w for w in epic.warnings)


def test_two_files_named_for_one_epic_name_both(tmp_path: Path) -> None:
    (tmp_path / ".bmad-core").mkdir()
    first = _write(tmp_path, "docs/prd/epic-1-socle.md", "# Epic 1: A\n\n### Story 1.1: A\n")
    second = _write(tmp_path, "docs/prd/epic-1-refonte.md", "# Epic 1: B\n\n### Story 1.1: B\n")
    with pytest.raises(ProjectError, match="epic 1 is declared in several files") as info:
        find_epic(detect_layout(tmp_path), 1)
    assert str(first.resolve()) in str(info.value)
    assert str(second.resolve()) in str(info.value)
