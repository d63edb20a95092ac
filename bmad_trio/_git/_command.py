"""Running the ``git`` command line: one function, :func:`git`, that every other module of the git layer
calls.

Each call gets a clean environment for git: no ``GIT_DIR``/``GIT_WORK_TREE``/``GIT_INDEX_FILE`` (or any
other variable that would bind git to a repository other than ``cwd``) inherited from the caller, no
terminal prompts, no editor, English messages, and paths printed raw (``core.quotepath=off``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import anyio
from attrs import frozen

from bmad_trio._errors import GitError

__all__ = [
    "MIN_GIT_VERSION",
    "NO_HOOKS",
    "GitResult",
    "git",
    "git_env",
    "git_version",
    "parse_version",
]

MIN_GIT_VERSION: Final = (2, 30)
"""The oldest git the git layer supports."""

# Variables that point git at a repository, index or object store other than the one ``cwd`` is in.
# They are set, for example, when bmad-trio is started from inside a git hook.
_REPOSITORY_BINDING_VARIABLES: Final = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)

_FIXED_ENV: Final = {
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
    # ":" is git's own "no editor": a rebase --continue or merge never waits for one.
    "GIT_EDITOR": ":",
    "GIT_SEQUENCE_EDITOR": ":",
    "GCM_INTERACTIVE": "never",
}

NO_HOOKS: Final = ("-c", "core.hooksPath=/dev/null")
"""Options that switch the repository's hooks off for one command (no hook file can be found under
``/dev/null``). Used for bmad-trio's internal operations; the landing commit runs the hooks."""

_VERSION: Final = re.compile(r"git version (\d+)\.(\d+)(?:\.(\d+))?")


@frozen
class GitResult:
    """What one git command did. ``stdout`` is decoded as UTF-8 with surrogate escapes, so a path
    that is not valid UTF-8 survives a round trip through :func:`os.fsencode`."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def git_env(env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a git command runs with (see the module docstring)."""
    env = {
        key: value for key, value in os.environ.items() if key not in _REPOSITORY_BINDING_VARIABLES
    }
    env.update(_FIXED_ENV)
    if env_extra:
        env.update(env_extra)
    return env


def _command(args: tuple[str, ...]) -> list[str]:
    return ["git", "-c", "core.quotepath=off", *args]


def _first_line(text: str) -> str:
    """Git's first ``fatal:``/``error:`` line (progress lines such as "Preparing worktree" come
    before it), else its first non-blank line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[0] if lines else ""


async def git(
    *args: str,
    cwd: Path,
    env_extra: Mapping[str, str] | None = None,
    check: bool = True,
    input: bytes | None = None,
) -> GitResult:
    """Run ``git <args>`` in ``cwd`` and return what it printed.

    With ``check`` (the default) a non-zero exit raises :class:`GitError`, whose one-line message
    names the command and git's first line of error output. ``input`` is fed to git's standard input
    (only for commands that read all of it: a git that exits first breaks the pipe);
    without it git reads from an empty stdin, never the terminal.

    Cancellation: a cancelled call kills the git process (``anyio.run_process`` does so) and waits for
    it to exit, then re-raises the cancellation. Processes git started itself (a hook, a filter) are
    not killed with it; they end when their pipes close. Git's own lock files make a killed command safe to
    retry, except for a stale ``index.lock`` which the recovery functions remove.
    """
    feed = input or None  # anyio inherits our stdin for input=b"": give git an empty one instead
    try:
        completed = await anyio.run_process(
            _command(args),
            input=feed,
            stdin=None if feed is not None else subprocess.DEVNULL,
            cwd=cwd,
            env=git_env(env_extra),
            check=False,
        )
    except FileNotFoundError as exc:
        if not await anyio.Path(cwd).is_dir():
            raise GitError(f"git {' '.join(args)}: no such directory {cwd}") from None
        raise GitError("git is not installed (no `git` on PATH)") from exc
    result = GitResult(
        args=args,
        returncode=completed.returncode,
        stdout=completed.stdout.decode("utf-8", "surrogateescape"),
        stderr=completed.stderr.decode("utf-8", "replace"),
    )
    if check and not result.ok:
        detail = _first_line(result.stderr or result.stdout) or f"exit code {result.returncode}"
        raise GitError(
            f"git {' '.join(args)}: {detail}",
            args=args,
            returncode=result.returncode,
            stderr=result.stderr,
        )
    return result


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``(2, 39, 5)`` from ``git version 2.39.5`` (or ``git version 2.39.5.windows.1``); None if unknown."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


async def git_version(cwd: Path) -> tuple[int, int, int] | None:
    """The installed git's version, or None if it cannot be read. Cancellation: kills ``git``."""
    result = await git("version", cwd=cwd, check=False)
    return parse_version(result.stdout) if result.ok else None
