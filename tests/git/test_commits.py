"""Phase commits and rollback, with real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bmad_trio._git import (
    DEFAULT_IDENTITY,
    commit_phase,
    create_story_worktree,
    rollback_to_last_commit,
)
from bmad_trio._git._command import git_env

from ._repo import head, init_repo, install_hook, sh_git, write

pytestmark = pytest.mark.anyio

TRAILERS = {
    "Bmad-Story": "1.2",
    "Bmad-Role": "dev",
    "Bmad-Cycle": "1",
    "Bmad-Run": "r1",
    "Bmad-Cost-USD": "0.1234",
}


async def _story(tmp_path: Path, *, identity: bool = True) -> tuple[Path, Path]:
    repo = init_repo(
        tmp_path / "repo", files={"app.py": "A = 1\n", ".gitignore": ".venv/\n"}, identity=identity
    )
    story = await create_story_worktree(
        repo, run_id="r1", story_key="1.2", branch="bmad/e-story-1.2", base_commit=head(repo)
    )
    return repo, story.path


async def test_phase_commit_carries_trailers_git_parses(tmp_path: Path) -> None:
    _, wt = await _story(tmp_path)
    write(wt / "app.py", "A = 2\n")
    sha = await commit_phase(wt, message="1.2 dev: implement the feature", trailers=TRAILERS)
    assert sha == head(wt)
    body = sh_git(wt, "log", "-1", "--format=%B")
    assert body.splitlines()[0] == "1.2 dev: implement the feature"
    parsed = _parse_trailers(wt, body)
    assert parsed == [f"{key}: {value}" for key, value in TRAILERS.items()]
    assert sh_git(wt, "log", "-1", "--format=%an <%ae>").strip() == "Test User <test@example.com>"


def _parse_trailers(cwd: Path, body: str) -> list[str]:
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


async def test_nothing_changed_means_no_commit(tmp_path: Path) -> None:
    _, wt = await _story(tmp_path)
    before = head(wt)
    assert await commit_phase(wt, message="qa", trailers=TRAILERS) is None
    assert head(wt) == before


async def test_phase_commits_skip_the_users_hooks(tmp_path: Path) -> None:
    repo, wt = await _story(tmp_path)
    marker = tmp_path / "hook-ran"
    for name in ("pre-commit", "commit-msg", "post-commit"):
        install_hook(repo, name, f'echo {name} >> "{marker}"\nexit 1\n')
    write(wt / "app.py", "A = 3\n")
    assert await commit_phase(wt, message="dev", trailers=TRAILERS) is not None
    assert not marker.exists()


async def test_default_identity_when_the_repository_has_none(tmp_path: Path) -> None:
    _, wt = await _story(tmp_path, identity=False)
    if sh_git(wt, "config", "--get", "user.email", check=False).strip():
        pytest.skip("this machine's git config sets an identity")
    write(wt / "app.py", "A = 4\n")
    await commit_phase(wt, message="dev", trailers=TRAILERS)
    author = sh_git(wt, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip()
    expected = f"{DEFAULT_IDENTITY.name} <{DEFAULT_IDENTITY.email}>"
    assert author == f"{expected}|{expected}"
    assert (
        sh_git(wt, "config", "--get", "user.name", check=False) == ""
    )  # the user's config untouched


async def test_rollback_drops_half_edits_and_keeps_committed_phases(tmp_path: Path) -> None:
    _, wt = await _story(tmp_path)
    write(wt / "app.py", "A = 'phase 1'\n")
    phase1 = await commit_phase(wt, message="dev", trailers=TRAILERS)
    # A session killed part-way: a modified file, a new file, a new folder, an ignored venv.
    write(wt / "app.py", "A = 'half'\n")
    write(wt / "new.py", "half\n")
    write(wt / "pkg" / "mod.py", "half\n")
    write(wt / ".venv" / "marker", "keep me\n")
    sh_git(wt, "add", "new.py")
    await rollback_to_last_commit(wt)
    assert head(wt) == phase1
    assert (wt / "app.py").read_text(encoding="utf-8") == "A = 'phase 1'\n"
    assert not (wt / "new.py").exists()
    assert not (wt / "pkg").exists()
    assert (wt / ".venv" / "marker").exists()
    assert sh_git(wt, "status", "--porcelain") == ""
