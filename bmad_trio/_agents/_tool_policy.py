"""The project-confined file-tool policy: which tool calls an agent may make, decided by code.

Pure functions (they only look at the file system to resolve symlinks); the Claude runner adapts
:func:`tool_denial` to a PreToolUse hook (which the CLI calls for every tool use, whatever the
permission mode) and to ``can_use_tool``. The rules are documented in docs/architecture.md
("The file-tool policy"); in short:

- Every path-like argument of every tool is resolved the way the CLI resolves it before use: the
  CLI trims surrounding whitespace, expands ``~`` and ``~/`` with its HOME, joins a relative path to
  the session's cwd, and the OS follows symlinks. It does not expand ``$VAR``/``${VAR}`` (measured);
  we refuse those and ``~user`` anyway, since a shell-like expansion would send them elsewhere.
- ``..`` is resolved both lexically first (as the CLI's ``path.resolve`` does) and component by
  component (as the OS does through symlinks); both readings must stay inside the project.
- Glob patterns (Glob ``pattern``, Grep ``glob``) may not be absolute outside the project, start
  with ``~`` outside it, contain a ``..`` segment, or have a literal directory prefix outside it;
  brace alternatives are checked one by one.
- Writable patterns are anchored at the project root; ``*``, ``?`` and ``[...]`` match within one
  path segment, ``**`` (a whole segment) matches any number of segments. ``.git`` and
  ``.bmad-trio`` are never writable through file tools.
- A tool outside the role's allowlist is refused. A tool this module does not know is checked by
  its path-like arguments (``path``, ``paths``, ``file_path``, ``*_path``, ``directory``, ...) as if
  it wrote them. Bash's command is not inspected here: the shell is the OS sandbox's business.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Literal

from .._state._paths import STATE_DIR_NAME

__all__ = ["READ_TOOLS", "WRITE_TOOLS", "tool_denial"]

WRITE_TOOLS: frozenset[str] = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
"""Tools that change files; their target must lie inside the project and match the role's globs."""
READ_TOOLS: frozenset[str] = frozenset({"Read", "Glob", "Grep", "LS"})
"""Tools that read or list files; every path they are given must lie inside the project."""
UNCHECKED_TOOLS: frozenset[str] = frozenset({"Bash"})
"""Tools whose arguments this policy does not inspect (the shell is confined by the OS sandbox)."""

_ArgKind = Literal["read", "write", "glob"]
_TOOL_ARGS: Mapping[str, tuple[tuple[str, _ArgKind, bool], ...]] = {
    # (argument, what it is, required)
    "Read": (("file_path", "read", False),),
    "Write": (("file_path", "write", True),),
    "Edit": (("file_path", "write", True),),
    "MultiEdit": (("file_path", "write", True),),
    "NotebookEdit": (("notebook_path", "write", True),),
    "LS": (("path", "read", False),),
    "Glob": (("path", "read", False), ("pattern", "glob", False)),
    "Grep": (("path", "read", False), ("glob", "glob", False)),
}
"""The path-like arguments of the tools we know. Glob's ``pattern`` and Grep's ``glob`` are
relative to the tool's ``path`` (the project root when absent)."""

_PATH_KEYS = frozenset({"path", "paths", "file", "files", "filename", "dir", "directory", "cwd"})
_PATH_SUFFIXES = ("_path", "_paths", "_file", "_files", "_dir", "_directory")
_PROTECTED_SEGMENTS = frozenset({".git", STATE_DIR_NAME})  # the repository and the run store

# What JavaScript's String.prototype.trim removes (the CLI trims every path before using it).
_JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_VARIABLE = re.compile(r"\$(?:\{|[A-Za-z_])")
_GLOB_CHARS = frozenset("*?[{")
_MAX_ALTERNATIVES = 64


class _Refused(Exception):
    """A path argument the policy refuses; the message says why."""


def _homes(home: str | os.PathLike[str] | None) -> list[str]:
    """The HOME the CLI expands ``~`` with: the one given, else ours and the account's."""
    if home is not None:
        return [os.fspath(home)]
    unique: list[str] = []
    for candidate in (os.environ.get("HOME", ""), os.path.expanduser("~")):
        if candidate not in unique and candidate != "~":
            unique.append(candidate)
    return unique


def _expand(text: str, homes: Sequence[str], what: str) -> list[str]:
    """``text`` (already trimmed) with ``~`` expanded for every home; refuses $VAR and ~user."""
    if _VARIABLE.search(text):
        raise _Refused(f"{what} {text!r} names an environment variable; use a project path")
    if text == "~" or text.startswith("~/"):
        return [os.path.join(home, text[2:]) if home else text[2:] or "." for home in homes]
    if text.startswith("~"):
        raise _Refused(f"{what} {text!r} names another user's home; use a project path")
    return [text]


def _relative(root: Path, absolute: str, what: str, raw: str) -> set[PurePosixPath]:
    """``absolute`` relative to root under both readings of ``..`` (lexical first, as the CLI
    does, or component by component through symlinks, as the OS does); refuses a path that
    escapes root under either."""
    relatives: set[PurePosixPath] = set()
    for candidate in (os.path.normpath(absolute), absolute):
        resolved = Path(os.path.realpath(candidate))
        try:
            relatives.add(PurePosixPath(resolved.relative_to(root).as_posix()))
        except ValueError:  # not naming where it lands: a link's target is not the model's to see
            shown = raw.strip(_JS_WHITESPACE)
            raise _Refused(f"{what} {shown} is outside the project directory") from None
    return relatives


def _resolve(
    root: Path, raw: object, base: str, homes: Sequence[str], what: str
) -> set[PurePosixPath]:
    """Where the CLI may look for the path ``raw`` (relative to ``base``), relative to root."""
    if not isinstance(raw, str):
        raise _Refused(f"{what} must be a string")
    text = raw.strip(_JS_WHITESPACE)
    if not text:
        return _relative(root, base, what, raw)
    landings: set[PurePosixPath] = set()
    for expanded in _expand(text, homes, what):
        landings |= _relative(root, os.path.join(base, expanded), what, raw)
    return landings


def _brace_alternatives(pattern: str) -> list[str]:
    """``a{b,c}d`` -> ``abd``, ``acd`` (nested too); refuses patterns with too many. An
    unbalanced ``{`` stays literal (the literal-prefix check then treats it as a wildcard)."""
    results: list[str] = []
    pending = [pattern]
    while pending:
        current = pending.pop()
        group = _first_group(current)
        if group is None:
            results.append(current)
        else:
            start, commas, end = group
            head, tail = current[:start], current[end + 1 :]
            bounds = [start, *commas, end]
            pending += [head + current[a + 1 : b] + tail for a, b in itertools.pairwise(bounds)]
        if len(results) + len(pending) > _MAX_ALTERNATIVES:
            raise _Refused(f"glob {pattern!r} has too many alternatives")
    return results


def _first_group(text: str) -> tuple[int, list[int], int] | None:
    """The first balanced ``{...}``: its start, its top-level commas and its end."""
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    commas: list[int] = []
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return start, commas, index
        elif char == "," and depth == 1:
            commas.append(index)
    return None


def _check_glob(root: Path, pattern: object, base: str, homes: Sequence[str], what: str) -> None:
    """Refuses a glob that could match outside root: see the module docstring."""
    if not isinstance(pattern, str):
        raise _Refused(f"{what} must be a string")
    for alternative in _brace_alternatives(pattern):
        for token in alternative.replace(",", " ").split():
            text = token.strip(_JS_WHITESPACE).removeprefix("!")
            if ".." in text.replace("\\", "/").split("/"):
                raise _Refused(f"{what} {pattern!r} climbs with '..'")
            for expanded in _expand(text, homes, what):
                segments = expanded.split("/")
                literal: list[str] = []
                for segment in segments[:-1]:
                    if _GLOB_CHARS & set(segment):
                        break
                    literal.append(segment)
                prefix = "/".join(literal) or ("/" if expanded.startswith("/") else ".")
                _relative(root, os.path.join(base, prefix), what, pattern)


@lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A writable pattern as a regex over root-relative POSIX paths (see the module docstring)."""
    segments = [s for s in pattern.strip("/").split("/") if s not in ("", ".")]
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append("[^/]+(?:/[^/]+)*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts))


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        index += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := segment.find("]", index + 1)) >= 0:
            body = segment[index:close]
            negate = body[:1] in ("!", "^")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"(?!/)[{'^' if negate else ''}{body}]")
            index = close + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _writable(relative: PurePosixPath, patterns: Sequence[str]) -> bool:
    text = relative.as_posix()
    if text == "." or _PROTECTED_SEGMENTS & set(relative.parts):
        return False
    return any(_pattern_regex(pattern).fullmatch(text) for pattern in patterns)


def _is_path_key(key: str) -> bool:
    return key in _PATH_KEYS or key.endswith(_PATH_SUFFIXES)


def _arguments(
    tool_name: str, tool_input: Mapping[str, object]
) -> Iterator[tuple[str, object, _ArgKind]]:
    """The path-like arguments of one call: those we know for a known tool (refusing a missing
    required one); for an unknown tool every path-like key (each item of a list), as a write."""
    known = _TOOL_ARGS.get(tool_name)
    if known is not None:
        for key, kind, required in known:
            if key in tool_input:
                yield key, tool_input[key], kind
            elif required:
                raise _Refused(f"{tool_name} without its {key}")
        return
    for key, value in tool_input.items():
        if not _is_path_key(key):
            continue
        items: list[object] = list(value) if isinstance(value, list) else [value]  # pyright: ignore[reportUnknownArgumentType]
        for item in items:
            yield key, item, "write"


def tool_denial(
    tool_name: str,
    tool_input: Mapping[str, object],
    *,
    root: Path,
    allowed_tools: Sequence[str],
    writable_paths: Sequence[str],
    home: str | os.PathLike[str] | None = None,
) -> str | None:
    """Why this tool call must be refused, or None to allow it.

    ``root`` must be an absolute, resolved directory. ``home`` is the HOME the CLI runs with
    (``~`` expands to it); without it, a ``~`` path must stay inside ``root`` both with our HOME
    and with the account's home directory. Rules: see the module docstring.
    """
    if tool_name not in allowed_tools:
        return f"tool {tool_name} is not allowed for this role"
    if tool_name in UNCHECKED_TOOLS:
        return None
    homes = _homes(home)
    base = str(root)  # Glob's pattern and Grep's glob are relative to the tool's path
    try:
        for key, value, kind in _arguments(tool_name, tool_input):
            what = f"{tool_name} {key}"
            if kind == "glob":
                _check_glob(root, value, base, homes, what)
                continue
            landings = _resolve(root, value, str(root), homes, what)
            if kind == "write":
                for relative in sorted(landings):
                    if not _writable(relative, writable_paths):
                        return f"this role may not write {relative.as_posix()}"
            elif key == "path":
                base = str(root / min(landings))
    except _Refused as refusal:
        return str(refusal)
    return None
