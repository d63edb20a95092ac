"""The git runner: environment, errors, cancellation."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from bmad_trio._errors import GitError
from bmad_trio._git import git
from bmad_trio._git._command import parse_version

from ._repo import head, init_repo, install_hook, write

pytestmark = pytest.mark.anyio


async def test_repository_binding_variables_are_not_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = init_repo(tmp_path / "mine")
    other = init_repo(tmp_path / "other", files={"other.txt": "x\n"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    result = await git("rev-parse", "HEAD", cwd=mine)
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert result.stdout.strip() == head(mine)
    assert head(mine) != head(other)


async def test_paths_are_printed_raw_and_messages_in_english(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    write(repo / "café.txt", "x\n")
    result = await git("status", "--porcelain", cwd=repo)
    assert result.stdout == "?? café.txt\n"


async def test_failure_names_the_command_and_gits_error_line(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    with pytest.raises(GitError) as info:
        await git("rev-parse", "--verify", "no-such-branch", cwd=repo)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("git rev-parse --verify no-such-branch: fatal:")
    assert info.value.returncode == 128
    unchecked = await git("rev-parse", "--verify", "no-such-branch", cwd=repo, check=False)
    assert unchecked.returncode == 128


async def test_a_missing_directory_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="no such directory"):
        await git("status", cwd=tmp_path / "missing")


async def test_cancellation_kills_git(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    pid_file = tmp_path / "hook.pid"
    # A hook that never ends on its own: git waits for it. Its pid shows the hook started.
    install_hook(
        repo,
        "pre-commit",
        f'echo $PPID $$ > "{pid_file}.tmp"\nmv "{pid_file}.tmp" "{pid_file}"\nexec sleep 600\n',
    )
    write(repo / "x.txt", "x\n")
    await git("add", "x.txt", cwd=repo)
    with anyio.move_on_after(60) as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: git("commit", "-m", "x", cwd=repo, check=False))
            # The hook is another process: its file is the only signal (no anyio.Event to wait on).
            while not await anyio.Path(pid_file).exists():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            group.cancel_scope.cancel()
    assert not scope.cancelled_caught, "the hook never started"
    git_pid, hook_pid = (int(pid) for pid in pid_file.read_text().split())
    # The hook is git's child, not ours: it outlives git (documented); end it here.
    os.kill(hook_pid, signal.SIGKILL)
    # git itself (the hook's parent) was killed and reaped: no such process any more.
    with pytest.raises(ProcessLookupError):
        os.kill(git_pid, 0)


def test_parse_version() -> None:
    assert parse_version("git version 2.39.5\n") == (2, 39, 5)
    assert parse_version("git version 2.30.0.windows.1") == (2, 30, 0)
    assert parse_version("git version 2.45") == (2, 45, 0)
    assert parse_version("nonsense") is None
    assert sys.version_info >= (3, 11)
