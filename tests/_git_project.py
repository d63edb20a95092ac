"""Real git repositories for tests: a BMAD project committed on ``main``, and git helpers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from _disk_agent import EPIC, make_project

_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in ``cwd``; its stdout (stripped)."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def init_repository(root: Path, *, branch: str = "main") -> Path:
    """Make ``root`` a repository with an identity and commit everything in it."""
    git(root, "init", "-q", "-b", branch)
    git(root, "config", "user.name", "Test User")
    git(root, "config", "user.email", "test@example.invalid")
    git(root, "config", "commit.gpgsign", "false")
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", "initial commit")
    return root


def make_git_project(root: Path, epic: str = EPIC) -> Path:
    """:func:`make_project`, committed as the first commit of a new repository."""
    return init_repository(make_project(root, epic))


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def log_subjects(root: Path, ref: str) -> list[str]:
    """Commit subjects of ``ref``, newest first."""
    return git(root, "log", "--format=%s", ref).splitlines()


def trailers(root: Path, ref: str) -> dict[str, str]:
    """The trailers of ``ref``'s commit message."""
    message = git(root, "log", "-1", "--format=%B", ref)
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout
    found: dict[str, str] = {}
    for line in parsed.splitlines():
        key, _, value = line.partition(":")
        found[key.strip()] = value.strip()
    return found
