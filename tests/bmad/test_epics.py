from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad import (
    detect_layout,
    find_epic,
    parse_epic,
    parse_epic_document,
    story_key,
    story_slug,
)


def test_v4_sharded_epic(v4_project: Path) -> None:
    epic = find_epic(detect_layout(v4_project), 1)
    assert epic.number == 1
    assert epic.title == "User Accounts"
    assert epic.path.name == "epic-1-user-accounts.md"
    assert [s.story_id for s in epic.stories] == ["1.1", "1.2", "1.3"]
    assert [s.title for s in epic.stories] == [
        "User Registration",
        "Password Reset",
        "Account Settings",
    ]
    first = epic.stories[0]
    assert first.user_story.startswith("As a visitor, I want to create an account")
    assert first.acceptance_criteria == (
        "A registration form accepts email and password.",
        "Passwords shorter than 12 characters are rejected with a clear message.",
        "A confirmation email is sent after registration.",
    )
    assert first.line == 5
    assert epic.stories[1].dependencies == ("1.1",)
    assert epic.stories[2].dependencies == ("1.1", "1.2")
    assert first.key == "1-1-user-registration"
    assert first.slug == "user-registration"


def test_v6_epics_file_with_overview_and_gwt(v6_project: Path) -> None:
    layout = detect_layout(v6_project)
    epics = parse_epic_document(layout.epic_locations[0])
    assert [e.number for e in epics] == [1, 2]
    epic = find_epic(layout, 1)
    assert epic.title == "Catalog"
    assert [s.story_id for s in epic.stories] == ["1.1", "1.2", "1.2a"]
    list_page = epic.stories[0]
    assert list_page.acceptance_criteria == (
        "Given the catalog has products When I open /products Then I see each product's name "
        "and price And the list is paginated by 20",
        'Given the catalog is empty When I open /products Then I see "No products yet"',
    )
    assert epic.stories[1].dependencies == ("1.1",)
    suggestions = epic.stories[2]
    assert suggestions.key == "1-2a-search-suggestions-stretch"
    assert suggestions.acceptance_criteria == (
        "Given I typed two letters When I pause Then up to five suggestions appear",
        "Suggestions never include out-of-stock items",
    )
    assert find_epic(layout, 2).stories[0].acceptance_criteria == (
        "Given an empty cart When I add an item Then the cart shows 1 item",
    )


def test_multi_epic_file_needs_a_number(v6_project: Path) -> None:
    path = detect_layout(v6_project).epic_locations[0]
    with pytest.raises(ProjectError, match=r"several epics \(1, 2\)") as info:
        parse_epic(path)
    assert info.value.path == str(path)
    assert parse_epic(path, number=2).stories[0].story_id == "2.1"
    with pytest.raises(ProjectError, match="no epic 7"):
        parse_epic(path, number=7)


def test_whole_prd_with_several_epics(tmp_path: Path) -> None:
    prd = tmp_path / "docs/prd.md"
    prd.parent.mkdir()
    prd.write_text(
        "# Product Requirements\n\n## Goals\n\nx\n\n"
        "## Epic 1 Foundation\n\n### Story 1.1 Setup\n\nAs a dev, I want CI, so that builds are green.\n\n"
        "#### Acceptance Criteria\n\n1. CI runs\n2. Lint runs\n\n"
        "## Epic 2 - Features\n\n### Story 2.1: Feature\n\nAs a user, I want a feature.\n\n"
        "#### Acceptance Criteria\n\n- It works\n- It is fast\n\n## Checklist Results\n\n- [ ] not a story\n"
    )
    layout = detect_layout(tmp_path)
    epic = find_epic(layout, 2)
    assert epic.title == "Features"
    assert epic.stories[0].acceptance_criteria == ("It works", "It is fast")
    assert find_epic(layout, 1).stories[0].acceptance_criteria == ("CI runs", "Lint runs")


def test_epic_file_without_epic_heading_takes_number_from_name(tmp_path: Path) -> None:
    path = tmp_path / "epic-4-misc.md"
    path.write_text("## Story 4.1: One\n\nAs a user, I want one.\n")
    epic = parse_epic(path)
    assert epic.number == 4
    assert epic.line == 0
    assert epic.stories[0].title == "One"


def test_find_epic_picks_exact_number_among_sharded_files(tmp_path: Path) -> None:
    prd = tmp_path / "docs/prd"
    prd.mkdir(parents=True)
    (prd / "epic-1-a.md").write_text("# Epic 1 A\n\n## Story 1.1: a\n")
    (prd / "epic-10-b.md").write_text("# Epic 10 B\n\n## Story 10.1: b\n")
    layout = detect_layout(tmp_path)
    assert find_epic(layout, 1).title == "A"
    assert find_epic(layout, 10).title == "B"
    with pytest.raises(ProjectError, match="several epic files"):
        find_epic(layout)
    with pytest.raises(ProjectError, match="cannot find epic 3"):
        find_epic(layout, 3)


def test_headings_inside_code_fences_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_text(
        "## Epic 1: Real\n\n### Story 1.1: Real\n\n```md\n### Story 1.2: Example only\n```\n"
    )
    assert [s.story_id for s in parse_epic(path).stories] == ["1.1"]


def test_story_heading_level_and_colon_variants(tmp_path: Path) -> None:
    path = tmp_path / "epics.md"
    path.write_text(
        "# Epic 3: Variants ##\n\n## Story 3.1 No colon\n\n### Story 3.2: Colon ###\n\n"
        "#### Story 3.3:Tight\n\n##### Story 3.4: too deep is not a story\n"
    )
    epic = parse_epic(path)
    assert [(s.story_id, s.title) for s in epic.stories] == [
        ("3.1", "No colon"),
        ("3.2", "Colon"),
        ("3.3", "Tight"),
    ]


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("User Authentication", "user-authentication"),
        ("Search: Suggestions (stretch)!", "search-suggestions-stretch"),
        ("snake_case stays", "snake_case-stays"),
        ("Café & Crème", "café-crème"),
        ("Platform Forwarding 与审计边界", "platform-forwarding-与审计边界"),
        ("x" * 70, "x" * 60),
        ("a" * 59 + " b", "a" * 59),
        ("!!!", ""),
    ],
)
def test_slug(title: str, slug: str) -> None:
    assert story_slug(title) == slug


def test_story_key() -> None:
    assert story_key("1.2", "Account Management") == "1-2-account-management"
    assert story_key("2.3a", "!!") == "2-3a-" + hashlib.sha256(b"!!").hexdigest()[:8]
    assert story_key("01.2", "A b") == "1-2-a-b"
    with pytest.raises(ProjectError, match="invalid story id"):
        story_key("../1.2", "x")


# --- bad input -------------------------------------------------------------------------------


def test_epic_with_no_stories(tmp_path: Path) -> None:
    path = tmp_path / "epic-2.md"
    path.write_text("# Epic 2: Empty\n\nNothing yet.\n")
    with pytest.raises(ProjectError, match="epic 2 has no stories") as info:
        parse_epic(path)
    assert info.value.path == str(path)
    assert info.value.line == 1


def test_file_with_no_epic_at_all(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n")
    with pytest.raises(ProjectError, match="no epic or story headings") as info:
        parse_epic(path)
    assert info.value.path == str(path)


def test_duplicate_story_ids(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_text(
        "## Epic 1: A\n\n### Story 1.1: One\n\n### Story 1.2: Two\n\n### Story 1.1: Again\n"
    )
    epic = parse_epic(path)
    assert [s.title for s in epic.stories] == ["One", "Two"]
    assert epic.warnings == (f"{path}:7: story 1.1 again (first at line 3); the first one is used",)


def test_dependency_on_missing_story(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_text("## Epic 1: A\n\n### Story 1.1: One\n\nDepends on: 1.9\n")
    epic = parse_epic(path)
    assert epic.stories[0].dependencies == ("1.9",)
    assert len(epic.warnings) == 1
    assert epic.warnings[0].startswith(f"{path}:3: story 1.1 depends on 1.9")


def test_dependency_cycle(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_text(
        "## Epic 1: A\n\n### Story 1.1: One\n\nDepends on: 1.2\n\n### Story 1.2: Two\n\nDepends on: 1.1\n"
    )
    with pytest.raises(ProjectError, match="dependency cycle") as info:
        parse_epic(path)
    assert info.value.path == str(path)


def test_cross_epic_dependency_and_none(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_text(
        "## Epic 2: B\n\n### Story 2.1: One\n\n**Prerequisites:** None\n\n"
        "### Story 2.2: Two\n\n- **Depends on:** Story 1.3 and 2.1\n"
    )
    epic = parse_epic(path)
    assert epic.stories[0].dependencies == ()
    assert epic.stories[1].dependencies == ("1.3", "2.1")


def test_epic_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_bytes(b"## Epic 1: A\n\n### Story 1.1: Caf\xe9\n")
    with pytest.raises(ProjectError, match="not valid UTF-8") as info:
        parse_epic(path)
    assert info.value.path == str(path)
    assert info.value.line == 3


def test_enormous_epic(tmp_path: Path) -> None:
    path = tmp_path / "epic.md"
    path.write_bytes(b"## Epic 1: A\n" + b"x" * (5 * 1024 * 1024 + 1))
    with pytest.raises(ProjectError, match="larger than 5 MB") as info:
        parse_epic(path)
    assert info.value.path == str(path)


def test_epic_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "docs").mkdir(parents=True)
    outside = tmp_path / "epics.md"
    outside.write_text("## Epic 1: A\n\n### Story 1.1: One\n")
    (project / "docs/epics.md").symlink_to(outside)
    with pytest.raises(ProjectError, match="escapes the project"):
        find_epic(detect_layout(project), 1)


def _big_epic(count: int) -> str:
    parts = ["## Epic 1: Big\n\nGoal.\n"]
    for n in range(1, count + 1):
        parts.append(
            f"\n### Story 1.{n}: Story number {n}\n\nAs a user,\nI want feature {n},\nSo that it works.\n\n"
            "**Acceptance Criteria:**\n\n**Given** a state\n**When** an action\n**Then** a result\n"
            "**And** another\n\n**Given** b\n**When** c\n**Then** d\n"
            + (f"\n**Dependencies:** Story 1.{n - 1}\n" if n > 1 else "")
        )
    return "".join(parts)


def test_fifty_story_epic_parses(tmp_path: Path) -> None:
    # Its speed is measured by `python -m bench.reading`, not asserted here.
    path = tmp_path / "epics.md"
    path.write_text(_big_epic(50))
    epic = parse_epic(path)
    assert len(epic.stories) == 50
    assert epic.stories[-1].dependencies == ("1.49",)
