"""v4 QA gate files ``{qa}/gates/{e}.{s}-{slug}.yml`` (also ``{e}.{s}.yml``): finding, reading, and
deciding whether a story at Review already passed QA.

Reading is tolerant the way real projects need it:

- several gates of one story: the newest by its ``updated:`` field wins (file times are all equal
  after a clone), then file time, then name; with the story's title, gates whose slug starts with
  the story's slug are preferred (two epics may both have a story ``4.1``);
- broken YAML elsewhere in the file: the top-level ``gate:`` line (and ``updated:``, ``story:`` …)
  are read line by line, with a warning;
- ``decision:`` instead of ``gate:``, and non-standard values: ``PASS with CONCERNS`` and
  ``CONDITIONAL PASS`` read as CONCERNS, ``PASSED``/``APPROVED`` as PASS, ``FAILED``/``REJECTED``
  as FAIL; ``PENDING`` (QA has not decided) and unknown words are reported, never guessed.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import attrs

from .._errors import ProjectError
from ._ids import split_story_id, story_slug
from ._layout import Layout
from ._markdown import scan_headings, section_of
from ._status import StoryStatus
from ._status_line import StatusReading
from ._textio import ensure_inside, read_text_doc, split_lines
from ._yamlio import load_yaml_text

__all__ = [
    "QaGate",
    "QaGateDecision",
    "QaGateIssue",
    "QaGateReport",
    "ReviewVerdict",
    "find_qa_gate_file",
    "find_qa_gate_files",
    "qa_gate_decision_of",
    "read_qa_gate",
    "review_already_passed",
    "story_last_change",
    "story_qa_gate",
]

_STORY_FIELD = re.compile(r"""^story:[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)
_TOP_FIELD = re.compile(
    r"""^(?P<key>[A-Za-z_-]+)[ \t]*:[ \t]*(?P<q>["']?)(?P<value>[^"'\r\n#]*?)(?P=q)[ \t]*(?:#.*)?\r?$"""
)
_UPDATED_KEYS = ("updated", "last_updated", "timestamp", "review_date", "reviewed_at", "date")
_DECISION_KEYS = ("gate", "decision", "gate_decision")
_DATE = re.compile(
    r"\b(?P<y>20\d\d)-(?P<m>[01]\d)-(?P<d>[0-3]\d)"
    r"(?:[T ](?P<H>[0-2]\d):(?P<M>[0-5]\d)(?::(?P<S>[0-5]\d)(?:\.\d+)?)?(?P<tz>Z|[+-]\d\d:?\d\d)?)?"
)
_CHANGE_SECTIONS = re.compile(r"^(Change\s*Log|Dev\s+Agent\s+Record)\b", re.IGNORECASE)


class QaGateDecision(enum.StrEnum):
    """The gate values QA writes."""

    PASS = "PASS"
    CONCERNS = "CONCERNS"
    FAIL = "FAIL"
    WAIVED = "WAIVED"


_D = QaGateDecision
_DECISIONS: dict[str, QaGateDecision] = {
    # key: upper case, non-letters removed
    "PASS": _D.PASS,
    "PASSED": _D.PASS,
    "APPROVED": _D.PASS,
    "ACCEPTED": _D.PASS,
    "GO": _D.PASS,
    "CONCERNS": _D.CONCERNS,
    "CONCERN": _D.CONCERNS,
    "PASSWITHCONCERNS": _D.CONCERNS,
    "PASSEDWITHCONCERNS": _D.CONCERNS,
    "CONDITIONALPASS": _D.CONCERNS,
    "CONDITIONAL": _D.CONCERNS,
    "FAIL": _D.FAIL,
    "FAILED": _D.FAIL,
    "REJECTED": _D.FAIL,
    "NOGO": _D.FAIL,
    "CHANGESREQUIRED": _D.FAIL,
    "WAIVED": _D.WAIVED,
    "WAIVER": _D.WAIVED,
}
_UNDECIDED = (
    "PENDING",
    "TBD",
    "INPROGRESS",
    "INREVIEW",
    "NOTREVIEWED",
    "READYFOR",
    "AWAITING",
    "TODO",
    "DRAFT",
    "OPEN",
)


def qa_gate_decision_of(raw: str) -> QaGateDecision | None:
    """Map a gate value as written (``PASS``, ``"pass"``, ``PASS with CONCERNS`` …); None if unknown.

    The whole value is tried first, then its leading word (``PASS ✅``, ``FAIL - see below``).
    """
    whole = re.sub(r"[^A-Za-z]+", "", raw).upper()
    if whole in _DECISIONS:
        return _DECISIONS[whole]
    lead = re.match(r"[^A-Za-z]*([A-Za-z]+(?:[-_ ][A-Za-z]+)*)", raw)
    if lead is None:
        return None
    words = re.split(r"[-_ ]+", lead.group(1).upper())
    for count in range(len(words), 0, -1):
        found = _DECISIONS.get("".join(words[:count]))
        if found is not None:
            return found
    return None


@attrs.frozen
class QaGateIssue:
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
    gate: QaGateDecision
    status_reason: str
    top_issues: tuple[QaGateIssue, ...]
    reviewer: str | None = None
    updated: str | None = None
    """The ``updated`` field as written."""
    updated_at: datetime.datetime | None = None
    """``updated`` (or ``last_updated``/``timestamp``/``date``) parsed; naive values are UTC."""
    raw_gate: str = ""
    """The decision as written (``PASS with CONCERNS``)."""
    warnings: tuple[str, ...] = ()
    """What was read around: broken YAML, ``decision:`` for ``gate:``, a mapped value …"""
    line: int | None = None
    """1-based line of the decision."""


def _as_datetime(value: object) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)
    if not isinstance(value, str):
        return None
    match = _DATE.search(value)
    if match is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(match.group(0).replace(" ", "T"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _text(data: dict[str, Any], key: str, warnings: list[str]) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str | int | float | datetime.date):
        return str(value)
    warnings.append(f"gate key '{key}' is not text; ignored")
    return ""


def _issues(data: dict[str, Any], warnings: list[str]) -> tuple[QaGateIssue, ...]:
    raw = data.get("top_issues")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        warnings.append("gate key 'top_issues' is not a list; ignored")
        return ()
    issues: list[QaGateIssue] = []
    for index, item in enumerate(cast(list[object], raw)):
        if isinstance(item, str):
            issues.append(QaGateIssue("", "", item, ""))
            continue
        if not isinstance(item, dict):
            warnings.append(f"gate top_issues[{index}] is not a mapping; ignored")
            continue
        entry = {str(k): v for k, v in cast(dict[object, Any], item).items()}
        issues.append(
            QaGateIssue(
                id=_text(entry, "id", warnings),
                severity=_text(entry, "severity", warnings).lower(),
                finding=_text(entry, "finding", warnings),
                suggested_action=_text(entry, "suggested_action", warnings),
            )
        )
    return tuple(issues)


def _scan_top_level(text: str) -> dict[str, Any]:
    """Top-level ``key: scalar`` lines, for a file whose YAML does not parse."""
    data: dict[str, Any] = {}
    for line in text.split("\n"):
        match = _TOP_FIELD.match(line)
        key = match.group("key").lower().replace("-", "_") if match is not None else ""
        if match is not None and key not in data and match.group("value"):
            data[key] = match.group("value").strip()
    return data


def _field_line(text: str, key: str) -> int | None:
    spelled = "[-_]".join(re.escape(part) for part in key.split("_"))
    pattern = re.compile(rf"^{spelled}[ \t]*:", re.IGNORECASE)
    return next((n for n, ln in enumerate(text.split("\n"), 1) if pattern.match(ln)), None)


def read_qa_gate(path: Path) -> QaGate:
    """Parse a gate file, tolerantly (see the module doc). ProjectError when no decision can be
    read: no ``gate:``/``decision:`` line, an undecided value (``PENDING``) or an unknown one,
    naming the file and line."""
    text = read_text_doc(path).text
    warnings: list[str] = []
    try:
        loaded = load_yaml_text(text, path)
    except ProjectError as exc:
        data = _scan_top_level(text)
        if not any(k in data for k in _DECISION_KEYS):
            raise ProjectError(
                f"{str(exc).removeprefix(f'{path}:{exc.line}: ')}; no readable 'gate:' line",
                path=str(path),
                line=exc.line,
            ) from None
        warnings.append(f"malformed YAML at line {exc.line}; read the top-level lines one by one")
    else:
        if not isinstance(loaded, dict):
            raise ProjectError("gate file must be a YAML mapping", path=str(path))
        data = {
            str(k).lower().replace("-", "_"): v for k, v in cast(dict[object, Any], loaded).items()
        }
    key = next((k for k in _DECISION_KEYS if k in data), "gate")
    if key != "gate":
        warnings.append(f"uses '{key}:' instead of 'gate:'")
    raw_value: object = data.get(key)
    line = _field_line(text, key)
    if isinstance(raw_value, dict) and "decision" in raw_value:  # gate: {decision: PASS}
        raw_value = cast(dict[str, object], raw_value)["decision"]
    if not isinstance(raw_value, str | bool) or not str(raw_value).strip():
        raise ProjectError(
            "gate file has no 'gate: PASS|CONCERNS|FAIL|WAIVED'", path=str(path), line=line
        )
    raw = str(raw_value).strip()
    decision = qa_gate_decision_of(raw)
    if decision is None:
        squeezed = re.sub(r"[^A-Za-z]+", "", raw).upper()
        if squeezed.startswith(_UNDECIDED):
            raise ProjectError(
                f"gate is {raw!r}: QA has not decided yet", path=str(path), line=line
            )
        raise ProjectError(
            f"unknown gate value {raw!r} (expected PASS, CONCERNS, FAIL or WAIVED)",
            path=str(path),
            line=line,
        )
    if raw.upper() != decision.value:
        warnings.append(f"gate value {raw!r} read as {decision.value}")
    story = _STORY_FIELD.search(text)
    updated_raw: object = next((data[k] for k in _UPDATED_KEYS if data.get(k)), None)
    return QaGate(
        path=path,
        story_id=story.group(1) if story is not None else None,
        gate=decision,
        status_reason=_text(data, "status_reason", warnings),
        top_issues=_issues(data, warnings),
        reviewer=_text(data, "reviewer", warnings) or None,
        updated=_text(data, "updated", warnings) or None,
        updated_at=_as_datetime(updated_raw),
        raw_gate=raw,
        warnings=tuple(warnings),
        line=line,
    )


# -- finding ----------------------------------------------------------------------------------


def _updated_of(path: Path) -> datetime.datetime | None:
    """The gate's ``updated`` without a full read (for ordering); None when absent or unreadable."""
    try:
        text = read_text_doc(path).text
    except ProjectError:
        return None
    for key in _UPDATED_KEYS:
        match = re.search(rf"^{key}[ \t]*:[ \t]*(.+)$", text, re.MULTILINE)
        if match is not None:
            found = _as_datetime(match.group(1))
            if found is not None:
                return found
    return None


_OLDEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def find_qa_gate_files(layout: Layout, story_id: str, title: str | None = None) -> list[Path]:
    """Every gate file of ``story_id``, newest first (see the module doc for the order)."""
    epic, number = split_story_id(story_id)
    gates = layout.gates_dir
    if not gates.is_dir():
        return []
    found = {
        p
        for pattern in (f"{epic}.{number}-*.yml", f"{epic}.{number}-*.yaml")
        for p in gates.glob(pattern)
        if p.is_file()
    }
    for name in (f"{epic}.{number}.yml", f"{epic}.{number}.yaml"):
        if (gates / name).is_file():
            found.add(gates / name)
    if title:
        prefix = f"{epic}.{number}-{story_slug(title)}"
        preferred = {p for p in found if p.stem.lower().startswith(prefix.lower())}
        found = preferred or found
    ordered = sorted(
        found,
        key=lambda p: (_updated_of(p) or _OLDEST, p.stat().st_mtime_ns, p.name),
        reverse=True,
    )
    return [
        ensure_inside(layout.project, p, what=f"gate file of story {story_id}") for p in ordered
    ]


def find_qa_gate_file(layout: Layout, story_id: str, title: str | None = None) -> Path | None:
    """The newest gate file of ``story_id`` (by ``updated:``, then file time), or None."""
    files = find_qa_gate_files(layout, story_id, title)
    return files[0] if files else None


@attrs.frozen(kw_only=True)
class QaGateReport:
    """A story's gate for ``plan``: the newest file and its decision, or why there is none."""

    path: Path
    decision: QaGateDecision | None
    raw: str | None
    updated_at: datetime.datetime | None
    warnings: tuple[str, ...]
    problem: str | None
    """Why no decision was read (malformed, undecided, unknown value); None when read."""
    older: tuple[Path, ...]
    """The story's other gate files, newest first (not used)."""
    gate: QaGate | None = None

    def as_json(self, root: Path) -> dict[str, Any]:
        """JSON-able fields for ``plan --json`` (paths relative to ``root`` when inside it)."""

        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

        return {
            "file": rel(self.path),
            "decision": self.decision.value if self.decision is not None else None,
            "raw": self.raw,
            "updated": self.updated_at.isoformat() if self.updated_at is not None else None,
            "warnings": list(self.warnings),
            "problem": self.problem,
            "older": [rel(p) for p in self.older],
        }


def story_qa_gate(layout: Layout, story_id: str, title: str | None = None) -> QaGateReport | None:
    """The story's newest gate and its decision (None when it has no gate file); never raises for
    a bad gate file: the problem is reported in :attr:`QaGateReport.problem`."""
    files = find_qa_gate_files(layout, story_id, title)
    if not files:
        return None
    newest, older = files[0], tuple(files[1:])
    try:
        gate = read_qa_gate(newest)
    except ProjectError as exc:
        return QaGateReport(
            path=newest,
            decision=None,
            raw=None,
            updated_at=_updated_of(newest),
            warnings=(),
            problem=str(exc),
            older=older,
        )
    return QaGateReport(
        path=newest,
        decision=gate.gate,
        raw=gate.raw_gate,
        updated_at=gate.updated_at,
        warnings=gate.warnings,
        problem=None,
        older=older,
        gate=gate,
    )


# -- did the review already pass? -------------------------------------------------------------


def story_last_change(lines: Sequence[str]) -> datetime.date | None:
    """The latest date in the story's Change Log and Dev Agent Record sections (None if none).

    These are the sections Dev writes (file times are useless after a clone); QA Results is QA's
    own section and does not count. Dates are ``YYYY-MM-DD`` (time parts ignored).
    """
    headings = scan_headings(lines)
    latest: datetime.date | None = None
    for position, heading in enumerate(headings):
        if heading.level > 3 or not _CHANGE_SECTIONS.match(heading.title):
            continue
        section = section_of(headings, position, len(lines))
        for line in lines[section.start : section.end]:
            for match in _DATE.finditer(line):
                try:
                    day = datetime.date(int(match["y"]), int(match["m"]), int(match["d"]))
                except ValueError:
                    continue
                latest = day if latest is None or day > latest else latest
    return latest


@attrs.frozen
class ReviewVerdict:
    """Whether a story at review already passed QA (no QA re-run), and why."""

    finished: bool
    reason: str


def review_already_passed(
    reading: StatusReading,
    gate: QaGate | None,
    story_lines: Sequence[str] | None = None,
    *,
    strict_concerns: bool = False,
) -> ReviewVerdict:
    """Decide whether a story at Review (or Ready for Done) has finished its review.

    Finished when its status is review and either

    - its newest gate passes (PASS or WAIVED; CONCERNS unless ``strict_concerns``) and is not
      older than the story's last change: the latest date in its Change Log / Dev Agent Record
      (:func:`story_last_change`) is on or before the gate's ``updated`` day; with no date on
      either side, a passing gate's presence is enough; or
    - there is no gate file and the status words themselves say QA passed (v4 ``Ready for Done``,
      ``Review Passed``).

    ``story_lines`` defaults to the lines of ``reading.path``.
    """
    if reading.status is not StoryStatus.REVIEW:
        shown = reading.status.value if reading.status is not None else "unreadable"
        return ReviewVerdict(False, f"the story is {shown}, not at review")
    if gate is None:
        if reading.qa_passed:
            return ReviewVerdict(
                True, f"the status says QA passed ({(reading.value or '').strip()})"
            )
        return ReviewVerdict(False, "no gate file")
    passing = gate.gate in (QaGateDecision.PASS, QaGateDecision.WAIVED) or (
        gate.gate is QaGateDecision.CONCERNS and not strict_concerns
    )
    if not passing:
        return ReviewVerdict(False, f"the gate says {gate.gate.value}")
    if story_lines is None:
        try:
            story_lines = split_lines(read_text_doc(reading.path).text)
        except ProjectError:
            story_lines = []
    last = story_last_change(story_lines)
    if gate.updated_at is None or last is None:
        return ReviewVerdict(
            True, f"gate {gate.gate.value} ({gate.path.name}); no dates to compare"
        )
    gate_day = gate.updated_at.astimezone(datetime.UTC).date()
    if last <= gate_day:
        return ReviewVerdict(
            True, f"gate {gate.gate.value} of {gate_day} is not older than the last change {last}"
        )
    return ReviewVerdict(
        False, f"the story changed on {last}, after the gate {gate.gate.value} of {gate_day}"
    )
