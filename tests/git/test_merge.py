"""The merge lane's primitives with real git: squash landing, hooks on landing, conflicts, rebase with
a scripted resolution, crash recovery, removal of merged worktrees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bmad_trio._git import (
    LandResult,
    Worktree,
    abort_rebase,
    commit_phase,
    continue_rebase,
    create_integration,
    create_story_worktree,
    is_landed,
    land_story,
    list_worktrees,
    rebase_in_progress,
    rebase_story,
    recover_integration,
    recover_story_worktree,
    remove_worktree_if_merged,
    story_branch_name,
)
from bmad_trio._git._command import git_env

from ._repo import head, init_repo, install_hook, sh_git, write

pytestmark = pytest.mark.anyio

INTEGRATION = "bmad/epic-1"
BASE_TEXT = "".join(f"line {n}\n" for n in range(1, 21))


async def _setup(tmp_path: Path) -> tuple[Path, Worktree]:
    repo = init_repo(tmp_path / "repo", files={"shared.txt": BASE_TEXT})
    integration = await create_integration(
        repo, run_id="r1", branch=INTEGRATION, start_commit=head(repo)
    )
    return repo, integration


async def _story(repo: Path, integration: Worktree, key: str) -> Worktree:
    return await create_story_worktree(
        repo,
        run_id="r1",
        story_key=key,
        branch=story_branch_name(INTEGRATION, key),
        base_commit=head(integration.path),
    )


def _edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines), encoding="utf-8")


async def _phase(wt: Worktree, key: str, role: str = "dev") -> str | None:
    return await commit_phase(
        wt.path, message=f"{key} {role}", trailers={"Bmad-Story": key, "Bmad-Run": "r1"}
    )


async def _land(integration: Worktree, story: Worktree, key: str) -> LandResult:
    return await land_story(
        integration.path,
        story_branch=story.branch,
        message=f"Story {key}: title",
        trailers={"Bmad-Story": key, "Bmad-Run": "r1"},
    )


def _trailers(cwd: Path, rev: str = "HEAD") -> list[str]:
    body = sh_git(cwd, "log", "-1", "--format=%B", rev)
    out = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        cwd=cwd,
        input=body,
        capture_output=True,
        text=True,
        check=True,
        env=git_env(),
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize("order", [("1.1", "1.2"), ("1.2", "1.1")])
async def test_two_stories_on_different_parts_of_one_file_land_in_either_order(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    repo, integration = await _setup(tmp_path)
    start = head(integration.path)
    stories = {key: await _story(repo, integration, key) for key in ("1.1", "1.2")}
    _edit_line(stories["1.1"].path / "shared.txt", 2, "story 1.1 was here")
    _edit_line(stories["1.2"].path / "shared.txt", 19, "story 1.2 was here")
    for key, wt in stories.items():
        await _phase(wt, key, "dev")
        write(wt.path / f"notes-{key}.md", "qa notes\n")
        await _phase(wt, key, "qa")
    for key in order:
        result = await _land(integration, stories[key], key)
        assert result.status == "landed", result
        assert result.commit == head(integration.path)
        assert await is_landed(repo, INTEGRATION, stories[key].branch)
    text = (integration.path / "shared.txt").read_text(encoding="utf-8")
    assert "story 1.1 was here" in text
    assert "story 1.2 was here" in text
    # One commit per story on the integration branch, with the story's trailers.
    log = sh_git(repo, "log", "--format=%s", f"{start}..{INTEGRATION}").splitlines()
    assert log == [f"Story {order[1]}: title", f"Story {order[0]}: title"]
    trailers = _trailers(repo, INTEGRATION)
    assert f"Bmad-Story-Branch: {stories[order[1]].branch}" in trailers
    assert f"Bmad-Story-Head: {head(stories[order[1]].path)}" in trailers
    # The story branch keeps its phase commits.
    assert len(sh_git(repo, "log", "--format=%H", f"{start}..{stories['1.1'].branch}").split()) == 2
    assert sh_git(repo, "status", "--porcelain") == ""  # the user's checkout untouched


async def test_same_lines_conflict_then_rebase_resolution_lands(tmp_path: Path) -> None:
    repo, integration = await _setup(tmp_path)
    first = await _story(repo, integration, "1.1")
    second = await _story(repo, integration, "1.2")
    _edit_line(first.path / "shared.txt", 10, "first's version")
    _edit_line(second.path / "shared.txt", 10, "second's version")
    await _phase(first, "1.1")
    await _phase(second, "1.2")
    assert (await _land(integration, first, "1.1")).status == "landed"
    tip = head(integration.path)

    conflict = await _land(integration, second, "1.2")
    assert conflict.status == "conflict"
    assert conflict.files == ("shared.txt",)
    assert conflict.previous == tip
    assert head(integration.path) == tip
    assert sh_git(integration.path, "status", "--porcelain") == ""
    assert not await is_landed(repo, INTEGRATION, second.branch)

    rebased = await rebase_story(second.path, INTEGRATION)
    assert rebased.status == "conflict"
    assert rebased.files == ("shared.txt",)
    assert await rebase_in_progress(second.path)
    # The resolver session's work, scripted: keep both versions.
    _edit_line(second.path / "shared.txt", 10, "first's version + second's version")
    # (the conflict markers took extra lines; write the whole resolved file)
    resolved = BASE_TEXT.replace("line 10\n", "first's version + second's version\n")
    (second.path / "shared.txt").write_text(resolved, encoding="utf-8")
    done = await continue_rebase(second.path)
    assert done.status == "rebased"
    assert done.head == head(second.path)
    assert not await rebase_in_progress(second.path)
    landed = await _land(integration, second, "1.2")
    assert landed.status == "landed"
    assert (integration.path / "shared.txt").read_text(encoding="utf-8") == resolved
    assert await is_landed(repo, INTEGRATION, second.branch)


async def test_abort_rebase_returns_the_story_to_its_commits(tmp_path: Path) -> None:
    repo, integration = await _setup(tmp_path)
    first = await _story(repo, integration, "1.1")
    second = await _story(repo, integration, "1.2")
    _edit_line(first.path / "shared.txt", 5, "a")
    _edit_line(second.path / "shared.txt", 5, "b")
    await _phase(first, "1.1")
    mine = await _phase(second, "1.2")
    assert (await _land(integration, first, "1.1")).status == "landed"
    assert (await rebase_story(second.path, INTEGRATION)).status == "conflict"
    await abort_rebase(second.path)
    assert head(second.path) == mine
    assert not await rebase_in_progress(second.path)


async def test_hooks_run_on_landing_but_not_on_phase_commits(tmp_path: Path) -> None:
    repo, integration = await _setup(tmp_path)
    marker = tmp_path / "hook-log"
    install_hook(repo, "pre-commit", f'echo pre-commit >> "{marker}"\n')
    install_hook(repo, "commit-msg", f'echo commit-msg >> "{marker}"\n')
    story = await _story(repo, integration, "1.1")
    write(story.path / "feature.py", "X = 1\n")
    await _phase(story, "1.1")
    assert not marker.exists()
    assert (await _land(integration, story, "1.1")).status == "landed"
    assert marker.read_text(encoding="utf-8").split() == ["pre-commit", "commit-msg"]


async def test_a_failing_hook_on_landing_leaves_the_integration_branch_unchanged(
    tmp_path: Path,
) -> None:
    repo, integration = await _setup(tmp_path)
    install_hook(repo, "pre-commit", 'echo "lint: feature.py:1: bad style" >&2\nexit 1\n')
    story = await _story(repo, integration, "1.1")
    write(story.path / "feature.py", "X = 1\n")
    _edit_line(story.path / "shared.txt", 3, "changed")
    await _phase(story, "1.1")
    tip = head(integration.path)
    result = await _land(integration, story, "1.1")
    assert result.status == "hook_failed"
    assert "lint: feature.py:1: bad style" in result.output
    assert head(integration.path) == tip
    assert head(repo, INTEGRATION) == tip
    assert sh_git(integration.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (integration.path / "feature.py").exists()
    assert not await is_landed(repo, INTEGRATION, story.branch)


async def test_recover_integration_after_a_crash_mid_merge(tmp_path: Path) -> None:
    repo, integration = await _setup(tmp_path)
    story = await _story(repo, integration, "1.1")
    write(story.path / "feature.py", "X = 1\n")
    _edit_line(story.path / "shared.txt", 3, "changed")
    await _phase(story, "1.1")
    tip = head(integration.path)
    # A run killed between `merge --squash` and the commit, and a git killed holding index.lock.
    sh_git(integration.path, "merge", "--squash", story.branch)
    write(integration.path / "stray.txt", "half\n")
    index_lock = Path(sh_git(integration.path, "rev-parse", "--git-path", "index.lock").strip())
    index_lock = index_lock if index_lock.is_absolute() else integration.path / index_lock
    index_lock.write_text("", encoding="utf-8")
    actions = await recover_integration(integration.path)
    assert any("index.lock" in action for action in actions)
    assert any("squash" in action for action in actions)
    assert head(integration.path) == tip
    assert sh_git(integration.path, "status", "--porcelain", "--untracked-files=all") == ""
    # And the lane can go on: the story lands.
    assert (await _land(integration, story, "1.1")).status == "landed"
    # Nothing to do on a consistent worktree.
    assert await recover_integration(integration.path) == []


async def test_recover_integration_after_a_crash_mid_conflicting_merge(tmp_path: Path) -> None:
    repo, integration = await _setup(tmp_path)
    first = await _story(repo, integration, "1.1")
    second = await _story(repo, integration, "1.2")
    _edit_line(first.path / "shared.txt", 7, "x")
    _edit_line(second.path / "shared.txt", 7, "y")
    await _phase(first, "1.1")
    await _phase(second, "1.2")
    assert (await _land(integration, first, "1.1")).status == "landed"
    tip = head(integration.path)
    sh_git(integration.path, "merge", "--no-ff", "--no-commit", second.branch, check=False)
    await recover_integration(integration.path)
    assert head(integration.path) == tip
    assert sh_git(integration.path, "status", "--porcelain", "--untracked-files=all") == ""


async def test_recover_story_worktree_aborts_a_rebase_and_keeps_committed_phases(
    tmp_path: Path,
) -> None:
    repo, integration = await _setup(tmp_path)
    first = await _story(repo, integration, "1.1")
    second = await _story(repo, integration, "1.2")
    _edit_line(first.path / "shared.txt", 5, "a")
    _edit_line(second.path / "shared.txt", 5, "b")
    await _phase(first, "1.1")
    mine = await _phase(second, "1.2")
    assert (await _land(integration, first, "1.1")).status == "landed"
    assert (await rebase_story(second.path, INTEGRATION)).status == "conflict"
    write(second.path / "shared.txt", "half-resolved\n")
    actions = await recover_story_worktree(second.path)
    assert "aborted a rebase in progress" in actions
    assert head(second.path) == mine
    assert sh_git(second.path, "status", "--porcelain") == ""


async def test_only_merged_clean_worktrees_are_removed(tmp_path: Path) -> None:
    repo, integration = await _setup(tmp_path)
    landed = await _story(repo, integration, "1.1")
    unlanded = await _story(repo, integration, "1.2")
    dirty = await _story(repo, integration, "1.3")
    for key, wt in (("1.1", landed), ("1.2", unlanded), ("1.3", dirty)):
        write(wt.path / f"f{key}.txt", key)
        await _phase(wt, key)
    assert (await _land(integration, landed, "1.1")).status == "landed"
    assert (await _land(integration, dirty, "1.3")).status == "landed"
    write(dirty.path / "uncommitted.txt", "work in progress\n")

    infos = {info.branch: info for info in await list_worktrees(repo)}
    assert set(infos) == {INTEGRATION, landed.branch, unlanded.branch, dirty.branch}
    assert infos[INTEGRATION].merged is None
    assert infos[landed.branch].merged is True
    assert infos[landed.branch].clean is True
    assert infos[unlanded.branch].merged is False
    assert infos[dirty.branch].clean is False
    assert infos[dirty.branch].run_id == "r1"

    removed = await remove_worktree_if_merged(repo, landed, INTEGRATION)
    assert removed.removed
    assert not landed.path.exists()
    assert head(repo, landed.branch)  # the branch and its phase commits stay
    kept = await remove_worktree_if_merged(repo, unlanded, INTEGRATION)
    assert (kept.removed, kept.reason) == (False, "not_merged")
    assert unlanded.path.exists()
    kept = await remove_worktree_if_merged(repo, dirty, INTEGRATION)
    assert (kept.removed, kept.reason) == (False, "dirty")
    assert "uncommitted.txt" in kept.detail
    assert (dirty.path / "uncommitted.txt").exists()
    assert {info.branch for info in await list_worktrees(repo)} == {
        INTEGRATION,
        unlanded.branch,
        dirty.branch,
    }
