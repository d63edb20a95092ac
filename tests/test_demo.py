"""The offline demo's sample project: scaffold, safety, gates, and what the BMAD actor adds to it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import bmad_trio._commandline._demo as demo
from bmad_trio import ConfigError
from bmad_trio._bmad import (
    StoryStatus,
    detect_layout,
    find_epic,
    find_qa_gate_file,
    find_story_file,
    new_story_path,
    parse_epic,
    parse_story,
    read_qa_gate,
    story_slug,
)
from bmad_trio._commandline._demo import (
    DEMO_MARKER,
    DemoProject,
    demo_files,
    scaffold_demo,
    where_to_look,
)
from bmad_trio._config import load_config
from bmad_trio.testing import ApiRequest, BmadActor, Reply, TextBlock, ToolUseBlock, load_scenario

SCAFFOLD_FILES = {
    DEMO_MARKER,
    ".gitignore",
    "README.md",
    "demo-scenario.toml",
    "pyproject.toml",
    "docs/prd/epic-1-greetings.md",
    "docs/stories/.gitkeep",
    "docs/qa/gates/.gitkeep",
    "src/sample_app/__init__.py",
    "tests/test_sample_app.py",
}
TITLES = {"1.1": "Add greeting", "1.2": "Add farewell", "1.3": "Add shout"}


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (POSIX relative path → bytes) but the repository's own."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and ".git" not in p.relative_to(root).parts
    }


def _run_gates(root: Path) -> None:
    config = load_config(root)
    assert [g.name for g in config.gates] == ["compile", "unittest"]
    for gate in config.gates:
        done = subprocess.run(
            gate.argv, cwd=root, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, (gate.name, done.stdout, done.stderr)


# --- the scaffold ---------------------------------------------------------------------------------


def test_scaffold_writes_the_sample_project(tmp_path: Path) -> None:
    root = tmp_path / "new" / "demo"
    project = scaffold_demo(root)
    assert project == DemoProject(
        root=root.resolve(),
        epic_path=root.resolve() / "docs/prd/epic-1-greetings.md",
        scenario_path=root.resolve() / "demo-scenario.toml",
    )
    assert project.story_ids == ("1.1", "1.2", "1.3")
    assert project.package == "src/sample_app"
    assert set(_tree(root)) == SCAFFOLD_FILES
    # A repository whose first commit holds the sample project: what `run` needs.
    committed = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(committed) == SCAFFOLD_FILES
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
    )
    assert status.stdout == ""
    for path, text in demo_files().items():
        assert (root / path).read_text(encoding="utf-8") == text
    marker = json.loads((root / DEMO_MARKER).read_text())
    assert marker["bmad_trio_demo"] == 1
    assert marker["files"] == {
        path: [hashlib.sha256(text.encode()).hexdigest()] for path, text in demo_files().items()
    }
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "sample-app"
    assert (root / "docs/stories").is_dir()
    assert (root / "docs/qa/gates").is_dir()


def test_the_epic_parses_and_the_plain_layout_finds_everything(tmp_path: Path) -> None:
    project = scaffold_demo(tmp_path / "demo")
    layout = detect_layout(project.root)
    assert layout.version == "plain"
    assert layout.story_dir == project.root / "docs/stories"
    assert layout.gates_dir == project.root / "docs/qa/gates"
    assert layout.story_dir.is_dir()
    assert layout.gates_dir.is_dir()
    found = find_epic(layout)
    assert found.path == project.epic_path
    epic = parse_epic(project.epic_path)
    assert found == epic
    assert (epic.number, epic.title) == (1, "Greeting toolkit")
    assert [s.story_id for s in epic.stories] == list(project.story_ids)
    assert {s.story_id: s.title for s in epic.stories} == TITLES
    assert [s.dependencies for s in epic.stories] == [(), (), ("1.1",)]
    for story in epic.stories:
        assert story.user_story.startswith("As a developer using sample-app, I want ")
        assert ", so that " in story.user_story
        assert len(story.acceptance_criteria) == 3
        assert find_story_file(layout, story.story_id, story.title) is None


def test_the_config_and_the_scenario_load(tmp_path: Path) -> None:
    project = scaffold_demo(tmp_path / "demo")
    config = load_config(project.root)
    assert [(g.name, g.argv) for g in config.gates] == [
        ("compile", (sys.executable, "-m", "compileall", "-q", "src", "tests")),
        ("unittest", (sys.executable, "-m", "unittest", "discover", "-s", "tests")),
    ]
    scenario = load_scenario(project.scenario_path)
    assert scenario.responders == (BmadActor(fail_first_review=frozenset({"1.2"})),)
    assert project.fail_first_review == ("1.2",)


def test_the_gates_pass_on_the_fresh_scaffold(tmp_path: Path) -> None:
    project = scaffold_demo(tmp_path / "demo")
    _run_gates(project.root)


def test_the_gate_python_is_written_as_valid_toml(tmp_path: Path) -> None:
    odd = 'C:\\Program Files\\Py "3"\\python.exe\t'
    text = demo_files(odd)["pyproject.toml"]
    gates = tomllib.loads(text)["tool"]["bmad-trio"]["gates"]
    assert [g["command"][0] for g in gates] == [odd, odd]


def test_instructions_and_where_to_look_on_a_fresh_scaffold(tmp_path: Path) -> None:
    project = scaffold_demo(tmp_path / "my demo")
    text = project.instructions()
    quoted = f"'{project.root}'"
    assert f"bmad-trio demo {quoted}" in text
    assert f"bmad-trio fake-api --port 8765 --scenario '{project.scenario_path}'" in text
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8765" in text
    assert f"bmad-trio run '{project.epic_path}' --project {quoted}" in text
    lines = where_to_look(project)
    assert lines[0] == f"In {project.root}:"
    assert "  stories (SM drafts, Dev and QA update): (none yet)" in lines
    assert "  code (Dev): (none yet)" in lines
    assert "  tests (Dev): (none yet)" in lines
    assert any("compile (python -m compileall -q src tests)" in line for line in lines)
    assert lines[-1] == "  agent transcripts: .bmad-trio/runs/<run_id>/transcripts/ (no run yet)"
    assert project.summary() == "\n".join(lines)


# --- refusing and re-scaffolding ------------------------------------------------------------------


def _refused(root: Path) -> ConfigError:
    before = _tree(root) if root.is_dir() else None
    with pytest.raises(ConfigError) as info:
        scaffold_demo(root)
    message = str(info.value)
    assert "\n" not in message
    assert str(root.resolve()) in message
    if before is not None:
        assert _tree(root) == before
    return info.value


def test_a_foreign_non_empty_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("my notes\n")
    error = _refused(root)
    assert "not a bmad-trio demo" in str(error)
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]


def test_a_directory_holding_only_an_empty_subdirectory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    (root / "docs").mkdir(parents=True)
    _refused(root)
    assert [p.name for p in root.iterdir()] == ["docs"]


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_text("x")
    _refused(root)
    assert root.read_text() == "x"


def test_a_corrupt_marker_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    scaffold_demo(root)
    (root / DEMO_MARKER).write_text("{not json")
    _refused(root)


def _new_file(root: Path) -> None:
    (root / "src/sample_app/extra.py").write_text("x = 1\n")


def _changed_file(root: Path) -> None:
    (root / "README.md").write_text("my readme\n")


def _state_dir(root: Path) -> None:
    (root / ".bmad-trio").mkdir()
    (root / ".bmad-trio/state.db").write_text("")


def _story_written(root: Path) -> None:
    (root / "docs/stories/1.1.story.md").write_text("# Story 1.1: x\n")


def _symlink(root: Path) -> None:
    (root / "README.md").unlink()
    (root / "README.md").symlink_to(root / ".gitignore")


@pytest.mark.parametrize("touch", [_new_file, _changed_file, _state_dir, _story_written, _symlink])
def test_a_touched_demo_is_refused(tmp_path: Path, touch: Callable[[Path], object]) -> None:
    root = tmp_path / "demo"
    scaffold_demo(root)
    touch(root)
    error = _refused(root)
    assert "choose a new or empty directory" in str(error)


def test_an_untouched_demo_is_scaffolded_again(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    first = scaffold_demo(root)
    _run_gates(root)  # leaves __pycache__ behind: derived files do not count as touching
    assert any(root.rglob("__pycache__"))
    (root / "docs/stories/.gitkeep").unlink()  # a missing demo file is written again
    again = scaffold_demo(root)
    assert again == first
    assert {p for p in _tree(root) if "__pycache__" not in p} == SCAFFOLD_FILES


def test_an_empty_existing_directory_is_used(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    scaffold_demo(root)
    assert set(_tree(root)) == SCAFFOLD_FILES


def test_a_demo_from_another_interpreter_is_scaffolded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "demo"
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", "/opt/other/bin/python3")
        scaffold_demo(root)
    assert "/opt/other/bin/python3" in (root / "pyproject.toml").read_text()
    scaffold_demo(root)
    assert (root / "pyproject.toml").read_text() == demo_files()["pyproject.toml"]
    marker = json.loads((root / DEMO_MARKER).read_text())
    assert all(len(hashes) == 1 for hashes in marker["files"].values())


# --- atomic writes --------------------------------------------------------------------------------


def test_every_file_goes_through_the_atomic_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real = demo.write_text_atomic

    def spy(path: Path, text: str, *, bom: bool = False) -> None:
        written.append(path.relative_to(root).as_posix())
        real(path, text, bom=bom)

    root = (tmp_path / "demo").resolve()
    monkeypatch.setattr(demo, "write_text_atomic", spy)
    scaffold_demo(root)
    assert written[0] == written[-1] == DEMO_MARKER  # marker first (all hashes), and last
    assert set(written) == SCAFFOLD_FILES


def _fail_replace_after(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    real = os.replace
    calls = 0

    def failing(src: Any, dst: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > allowed:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)


@pytest.mark.parametrize("allowed", [0, 1, 4, 9])
def test_an_interrupted_scaffold_leaves_no_half_file_and_can_be_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: int
) -> None:
    root = tmp_path / "demo"
    with monkeypatch.context() as patch:
        _fail_replace_after(patch, allowed)
        with pytest.raises(ConfigError, match="No space left on device"):
            scaffold_demo(root)
    files = demo_files()
    tree = _tree(root)
    assert not [p for p in tree if p.endswith(".tmp")]
    for path, data in tree.items():
        if path != DEMO_MARKER:
            assert data == files[path].encode(), path  # whole, never partial
    scaffold_demo(root)
    assert set(_tree(root)) == SCAFFOLD_FILES


def test_an_interrupted_rescaffold_with_new_content_can_be_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "demo"
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", "/opt/other/bin/python3")
        scaffold_demo(root)
    with monkeypatch.context() as patch:
        _fail_replace_after(patch, 1)  # the marker, then fail before pyproject.toml is replaced
        with pytest.raises(ConfigError):
            scaffold_demo(root)
    assert "/opt/other/bin/python3" in (root / "pyproject.toml").read_text()
    scaffold_demo(root)
    assert (root / "pyproject.toml").read_text() == demo_files()["pyproject.toml"]


# --- what the BMAD actor adds -----------------------------------------------------------------------


def _numbered(text: str) -> str:
    return "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(text.splitlines(), start=1))


def _execute(root: Path, use: ToolUseBlock) -> tuple[str, bool]:
    """Run one tool call the way the Claude Code CLI would (Read, Write, Edit only)."""
    args: Mapping[str, object] = use.input
    path = Path(str(args["file_path"]))
    assert path.is_absolute()
    assert path.resolve().is_relative_to(root), path
    if use.name == "Read":
        if not path.is_file():
            return "File does not exist.", True
        return _numbered(path.read_text()), False
    if use.name == "Write":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(args["content"]))
        return f"File created successfully at: {path}", False
    if use.name == "Edit":
        text = path.read_text()
        old, new = str(args["old_string"]), str(args["new_string"])
        assert old in text, (path, old)
        count = -1 if args.get("replace_all") else 1
        path.write_text(text.replace(old, new, count))
        return f"The file {path} has been updated.", False
    raise AssertionError(f"unexpected tool {use.name}")


def _session(root: Path, actor: BmadActor, prompt: str) -> str:
    """One agent session against the real BMAD actor, tools executed in-process; its last text."""
    messages: list[dict[str, object]] = [{"role": "user", "content": prompt}]
    system = f"You are Claude Code.\nPrimary working directory: {root}\n"
    for _ in range(10):
        request = ApiRequest(
            method="POST",
            path="/v1/messages",
            body={"model": "m", "system": system, "messages": messages},
        )
        reply = actor(request)
        assert isinstance(reply, Reply)
        uses = [b for b in reply.blocks if isinstance(b, ToolUseBlock)]
        if not uses:
            return " ".join(b.text for b in reply.blocks if isinstance(b, TextBlock))
        content: list[dict[str, object]] = []
        results: list[dict[str, object]] = []
        for index, use in enumerate(uses):
            use_id = f"toolu_{len(messages)}_{index}"
            content.append({"type": "tool_use", "id": use_id, "name": use.name, "input": use.input})
            text, is_error = _execute(root, use)
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": use_id,
                    "content": text,
                    "is_error": is_error,
                }
            )
        messages.append({"role": "assistant", "content": content})
        messages.append({"role": "user", "content": results})
    raise AssertionError("the session did not end")


def _context(project: DemoProject, role: str, story_id: str, **extra: str) -> str:
    layout = detect_layout(project.root)
    title = TITLES[story_id]
    story_file = new_story_path(layout, story_id, title).relative_to(project.root)
    gate_file = (layout.gates_dir / f"{story_id}-{story_slug(title)}.yml").relative_to(project.root)
    lines = [
        f"You are the {role} agent.",
        "",
        "## Context",
        f"- role: {role}",
        f"- story: {story_id}",
        f"- story title: {title}",
        f"- story file: {story_file.as_posix()}",
        f"- epic file: {project.epic_path.relative_to(project.root).as_posix()}",
        f"- gate file: {gate_file.as_posix()}",
        f"- package: {project.package}",
        *(f"- {key}: {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines)


def _approve(path: Path) -> None:
    path.write_text(path.read_text().replace("## Status\n\nDraft\n", "## Status\n\nApproved\n"))


def test_the_bmad_actors_work_keeps_both_gates_green(tmp_path: Path) -> None:
    project = scaffold_demo(tmp_path / "demo")
    root = project.root
    layout = detect_layout(root)
    actor = BmadActor(fail_first_review=frozenset(project.fail_first_review))
    for story_id in ("1.1", "1.3"):
        _session(root, actor, _context(project, "sm", story_id))
        story_path = find_story_file(layout, story_id, TITLES[story_id])
        assert story_path is not None
        _approve(story_path)
        _session(root, actor, _context(project, "dev", story_id))
        _session(root, actor, _context(project, "qa", story_id, review="first"))
        story = parse_story(story_path)
        assert story.story_id == story_id
        assert story.status == StoryStatus.REVIEW
        gate = find_qa_gate_file(layout, story_id)
        assert gate is not None
        assert read_qa_gate(gate).gate == "PASS"
    assert (root / "src/sample_app/add_greeting.py").is_file()
    assert (root / "tests/test_add_shout.py").is_file()
    _run_gates(root)
    done = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-v"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "test_add_greeting" in done.stderr
    assert "test_add_shout" in done.stderr
    assert "Ran 7 tests" in done.stderr

    lines = where_to_look(project, "run-1")
    assert (
        "  stories (SM drafts, Dev and QA update): docs/stories/1.1.story.md, docs/stories/1.3.story.md"
        in lines
    )
    assert "  code (Dev): src/sample_app/add_greeting.py, src/sample_app/add_shout.py" in lines
    assert "  tests (Dev): tests/test_add_greeting.py, tests/test_add_shout.py" in lines
    assert (
        "  QA gate files: docs/qa/gates/1.1-add-greeting.yml, docs/qa/gates/1.3-add-shout.yml"
        in lines
    )
    assert lines[-1] == "  agent transcripts: .bmad-trio/runs/run-1/transcripts/"
    # a run makes the directory a used demo: scaffolding it again is refused
    _refused(root)


def test_where_to_look_picks_the_latest_run(tmp_path: Path) -> None:
    project = scaffold_demo(tmp_path / "demo")
    runs = project.root / ".bmad-trio" / "runs"
    (runs / "20240101-a").mkdir(parents=True)
    (runs / "20240102-b").mkdir()
    os.utime(runs / "20240101-a", (1, 1))
    os.utime(runs / "20240102-b", (2, 2))
    assert (
        where_to_look(project)[-1] == "  agent transcripts: .bmad-trio/runs/20240102-b/transcripts/"
    )


@pytest.mark.e2e
@pytest.mark.anyio
async def test_story_1_1_through_the_real_cli_keeps_both_gates_green(tmp_path: Path) -> None:
    from claude_agent_sdk import ClaudeAgentOptions, ProcessError, ResultMessage, query

    from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

    project = scaffold_demo(tmp_path / "demo")
    config_dir = tmp_path / "claude-config"
    config_dir.mkdir()

    async def session(api: FakeAnthropicAPI, prompt: str) -> ResultMessage:
        options = ClaudeAgentOptions(
            cwd=project.root,
            env={**api.env(), "CLAUDE_CONFIG_DIR": str(config_dir)},
            setting_sources=[],
            permission_mode="acceptEdits",
            allowed_tools=["Read", "Write", "Edit"],
        )
        results: list[ResultMessage] = []
        with contextlib.suppress(ProcessError):
            async for message in query(prompt=prompt, options=options):
                if isinstance(message, ResultMessage):
                    results.append(message)
        assert results
        assert not results[-1].is_error, results[-1]
        return results[-1]

    layout = detect_layout(project.root)
    async with FakeAnthropicAPI(bmad_actor_scenario(project.fail_first_review)) as api:
        await session(api, _context(project, "sm", "1.1"))
        story_path = find_story_file(layout, "1.1", TITLES["1.1"])
        assert story_path is not None
        _approve(story_path)
        await session(api, _context(project, "dev", "1.1"))
        await session(api, _context(project, "qa", "1.1", review="first"))
    assert parse_story(story_path).status == StoryStatus.REVIEW
    gate = find_qa_gate_file(layout, "1.1")
    assert gate is not None
    assert read_qa_gate(gate).gate == "PASS"
    assert (project.root / "src/sample_app/add_greeting.py").is_file()
    assert (project.root / "tests/test_add_greeting.py").is_file()
    _run_gates(project.root)


def test_a_relative_directory_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = scaffold_demo(Path("rel"))
    assert project.root == (tmp_path / "rel").resolve()
    monkeypatch.chdir(project.root)
    assert scaffold_demo(Path(".")) == project  # `bmad-trio demo .` inside an untouched scaffold
