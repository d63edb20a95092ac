"""QA gate files ``{qa}/gates/{e}.{s}-{slug}.yml`` (also ``{e}.{s}.yml``): finding and reading them."""

from __future__ import annotations

import datetime
import enum
import re
from pathlib import Path
from typing import Any, cast

import attrs

from .._errors import ProjectError
from ._ids import split_story_id
from ._layout import Layout
from ._textio import ensure_inside, read_text_doc
from ._yamlio import load_yaml_text

__all__ = ["GateDecision", "GateIssue", "QaGate", "find_gate_file", "read_gate"]

_STORY_FIELD = re.compile(r"""^story:[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)


class GateDecision(enum.StrEnum):
    """The gate values QA writes."""

    PASS = "PASS"
    CONCERNS = "CONCERNS"
    FAIL = "FAIL"
    WAIVED = "WAIVED"


@attrs.frozen
class GateIssue:
    """One ``top_issues`` entry."""

    id: str
    severity: str
    finding: str
    suggested_action: str


@attrs.frozen(kw_only=True)
class QaGate:
    """A parsed gate file."""

    path: Path
    story_id: str | None
    """The ``story`` field as written (read from the text: YAML would turn ``1.10`` into 1.1)."""
    gate: GateDecision
    status_reason: str
    top_issues: tuple[GateIssue, ...]
    reviewer: str | None = None
    updated: str | None = None


def find_gate_file(layout: Layout, story_id: str) -> Path | None:
    """The gate file of ``story_id``; with several slug variants the most recently written one."""
    epic, number = split_story_id(story_id)
    gates = layout.gates_dir
    if not gates.is_dir():
        return None
    found = {
        p
        for pattern in (f"{epic}.{number}-*.yml", f"{epic}.{number}-*.yaml")
        for p in gates.glob(pattern)
        if p.is_file()
    }
    for name in (f"{epic}.{number}.yml", f"{epic}.{number}.yaml"):
        if (gates / name).is_file():
            found.add(gates / name)
    if not found:
        return None
    newest = max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))
    return ensure_inside(layout.project, newest, what=f"gate file of story {story_id}")


def _text(data: dict[str, Any], key: str, path: Path) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str | int | float | datetime.date):
        return str(value)
    raise ProjectError(f"gate key '{key}' must be text, got {value!r}", path=str(path))


def _issues(data: dict[str, Any], path: Path) -> tuple[GateIssue, ...]:
    raw = data.get("top_issues")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProjectError("gate key 'top_issues' must be a list", path=str(path))
    issues: list[GateIssue] = []
    for index, item in enumerate(cast(list[object], raw)):
        if isinstance(item, str):
            issues.append(GateIssue("", "", item, ""))
            continue
        if not isinstance(item, dict):
            raise ProjectError(f"gate top_issues[{index}] must be a mapping", path=str(path))
        entry = {str(k): v for k, v in cast(dict[object, Any], item).items()}
        issues.append(
            GateIssue(
                id=_text(entry, "id", path),
                severity=_text(entry, "severity", path).lower(),
                finding=_text(entry, "finding", path),
                suggested_action=_text(entry, "suggested_action", path),
            )
        )
    return tuple(issues)


def read_gate(path: Path) -> QaGate:
    """Parse a gate file; anything malformed (YAML, no or unknown ``gate``) raises ProjectError."""
    text = read_text_doc(path).text
    loaded = load_yaml_text(text, path)
    if not isinstance(loaded, dict):
        raise ProjectError("gate file must be a YAML mapping", path=str(path))
    data = {str(k): v for k, v in cast(dict[object, Any], loaded).items()}
    raw_gate = data.get("gate")
    if not isinstance(raw_gate, str):
        raise ProjectError("gate file has no 'gate: PASS|CONCERNS|FAIL|WAIVED'", path=str(path))
    try:
        decision = GateDecision(raw_gate.strip().upper())
    except ValueError:
        line = next(
            (n for n, ln in enumerate(text.split("\n"), 1) if ln.lstrip().startswith("gate:")), None
        )
        raise ProjectError(
            f"unknown gate value {raw_gate!r} (expected PASS, CONCERNS, FAIL or WAIVED)",
            path=str(path),
            line=line,
        ) from None
    story = _STORY_FIELD.search(text)
    return QaGate(
        path=path,
        story_id=story.group(1) if story is not None else None,
        gate=decision,
        status_reason=_text(data, "status_reason", path),
        top_issues=_issues(data, path),
        reviewer=_text(data, "reviewer", path) or None,
        updated=_text(data, "updated", path) or None,
    )
