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
    "MergeConflict",
    "PhaseFinished",
    "PhaseStarted",
    "RunFinished",
    "RunPaused",
    "RunResumed",
    "RunStarted",
    "SessionFinished",
    "StoryFinished",
    "StoryMerged",
    "StoryStarted",
    "StoryStatusChanged",
    "ToolRefused",
]


def _now() -> float:
    return time.time()


@attrs.frozen(kw_only=True)
class RunStarted:
    """A run (or a resumed run) is under way with these stories."""

    run_id: str
    epic: str
    project: str
    stories: tuple[str, ...]
    budget_usd: float | None = None
    resumed: bool = False
    warnings: tuple[str, ...] = ()
    """One line each, e.g. that the agents' shell runs without the OS sandbox."""
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryStarted:
    """A story's cycle began; ``status`` is what its file said then, ``branch`` the git branch
    its sessions work on (None when the run works in the checkout itself)."""

    story_id: str
    title: str
    status: str
    branch: str | None = None
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class PhaseStarted:
    """A phase of a story began (``role`` is ``code`` for the orchestrator's own steps)."""

    story_id: str
    phase: str
    """draft, approve, develop, review, fix, gate-fix."""
    role: str
    cycle: int
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class AgentActivity:
    """An agent called a tool; ``target`` is the file or command it touched (redacted)."""

    story_id: str
    role: str
    tool: str
    target: str = ""
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class ToolRefused:
    """A tool call an agent made was refused: by the file-tool policy (``policy: ...``) or by the
    OS sandbox around its shell (``sandbox: ...``). ``target`` is the file, host or command."""

    story_id: str
    role: str
    tool: str
    target: str
    reason: str
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SessionFinished:
    """An agent session ended; ``cost_usd`` is that session's own cost."""

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
    """A phase ended; ``ok`` says whether the expected change is on disk."""

    story_id: str
    phase: str
    cycle: int
    ok: bool
    detail: str = ""
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryStatusChanged:
    """A story's status on disk changed (canonical words)."""

    story_id: str
    old: str | None
    new: str
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryFinished:
    """A story reached an end state: done, failed or blocked."""

    story_id: str
    status: str
    cycles: int
    cost_usd: float
    duration_s: float
    failure_reason: str | None = None
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryMerged:
    """The merge lane brought a done story onto the run's branch as ``commit``."""

    story_id: str
    branch: str
    commit: str
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class MergeConflict:
    """A done story could not land: ``reason`` is ``conflict`` (``files`` conflict with the run's
    branch) or ``hook_failed`` (the repository's commit hook refused it; ``detail`` has its output).
    The story's task resolves it (a resolver or fixer session) and the story queues again."""

    story_id: str
    branch: str
    reason: str
    files: tuple[str, ...] = ()
    detail: str = ""
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class StoryMoved:
    """A story's cycle left ``worker`` for another one (``engine = "dbos"``): the worker could not
    go on (``reason``: it cannot reach the shared remote, or it fell silent). The story's last
    pushed phase stands; the phase that was in flight runs again on the next worker."""

    story_id: str
    worker: str
    reason: str
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class GateStarted:
    """A quality gate command started (``attempt`` counts from 1)."""

    name: str
    attempt: int
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class GateFinished:
    """A quality gate ended; ``skipped`` when it could not or need not run."""

    name: str
    attempt: int
    passed: bool
    detail: str = ""
    skipped: bool = False
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class RunPaused:
    """New sessions wait after a rate or usage limit, until ``until_ts`` (UNIX time)."""

    reason: str
    until_ts: float | None = None
    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class RunResumed:
    """The pause is over; new sessions may start."""

    ts: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class RunFinished:
    """The run ended: ``status`` is done, failed or interrupted. ``branch`` is the run's git branch
    (None in a checkout run) and ``finish`` what became of it (merged into your branch, pushed, or
    the command that merges it)."""

    status: str
    cost_usd: float
    duration_s: float
    reason: str | None = None
    branch: str | None = None
    finish: str | None = None
    ts: float = attrs.field(factory=_now)


Event = (
    RunStarted
    | StoryStarted
    | PhaseStarted
    | AgentActivity
    | ToolRefused
    | SessionFinished
    | PhaseFinished
    | StoryStatusChanged
    | StoryFinished
    | StoryMerged
    | MergeConflict
    | StoryMoved
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
    "tool_refused": ToolRefused,
    "session_finished": SessionFinished,
    "phase_finished": PhaseFinished,
    "story_status_changed": StoryStatusChanged,
    "story_finished": StoryFinished,
    "story_merged": StoryMerged,
    "merge_conflict": MergeConflict,
    "story_moved": StoryMoved,
    "gate_started": GateStarted,
    "gate_finished": GateFinished,
    "run_paused": RunPaused,
    "run_resumed": RunResumed,
    "run_finished": RunFinished,
}
TYPE_NAMES: dict[type[Any], str] = {cls: name for name, cls in EVENT_TYPES.items()}
