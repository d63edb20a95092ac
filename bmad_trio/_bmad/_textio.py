"""Exact text I/O for user files: size cap, strict UTF-8 (BOM kept), line splitting, atomic writes.

Text is decoded without newline translation, so ``\\r\\n`` stays in the string and writing the
string back (with the BOM if there was one) reproduces the file byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import attrs

from .._errors import ProjectError

__all__ = [
    "MAX_FILE_BYTES",
    "TextDoc",
    "ensure_inside",
    "read_text_doc",
    "split_lines",
    "write_text_atomic",
]

MAX_FILE_BYTES = 5 * 1024 * 1024
"""Files larger than this are refused: no BMAD artifact is anywhere near it."""

_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class TextDoc:
    """A decoded text file: ``text`` has no BOM and untranslated line endings."""

    path: Path
    text: str
    bom: bool

    def lines(self) -> list[str]:
        """The lines of ``text``, each with its own line ending."""
        return split_lines(self.text)


def split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only (not on the other characters ``str.splitlines`` treats as breaks)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def ensure_inside(project: Path, path: Path, *, what: str = "path") -> Path:
    """Resolve ``path`` (relative to ``project``, following symlinks); refuse it outside the project."""
    root = project.resolve()
    candidate = path if path.is_absolute() else project / path
    resolved = candidate.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ProjectError(f"{what} escapes the project directory {root}", path=str(candidate))
    return resolved


def read_text_doc(path: Path) -> TextDoc:
    """Read a UTF-8 file (optional BOM). Missing, huge or non-UTF-8 files raise ProjectError."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ProjectError("file not found", path=str(path)) from None
    except OSError as exc:
        raise ProjectError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ProjectError(
            f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; refusing to read it",
            path=str(path),
        )
    bom = data.startswith(_BOM)
    body = data[len(_BOM) :] if bom else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise ProjectError("file is not valid UTF-8", path=str(path), line=line) from None
    return TextDoc(path=path, text=text, bom=bom)


def write_text_atomic(path: Path, text: str, *, bom: bool = False) -> None:
    """Write ``text`` (no newline translation) via a temp file in the same directory + os.replace."""
    data = (_BOM if bom else b"") + text.encode("utf-8")
    directory = path.parent
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
