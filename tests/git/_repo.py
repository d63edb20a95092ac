"""Real git repositories for the git layer's tests, made with plain ``subprocess`` (set-up, not the
code under test)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bmad_trio._git._command import git_env

IDENTITY = ("Test User", "test@example.com")


def sh_git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git synchronously in ``cwd``; its stdout."""
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=git_env(),
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {completed.stderr}")
    return completed.stdout


def init_repo(path: Path, *, files: dict[str, str] | None = None, identity: bool = True) -> Path:
    """A repository on branch ``main`` with an identity and one commit holding ``files``."""
    path.mkdir(parents=True, exist_ok=True)
    sh_git(path, "init", "-q", "-b", "main")
    if identity:
        sh_git(path, "config", "user.name", IDENTITY[0])
        sh_git(path, "config", "user.email", IDENTITY[1])
    for name, text in (files or {"README.md": "hello\n"}).items():
        write(path / name, text)
    sh_git(path, "add", "-A")
    env_args = [] if identity else ["-c", "user.name=Setup", "-c", "user.email=setup@example.com"]
    sh_git(path, *env_args, "commit", "-q", "-m", "initial commit")
    return path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def commit_all(path: Path, message: str) -> str:
    sh_git(path, "add", "-A")
    sh_git(path, "commit", "-q", "-m", message)
    return head(path)


def head(path: Path, rev: str = "HEAD") -> str:
    return sh_git(path, "rev-parse", rev).strip()


def install_hook(repo: Path, name: str, body: str) -> None:
    """A shell hook in the repository's common hooks folder (shared by every worktree)."""
    hooks = Path(sh_git(repo, "rev-parse", "--git-common-dir").strip())
    if not hooks.is_absolute():
        hooks = repo / hooks
    hook = hooks / "hooks" / name
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    os.chmod(hook, 0o755)
