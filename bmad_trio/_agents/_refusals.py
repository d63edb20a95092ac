"""Recognise refused tool calls in tool results, so they can be reported (tool, target, reason).

Two fences refuse things, and both answer the model with text in the tool's result:

- the file-tool policy (our PreToolUse hook and ``can_use_tool``): ``bmad-trio policy: <why>``;
- the OS sandbox around Bash. The CLI appends a ``<sandbox_violations>`` block for what its
  proxy refused (a host not on the allowlist) and, on macOS, for what Seatbelt logged; on Linux a
  refused write is only the OS error in the command's output ("Read-only file system", or
  "Permission denied" for a denied path that does not exist yet), a hidden secret reads as "No
  such file or directory", and a direct connection fails (its own network namespace: nothing
  listens there, no route out, no DNS).

The OS errors are read from the output of commands that ran in the sandbox, so an ordinary
"Permission denied" of a sandboxed command is reported too: a report, never a decision. Pure
functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

from ._runner import ToolRefusal

__all__ = ["POLICY_PREFIX", "refusals_in"]

POLICY_PREFIX = "bmad-trio policy: "
_MAX = 200
_VIOLATIONS = re.compile(r"<sandbox_violations>\s*(.*?)\s*</sandbox_violations>", re.DOTALL)
_WRITE_ERRORS = ("Read-only file system", "[Errno 30]", "Permission denied", "[Errno 13]")
_NET_ERRORS = (
    "Connection refused",
    "[Errno 111]",
    "Network is unreachable",
    "[Errno 101]",
    "Couldn't connect to server",
    "Could not resolve host",
    "Temporary failure in name resolution",
    "Name or service not known",
)
_QUOTED = re.compile("['\"\u2018`]([^'\"\u2019`]+)['\"\u2019`]")  # GNU tools quote with U+2018/9


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"


def _path_in(line: str) -> str:
    """The path an OS error line names: quoted, or before the error (``bash: line 1: P: ...``)."""
    quoted = _QUOTED.findall(line)
    if quoted:
        return str(quoted[-1])
    head = line.split(": Read-only file system")[0].split(": Permission denied")[0]
    head = head.split(": No such file or directory")[0]
    return head.rsplit(": ", 1)[-1].strip()


def _expanded(entry: str, home: str | None) -> str:
    if home and (entry == "~" or entry.startswith("~/")):
        return os.path.join(home, entry[2:])
    return entry


def _secret_reads(
    text: str, command: str, deny_read: Sequence[str], home: str | None
) -> Iterator[ToolRefusal]:
    for entry in deny_read:
        spellings = {entry, _expanded(entry, home)}
        if not any(spelling in command for spelling in spellings):
            continue
        for line in text.splitlines():
            hidden = "No such file or directory" in line or "Permission denied" in line
            if hidden and (any(s in line for s in spellings) or entry.rsplit("/", 1)[-1] in line):
                yield ToolRefusal("Bash", _short(entry), "sandbox: read of a secret location")
                return


def refusals_in(
    tool: str,
    target: str,
    result_text: str,
    *,
    sandboxed: bool,
    command: str = "",
    deny_read: Sequence[str] = (),
    home: str | None = None,
) -> list[ToolRefusal]:
    """The refusals one tool result reports (empty for an ordinary result).

    ``sandboxed``: the call was a shell command run in the OS sandbox (its OS errors count);
    ``deny_read`` and ``home`` recognise a read of a hidden secret location.
    """
    found: list[ToolRefusal] = []
    at = result_text.find(POLICY_PREFIX)
    if at >= 0:
        reason = result_text[at + len(POLICY_PREFIX) :].splitlines()[0] if result_text else ""
        return [ToolRefusal(tool, _short(target), _short(f"policy: {reason}"))]
    if not sandboxed:
        return found
    for block in _VIOLATIONS.findall(result_text):
        for line in str(block).splitlines():
            if line.strip():
                found.append(ToolRefusal(tool, _short(target), _short(f"sandbox: {line.strip()}")))
    body = _VIOLATIONS.sub("", result_text)
    seen: set[str] = set()
    for line in body.splitlines():
        if any(error in line for error in _WRITE_ERRORS):
            path = _path_in(line)
            if path and path not in seen:
                seen.add(path)
                found.append(
                    ToolRefusal(tool, _short(path), "sandbox: write outside the role's area")
                )
        elif any(error in line for error in _NET_ERRORS) and "network" not in seen:
            seen.add("network")
            found.append(
                ToolRefusal(tool, _short(target), "sandbox: no network for shell commands")
            )
    found.extend(_secret_reads(body, command, deny_read, home))
    return found
