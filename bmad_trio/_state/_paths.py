"""Where a project's durable state lives: the one definition of ``<project>/.bmad-trio/`` and its files.

Every module that reads or writes the state folder asks here, so renaming a file or moving the folder is
a change to this module alone. Pure path arithmetic: no I/O.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = [
    "STATE_DIR_NAME",
    "lock_path",
    "run_dir",
    "safe_name",
    "state_db_path",
    "state_dir",
    "state_gitignore_path",
    "worktrees_dir",
]

STATE_DIR_NAME: Final = ".bmad-trio"
"""The state folder's name, directly under the project root."""

_DB_NAME: Final = "state.db"
_LOCK_NAME: Final = "run.lock"
_RUNS_DIR_NAME: Final = "runs"
_WORKTREES_DIR_NAME: Final = "worktrees"
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")


def state_dir(project: Path) -> Path:
    """``<project>/.bmad-trio``."""
    return Path(project) / STATE_DIR_NAME


def state_db_path(project: Path) -> Path:
    """``<project>/.bmad-trio/state.db``: the SQLite store."""
    return state_dir(project) / _DB_NAME


def lock_path(project: Path) -> Path:
    """``<project>/.bmad-trio/run.lock``: held by the one run (or resume) that owns the state."""
    return state_dir(project) / _LOCK_NAME


def run_dir(project: Path, run_id: str) -> Path:
    """``<project>/.bmad-trio/runs/<run_id>``: one run's events, log and transcripts."""
    return state_dir(project) / _RUNS_DIR_NAME / safe_name(run_id)


def worktrees_dir(project: Path) -> Path:
    """``<project>/.bmad-trio/worktrees``: the git worktrees of runs, one folder per run."""
    return state_dir(project) / _WORKTREES_DIR_NAME


def state_gitignore_path(project: Path) -> Path:
    """``<project>/.bmad-trio/.gitignore``: ignores the whole state folder (contents ``*``)."""
    return state_dir(project) / ".gitignore"


def safe_name(part: str) -> str:
    """A file-name-safe version of a story id, role or run id (no separators, no ``..``)."""
    cleaned = _UNSAFE_NAME_CHARS.sub("_", part).strip(".")
    return cleaned or "_"
