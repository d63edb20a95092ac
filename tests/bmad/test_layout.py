from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bmad_trio import ProjectError
from bmad_trio._bmad import detect_layout

Snapshot = Callable[[Path], dict[str, bytes]]


def test_v4_layout_from_core_config(v4_project: Path) -> None:
    layout = detect_layout(v4_project)
    root = v4_project.resolve()
    assert layout.version == "v4"
    assert layout.config_path == root / ".bmad-core/core-config.yaml"
    assert layout.story_dir == root / "docs/stories"
    assert layout.qa_dir == root / "docs/qa"
    assert layout.gates_dir == root / "docs/qa/gates"
    assert layout.epic_locations[:2] == (root / "docs/prd", root / "docs/prd.md")
    assert layout.epic_file_pattern == "epic-{n}*.md"
    assert layout.sprint_status_path is None
    assert set(layout.agent_files) == {"sm", "dev", "qa"}
    assert layout.agent_files["qa"] == root / ".bmad-core/agents/qa.md"
    assert set(layout.task_files) == {
        "create-next-story",
        "apply-qa-fixes",
        "review-story",
        "qa-gate",
    }
    assert root / "docs/architecture/coding-standards.md" in layout.dev_load_always_files


def test_v4_custom_locations_and_unsharded_prd(tmp_path: Path) -> None:
    (tmp_path / ".bmad-core").mkdir()
    (tmp_path / ".bmad-core/core-config.yaml").write_text(
        "devStoryLocation: work/stories\nqa:\n  qaLocation: work/qa\n"
        "prd:\n  prdFile: work/prd.md\n  prdSharded: false\n"
    )
    layout = detect_layout(tmp_path)
    root = tmp_path.resolve()
    assert layout.story_dir == root / "work/stories"
    assert layout.qa_dir == root / "work/qa"
    assert layout.epic_locations[0] == root / "work/prd.md"
    assert layout.agent_files == {}


def test_v6_layout_from_bmm_config(v6_project: Path) -> None:
    layout = detect_layout(v6_project)
    root = v6_project.resolve()
    out = root / "_bmad-output"
    assert layout.version == "v6"
    assert layout.story_dir == out / "implementation-artifacts"
    assert layout.sprint_status_path == out / "implementation-artifacts/sprint-status.yaml"
    assert layout.epic_locations[0] == out / "planning-artifacts/epics.md"
    assert layout.qa_dir == out / "implementation-artifacts/qa"
    wf = root / "_bmad/bmm/workflows/4-implementation"
    assert layout.workflow_dirs == {
        "create-story": wf / "create-story",
        "dev-story": wf / "dev-story",
        "code-review": wf / "code-review",
    }


def test_v6_config_toml_and_team_override(tmp_path: Path) -> None:
    (tmp_path / "_bmad/custom").mkdir(parents=True)
    (tmp_path / "_bmad/config.toml").write_text(
        '[core]\noutput_folder = "{project-root}/out"\n\n[modules.bmm]\n'
        'planning_artifacts = "{project-root}/out/plan"\n'
        'implementation_artifacts = "{project-root}/out/impl"\n'
    )
    (tmp_path / "_bmad/custom/config.toml").write_text(
        '[modules.bmm]\nimplementation_artifacts = "{project-root}/shared/impl"\n'
    )
    skill = tmp_path / "_bmad/bmm/4-implementation/bmad-dev-story"
    skill.mkdir(parents=True)
    layout = detect_layout(tmp_path)
    root = tmp_path.resolve()
    assert layout.config_path == root / "_bmad/config.toml"
    assert layout.story_dir == root / "shared/impl"
    assert layout.epic_locations[0] == root / "out/plan/epics.md"
    assert layout.workflow_dirs == {"dev-story": skill.resolve()}


def test_plain_defaults_and_overrides(tmp_path: Path) -> None:
    layout = detect_layout(tmp_path)
    root = tmp_path.resolve()
    assert layout.version == "plain"
    assert layout.story_dir == root / "docs/stories"
    assert layout.qa_dir == root / "docs/qa"
    assert root / "docs/prd" in layout.epic_locations
    assert root / "docs/epics.md" in layout.epic_locations
    assert root / "docs/prd.md" in layout.epic_locations
    custom = detect_layout(
        tmp_path, story_location="s", epic_location="plan/e.md", qa_location=Path("q")
    )
    assert custom.story_dir == root / "s"
    assert custom.epic_locations == (root / "plan/e.md",)
    assert custom.qa_dir == root / "q"


def test_overrides_win_over_v4_config(v4_project: Path) -> None:
    layout = detect_layout(v4_project, story_location="elsewhere/stories")
    assert layout.story_dir == v4_project.resolve() / "elsewhere/stories"
    assert layout.qa_dir == v4_project.resolve() / "docs/qa"


@pytest.mark.parametrize("bad", ["../outside", "/etc", "docs/../../x"])
def test_override_escaping_the_project_is_refused(tmp_path: Path, bad: str) -> None:
    project = tmp_path / "p"
    project.mkdir()
    with pytest.raises(ProjectError, match="escapes the project") as info:
        detect_layout(project, story_location=bad)
    assert info.value.path is not None


def test_config_location_escaping_the_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / ".bmad-core").mkdir(parents=True)
    (project / ".bmad-core/core-config.yaml").write_text("devStoryLocation: ../../stories\n")
    with pytest.raises(ProjectError, match="escapes the project"):
        detect_layout(project)


def test_symlinked_story_dir_pointing_outside_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "docs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "docs/stories").symlink_to(outside)
    with pytest.raises(ProjectError, match="escapes the project"):
        detect_layout(project, story_location="docs/stories")


def test_malformed_v4_config_names_file_and_line(tmp_path: Path, snapshot: Snapshot) -> None:
    (tmp_path / ".bmad-core").mkdir()
    config = tmp_path / ".bmad-core/core-config.yaml"
    config.write_text("qa:\n  qaLocation: docs/qa\ndevStoryLocation: [unclosed\nother: 1\n")
    before = snapshot(tmp_path)
    with pytest.raises(ProjectError, match="malformed YAML") as info:
        detect_layout(tmp_path)
    assert info.value.path == str(config.resolve())
    assert info.value.line is not None
    assert info.value.line >= 3
    assert str(config.resolve()) in str(info.value)
    assert snapshot(tmp_path) == before


def test_malformed_v6_yaml_and_toml(tmp_path: Path) -> None:
    (tmp_path / "_bmad/bmm").mkdir(parents=True)
    config = tmp_path / "_bmad/bmm/config.yaml"
    config.write_text("planning_artifacts: x\n  bad: indent\n")
    with pytest.raises(ProjectError, match="malformed YAML") as info:
        detect_layout(tmp_path)
    assert info.value.path == str(config.resolve())
    assert info.value.line == 2
    config.unlink()
    toml = tmp_path / "_bmad/config.toml"
    toml.write_text("[core]\noutput_folder = \n")
    with pytest.raises(ProjectError, match="malformed TOML") as info:
        detect_layout(tmp_path)
    assert info.value.path == str(toml.resolve())
    assert info.value.line == 2


def test_wrong_type_in_config_is_named(tmp_path: Path) -> None:
    (tmp_path / ".bmad-core").mkdir()
    (tmp_path / ".bmad-core/core-config.yaml").write_text("devStoryLocation: 3\n")
    with pytest.raises(ProjectError, match="devStoryLocation"):
        detect_layout(tmp_path)


def test_missing_project_directory(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        detect_layout(tmp_path / "nope")


def test_v6_sprint_artifacts_under_the_output_folder(tmp_path: Path) -> None:
    """Early v6 wrote sprint-status.yaml and stories to ``{output_folder}/sprint-artifacts`` while
    the config names an implementation folder that was never created: both are still found."""
    (tmp_path / "_bmad/bmm").mkdir(parents=True)
    (tmp_path / "_bmad/bmm/config.yaml").write_text(
        'output_folder: "{project-root}/docs"\n'
        'implementation_artifacts: "{project-root}/docs/implementation-artifacts"\n',
        encoding="utf-8",
    )
    sprint = tmp_path / "docs/sprint-artifacts"
    sprint.mkdir(parents=True)
    (sprint / "sprint-status.yaml").write_text(
        "development_status:\n  epic-1: done\n  1-1-set-up: done\n", encoding="utf-8"
    )
    (sprint / "1-1-set-up.md").write_text("# Story 1.1: Set up\n\nStatus: done\n", encoding="utf-8")
    layout = detect_layout(tmp_path)
    root = tmp_path.resolve()
    assert layout.sprint_status_path == root / "docs/sprint-artifacts/sprint-status.yaml"
    assert root / "docs/sprint-artifacts" in layout.story_search_dirs
    from bmad_trio._bmad import locate_story_file

    assert locate_story_file(layout, "1.1", "Set up").path == sprint.resolve() / "1-1-set-up.md"
