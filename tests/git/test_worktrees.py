"""Worktrees of a run, with real git: creation, reuse, a taken branch name, invisibility to the user's
tools, submodules, sparse checkout, LFS without git-lfs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bmad_trio._errors import GitError
from bmad_trio._git import (
    commit_phase,
    create_integration,
    create_story_worktree,
    integration_path,
    story_path,
)

from ._repo import head, init_repo, sh_git, write

pytestmark = pytest.mark.anyio


async def test_integration_and_story_worktrees_are_made_and_reused(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", files={"app.py": "print('hi')\n"})
    start = head(repo)
    integration = await create_integration(
        repo, run_id="r1", branch="bmad/epic-1", start_commit=start
    )
    assert integration.path == integration_path(repo, "r1")
    assert integration.path.parent.parent == repo / ".bmad-trio" / "worktrees"
    assert head(integration.path) == start
    assert sh_git(integration.path, "branch", "--show-current").strip() == "bmad/epic-1"
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.2", branch="bmad/epic-1-story-1.2", base_commit=start
    )
    assert story.path == story_path(repo, "r1", "1.2")
    assert (story.path / "app.py").read_text(encoding="utf-8") == "print('hi')\n"
    write(story.path / "app.py", "print('story')\n")
    await commit_phase(story.path, message="dev", trailers={"Bmad-Run": "r1"})
    # Resume: the same calls hand back the same worktrees, work intact.
    again = await create_story_worktree(
        repo, run_id="r1", story_key="1.2", branch="bmad/epic-1-story-1.2", base_commit=start
    )
    assert again.path == story.path
    assert (again.path / "app.py").read_text(encoding="utf-8") == "print('story')\n"
    assert (
        await create_integration(repo, run_id="r1", branch="bmad/epic-1", start_commit=start)
    ).path == integration.path
    # The user's checkout saw none of it.
    assert sh_git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert sh_git(repo, "branch", "--show-current").strip() == "main"


async def test_a_worktree_whose_folder_was_deleted_is_made_again(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    start = head(repo)
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.1", branch="bmad/e/1.1", base_commit=start
    )
    write(story.path / "x.txt", "x\n")
    sha = await commit_phase(story.path, message="dev", trailers={"Bmad-Run": "r1"})
    shutil.rmtree(story.path)
    again = await create_story_worktree(
        repo, run_id="r1", story_key="1.1", branch="bmad/e/1.1", base_commit=start
    )
    assert head(again.path) == sha  # the branch (and its phase commit) is reused


async def test_a_branch_name_taken_by_someone_else_is_refused(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    start = head(repo)
    sh_git(repo, "switch", "-q", "-c", "bmad/epic-1")
    write(repo / "mine.txt", "user's work\n")
    sh_git(repo, "add", "-A")
    sh_git(repo, "commit", "-q", "-m", "user's own commit")
    sh_git(repo, "switch", "-q", "main")
    with pytest.raises(
        GitError, match=r"branch bmad/epic-1 already exists .*not made by run r1.*taken"
    ):
        await create_integration(repo, run_id="r1", branch="bmad/epic-1", start_commit=start)
    assert not integration_path(repo, "r1").exists()


async def test_a_leftover_branch_of_the_same_run_is_reused(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    start = head(repo)
    sh_git(repo, "branch", "bmad/epic-1", start)  # e.g. killed between branch creation and checkout
    integration = await create_integration(
        repo, run_id="r1", branch="bmad/epic-1", start_commit=start
    )
    assert head(integration.path) == start


def _tool_output(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=300)


async def test_pytest_and_ruff_in_the_users_checkout_see_no_worktree_file(tmp_path: Path) -> None:
    repo = init_repo(
        tmp_path / "repo",
        files={"test_real.py": "def test_real():\n    assert True\n", "ok.py": "X = 1\n"},
    )
    start = head(repo)
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.1", branch="bmad/e/1.1", base_commit=start
    )
    write(story.path / "test_broken.py", "def test_broken():\n    assert False\n")
    write(story.path / "lint_error.py", "import os\n")
    collected = _tool_output(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], repo
    )
    assert "test_real.py::test_real" in collected.stdout
    assert "test_broken" not in collected.stdout + collected.stderr
    assert "1 test collected" in collected.stdout
    ruff = Path(sys.executable).with_name("ruff")
    linted = _tool_output([str(ruff), "check", "--no-cache", "--select", "F", "."], repo)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    # The same tools run inside the worktree do see the files (the check above can fail).
    inside = _tool_output([str(ruff), "check", "--no-cache", "--select", "F", "."], story.path)
    assert "lint_error.py" in inside.stdout


async def test_story_worktree_has_submodules_checked_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git ≥ 2.38.1 refuses file:// submodules unless allowed; the user would have a real URL.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.file.allow")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "always")
    library = init_repo(tmp_path / "library", files={"lib.txt": "library code\n"})
    repo = init_repo(tmp_path / "repo")
    sh_git(repo, "submodule", "add", "-q", str(library), "vendor/library")
    sh_git(repo, "commit", "-q", "-m", "add submodule")
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.1", branch="bmad/e/1.1", base_commit=head(repo)
    )
    assert (story.path / "vendor" / "library" / "lib.txt").read_text(
        encoding="utf-8"
    ) == "library code\n"
    assert story.notes == ()


async def test_sparse_checkout_of_the_users_checkout_is_applied(tmp_path: Path) -> None:
    repo = init_repo(
        tmp_path / "repo", files={"keep/a.txt": "a\n", "skip/b.txt": "b\n", "top.txt": "t\n"}
    )
    sh_git(repo, "sparse-checkout", "set", "--no-cone", "/keep/", "/top.txt")
    assert not (repo / "skip").exists()
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.1", branch="bmad/e/1.1", base_commit=head(repo)
    )
    assert (story.path / "keep" / "a.txt").exists()
    assert not (story.path / "skip").exists()


async def test_lfs_files_without_git_lfs_stay_pointers_with_a_note(tmp_path: Path) -> None:
    if shutil.which("git-lfs") is not None:
        pytest.skip("git-lfs is installed: this test is about a machine without it")
    repo = init_repo(
        tmp_path / "repo",
        files={
            ".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n",
            "a.bin": "pointer\n",
        },
    )
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.1", branch="bmad/e/1.1", base_commit=head(repo)
    )
    assert (story.path / "a.bin").read_text(encoding="utf-8") == "pointer\n"
    assert len(story.notes) == 1
    assert "git-lfs is not installed" in story.notes[0]
