"""Progress output for a run's event stream: a pure :class:`ProgressModel` and three renderers.

* :class:`RichProgress` — one ``rich.live.Live`` driven at a bounded frame rate, then a summary table.
* :class:`PlainProgress` — one line per event (activity lines only when the tool changes), for CI logs.
* :class:`JsonlProgress` — one JSON object per event, the ``events.jsonl`` format.

Nothing here prints unless handed a console or a ``write`` callable, and nothing starts a ``Live`` on
its own: the command line owns the console and calls ``run(receive_stream)``. Times shown are measured with the
injected ``get_time`` clock (monotonic by default), never with the events' wall-clock ``ts`` — except a
pause's ``until_ts``, which is turned into a countdown relative to the pause event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import anyio
import attrs
import cattrs
from anyio.streams.memory import MemoryObjectReceiveStream
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .._converter import event_to_json, make_converter
from .._events import (
    AgentActivity,
    Event,
    GateFinished,
    GateStarted,
    MergeConflict,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    SessionFinished,
    StoryFinished,
    StoryMerged,
    StoryMoved,
    StoryStarted,
    StoryStatusChanged,
    ToolRefused,
)

__all__ = [
    "PHASE_WEIGHTS",
    "GateProgress",
    "JsonlProgress",
    "PlainProgress",
    "ProgressModel",
    "RichProgress",
    "StoryProgress",
    "format_duration",
    "render",
    "summary_table",
]

PHASE_WEIGHTS: Final[dict[str, int]] = {"draft": 15, "approve": 5, "develop": 50, "review": 30}
"""Share of a story's progress bar each phase fills (sums to 100; ``done`` is 100).

Develop dominates because it is where the time goes; a story sent back by QA drops back to the start
of ``develop`` — the bar shows where the story is, not how much work was spent.
"""

_PHASE_ORDER: Final = ("draft", "approve", "develop", "review")
_PHASE_ALIASES: Final = {"fix": "develop", "gate-fix": "develop"}
_STATUS_PROGRESS: Final[dict[str, int]] = {
    "draft": 15,
    "ready_for_dev": 20,
    "in_progress": 20,
    "review": 70,
    "done": 100,
}
_FINISHED_STATUSES: Final = frozenset({"done", "failed", "blocked"})


def _weight_before(phase: str) -> int:
    canonical = _PHASE_ALIASES.get(phase, phase)
    if canonical not in PHASE_WEIGHTS:
        return 0
    index = _PHASE_ORDER.index(canonical)
    return sum(PHASE_WEIGHTS[name] for name in _PHASE_ORDER[:index])


def _weight_through(phase: str) -> int:
    canonical = _PHASE_ALIASES.get(phase, phase)
    return _weight_before(phase) + PHASE_WEIGHTS.get(canonical, 0)


def format_duration(seconds: float) -> str:
    """``38.1s`` under a minute, ``12m04s`` under an hour, else ``2h05m``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole >= 3600:
        return f"{whole // 3600}:{(whole % 3600) // 60:02d}:{whole % 60:02d}"
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _money(value: float) -> str:
    return f"${value:.2f}"


def _one_line(text: str, limit: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _shorten_target(target: str, limit: int) -> str:
    """Keep the end of a path (the file name matters most)."""
    target = " ".join(target.split())
    return target if len(target) <= limit else "…" + target[-(limit - 1) :]


@attrs.define(kw_only=True)
class StoryProgress:
    """What the display knows about one story."""

    story_id: str
    title: str = ""
    status: str = "pending"
    phase: str | None = None
    role: str | None = None
    cycle: int = 0
    completed: int = 0
    """Percent of the phase bar filled (see :data:`PHASE_WEIGHTS`)."""
    tool: str | None = None
    target: str = ""
    cost_usd: float = 0.0
    started_at: float | None = None
    duration_s: float | None = None
    """Set when the story finished (from :class:`StoryFinished`)."""
    failure_reason: str | None = None
    branch: str | None = None
    """The git branch its sessions work on (None in a checkout run)."""
    merge: str = ""
    """Where it stands with the merge lane: ``landed <commit>``, or a conflict and its files."""

    @property
    def finished(self) -> bool:
        return self.duration_s is not None

    def elapsed(self, now: float) -> float:
        if self.duration_s is not None:
            return self.duration_s
        return 0.0 if self.started_at is None else max(0.0, now - self.started_at)


@attrs.define(kw_only=True)
class GateProgress:
    """One quality gate's latest attempt; ``state`` is running, passed, failed or skipped."""

    name: str
    attempt: int
    state: str = "running"
    detail: str = ""


@attrs.define
class ProgressModel:
    """Run state folded from events; pure (no I/O, no clock of its own).

    ``apply(event, now)`` takes the display clock's reading when the event was received; without it the
    event's own ``ts`` is used, which suits replaying an ``events.jsonl``.
    """

    max_cycles: int = 10
    run_id: str | None = None
    warnings: tuple[str, ...] = ()
    """The run's start-up warnings (e.g. no OS sandbox), shown under the header."""
    refusals: int = 0
    """Tool calls the policy or the sandbox refused so far."""
    epic: str | None = None
    budget_usd: float | None = None
    started_at: float | None = None
    stories: dict[str, StoryProgress] = attrs.field(factory=dict[str, StoryProgress])
    gates: dict[str, GateProgress] = attrs.field(factory=dict[str, GateProgress])
    paused_reason: str | None = None
    resume_at: float | None = None
    """When a pause ends, on the display clock (``None``: unknown)."""
    run_status: str | None = None
    """``None`` while running; then RunFinished's status."""
    run_reason: str | None = None
    run_branch: str | None = None
    run_finish: str | None = None
    run_duration_s: float | None = None
    run_cost_usd: float | None = None
    events_seen: int = 0
    last_event_at: float = 0.0
    """Clock reading of the latest event: the default ``now`` of :func:`render`."""

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None

    @property
    def cost_usd(self) -> float:
        if self.run_cost_usd is not None:
            return self.run_cost_usd
        return sum(story.cost_usd for story in self.stories.values())

    def elapsed(self, now: float) -> float:
        if self.run_duration_s is not None:
            return self.run_duration_s
        return 0.0 if self.started_at is None else max(0.0, now - self.started_at)

    def story(self, story_id: str) -> StoryProgress:
        """The story's entry, created on first mention (events may name stories RunStarted did not)."""
        entry = self.stories.get(story_id)
        if entry is None:
            entry = self.stories[story_id] = StoryProgress(story_id=story_id)
        return entry

    def apply(self, event: Event, now: float | None = None) -> None:
        """Fold one event into the state."""
        at = event.ts if now is None else now
        self.events_seen += 1
        self.last_event_at = at
        match event:
            case RunStarted():
                self.run_id, self.epic, self.budget_usd = event.run_id, event.epic, event.budget_usd
                self.warnings = event.warnings
                self.started_at = at
                for story_id in event.stories:
                    self.story(story_id)
            case StoryStarted():
                story = self.story(event.story_id)
                story.title, story.status, story.started_at = event.title, event.status, at
                story.completed = _STATUS_PROGRESS.get(event.status, story.completed)
                story.branch = event.branch
            case PhaseStarted():
                story = self.story(event.story_id)
                story.phase, story.role, story.cycle = event.phase, event.role, event.cycle
                story.completed = _weight_before(event.phase)
                story.tool, story.target = None, ""
                if story.started_at is None:
                    story.started_at = at
            case AgentActivity():
                story = self.story(event.story_id)
                story.tool, story.target = event.tool, event.target
                story.role = event.role
            case ToolRefused():
                self.refusals += 1
            case SessionFinished():
                self.story(event.story_id).cost_usd += event.cost_usd
            case PhaseFinished():
                if event.ok:
                    self.story(event.story_id).completed = _weight_through(event.phase)
            case StoryStatusChanged():
                story = self.story(event.story_id)
                story.status = event.new
                story.completed = _STATUS_PROGRESS.get(event.new, story.completed)
            case StoryFinished():
                story = self.story(event.story_id)
                story.status, story.cycle = event.status, event.cycles
                story.cost_usd, story.duration_s = event.cost_usd, event.duration_s
                story.failure_reason = event.failure_reason
                story.phase, story.role, story.tool, story.target = None, None, None, ""
                if event.status == "done":
                    story.completed = 100
            case StoryMerged():
                self.story(event.story_id).merge = f"landed {event.commit[:8]}"
            case MergeConflict():
                files = ", ".join(event.files) or event.detail
                self.story(event.story_id).merge = f"{event.reason.replace('_', ' ')}: {files}"
            case StoryMoved():
                story = self.story(event.story_id)
                story.tool, story.target = None, f"moved off worker {event.worker}"
            case GateStarted():
                self.gates[event.name] = GateProgress(name=event.name, attempt=event.attempt)
            case GateFinished():
                state = "skipped" if event.skipped else "passed" if event.passed else "failed"
                self.gates[event.name] = GateProgress(
                    name=event.name, attempt=event.attempt, state=state, detail=event.detail
                )
            case RunPaused():
                self.paused_reason = event.reason or "paused"
                self.resume_at = (
                    None if event.until_ts is None else at + max(0.0, event.until_ts - event.ts)
                )
            case RunResumed():
                self.paused_reason, self.resume_at = None, None
            case RunFinished():
                self.run_status, self.run_reason = event.status, event.reason
                self.run_branch, self.run_finish = event.branch, event.finish
                self.run_duration_s, self.run_cost_usd = event.duration_s, event.cost_usd
                self.paused_reason, self.resume_at = None, None


# ---------------------------------------------------------------------------------------------------
# Rich rendering (pure functions of the model and a clock reading)

_STATUS_STYLE: Final = {
    "done": "green",
    "failed": "bold red",
    "blocked": "red",
    "review": "magenta",
    "in_progress": "cyan",
    "ready_for_dev": "blue",
    "draft": "yellow",
}
_BAR_WIDTH: Final = 12
_WHERE_WIDTH: Final = 24
_CYCLE_WIDTH: Final = 5
_MONEY_WIDTH: Final = 7
_TIME_WIDTH: Final = 7
_MIN_ACTIVITY_WIDTH: Final = 10


def _header(model: ProgressModel, now: float) -> Text:
    """Clock, cost, progress and pause state first (they must stay visible); epic and run id last."""
    header = Text(no_wrap=True, overflow="ellipsis")
    header.append("bmad-trio ", style="bold")
    header.append(_clock(model.elapsed(now)))
    cost = _money(model.cost_usd)
    if model.budget_usd is not None:
        cost += f" / {_money(model.budget_usd)}"
    header.append(f"  {cost}")
    done = sum(1 for story in model.stories.values() if story.status == "done")
    header.append(f"  {done}/{len(model.stories)} done")
    if model.paused:
        header.append(f"  PAUSED: {model.paused_reason}", style="bold yellow")
        if model.resume_at is not None:
            header.append(f", resuming in {format_duration(model.resume_at - now)}")
    if model.run_status is not None:
        style = "bold green" if model.run_status == "done" else "bold red"
        header.append(f"  run {model.run_status}", style=style)
    header.append(f"  epic {Path(model.epic).name if model.epic else '?'}")
    if model.run_id:
        header.append(f"  run {model.run_id}", style="dim")
    return header


def _choose_rows(model: ProgressModel, max_rows: int | None) -> tuple[list[StoryProgress], str]:
    """The stories to show when not all fit: active first, then failed, finished, pending."""
    stories = list(model.stories.values())
    if max_rows is None or len(stories) <= max_rows:
        return stories, ""
    keep = max(1, max_rows - 1)  # one line for the "and N more" note

    def rank(story: StoryProgress) -> int:
        if story.status in ("failed", "blocked"):
            return 1
        if story.finished:
            return 2
        return 0 if story.started_at is not None else 3

    order = {story.story_id: index for index, story in enumerate(stories)}
    chosen = sorted(stories, key=lambda story: (rank(story), order[story.story_id]))[:keep]
    chosen_ids = {story.story_id for story in chosen}
    hidden = [story for story in stories if story.story_id not in chosen_ids]
    hidden_done = sum(1 for story in hidden if story.status == "done")
    hidden_pending = sum(1 for story in hidden if story.started_at is None)
    note = f"… and {len(hidden)} more ({hidden_done} done, {hidden_pending} pending)"
    return sorted(chosen, key=lambda story: order[story.story_id]), note


def _cell(text: str, width: int, *, right: bool = False) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text.rjust(width) if right else text.ljust(width)


def _story_line(
    story: StoryProgress, now: float, max_cycles: int, id_width: int, activity_width: int
) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(_cell(story.story_id, id_width) + " ", style="bold")
    filled = round(_BAR_WIDTH * min(100, max(0, story.completed)) / 100)
    bar_style = "green" if story.status == "done" else "magenta"
    if story.status in ("failed", "blocked"):
        bar_style = "red"
    line.append("━" * filled, style=bar_style)
    line.append("─" * (_BAR_WIDTH - filled) + " ", style="dim")
    if story.phase is not None and not story.finished:
        line.append(_cell(f"{story.phase} ({story.role or '?'})", _WHERE_WIDTH), style="cyan")
    else:
        where = story.status
        if story.failure_reason:
            where += f": {_one_line(story.failure_reason, _WHERE_WIDTH)}"
        line.append(_cell(where, _WHERE_WIDTH), style=_STATUS_STYLE.get(story.status, "dim"))
    cycle = f"{story.cycle}/{max_cycles}" if story.cycle else ""
    line.append(" " + _cell(cycle, _CYCLE_WIDTH, right=True) + "  ")
    activity = ""
    if story.tool is not None:
        target = _shorten_target(story.target, max(1, activity_width - len(story.tool) - 1))
        activity = f"{story.tool} {target}".rstrip()
    elif story.merge or story.branch:
        activity = story.merge or story.branch or ""
    line.append(_cell(activity, activity_width), style="dim")
    cost = _money(story.cost_usd) if story.cost_usd else ""
    line.append(" " + _cell(cost, _MONEY_WIDTH, right=True))
    started = story.started_at is not None or story.finished
    elapsed = format_duration(story.elapsed(now)) if started else ""
    line.append(" " + _cell(elapsed, _TIME_WIDTH, right=True))
    return line


def _story_lines(model: ProgressModel, now: float, max_rows: int | None, width: int) -> list[Text]:
    rows, note = _choose_rows(model, max_rows)
    id_width = min(12, max([5, *(len(story.story_id) for story in rows)]))
    fixed = id_width + 1 + _BAR_WIDTH + 1 + _WHERE_WIDTH + 1 + _CYCLE_WIDTH + 2
    fixed += 1 + _MONEY_WIDTH + 1 + _TIME_WIDTH
    activity_width = max(_MIN_ACTIVITY_WIDTH, width - fixed)
    heading = Text(no_wrap=True, overflow="ellipsis", style="bold dim")
    heading.append(_cell("story", id_width) + " " + _cell("progress", _BAR_WIDTH) + " ")
    heading.append(
        _cell("phase / status", _WHERE_WIDTH) + " " + _cell("cycle", _CYCLE_WIDTH, right=True)
    )
    heading.append("  " + _cell("activity", activity_width) + " ")
    heading.append(
        _cell("cost", _MONEY_WIDTH, right=True) + " " + _cell("time", _TIME_WIDTH, right=True)
    )
    lines = [heading]
    lines += [_story_line(story, now, model.max_cycles, id_width, activity_width) for story in rows]
    if note:
        lines.append(Text(note, style="dim", no_wrap=True))
    return lines


_GATE_STYLE: Final = {
    "passed": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "running": "cyan",
}


def _gate_lines(gates: Iterable[GateProgress]) -> list[Text]:
    lines = [Text("gates", style="bold")]
    for gate in gates:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"  {gate.name} ")
        line.append(gate.state, style=_GATE_STYLE.get(gate.state, ""))
        line.append(f" (attempt {gate.attempt})", style="dim")
        if gate.detail.strip():
            line.append(f"  {_one_line(gate.detail, 200)}", style="dim")
        lines.append(line)
    return lines


def render(
    model: ProgressModel,
    now: float | None = None,
    *,
    max_rows: int | None = None,
    width: int = 120,
) -> RenderableType:
    """One frame: header, one line per story (at most ``max_rows``), then the gates if any ran.

    ``now`` is a reading of the clock the events were applied with (default: the latest event's).
    Lines are laid out for ``width`` columns. Built from plain ``Text`` lines rather than a
    ``Table``: a 50-row frame costs a few milliseconds instead of tens.
    """
    now = model.last_event_at if now is None else now
    parts: list[RenderableType] = [_header(model, now)]
    parts += [Text(f"warning: {warning}", style="yellow") for warning in model.warnings]
    parts += _story_lines(model, now, max_rows, width)
    if model.gates:
        parts += _gate_lines(model.gates.values())
    return Group(*parts)


def summary_table(model: ProgressModel, now: float | None = None) -> Table:
    """The final per-story table with run totals in the footer; also what ``status`` shows.

    ``now`` as for :func:`render` (matters only for stories or runs that have not finished).
    """
    reference = model.last_event_at if now is None else now
    table = Table(title=f"bmad-trio: epic {model.epic or '?'}", show_footer=True)
    table.add_column("story", footer="total", no_wrap=True)
    table.add_column("title", overflow="ellipsis", max_width=40)
    table.add_column("status", footer=model.run_status or "", no_wrap=True)
    table.add_column("cycles", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", footer=_money(model.cost_usd), no_wrap=True)
    table.add_column(
        "duration",
        justify="right",
        footer=format_duration(model.elapsed(reference)),
        no_wrap=True,
    )
    table.add_column("reason", overflow="fold", max_width=50)
    for story in model.stories.values():
        elapsed = story.elapsed(reference) if story.started_at or story.finished else None
        table.add_row(
            story.story_id,
            story.title,
            Text(story.status, style=_STATUS_STYLE.get(story.status, "")),
            str(story.cycle) if story.cycle else "",
            _money(story.cost_usd),
            "" if elapsed is None else format_duration(elapsed),
            story.failure_reason or "",
        )
    if model.gates:
        states = ", ".join(f"{gate.name} {gate.state}" for gate in model.gates.values())
        table.caption = f"gates: {states}"
    for line in (model.run_reason, model.run_finish):
        if line:
            table.caption = f"{table.caption}\n{line}" if table.caption else line
    return table


class RichProgress:
    """Live display of a run on a Rich console, redrawn at most ``refresh_per_second`` times a second.

    Events are folded into the model as fast as they arrive; drawing is throttled, so thousands of
    activity events cost one frame per interval, not one per event.
    """

    def __init__(
        self,
        console: Console,
        *,
        get_time: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 8,
        max_cycles: int = 10,
        transient: bool = True,
    ) -> None:
        if refresh_per_second <= 0:
            raise ValueError("refresh_per_second must be > 0")
        self.console = console
        self.model = ProgressModel(max_cycles=max_cycles)
        self.frames = 0
        """Frames drawn so far (for tests and curiosity)."""
        self._get_time = get_time
        self._interval = 1.0 / refresh_per_second
        self._transient = transient
        self._last_draw = 0.0
        self._dirty = False

    def _frame(self) -> RenderableType:
        height = self.console.size.height
        quality_gate_rows = len(self.model.gates) + 1 if self.model.gates else 0
        max_rows = max(3, height - 3 - quality_gate_rows)  # header, column heading, a spare line
        return render(
            self.model, self._get_time(), max_rows=max_rows, width=self.console.size.width
        )

    def _draw(self, live: Live) -> None:
        live.update(self._frame(), refresh=True)
        self.frames += 1
        self._last_draw = self._get_time()
        self._dirty = False

    def _draw_if_due(self, live: Live) -> None:
        since = self._get_time() - self._last_draw
        if (self._dirty and since >= self._interval) or since >= 1.0:
            self._draw(live)

    async def _tick(self, live: Live) -> None:
        """Show the last events of a burst, and keep the clocks moving while no events come."""
        while True:
            await anyio.sleep(self._interval)
            self._draw_if_due(live)

    async def run(self, receive_stream: MemoryObjectReceiveStream[Event]) -> None:
        """Consume events until the stream ends, then print the summary table. Use once.

        Cancellation stops the display at once (the Live is closed, no summary printed); the receive
        stream is closed on the way out either way.
        """
        async with receive_stream:
            live = Live(
                console=self.console,
                auto_refresh=False,
                transient=self._transient,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            with live:
                self._draw(live)
                async with anyio.create_task_group() as tick_group:
                    tick_group.start_soon(self._tick, live)
                    async for event in receive_stream:
                        self.model.apply(event, self._get_time())
                        self._dirty = True
                        self._draw_if_due(live)
                    tick_group.cancel_scope.cancel(reason="the event stream ended: stop the clock")
                if not self._transient:
                    self._draw(live)
            self.console.print(summary_table(self.model, self._get_time()))


def _plain_line(model: ProgressModel, event: Event) -> str | None:
    """The plain-text line for an event after it was applied (``None``: not worth a line)."""
    match event:
        case RunStarted():
            budget = "" if event.budget_usd is None else f", budget {_money(event.budget_usd)}"
            verb = "resumed" if event.resumed else "started"
            line = f"run {event.run_id} {verb}: epic {event.epic}, {len(event.stories)} stories{budget}"
            return "\n".join([line, *(f"warning: {w}" for w in event.warnings)])
        case StoryStarted():
            title = f' "{_one_line(event.title, 60)}"' if event.title else ""
            branch = f" on {event.branch}" if event.branch else ""
            return f"{event.story_id} started{title} ({event.status}){branch}"
        case PhaseStarted():
            return f"{event.story_id} {event.phase} ({event.role}, cycle {event.cycle}/{model.max_cycles})"
        case AgentActivity():
            target = _shorten_target(event.target, 60)
            return f"{event.story_id}   {event.role}: {event.tool} {target}".rstrip()
        case ToolRefused():
            target = _shorten_target(event.target, 60)
            return f"{event.story_id}   {event.role}: refused {event.tool} {target}: {event.reason}"
        case SessionFinished():
            error = f": {_one_line(event.error, 120)}" if event.error else ""
            return (
                f"{event.story_id} {event.role} session {event.outcome} "
                f"{_money(event.cost_usd)} {format_duration(event.duration_s)}{error}"
            )
        case PhaseFinished():
            detail = f": {_one_line(event.detail, 120)}" if event.detail else ""
            return f"{event.story_id} {event.phase} {'ok' if event.ok else 'failed'}{detail}"
        case StoryStatusChanged():
            return f"{event.story_id} status {event.old or '-'} -> {event.new}"
        case StoryFinished():
            reason = f": {_one_line(event.failure_reason, 120)}" if event.failure_reason else ""
            return (
                f"{event.story_id} {event.status} {_money(event.cost_usd)} "
                f"{format_duration(event.duration_s)} ({event.cycles} cycles){reason}"
            )
        case StoryMerged():
            return f"{event.story_id} landed on the run's branch as {event.commit[:8]}"
        case MergeConflict():
            files = ", ".join(event.files) or _one_line(event.detail, 120)
            return (
                f"{event.story_id} {event.reason.replace('_', ' ')} landing {event.branch}: {files}"
            )
        case StoryMoved():
            return (
                f"{event.story_id} moves off worker {event.worker}: {_one_line(event.reason, 120)}"
            )
        case GateStarted():
            return f"gate {event.name} (attempt {event.attempt})"
        case GateFinished():
            state = "skipped" if event.skipped else "passed" if event.passed else "FAILED"
            detail = f": {_one_line(event.detail, 120)}" if event.detail else ""
            return f"gate {event.name} {state}{detail}"
        case RunPaused():
            until = ""
            if event.until_ts is not None:
                until = f", resuming in {format_duration(event.until_ts - event.ts)}"
            return f"paused: {event.reason}{until}"
        case RunResumed():
            return "resumed"
        case RunFinished():
            reason = f": {_one_line(event.reason, 120)}" if event.reason else ""
            finish = f"; {_one_line(event.finish, 240)}" if event.finish else ""
            return (
                f"run {event.status} {_money(event.cost_usd)} "
                f"{format_duration(event.duration_s)}{reason}{finish}"
            )


class PlainProgress:
    """One line per event for logs: ``[00:12] 1.2 develop (dev, cycle 1/10)``.

    Agent activity is shown only when a story's tool changes (``all_activity=True``: every one).
    ``write`` gets each line with its newline; ``flush`` (if given) is called after every line.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        *,
        flush: Callable[[], object] | None = None,
        get_time: Callable[[], float] = time.monotonic,
        max_cycles: int = 10,
        all_activity: bool = False,
    ) -> None:
        self.model = ProgressModel(max_cycles=max_cycles)
        self._write = write
        self._flush = flush
        self._get_time = get_time
        self._all_activity = all_activity
        self._last_tool: dict[str, str] = {}

    def handle(self, event: Event) -> None:
        """Apply one event and write its line, if it has one."""
        now = self._get_time()
        if isinstance(event, AgentActivity) and not self._all_activity:
            new_tool = self._last_tool.get(event.story_id) != event.tool
            self._last_tool[event.story_id] = event.tool
            if not new_tool:
                self.model.apply(event, now)
                return
        elif isinstance(event, PhaseStarted | StoryFinished):
            self._last_tool.pop(event.story_id, None)
        self.model.apply(event, now)
        line = _plain_line(self.model, event)
        if line is not None:
            self._write(f"[{_clock(self.model.elapsed(now))}] {line}\n")
            if self._flush is not None:
                self._flush()

    async def run(self, receive_stream: MemoryObjectReceiveStream[Event]) -> None:
        """Write lines until the stream ends; cancellation just stops (the stream is closed)."""
        async with receive_stream:
            async for event in receive_stream:
                self.handle(event)


class JsonlProgress:
    """One JSON object per event (the ``events.jsonl`` shape), each followed by a newline and a flush."""

    def __init__(
        self,
        write: Callable[[str], object],
        *,
        flush: Callable[[], object] | None = None,
        converter: cattrs.Converter | None = None,
    ) -> None:
        self._write = write
        self._flush = flush
        self._converter = make_converter() if converter is None else converter

    def handle(self, event: Event) -> None:
        """Write one event's line."""
        line = json.dumps(event_to_json(self._converter, event), ensure_ascii=False)
        self._write(line + "\n")
        if self._flush is not None:
            self._flush()

    async def run(self, receive_stream: MemoryObjectReceiveStream[Event]) -> None:
        """Write lines until the stream ends; cancellation just stops (the stream is closed)."""
        async with receive_stream:
            async for event in receive_stream:
                self.handle(event)
