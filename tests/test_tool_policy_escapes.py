"""Every escape form we know of, for every role: the file-tool policy must refuse each one.

The forms come from what the real CLI does with a path argument (measured with the bundled CLI, see
docs/architecture.md "The file-tool policy"): it trims whitespace, expands ``~`` and ``~/`` with its
own HOME, resolves relative paths against the session's cwd, follows symlinks, and does not expand
``$VAR``. Roles get their tools and writable patterns from the real ``role_plan``/``fixer_plan``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest

from bmad_trio import Role
from bmad_trio._agents._tool_policy import tool_denial
from bmad_trio._bmad import EpicStory, detect_layout
from bmad_trio._workflow._prompts import RolePlan, fixer_plan, role_plan

STORY = EpicStory(
    story_id="1.2",
    title="Add farewell",
    user_story="As a user, I want a farewell.",
    acceptance_criteria=("farewell() returns a farewell",),
    dependencies=(),
    line=5,
)
ROLES = (Role.SM, Role.DEV, Role.QA, Role.FIXER)


@attrs.frozen
class World:
    """A project, a HOME and a directory outside both, with a symlink from the project out."""

    root: Path
    home: Path
    outside: Path

    def fill(self, text: str) -> str:
        return text.format(root=self.root, home=self.home, outside=self.outside)


@pytest.fixture
def world(tmp_path: Path) -> World:
    root = tmp_path / "project"
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    for directory in (root / "src", root / "docs" / "stories", home / ".ssh", outside):
        directory.mkdir(parents=True)
    (root / "docs" / "qa" / "gates").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("SECRET\n")
    (outside / "secret.txt").write_text("SECRET\n")
    (root / "link").symlink_to(outside)
    (root / "src" / "deep").mkdir()
    return World(root.resolve(), home.resolve(), outside.resolve())


def plan_for(world: World, role: Role) -> RolePlan:
    layout = detect_layout(world.root)
    if role is Role.FIXER:
        return fixer_plan(layout, "unittest", "$ python -m unittest\nFAILED")
    return role_plan(
        layout,
        role,
        STORY,
        story_file=layout.story_dir / "1.2.story.md",
        epic_file=world.root / "docs" / "prd" / "epic-1.md",
        gate_file=layout.gates_dir / "1.2-add-farewell.yml",
    )


def decide(
    world: World, role: Role, tool: str, tool_input: Mapping[str, object], **extra: object
) -> str | None:
    plan = plan_for(world, role)
    filled = {k: world.fill(v) if isinstance(v, str) else v for k, v in tool_input.items()}
    return tool_denial(
        tool,
        filled,
        root=world.root,
        allowed_tools=plan.allowed_tools,
        writable_paths=plan.writable_paths,
        home=world.home,
        **extra,  # pyright: ignore[reportArgumentType]
    )


# Path spellings that land outside the project once the CLI has resolved them (or that we refuse
# because a shell-like expansion would: $VAR, ~user).
OUTSIDE_PATHS = (
    "~/.ssh/id_rsa",
    "~",
    "~/",
    " ~/.ssh/id_rsa",  # the CLI trims the path first
    "~/.ssh/id_rsa ",
    "\t~/.ssh/id_rsa\n",
    "~/../outside/secret.txt",
    "{outside}/secret.txt",
    "{home}/.ssh/id_rsa",
    "../outside/secret.txt",
    " ../outside/secret.txt",
    "src/../../outside/secret.txt",
    "./../outside/secret.txt",
    "src/nowhere/../../../outside/secret.txt",
    "link/secret.txt",
    "link",
    "link/../../outside/secret.txt",
    "$HOME/.ssh/id_rsa",
    "${{HOME}}/.ssh/id_rsa",
    "$OUTSIDE/secret.txt",
    "src/${{OUTSIDE}}/x",
    "~root/.ssh/id_rsa",
    "/proc/self/root{outside}/secret.txt",
    "{root}/../outside/secret.txt",
    "//{outside}/secret.txt",
)

# Glob patterns that name (or could name) files outside the project: absolute, ~, .., through a
# symlink, or hidden in a brace alternative.
OUTSIDE_GLOB_PATTERNS = (
    "{home}/.*",  # the /root/.* shape, with a HOME the test owns
    "{outside}/*",
    "/*",
    "~/.ssh/*",
    "~/*",
    " ~/.ssh/*",
    "../outside/*",
    "../*",
    "**/../../outside/*",
    "src/../../*",
    "link/*",
    "link/**/*",
    "{{src/*.py,{outside}/*}}",
    "{{src,..}}/*",
    "$HOME/*",
    "${{OUTSIDE}}/*",
)


def read_escapes() -> list[tuple[str, dict[str, object]]]:
    forms: list[tuple[str, dict[str, object]]] = []
    for path in OUTSIDE_PATHS:
        forms.append(("Read", {"file_path": path}))
        forms.append(("Grep", {"pattern": "SECRET", "path": path, "output_mode": "content"}))
        forms.append(("Glob", {"pattern": "*", "path": path}))
    for pattern in OUTSIDE_GLOB_PATTERNS:
        forms.append(("Glob", {"pattern": pattern}))
        forms.append(("Grep", {"pattern": "SECRET", "glob": pattern}))
    forms.append(("Grep", {"pattern": "SECRET", "glob": "!../outside/*"}))
    forms.append(("Grep", {"pattern": "SECRET", "glob": "*.py ../outside/*"}))
    forms.append(("Glob", {"pattern": "../../outside/*", "path": "src"}))  # the pattern escapes
    forms.append(("Read", {"file_path": ["/etc/passwd"]}))  # not a string: refused
    forms.append(("Grep", {"pattern": "x", "path": 7}))
    return forms


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize(("tool", "tool_input"), read_escapes(), ids=repr)
def test_every_read_escape_is_refused_for_every_role(
    world: World, role: Role, tool: str, tool_input: dict[str, object]
) -> None:
    reason = decide(world, role, tool, tool_input)
    assert reason is not None, f"{role.value} may {tool} {world.fill(repr(tool_input))}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("path", OUTSIDE_PATHS)
def test_every_write_escape_is_refused_for_every_role(world: World, role: Role, path: str) -> None:
    plan = plan_for(world, role)
    for tool in ("Write", "Edit", "MultiEdit"):
        if tool in plan.allowed_tools:
            reason = decide(world, role, tool, {"file_path": path, "content": "x"})
            assert reason is not None, f"{role.value} may {tool} {world.fill(path)}"
    reason = tool_denial(
        "NotebookEdit",
        {"notebook_path": world.fill(path), "new_source": "x"},
        root=world.root,
        allowed_tools=("NotebookEdit",),
        writable_paths=("**",),
        home=world.home,
    )
    assert reason is not None, f"NotebookEdit {world.fill(path)}"


# Targets inside the project but outside the role's area (the nested-match and `*`-crosses-`/` holes).
NESTED_WRITES: dict[Role, tuple[str, ...]] = {
    Role.SM: (
        "src/docs/stories/1.2.story.md",
        "tests/docs/stories/1.2.story.md",
        "docs/stories/1.2.story.md/x.py",
        "docs/stories/1.3.story.md",
        "docs/stories/../../src/app.py",
        "src/app.py",
    ),
    Role.QA: (
        "tests/docs/qa/gates/conftest.py",
        "docs/qa/gates/sub/evil.py",
        "docs/qa/gates/sub/deeper/evil.yml",
        "src/docs/qa/gates/1.2-x.yml",
        "src/docs/stories/1.2.story.md",
        "docs/qa/gates/../../../src/app.py",
        "docs/qa/gates",
        "src/app.py",
        "{root}/src/app.py",
    ),
    Role.DEV: (".git/hooks/pre-commit", ".git", ".bmad-trio/state.db", "src/.git/config"),
    Role.FIXER: (".git/hooks/post-commit", ".bmad-trio/state.db"),
}
ALLOWED_WRITES: dict[Role, tuple[str, ...]] = {
    Role.SM: (
        "docs/stories/1.2.story.md",
        "./docs/stories/1.2.story.md",
        "{root}/docs/stories/1.2.story.md",
        " docs/stories/1.2.story.md",
    ),
    Role.QA: (
        "docs/qa/gates/1.2-add-farewell.yml",
        "docs/qa/gates/.notes.yml",
        "{root}/docs/qa/gates/1.2-add-farewell.yml",
        "docs/stories/1.2.story.md",
    ),
    Role.DEV: ("src/app.py", "src/deep/a/b/c.py", "tests/test_app.py", "docs/stories/1.2.story.md"),
    Role.FIXER: ("src/app.py", "{root}/tests/test_x.py", "docs/.gitignore"),
}


@pytest.mark.parametrize(
    ("role", "target"), [(r, t) for r, ts in NESTED_WRITES.items() for t in ts], ids=repr
)
def test_writes_outside_the_roles_area_are_refused(world: World, role: Role, target: str) -> None:
    for tool in ("Write", "Edit"):
        reason = decide(world, role, tool, {"file_path": target})
        assert reason is not None, f"{role.value} may {tool} {target}"


@pytest.mark.parametrize(
    ("role", "target"), [(r, t) for r, ts in ALLOWED_WRITES.items() for t in ts], ids=repr
)
def test_writes_in_the_roles_area_are_allowed(world: World, role: Role, target: str) -> None:
    for tool in ("Write", "Edit"):
        assert decide(world, role, tool, {"file_path": target}) is None


ALLOWED_READS: tuple[tuple[str, dict[str, object]], ...] = (
    ("Read", {"file_path": "README.md"}),
    ("Read", {"file_path": "{root}/src/app.py"}),
    ("Read", {"file_path": "src/deep/../app.py"}),
    ("Read", {"file_path": "src/$"}),  # a lone $ names no variable
    ("Grep", {"pattern": "TODO$", "path": "src", "glob": "*.py"}),
    ("Grep", {"pattern": "${{x}}", "glob": "!**/*.md"}),  # the regex is not a path
    ("Grep", {"pattern": "x", "path": "", "glob": "{{src,tests}}/**/*.py"}),
    ("Grep", {"pattern": "x"}),
    ("Glob", {"pattern": "**/*.py"}),
    ("Glob", {"pattern": "src/**/*.py", "path": "."}),
    ("Glob", {"pattern": "*.md", "path": "docs/stories"}),
    ("Glob", {"pattern": "{root}/src/*.py"}),
    ("Glob", {"pattern": "docs/{{stories,qa}}/*"}),
    ("Glob", {"pattern": "*", "path": "{root}"}),
)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize(("tool", "tool_input"), ALLOWED_READS, ids=repr)
def test_reads_inside_the_project_are_allowed(
    world: World, role: Role, tool: str, tool_input: dict[str, object]
) -> None:
    assert decide(world, role, tool, tool_input) is None


def test_a_home_inside_the_project_makes_tilde_paths_inside(world: World) -> None:
    home = world.root / "src"
    for tool_input in ({"file_path": "~/app.py"}, {"file_path": "~"}):
        reason = tool_denial(
            "Read",
            tool_input,
            root=world.root,
            allowed_tools=("Read",),
            writable_paths=(),
            home=home,
        )
        assert reason is None
    reason = tool_denial(
        "Read",
        {"file_path": "~/../../outside/secret.txt"},
        root=world.root,
        allowed_tools=("Read",),
        writable_paths=(),
        home=home,
    )
    assert reason is not None


def test_without_a_home_argument_the_environment_home_is_used(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(world.root))
    kwargs: dict[str, object] = {
        "root": world.root,
        "allowed_tools": ("Read", "Grep"),
        "writable_paths": (),
    }
    assert tool_denial("Grep", {"pattern": "x", "path": "~/src"}, **kwargs) is None  # pyright: ignore[reportArgumentType]
    monkeypatch.setenv("HOME", str(world.home))
    assert tool_denial("Grep", {"pattern": "x", "path": "~/.ssh"}, **kwargs) is not None  # pyright: ignore[reportArgumentType]


def test_a_symlink_whose_lexical_and_real_resolutions_differ_is_refused(world: World) -> None:
    """``a/../b``: the CLI normalises ``..`` first (root/b), the OS follows ``a`` first. Both
    readings must stay inside; here root/b is a link out while a/.. is a directory inside."""
    (world.root / "sub" / "x").mkdir(parents=True)
    (world.root / "sub" / "b").mkdir()
    (world.root / "a").symlink_to(world.root / "sub" / "x")
    (world.root / "b").symlink_to(world.outside)
    reason = tool_denial(
        "Read",
        {"file_path": "a/../b/secret.txt"},
        root=world.root,
        allowed_tools=("Read",),
        writable_paths=(),
        home=world.home,
    )
    assert reason is not None


def test_unknown_tools_with_path_arguments_are_checked_as_writes(world: World) -> None:
    def unknown(tool_input: dict[str, object], writable: tuple[str, ...] = ("**",)) -> str | None:
        return tool_denial(
            "Custom",
            tool_input,
            root=world.root,
            allowed_tools=("Custom", "LS"),
            writable_paths=writable,
            home=world.home,
        )

    assert unknown({"path": "~/.ssh"}) is not None
    assert unknown({"target_path": "/etc/passwd"}) is not None
    assert unknown({"paths": ["src/a.py", "../outside/x"]}) is not None
    assert unknown({"directory": "link"}) is not None
    assert unknown({"file_path": "src/a.py"}, writable=("docs/*",)) is not None
    assert unknown({"file_path": "src/a.py"}) is None
    assert unknown({"query": "anything"}) is None
    ls = tool_denial(
        "LS",
        {"path": "~"},
        root=world.root,
        allowed_tools=("LS",),
        writable_paths=(),
        home=world.home,
    )
    assert ls is not None


@pytest.mark.parametrize(
    ("pattern", "inside", "outside"),
    [
        (
            "docs/qa/gates/*",
            ["docs/qa/gates/a.yml"],
            ["docs/qa/gates/a/b.yml", "x/docs/qa/gates/a"],
        ),
        (
            "docs/stories/1.1.story.md",
            ["docs/stories/1.1.story.md"],
            ["src/docs/stories/1.1.story.md"],
        ),
        ("src/**", ["src/a.py", "src/a/b/c.py"], ["tests/src/a.py", "src"]),
        ("**/*.py", ["a.py", "src/a/b.py"], ["a.pyc", "src/a.md"]),
        ("src/**/test_*.py", ["src/test_a.py", "src/x/y/test_b.py"], ["src/x/test_b.pyc"]),
        ("docs/?.md", ["docs/a.md"], ["docs/ab.md", "docs//.md"]),
        ("docs/[ab].md", ["docs/a.md", "docs/b.md"], ["docs/c.md"]),
        ("**", ["a", "a/b/c"], []),
    ],
)
def test_writable_patterns_are_anchored_and_star_stays_in_one_segment(
    world: World, pattern: str, inside: list[str], outside: list[str]
) -> None:
    for target, allowed in [(t, True) for t in inside] + [(t, False) for t in outside]:
        reason = tool_denial(
            "Write",
            {"file_path": target},
            root=world.root,
            allowed_tools=("Write",),
            writable_paths=(pattern,),
            home=world.home,
        )
        assert (reason is None) is allowed, (pattern, target, reason)


def test_a_refusal_does_not_name_where_a_link_leads(world: World) -> None:
    reason = decide(world, Role.DEV, "Read", {"file_path": "link/secret.txt"})
    assert reason == "Read file_path link/secret.txt is outside the project directory"
    assert str(world.outside) not in reason
