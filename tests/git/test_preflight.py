"""Preflight: what ``run`` needs from the repository, with real git."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from bmad_trio._errors import PreflightError, RepositoryError
from bmad_trio._git import check_repository, describe_git_needs, ensure_state_ignored

from ._repo import init_repo, sh_git, write

pytestmark = pytest.mark.anyio


async def test_not_a_repository_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError) as info:
        await check_repository(tmp_path, allow_dirty=False)
    assert info.value.exit_code == 2
    assert isinstance(info.value, PreflightError)
    message = str(info.value)
    assert "\n" not in message
    assert 'git init && git add -A && git commit -m "initial commit"' in message
    assert describe_git_needs(tmp_path) == [
        'run needs a git repository with a first commit: git init && git add -A && git commit -m "initial commit"'
    ]


async def test_no_commit_yet(tmp_path: Path) -> None:
    sh_git(tmp_path, "init", "-q", "-b", "main")
    with pytest.raises(
        RepositoryError, match=r"no commit yet.*git add -A && git commit -m"
    ) as info:
        await check_repository(tmp_path, allow_dirty=True)
    assert info.value.exit_code == 2
    assert describe_git_needs(tmp_path) == [
        'run needs a first commit: git add -A && git commit -m "initial commit"'
    ]


async def test_clean_repository_is_ready(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    state = await check_repository(repo, allow_dirty=False)
    assert state.branch == "main"
    assert state.head == sh_git(repo, "rev-parse", "HEAD").strip()
    assert state.top_level.resolve() == repo.resolve()
    assert state.project_subdir == PurePosixPath(".")
    assert state.dirty == ()
    assert state.note is None
    assert describe_git_needs(repo) == []


async def test_dirty_list_is_capped_at_ten(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    for number in range(13):
        write(repo / f"new{number:02}.txt", "x\n")
    write(repo / "README.md", "changed\n")
    with pytest.raises(RepositoryError) as info:
        await check_repository(repo, allow_dirty=False)
    message = str(info.value)
    assert "\n" not in message
    assert "README.md" in message
    assert "and 4 more" in message
    assert "git stash -u" in message
    assert "--allow-dirty" in message
    assert info.value.exit_code == 2
    assert "and 4 more" in describe_git_needs(repo)[0]


async def test_allow_dirty_starts_from_head_and_says_so(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    write(repo / "README.md", "changed\n")
    state = await check_repository(repo, allow_dirty=True)
    assert state.dirty == ("README.md",)
    assert state.note is not None
    assert "not part of it" in state.note
    assert state.head[:12] in state.note


async def test_detached_head(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    sh_git(repo, "switch", "-q", "--detach", "HEAD")
    with pytest.raises(RepositoryError, match=r"detached HEAD.*git switch -c <name>"):
        await check_repository(repo, allow_dirty=True)
    assert describe_git_needs(repo) == [
        "run needs a branch checked out (HEAD is detached): git switch -c <name>"
    ]


async def test_state_folder_is_never_dirty(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    project = repo / "sub" / "project"
    write(project / "keep.txt", "x\n")
    sh_git(repo, "add", "-A")
    sh_git(repo, "commit", "-q", "-m", "project")
    ensure_state_ignored(project)
    write(project / ".bmad-trio" / "state.db", "db")
    write(project / ".bmad-trio" / "runs" / "r1" / "events.jsonl", "{}\n")
    assert sh_git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    state = await check_repository(project, allow_dirty=False)
    assert state.project_subdir == PurePosixPath("sub/project")
    # Even without the .gitignore (an old state folder), the preflight leaves the state folder out.
    (project / ".bmad-trio" / ".gitignore").unlink()
    assert sh_git(repo, "status", "--porcelain") != ""
    state = await check_repository(project, allow_dirty=False)
    assert state.dirty == ()
    assert describe_git_needs(project) == []


def test_ensure_state_ignored_is_idempotent(tmp_path: Path) -> None:
    path = ensure_state_ignored(tmp_path)
    first = path.read_text(encoding="utf-8")
    assert first.splitlines()[-1] == "*"
    assert ensure_state_ignored(tmp_path) == path
    assert path.read_text(encoding="utf-8") == first
    assert [p.name for p in path.parent.iterdir()] == [".gitignore"]
