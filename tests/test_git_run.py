"""Git-native runs with MockAgentRunner and real git: worktrees, phase commits, the merge lane,
conflicts, resume, finish modes and the checks before a run."""

from __future__ import annotations

import functools
import gc
import json
import sys
from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent, make_project
from _git_project import commit_all, git, init_repository, log_subjects, make_git_project, trailers

from bmad_trio import (
    GateCommand,
    Outcome,
    PreflightError,
    RunConfig,
    SessionResult,
    SessionSpec,
    open_run,
    run_epic,
)
from bmad_trio._bmad import detect_layout, parse_epic, parse_story
from bmad_trio._commandline._main import build_parser, main
from bmad_trio._commandline._plan import make_plan
from bmad_trio._state._store import open_store
from bmad_trio._workflow import _run as _run_module
from bmad_trio._workflow._workspace import GitWorkspace, clean_worktrees, open_workspace
from bmad_trio.testing import MockAgentRunner, parse_context

pytestmark = pytest.mark.anyio

TWO_INDEPENDENT = """\
# PRD

## Epic 1: Shared

### Story 1.1: First change
As a user, I want one.

#### Acceptance Criteria
1. one

### Story 1.2: Second change
As a user, I want two.

#### Acceptance Criteria
1. two
"""


def _config(project: Path, **overrides: object) -> RunConfig:
    fields: dict[str, object] = {
        "epic": project / "docs" / "prd" / "epic-1.md",
        "project": project,
        "skip_gates": True,
        "max_cycles": 3,
    }
    fields.update(overrides)
    return RunConfig(**fields)  # pyright: ignore[reportArgumentType]


def _story_status(root: Path, story_id: str) -> str:
    return parse_story(root / "docs" / "stories" / f"{story_id}.story.md").status.value


async def test_stories_land_on_the_run_branch_and_the_checkout_is_left_alone(
    tmp_path: Path,
) -> None:
    project = make_git_project(tmp_path / "project")
    start = git(project, "rev-parse", "HEAD")
    during: list[tuple[Path, str, str]] = []

    def look(spec: SessionSpec) -> None:
        # While any session works, the user's checkout is at its commit and clean.
        during.append((spec.cwd, git(project, "rev-parse", "HEAD"), git(project, "status", "-s")))

    agent = DiskAgent(on_session=look)
    report = await run_epic(_config(project, finish="branch"), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert report.branch == "bmad/epic-1"
    assert during
    assert all(cwd != project and head == start and status == "" for cwd, head, status in during)
    assert git(project, "rev-parse", "main") == start  # finish = branch: main is not moved
    assert not (project / "docs" / "stories").exists()
    subjects = log_subjects(project, "bmad/epic-1")
    assert {"1.1: Add greeting", "1.2: Add farewell", "1.3: Add shout"} <= set(subjects)
    landed = trailers(project, "bmad/epic-1")
    assert landed["Bmad-Run"] == report.run_id
    # Each story branch keeps its phase commits, with trailers.
    phases = log_subjects(project, "bmad/epic-1-story-1.1")
    assert any(s.startswith("1.1 sm: draft") for s in phases), phases
    assert any(s.startswith("1.1 dev: develop") for s in phases), phases
    last = trailers(project, "bmad/epic-1-story-1.1")
    assert last["Bmad-Story"] == "1.1"
    assert last["Bmad-Run"] == report.run_id
    # The run's tree has every story done.
    tree = git(project, "ls-tree", "-r", "--name-only", "bmad/epic-1").splitlines()
    assert "docs/stories/1.3.story.md" in tree


async def test_finish_merge_fast_forwards_the_users_branch(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    report = await run_epic(_config(project), runner=DiskAgent().runner())
    assert report.status == "done", report.failure_reason
    assert git(project, "rev-parse", "main") == git(project, "rev-parse", "bmad/epic-1")
    assert [_story_status(project, s) for s in ("1.1", "1.2", "1.3")] == ["done"] * 3
    assert git(project, "status", "-s") == ""
    assert report.finish is not None
    assert "main" in report.finish


async def test_finish_merge_leaves_a_moved_branch_and_says_how_to_merge(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    moved = anyio.Event()

    def move_main(spec: SessionSpec) -> None:
        if not moved.is_set():
            (project / "mine.txt").write_text("the user's own work\n")
            commit_all(project, "the user's own commit")
            moved.set()

    report = await run_epic(_config(project), runner=DiskAgent(on_session=move_main).runner())
    assert report.status == "done", report.failure_reason
    assert log_subjects(project, "main")[0] == "the user's own commit"
    assert report.finish is not None
    assert "bmad/epic-1" in report.finish


async def test_a_dependency_starts_from_the_merged_tip(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    seen: dict[str, bool] = {}

    def look(spec: SessionSpec) -> None:
        context = parse_context(spec.prompt)
        assert context is not None
        if context.story == "1.3" and context.role == "sm":
            dependency = spec.cwd / "docs" / "stories" / "1.1.story.md"
            seen["1.1 done in 1.3's tree"] = _story_status(spec.cwd, "1.1") == "done"
            assert dependency.is_file()

    report = await run_epic(
        _config(project, jobs=3, finish="branch"), runner=DiskAgent(on_session=look).runner()
    )
    assert report.status == "done", report.failure_reason
    assert seen == {"1.1 done in 1.3's tree": True}


def _shared_file_agent(lines: dict[str, str], *, resolve: bool = True) -> MockAgentRunner:
    """DiskAgent whose Dev also writes the story's line into ``shared.txt`` (line 2 for every
    story: the same lines, so the second story to land conflicts), and whose two SM sessions
    wait for each other, so both stories start from the same commit."""
    agent = DiskAgent()
    both_started = anyio.Event()
    started: set[str] = set()

    async def handle(spec: SessionSpec) -> SessionResult:
        context = parse_context(spec.prompt)
        assert context is not None
        if context.role == "sm":
            started.add(context.story)
            if len(started) == 2:
                both_started.set()
            with anyio.fail_after(120):  # a hang guard: a story that never starts is a failure
                await both_started.wait()
        if context.task == "resolve merge conflict" and not resolve:
            return SessionResult(outcome=Outcome.OK, cost_usd=0.01, turns=1)  # gives up
        if context.role == "dev" and not context.task:
            shared = spec.cwd / "shared.txt"
            text = shared.read_text().splitlines()
            text[1] = lines[context.story]
            shared.write_text("\n".join(text) + "\n")
        return await agent.handle(spec)

    return MockAgentRunner(handle)


async def test_two_stories_editing_the_same_lines_conflict_and_the_resolver_merges_them(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "project", TWO_INDEPENDENT)
    (project / "shared.txt").write_text("top\nmiddle\nbottom\n")
    init_repository(project)
    runner = _shared_file_agent({"1.1": "one", "1.2": "two"})
    events: list[object] = []
    async with open_run(_config(project, jobs=2, finish="branch"), runner=runner) as run:
        async for event in run.events:
            events.append(event)
    report = await run.wait()
    assert report.status == "done", report.failure_reason
    shared = git(project, "show", "bmad/epic-1:shared.txt").splitlines()
    assert shared[0] == "top"
    assert shared[-1] == "bottom"
    assert {"one", "two"} <= set(shared)
    assert not any(line.startswith(("<<<<<<<", ">>>>>>>", "=======")) for line in shared)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("StoryMerged") == 2
    assert "MergeConflict" in kinds


async def test_a_conflict_the_resolver_cannot_fix_fails_only_that_story(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", TWO_INDEPENDENT)
    (project / "shared.txt").write_text("top\nmiddle\nbottom\n")
    init_repository(project)
    runner = _shared_file_agent({"1.1": "one", "1.2": "two"}, resolve=False)
    report = await run_epic(_config(project, jobs=2, finish="branch"), runner=runner)
    assert report.status == "failed"
    statuses = {s.story_id: s.status for s in report.stories}
    assert sorted(statuses.values()) == ["done", "failed"]
    failed = next(s for s in report.stories if s.status == "failed")
    assert failed.failure_reason is not None
    assert "merge conflict in shared.txt" in failed.failure_reason
    # The failed story's branch is kept with its work; the run's branch has the other story.
    key = f"epic-1-story-{failed.story_id}"
    assert git(project, "rev-parse", "--verify", f"bmad/{key}")
    assert "Bmad-Story" in git(project, "log", "-1", "--format=%B", f"bmad/{key}")
    assert report.finish is not None
    assert "git merge" in report.finish


async def test_an_interrupted_run_resumes_without_redoing_committed_phases(
    tmp_path: Path,
) -> None:
    project = make_git_project(tmp_path / "project")
    agent = DiskAgent()
    in_dev = anyio.Event()
    blocking = True

    async def handle(spec: SessionSpec) -> SessionResult:
        context = parse_context(spec.prompt)
        assert context is not None
        if blocking and context.story == "1.2" and context.role == "dev":
            (spec.cwd / "half.py").write_text("def half(:\n")  # a half-done edit
            in_dev.set()
            await anyio.sleep_forever()
        return await agent.handle(spec)

    config = _config(project, jobs=1, finish="branch")
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await run_epic(config, runner=MockAgentRunner(handle))

            tg.start_soon(run)
            await in_dev.wait()
            scope.cancel(reason="the test interrupts the run during 1.2's Dev session")
    landed_before = log_subjects(project, "bmad/epic-1").count("1.1: Add greeting")
    assert landed_before == 1
    blocking = False
    report = await run_epic(config, runner=MockAgentRunner(handle), resume=True)
    assert report.status == "done", report.failure_reason
    assert log_subjects(project, "bmad/epic-1").count("1.1: Add greeting") == 1
    assert agent.sessions[("1.1", "sm")] == 1
    assert agent.sessions[("1.2", "sm")] == 1  # its committed draft was not redone
    tree = git(project, "ls-tree", "-r", "--name-only", "bmad/epic-1").splitlines()
    assert "half.py" not in tree  # the killed session's half edit was rolled back


async def test_a_run_cancelled_while_its_worktree_is_made_ends_interrupted_then_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow first `git worktree add` (a big repository, a loaded machine) held open here: the
    # run exists in the store, its workspace does not yet. The cancel must end it as an
    # interrupted run (no error about its stories, no file left open) that `resume` finishes.
    project = make_git_project(tmp_path / "project")
    making = anyio.Event()
    make_workspace = _run_module.open_workspace

    async def stalled(*args: object, **kwargs: object) -> object:
        making.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(_run_module, "open_workspace", stalled)
    config = _config(project, jobs=1, finish="branch")
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await run_epic(config, runner=DiskAgent().runner())

            tg.start_soon(run)
            await making.wait()
            scope.cancel(reason="the test interrupts the run while its worktree is made")
    async with open_store(project) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        assert (await store.get_run(run_id)).status == "interrupted"
        recorded = await store.stories(run_id)
        assert [s.status for s in recorded] == ["draft"] * 3  # every story, none begun
    monkeypatch.setattr(_run_module, "open_workspace", make_workspace)
    report = await run_epic(config, runner=DiskAgent().runner(), resume=True)
    assert report.run_id == run_id
    assert report.status == "done", report.failure_reason


async def _open_git_workspace(project: Path, *, resumed: bool) -> GitWorkspace:
    config = _config(project)
    layout = detect_layout(project)
    epic = parse_epic(config.epic)
    workspace = await open_workspace(
        config, layout, epic, run_id="r1", run_dir=project / ".bmad-trio" / "r1", resumed=resumed
    )
    assert isinstance(workspace, GitWorkspace)
    return workspace


async def test_closing_the_workspace_closes_the_landings_the_lane_never_took(
    tmp_path: Path,
) -> None:
    # A run cancelled while stories wait in the merge lane's queue: each queued request holds
    # a reply stream that nobody will answer; closing the workspace closes them (else a
    # ResourceWarning when they are collected, an error under this suite's filterwarnings).
    project = make_git_project(tmp_path / "project", TWO_INDEPENDENT)
    workspace = await _open_git_workspace(project, resumed=False)
    stories = parse_epic(project / "docs" / "prd" / "epic-1.md").stories
    async with anyio.create_task_group() as tg:
        for story in stories:
            place = await workspace.open_story(story)
            tg.start_soon(functools.partial(workspace.land, place, story, cost_usd=0.0))
        await anyio.wait_all_tasks_blocked()  # both queued; no lane serves them
        tg.cancel_scope.cancel(reason="the test ends the run with landings queued")
    workspace.close()
    del workspace, tg
    gc.collect()


async def test_a_resume_cancelled_while_the_workspace_recovers_leaves_nothing_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_git_project(tmp_path / "project", TWO_INDEPENDENT)
    (await _open_git_workspace(project, resumed=False)).close()

    recovering = anyio.Event()

    async def stalled(self: GitWorkspace) -> None:
        recovering.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(GitWorkspace, "recover", stalled)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(_open_git_workspace, project, resumed=True))
        await recovering.wait()
        tg.cancel_scope.cancel(reason="the test interrupts the resume while it recovers")
    gc.collect()


async def test_a_dirty_checkout_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    for index in range(12):
        (project / f"draft-{index:02}.txt").write_text("unsaved\n")
    with pytest.raises(PreflightError) as caught:
        await run_epic(_config(project), runner=DiskAgent().runner())
    message = str(caught.value)
    assert "draft-00.txt" in message
    assert "and 2 more" in message
    assert "--allow-dirty" in message
    assert caught.value.exit_code == 2
    assert not (project / ".bmad-trio").exists()


async def test_allow_dirty_runs_from_head_without_the_changes(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    (project / "unsaved.txt").write_text("not committed\n")
    report = await run_epic(
        _config(project, allow_dirty=True, finish="branch"), runner=DiskAgent().runner()
    )
    assert report.status == "done", report.failure_reason
    tree = git(project, "ls-tree", "-r", "--name-only", "bmad/epic-1").splitlines()
    assert "unsaved.txt" not in tree
    assert (project / "unsaved.txt").read_text() == "not committed\n"


@pytest.mark.parametrize("case", ["not a repository", "no commit", "detached HEAD"])
async def test_what_run_needs_from_git_is_a_clear_error(tmp_path: Path, case: str) -> None:
    project = make_project(tmp_path / "project")
    if case == "no commit":
        git(project, "init", "-q")
    elif case == "detached HEAD":
        init_repository(project)
        git(project, "checkout", "-q", "--detach")
    with pytest.raises(PreflightError) as caught:
        await run_epic(_config(project), runner=DiskAgent().runner())
    assert caught.value.exit_code == 2
    hint = {
        "not a repository": "git init",
        "no commit": "git commit",
        "detached HEAD": "git switch",
    }
    assert hint[case] in str(caught.value)
    assert not (project / ".bmad-trio").exists()


async def test_finish_push_pushes_the_branch_and_runs_the_pr_command(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(project, "remote", "add", "origin", str(remote))
    record = tmp_path / "pr-args.txt"
    script = tmp_path / "make_pr.py"
    script.write_text(
        "import sys, pathlib\n"
        f"pathlib.Path({str(record)!r}).write_text('\\n'.join(sys.argv[1:]))\n"
        "print('https://example.invalid/pr/1')\n"
    )
    config = _config(
        project,
        finish="push",
        pr_command=f"{sys.executable} {script} --head {{branch}} --base {{base}} --title {{title}}",
    )
    report = await run_epic(config, runner=DiskAgent().runner())
    assert report.status == "done", report.failure_reason
    assert git(remote, "rev-parse", "bmad/epic-1") == git(project, "rev-parse", "bmad/epic-1")
    args = record.read_text().splitlines()
    assert args[:4] == ["--head", "bmad/epic-1", "--base", "main"]
    assert args[4] == "--title"
    assert "Greetings" in args[5]
    assert git(project, "rev-parse", "main") != git(project, "rev-parse", "bmad/epic-1")


async def test_twenty_stories_at_jobs_4_all_land(tmp_path: Path) -> None:
    stories = "\n".join(
        f"### Story 1.{n}: Feature number {n}\nAs a user, I want {n}.\n\n"
        f"#### Acceptance Criteria\n1. it works\n"
        for n in range(1, 21)
    )
    project = make_git_project(tmp_path / "project", f"# PRD\n\n## Epic 1: Many\n\n{stories}")
    report = await run_epic(_config(project, jobs=4, finish="branch"), runner=DiskAgent().runner())
    assert report.status == "done", report.failure_reason
    subjects = log_subjects(project, "bmad/epic-1")
    for n in range(1, 21):
        assert f"1.{n}: Feature number {n}" in subjects
    assert git(project, "worktree", "list").count(".bmad-trio") == 21  # kept until `clean`


async def test_clean_removes_what_landed_and_keeps_the_rest(tmp_path: Path) -> None:
    project = make_git_project(tmp_path / "project")
    report = await run_epic(_config(project, finish="branch"), runner=DiskAgent().runner())
    assert report.status == "done", report.failure_reason
    worktrees = project / ".bmad-trio" / "worktrees" / report.run_id
    dirty = next(p for p in worktrees.iterdir() if p.name != "_integration")
    (dirty / "notes.txt").write_text("unsaved work in a story's worktree\n")
    lines = await clean_worktrees(project)
    kept = [line for line in lines if line.startswith("kept")]
    removed = [line for line in lines if line.startswith("removed")]
    assert len(removed) == 2, lines  # the two clean, landed stories
    assert any(str(dirty) in line and "uncommitted changes" in line for line in kept), lines
    assert any("_integration" in line and "not merged into main" in line for line in kept), lines
    assert (dirty / "notes.txt").is_file()
    branches = git(project, "branch", "--format=%(refname:short)").splitlines()
    assert "bmad/epic-1" in branches
    assert sum(b.startswith("bmad/epic-1-story-") for b in branches) == 1
    # Once the run's branch is merged into main, clean takes it and its worktree too.
    (dirty / "notes.txt").unlink()
    git(project, "merge", "-q", "--ff-only", "bmad/epic-1")
    lines = await clean_worktrees(project)
    assert all(line.startswith("removed") for line in lines), lines
    assert git(project, "branch", "--format=%(refname:short)").splitlines() == ["main"]
    assert not worktrees.exists()


def test_status_and_plan_json_show_branches_worktrees_and_merged_commits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_git_project(tmp_path / "project")
    config = _config(project, finish="branch")
    report = anyio.run(lambda: run_epic(config, runner=DiskAgent().runner()))
    assert report.status == "done", report.failure_reason
    assert main(["status", "--json", "--project", str(project)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["branch"] == "bmad/epic-1"
    landed = set(git(project, "log", "--format=%H", "bmad/epic-1").splitlines())
    for story in status["stories"]:
        assert story["branch"] == f"bmad/epic-1-story-{story['story_id']}"
        assert Path(story["worktree"]).is_dir()
        assert story["merged_commit"] in landed
    plan = make_plan(config)
    assert plan["branch"] == "bmad/epic-1"
    rows = {row["story_id"]: row for row in plan["stories"]}
    assert rows["1.2"]["branch"] == "bmad/epic-1-story-1.2"
    assert rows["1.2"]["merged_commit"] in landed
    assert rows["1.2"]["worktree"] == status["stories"][1]["worktree"]


async def test_a_commit_hook_that_refuses_a_landing_gets_a_fixer_then_the_story_lands(
    tmp_path: Path,
) -> None:
    project = make_git_project(tmp_path / "project")
    hook = project / ".git" / "hooks" / "pre-commit"
    # The user's hook: refuses a commit whose tree lacks the file the scripted fixer writes. It
    # never runs on the story branches' phase commits (checkpoints), only when a story lands.
    ran = tmp_path / "hook-ran"
    hook.write_text(
        f"#!/bin/sh\necho run >> '{ran}'\n"
        "if ! git diff --cached --name-only | grep -qx fixed && [ ! -f fixed ]; then\n"
        '  echo "lint: the file named fixed is missing"; exit 1\nfi\n'
    )
    hook.chmod(0o755)
    agent = DiskAgent()
    report = await run_epic(
        _config(project, finish="branch", stories=("1.1",)), runner=agent.runner()
    )
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "fixer")] == 1
    assert ran.read_text().count("run") == 2  # refused once, then accepted: landings only
    tree = git(project, "ls-tree", "-r", "--name-only", "bmad/epic-1").splitlines()
    assert "fixed" in tree


@pytest.mark.parametrize("after_each_story", [False, True])
async def test_quality_gates_run_on_the_merged_branch(
    tmp_path: Path, after_each_story: bool
) -> None:
    project = make_git_project(tmp_path / "project")
    seen = tmp_path / "gate-cwd.txt"
    # The gate passes only where every story's code and story file is: the run's merged tree.
    script = (
        "import os, pathlib, sys\n"
        f"pathlib.Path({str(seen)!r}).open('a').write(os.getcwd() + '\\n')\n"
        "ok = pathlib.Path('code.py').is_file() and pathlib.Path('docs/stories').is_dir()\n"
        "sys.exit(0 if ok else 1)\n"
    )
    gate = GateCommand("merged", (sys.executable, "-c", script))
    config = _config(
        project,
        finish="branch",
        skip_gates=False,
        gates=(gate,),
        gates_after_each_story=after_each_story,
    )
    report = await run_epic(config, runner=DiskAgent().runner())
    assert report.status == "done", report.failure_reason
    assert [(g.name, g.passed) for g in report.gates] == [("merged", True)]
    cwds = seen.read_text().splitlines()
    assert cwds
    assert all(cwd.endswith("_integration") for cwd in cwds), cwds
    assert len(cwds) == (4 if after_each_story else 1)  # after each of 3 stories, then the run
    assert not (project / "code.py").exists()  # finish = branch: the checkout is untouched


def test_the_command_line_takes_the_git_options_and_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_git_project(tmp_path / "project")
    assert main(["clean", "--project", str(project)]) == 0
    assert "nothing to clean" in capsys.readouterr().out
    (project / "unsaved.txt").write_text("x\n")
    # Bad input before the preflight: a dirty checkout is exit 2, naming the file and the way out.
    code = main(["run", "docs/prd/epic-1.md", "--project", str(project), "--finish", "branch"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "unsaved.txt" in err
    assert "--allow-dirty" in err
    assert not (project / ".bmad-trio").exists()
    args = build_parser().parse_args(
        ["run", "1", "--allow-dirty", "--finish", "push", "--sandbox", "off", "--jobs", "3"]
    )
    assert (args.allow_dirty, args.finish, args.sandbox, args.jobs) == (True, "push", "off", 3)


async def test_a_landing_whose_quality_gates_fail_is_taken_back_and_fails_that_story(
    tmp_path: Path,
) -> None:
    project = make_git_project(tmp_path / "project")
    # Fails on any tree holding story 1.2's file: 1.2's landing breaks the gate, fixers can't help.
    script = "import pathlib, sys; sys.exit(1 if pathlib.Path('docs/stories/1.2.story.md').exists() else 0)"
    gate = GateCommand("no-1.2", (sys.executable, "-c", script))
    config = _config(
        project,
        finish="branch",
        skip_gates=False,
        gates=(gate,),
        gates_after_each_story=True,
        gate_fix_attempts=1,
        jobs=1,
    )
    agent = DiskAgent()
    report = await run_epic(config, runner=agent.runner())
    statuses = {s.story_id: s.status for s in report.stories}
    assert statuses == {"1.1": "done", "1.2": "failed", "1.3": "done"}, report.stories
    failed = report.stories[1]
    assert failed.failure_reason is not None
    assert "quality gate(s) failed on the merged result" in failed.failure_reason
    tree = git(project, "ls-tree", "-r", "--name-only", "bmad/epic-1").splitlines()
    assert "docs/stories/1.2.story.md" not in tree  # taken back: the branch never kept it
    assert "docs/stories/1.3.story.md" in tree
    assert "1.2: Add farewell" not in log_subjects(project, "bmad/epic-1")
    assert git(project, "rev-parse", "--verify", "bmad/epic-1-story-1.2")  # its work is kept
    assert agent.sessions[("fixer", "fixer")] == 1  # one fixer, then the gate failed again
