"""The project-confined tool policy: which tool calls an agent may make, decided by code.

Pure functions; the Claude runner adapts :func:`tool_denial` to a PreToolUse hook (which the CLI calls
for every tool use, whatever the permission mode) and to ``can_use_tool``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

__all__ = ["WRITE_TOOLS", "tool_denial"]

WRITE_TOOLS: frozenset[str] = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
"""Tools that change files; their target must lie inside the project and match the role's globs."""
READ_TOOLS: frozenset[str] = frozenset({"Read", "Glob", "Grep", "LS"})


def _target_path(tool_input: Mapping[str, object]) -> str | None:
    for key in ("file_path", "notebook_path", "path"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _inside(root: Path, candidate: str) -> PurePosixPath | None:
    """The candidate relative to root (symlinks resolved), or None when it escapes root."""
    path = Path(candidate)
    if not path.is_absolute():
        path = root / path
    resolved = Path(os.path.realpath(path))
    try:
        return PurePosixPath(resolved.relative_to(root).as_posix())
    except ValueError:
        return None


def _matches(relative: PurePosixPath, patterns: Sequence[str]) -> bool:
    text = relative.as_posix()
    return any(
        pattern == "**" or fnmatch.fnmatchcase(text, pattern) or relative.match(pattern)
        for pattern in patterns
    )


def tool_denial(
    tool_name: str,
    tool_input: Mapping[str, object],
    *,
    root: Path,
    allowed_tools: Sequence[str],
    writable_paths: Sequence[str],
) -> str | None:
    """Why this tool call must be refused, or None to allow it.

    ``root`` must be an absolute, resolved directory. A tool not in ``allowed_tools`` is refused; a
    write tool must target a file inside ``root`` matching one of ``writable_paths`` (globs relative
    to ``root``); a read tool must stay inside ``root``.
    """
    if tool_name not in allowed_tools:
        return f"tool {tool_name} is not allowed for this role"
    target = _target_path(tool_input)
    if tool_name in WRITE_TOOLS:
        if target is None:
            return f"{tool_name} without a file path"
        relative = _inside(root, target)
        if relative is None:
            return f"{target} is outside the project directory"
        if not _matches(relative, writable_paths):
            return f"this role may not write {relative.as_posix()}"
    elif tool_name in READ_TOOLS and target is not None and _inside(root, target) is None:
        return f"{target} is outside the project directory"
    return None
