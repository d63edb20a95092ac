"""Events a run emits: one frozen class each, all with ``ts`` (UNIX seconds) and a ``type`` tag.

Events are plain data; :func:`event_to_json` / :func:`event_from_json` round-trip them through the
project's cattrs converter for ``events.jsonl`` and ``--progress jsonl``.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

__all__ = [
    "AgentActivity",
    "Event",
    "GateFinished",
    "GateStarted",
    "PhaseFinished",
    "PhaseStarted",
    "RunFinished",
    "RunPaused",
    "RunResumed",
    "RunStarted",
    "SessionFinished",
    "StoryFinished",
    "StoryStarted",
    "StoryStatusChanged",
]


def _now() -> float:
    return time.time()


@attrs.frozen(kw_only=True)
class RunStarted:
    run_id: str
    epic: str
    project: str
    stories: tuple[str, ...]
    budget_usd: float | None = None
    resumed: bool = False
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryStarted:
    story_id: str
    title: str
    status: str
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class PhaseStarted:
    story_id: str
    phase: str
    """draft, approve, develop, review, fix, gate-fix."""
    role: str
    cycle: int
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class AgentActivity:
    story_id: str
    role: str
    tool: str
    target: str = ""
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SessionFinished:
    story_id: str
    role: str
    cycle: int
    outcome: str
    cost_usd: float
    duration_s: float
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class PhaseFinished:
    story_id: str
    phase: str
    cycle: int
    ok: bool
    detail: str = ""
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryStatusChanged:
    story_id: str
    old: str | None
    new: str
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryFinished:
    story_id: str
    status: str
    cycles: int
    cost_usd: float
    duration_s: float
    failure_reason: str | None = None
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class GateStarted:
    name: str
    attempt: int
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class GateFinished:
    name: str
    attempt: int
    passed: bool
    detail: str = ""
    skipped: bool = False
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class RunPaused:
    reason: str
    until_ts: float | None = None
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class RunResumed:
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class RunFinished:
    status: str
    """done, failed, interrupted."""
    cost_usd: float
    duration_s: float
    reason: str | None = None
    ts: float = attrs.field(factory=_now)


Event = (
    RunStarted
    | StoryStarted
    | PhaseStarted
    | AgentActivity
    | SessionFinished
    | PhaseFinished
    | StoryStatusChanged
    | StoryFinished
    | GateStarted
    | GateFinished
    | RunPaused
    | RunResumed
    | RunFinished
)

EVENT_TYPES: dict[str, type[Any]] = {
    "run_started": RunStarted,
    "story_started": StoryStarted,
    "phase_started": PhaseStarted,
    "agent_activity": AgentActivity,
    "session_finished": SessionFinished,
    "phase_finished": PhaseFinished,
    "story_status_changed": StoryStatusChanged,
    "story_finished": StoryFinished,
    "gate_started": GateStarted,
    "gate_finished": GateFinished,
    "run_paused": RunPaused,
    "run_resumed": RunResumed,
    "run_finished": RunFinished,
}
TYPE_NAMES: dict[type[Any], str] = {cls: name for name, cls in EVENT_TYPES.items()}
