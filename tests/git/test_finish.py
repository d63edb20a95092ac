"""The end of a run: ``merge`` (fast-forward or the exact command), ``branch``, ``push`` to a local bare
remote and a stand-in PR command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bmad_trio._git import FinishResult, commit_phase, create_integration, finish

from ._repo import head, init_repo, sh_git, write

pytestmark = pytest.mark.anyio

INTEGRATION = "bmad/epic-1"


async def _run_with_one_commit(tmp_path: Path) -> tuple[Path, str]:
    """A repository whose integration branch is one commit ahead of ``main`` (the run's start)."""
    repo = init_repo(tmp_path / "repo")
    start = head(repo)
    integration = await create_integration(
        repo, run_id="r1", branch=INTEGRATION, start_commit=start
    )
    write(integration.path / "feature.py", "X = 1\n")
    await commit_phase(integration.path, message="Story 1.1", trailers={"Bmad-Run": "r1"})
    return repo, start


async def _finish(repo: Path, start: str, mode: str, **kwargs: object) -> FinishResult:
    arguments: dict[str, object] = {
        "mode": mode,
        "integration_branch": INTEGRATION,
        "user_branch": "main",
        "start_commit": start,
        "remote": None,
        "pr_command": None,
        "title": "Epic 1: the title",
    }
    arguments.update(kwargs)
    return await finish(repo, **arguments)  # type: ignore[arg-type]


async def test_merge_fast_forwards_the_unmoved_clean_checkout(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    result = await _finish(repo, start, "merge")
    assert result.status == "merged"
    assert head(repo) == head(repo, INTEGRATION)
    assert (repo / "feature.py").read_text(encoding="utf-8") == "X = 1\n"
    assert sh_git(repo, "status", "--porcelain") == ""
    assert (await _finish(repo, start, "merge")).status == "up_to_date"


async def test_merge_refuses_when_the_users_branch_moved(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    write(repo / "user.txt", "the user kept working\n")
    sh_git(repo, "add", "user.txt")
    sh_git(repo, "commit", "-q", "-m", "user's commit")
    moved = head(repo)
    result = await _finish(repo, start, "merge")
    assert result.status == "left"
    assert "moved" in result.message
    assert result.command == f"git -C {repo} merge {INTEGRATION}"
    assert head(repo) == moved


async def test_merge_refuses_when_the_checkout_is_dirty(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    write(repo / "README.md", "edited by the user\n")
    result = await _finish(repo, start, "merge")
    assert result.status == "left"
    assert "uncommitted" in result.message
    assert result.command == f"git -C {repo} merge --ff-only {INTEGRATION}"
    assert head(repo) == start
    assert (repo / "README.md").read_text(encoding="utf-8") == "edited by the user\n"


async def test_merge_moves_a_branch_that_is_checked_out_nowhere(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    sh_git(repo, "switch", "-q", "-c", "elsewhere")
    result = await _finish(repo, start, "merge")
    assert result.status == "merged"
    assert head(repo, "main") == head(repo, INTEGRATION)
    assert head(repo) == start  # the checkout (on another branch) untouched


async def test_branch_mode_leaves_everything(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    result = await _finish(repo, start, "branch")
    assert result.status == "left"
    assert INTEGRATION in result.message
    assert head(repo) == start


async def test_push_then_pr_command_with_placeholders(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    remote = tmp_path / "remote.git"
    sh_git(tmp_path, "init", "-q", "--bare", str(remote))
    sh_git(repo, "remote", "add", "origin", str(remote))
    record = tmp_path / "pr-argv.json"
    script = tmp_path / "fake_gh.py"
    script.write_text(
        "import json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "print('https://example.invalid/pr/1')\n",
        encoding="utf-8",
    )
    pr_command = (
        f"{sys.executable} {script} pr create --head {{branch}} --base {{base}} "
        "--title {title} --body 'made by bmad-trio; $HOME stays literal'"
    )
    result = await _finish(repo, start, "push", remote="origin", pr_command=pr_command)
    assert result.status == "pushed"
    assert sh_git(remote, "rev-parse", INTEGRATION).strip() == head(repo, INTEGRATION)
    assert json.loads(record.read_text(encoding="utf-8")) == [
        "pr",
        "create",
        "--head",
        INTEGRATION,
        "--base",
        "main",
        "--title",
        "Epic 1: the title",
        "--body",
        "made by bmad-trio; $HOME stays literal",
    ]
    assert result.pr_returncode == 0
    assert result.pr_output is not None
    assert "https://example.invalid/pr/1" in result.pr_output
    assert head(repo) == start  # push mode leaves the user's branch


async def test_push_is_never_forced(tmp_path: Path) -> None:
    repo, start = await _run_with_one_commit(tmp_path)
    remote = tmp_path / "remote.git"
    sh_git(tmp_path, "init", "-q", "--bare", str(remote))
    # Someone else's commit already on the remote's branch of that name.
    other = init_repo(tmp_path / "other")
    # Its own content: two repositories made in the same second would otherwise share their first
    # commit, and the push would be a plain fast-forward.
    (other / "theirs.txt").write_text("someone else's work\n")
    sh_git(other, "add", "-A")
    sh_git(other, "commit", "-q", "-m", "someone else's commit")
    sh_git(other, "push", "-q", str(remote), f"main:refs/heads/{INTEGRATION}")
    theirs = sh_git(remote, "rev-parse", INTEGRATION).strip()
    result = await _finish(repo, start, "push", remote=str(remote))
    assert result.status == "push_failed"
    assert sh_git(remote, "rev-parse", INTEGRATION).strip() == theirs
