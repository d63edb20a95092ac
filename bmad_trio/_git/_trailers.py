"""Git trailers (``Key: value`` lines at the end of a commit message): writing a block git parses back
with ``git interpret-trailers --parse``, and reading one key's values from a range of commits."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio

from ._command import git

__all__ = ["commit_trailer_values", "format_message", "write_message_file"]

_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def format_message(message: str, trailers: Mapping[str, str]) -> str:
    """``message`` followed by a blank line and one ``Key: value`` line per trailer.

    Raises ValueError for a key git would not read as a trailer key or a value spanning lines.
    """
    for key, value in trailers.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"trailer key {key!r} is not a git trailer key (letters, digits, '-')")
        if "\n" in value or "\r" in value:
            raise ValueError(f"trailer {key}: the value must be one line, got {value!r}")
    body = message.strip() or "bmad-trio"
    if not trailers:
        return body + "\n"
    block = "\n".join(f"{key}: {value.strip()}" for key, value in trailers.items())
    return f"{body}\n\n{block}\n"


async def write_message_file(worktree: Path, text: str) -> Path:
    """Write a commit message to the worktree's own git folder (``git commit -F <file>``; not stdin: a
    hook that fails makes git exit before reading it). Cancellation: kills git; the file is rewritten
    by the next commit."""
    result = await git("rev-parse", "--git-path", "BMAD_TRIO_COMMIT_MSG", cwd=worktree)
    path = anyio.Path(result.stdout.strip())
    if not path.is_absolute():
        path = anyio.Path(worktree) / path
    await path.write_text(text, encoding="utf-8")
    return Path(path)


async def commit_trailer_values(
    cwd: Path, revisions: Sequence[str], key: str
) -> list[tuple[str, list[str]]]:
    """For each commit ``git log <revisions>`` lists (newest first): its id and the values of trailer
    ``key``. Cancellation: kills ``git``."""
    result = await git(
        "log",
        f"--format=%H%x1f%(trailers:key={key},valueonly)%x1e",
        *revisions,
        "--",
        cwd=cwd,
    )
    out: list[tuple[str, list[str]]] = []
    for record in result.stdout.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        commit, _, values = record.partition("\x1f")
        out.append((commit.strip(), [v.strip() for v in values.splitlines() if v.strip()]))
    return out
