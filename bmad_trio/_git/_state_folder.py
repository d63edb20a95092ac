"""Keeping the state folder out of git's sight: ``<project>/.bmad-trio/.gitignore`` holds ``*``, so
neither ``git status`` nor the user's tools that honour ``.gitignore`` (ruff, editors' indexers) see the
folder or the worktrees inside it. (pytest skips it anyway: its default ``norecursedirs`` has ``.*``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from bmad_trio._bmad._textio import write_text_atomic
from bmad_trio._state._paths import state_dir, state_gitignore_path

__all__ = ["ensure_state_ignored"]

_IGNORE_EVERYTHING: Final = (
    "# written by bmad-trio: the state folder is never part of the repository\n*\n"
)


def ensure_state_ignored(project: Path) -> Path:
    """Create the state folder if needed and make git ignore all of it; returns the ``.gitignore``.

    Idempotent; the file is written atomically (temp file + ``os.replace``) only when its contents
    differ. Synchronous file I/O on one small file: nothing to cancel.
    """
    path = state_gitignore_path(project)
    state_dir(project).mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text(encoding="utf-8") == _IGNORE_EVERYTHING:
            return path
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text_atomic(path, _IGNORE_EVERYTHING)
    return path
