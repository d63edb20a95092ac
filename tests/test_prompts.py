from __future__ import annotations

from pathlib import Path

from bmad_trio import Role
from bmad_trio._bmad import EpicStory, detect_layout
from bmad_trio._workflow._prompts import ROLE_TOOLS, fixer_plan, role_plan
from bmad_trio.testing import parse_context

STORY = EpicStory(
    story_id="1.2",
    title="Add farewell",
    user_story="As a user, I want a farewell, so that I know we are done.",
    acceptance_criteria=("farewell() returns a farewell",),
    dependencies=(),
    line=5,
)


def _plans(project: Path) -> dict[Role, str]:
    layout = detect_layout(project)
    story_file = layout.story_dir / "1.2.story.md"
    return {
        role: role_plan(
            layout,
            role,
            STORY,
            story_file=story_file,
            epic_file=project / "docs" / "prd" / "epic-1.md",
            gate_file=layout.gates_dir / "1.2-add-farewell.yml",
            findings="[high] T-1: no tests" if role is Role.DEV else None,
        ).prompt
        for role in (Role.SM, Role.DEV, Role.QA)
    }


def test_plain_projects_get_built_in_instructions_with_a_context_block(tmp_path: Path) -> None:
    (tmp_path / "src" / "app").mkdir(parents=True)
    (tmp_path / "src" / "app" / "__init__.py").write_text("")
    plans = _plans(tmp_path)
    for role, prompt in plans.items():
        context = parse_context(prompt)
        assert context is not None
        assert context.role == role.value
        assert context.story == "1.2"
        assert context.story_file == "docs/stories/1.2.story.md"  # relative, forward slashes
        assert context.gate_file == "docs/qa/gates/1.2-add-farewell.yml"
        assert context.package == "src/app"
        assert str(tmp_path) not in prompt
    assert "## Status' section set to Draft" in plans[Role.SM]
    assert "set the story's Status to Review" in plans[Role.DEV]
    assert parse_context(plans[Role.DEV]).findings == "[high] T-1: no tests"  # type: ignore[union-attr]
    assert "Do not change the story's Status" in plans[Role.QA]


def test_installed_v4_agents_and_tasks_are_pointed_at(tmp_path: Path) -> None:
    core = tmp_path / ".bmad-core"
    for name in ("agents/sm.md", "agents/dev.md", "agents/qa.md", "tasks/create-next-story.md",
                 "tasks/review-story.md"):  # fmt: skip
        (core / name).parent.mkdir(parents=True, exist_ok=True)
        (core / name).write_text("# agent\n")
    (core / "core-config.yaml").write_text(
        "devStoryLocation: docs/stories\nqa:\n  qaLocation: docs/qa\n"
    )
    plans = _plans(tmp_path)
    assert "Act as the agent defined in .bmad-core/agents/sm.md." in plans[Role.SM]
    assert "Follow the task .bmad-core/tasks/create-next-story.md." in plans[Role.SM]
    assert "Act as the agent defined in .bmad-core/agents/dev.md." in plans[Role.DEV]
    assert "Follow the task .bmad-core/tasks/review-story.md." in plans[Role.QA]
    assert "non-interactively" in plans[Role.QA]


def test_role_tools_and_writable_paths() -> None:
    assert "Bash" not in ROLE_TOOLS[Role.SM]
    assert "MultiEdit" not in ROLE_TOOLS[Role.QA]
    layout = detect_layout(Path("/tmp"))
    plan = role_plan(
        layout,
        Role.QA,
        STORY,
        story_file=layout.story_dir / "1.2.story.md",
        epic_file=Path("/tmp/docs/prd/epic-1.md"),
        gate_file=layout.gates_dir / "1.2-x.yml",
    )
    assert plan.writable_paths == ("docs/qa/gates/*", "docs/stories/1.2.story.md")
    sm = role_plan(
        layout,
        Role.SM,
        STORY,
        story_file=layout.story_dir / "1.2.story.md",
        epic_file=Path("/tmp/docs/prd/epic-1.md"),
        gate_file=layout.gates_dir / "1.2-x.yml",
    )
    assert sm.writable_paths == ("docs/stories/1.2.story.md",)


def test_fixer_gets_the_gate_output() -> None:
    layout = detect_layout(Path("/tmp"))
    plan = fixer_plan(layout, "pytest", "$ pytest -q\nexit code 1\nE assert 1 == 2")
    context = parse_context(plan.prompt)
    assert context is not None
    assert context.role == "fixer"
    assert "E assert 1 == 2" in context.gate_command
    assert "Do not weaken or delete tests" in plan.prompt
