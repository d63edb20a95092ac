"""Progress model and renderers, on a fixed-size capture console and an injected clock."""

from __future__ import annotations

import io
import json

import anyio
import pytest
from rich.console import Console, RenderableType

from bmad_trio._commandline._progress import (
    PHASE_WEIGHTS,
    JsonlProgress,
    PlainProgress,
    ProgressModel,
    RichProgress,
    format_duration,
    render,
    summary_table,
)
from bmad_trio._converter import event_from_json, event_to_json, make_converter
from bmad_trio._events import (
    AgentActivity,
    Event,
    GateFinished,
    GateStarted,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    SessionFinished,
    StoryFinished,
    StoryMoved,
    StoryStarted,
    StoryStatusChanged,
    ToolRefused,
)


class StepClock:
    """A clock that advances ``step`` seconds every time it is read."""

    def __init__(self, step: float = 0.0, start: float = 0.0) -> None:
        self.now = start
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


def capture_console(height: int = 60) -> Console:
    return Console(
        file=io.StringIO(),
        width=120,
        height=height,
        force_terminal=True,
        color_system=None,
        record=True,
    )


def text_of(renderable: RenderableType) -> str:
    console = capture_console()
    console.print(renderable)
    return console.export_text()


def story_events() -> list[Event]:
    """A small run: 1.1 done after two cycles, 1.2 in develop, 1.3 pending, one gate each way."""
    return [
        RunStarted(
            run_id="r-42",
            epic="docs/epic-1.md",
            project="/p",
            stories=("1.1", "1.2", "1.3"),
            budget_usd=5.0,
        ),
        StoryStarted(story_id="1.1", title="Login form", status="draft"),
        PhaseStarted(story_id="1.1", phase="develop", role="dev", cycle=1),
        AgentActivity(story_id="1.1", role="dev", tool="Edit", target="src/login.py"),
        SessionFinished(
            story_id="1.1", role="dev", cycle=1, outcome="ok", cost_usd=0.05, duration_s=20.0
        ),
        PhaseFinished(story_id="1.1", phase="develop", cycle=1, ok=True),
        StoryStatusChanged(story_id="1.1", old="in_progress", new="review"),
        PhaseStarted(story_id="1.1", phase="review", role="qa", cycle=2),
        SessionFinished(
            story_id="1.1", role="qa", cycle=2, outcome="ok", cost_usd=0.07, duration_s=18.1
        ),
        StoryStatusChanged(story_id="1.1", old="review", new="done"),
        StoryFinished(story_id="1.1", status="done", cycles=2, cost_usd=0.12, duration_s=38.1),
        StoryStarted(story_id="1.2", title="Logout", status="ready_for_dev"),
        PhaseStarted(story_id="1.2", phase="develop", role="dev", cycle=3),
        AgentActivity(story_id="1.2", role="dev", tool="Write", target="src/logout.py"),
        GateStarted(name="ruff", attempt=1),
        GateFinished(name="ruff", attempt=1, passed=True, detail="All checks passed!"),
        GateStarted(name="pytest", attempt=2),
        GateFinished(name="pytest", attempt=2, passed=False, detail="2 failed, 10 passed\nlog"),
    ]


def folded(events: list[Event], *, step: float = 1.0) -> ProgressModel:
    model = ProgressModel(max_cycles=10)
    for index, event in enumerate(events, start=1):
        model.apply(event, index * step)
    return model


# --- the model ----------------------------------------------------------------------------------


def test_phase_weights_fill_the_bar() -> None:
    assert list(PHASE_WEIGHTS) == ["draft", "approve", "develop", "review"]
    assert sum(PHASE_WEIGHTS.values()) == 100


def test_model_folds_a_story_through_its_phases() -> None:
    model = folded(story_events())
    assert (model.run_id, model.epic, model.budget_usd) == ("r-42", "docs/epic-1.md", 5.0)
    assert list(model.stories) == ["1.1", "1.2", "1.3"]
    done, developing, pending = (model.stories[key] for key in ("1.1", "1.2", "1.3"))
    assert (done.status, done.cycle, done.cost_usd, done.duration_s) == ("done", 2, 0.12, 38.1)
    assert done.completed == 100
    assert done.phase is None
    assert (developing.phase, developing.role, developing.cycle) == ("develop", "dev", 3)
    assert developing.completed == PHASE_WEIGHTS["draft"] + PHASE_WEIGHTS["approve"]
    assert (developing.tool, developing.target) == ("Write", "src/logout.py")
    assert developing.started_at == 12.0
    assert developing.elapsed(20.0) == 8.0
    assert (pending.status, pending.started_at, pending.completed) == ("pending", None, 0)
    assert model.cost_usd == pytest.approx(0.12)
    assert model.elapsed(18.0) == 17.0
    assert {name: gate.state for name, gate in model.gates.items()} == {
        "ruff": "passed",
        "pytest": "failed",
    }
    assert model.gates["pytest"].attempt == 2


def test_model_progress_follows_phase_boundaries() -> None:
    model = ProgressModel()
    model.apply(PhaseStarted(story_id="s", phase="review", role="qa", cycle=1), 0.0)
    assert model.stories["s"].completed == 70
    model.apply(PhaseFinished(story_id="s", phase="review", cycle=1, ok=True), 1.0)
    assert model.stories["s"].completed == 100
    model.apply(PhaseStarted(story_id="s", phase="fix", role="dev", cycle=2), 2.0)
    assert model.stories["s"].completed == 20  # sent back to develop
    model.apply(PhaseFinished(story_id="s", phase="fix", cycle=2, ok=False), 3.0)
    assert model.stories["s"].completed == 20


def test_model_pause_counts_down_on_the_display_clock() -> None:
    model = ProgressModel()
    model.apply(RunPaused(reason="usage limit", until_ts=1_000_300.0, ts=1_000_000.0), 50.0)
    assert model.paused
    assert model.resume_at == 350.0
    model.apply(RunResumed(), 400.0)
    assert not model.paused
    assert model.resume_at is None


def test_model_without_clock_uses_event_timestamps() -> None:
    model = ProgressModel()
    model.apply(RunStarted(run_id="r", epic="e", project="p", stories=(), ts=100.0))
    model.apply(RunFinished(status="failed", cost_usd=1.5, duration_s=9.0, reason="x", ts=109.0))
    assert model.elapsed(10_000.0) == 9.0
    assert (model.run_status, model.cost_usd, model.last_event_at) == ("failed", 1.5, 109.0)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.04, 38.14, 724, 7500)] == [
        "0.0s",
        "38.1s",
        "12m04s",
        "2h05m",
    ]


# --- rich rendering -----------------------------------------------------------------------------


def test_render_shows_header_rows_and_gates() -> None:
    model = folded(story_events())
    model.apply(RunPaused(reason="usage limit", until_ts=1300.0, ts=1000.0), 19.0)
    text = text_of(render(model, 20.0))
    header = text.splitlines()[0]
    assert "epic epic-1.md" in header  # the file name: the path would crowd out the counts
    assert "run r-42" in header
    assert "00:19" in header
    assert "$0.12 / $5.00" in header
    assert "1/3 done" in header
    assert "PAUSED: usage limit, resuming in 4m59s" in header
    rows = {line.split()[0]: line for line in text.splitlines()[2:5]}
    assert set(rows) == {"1.1", "1.2", "1.3"}
    assert "done" in rows["1.1"]
    assert "2/10" in rows["1.1"]
    assert "$0.12" in rows["1.1"]
    assert "38.1s" in rows["1.1"]
    assert rows["1.1"].split()[1] == "━" * 12
    assert rows["1.2"].split()[1] == "━" * 2 + "─" * 10  # draft + approve of 12 cells
    assert "develop (dev)" in rows["1.2"]
    assert "3/10" in rows["1.2"]
    assert "Write src/logout.py" in rows["1.2"]
    assert "8.0s" in rows["1.2"]
    assert "pending" in rows["1.3"]
    gates = text[text.index("\ngates\n") :].splitlines()[2:]
    assert gates[0].strip() == "ruff passed (attempt 1)  All checks passed!"
    assert gates[1].strip() == "pytest failed (attempt 2)  2 failed, 10 passed"
    assert len(gates) == 2  # only the first line of a detail


def test_render_is_byte_stable_and_truncates_long_targets() -> None:
    model = folded(story_events())
    target = "src/" + "deeply/nested/" * 8 + "handler_module.py"
    model.apply(AgentActivity(story_id="1.2", role="dev", tool="Edit", target=target), 20.0)
    first, second = text_of(render(model, 21.0)), text_of(render(model, 21.0))
    assert first == second
    row = next(line for line in first.splitlines() if line.startswith("1.2"))
    assert "Edit …" in row
    assert "handler_module.py" in row
    assert max(len(line.rstrip()) for line in first.splitlines()) <= 120


def test_render_folds_rows_that_do_not_fit() -> None:
    events: list[Event] = [
        RunStarted(run_id="r", epic="e", project="p", stories=tuple(f"s{i}" for i in range(50)))
    ]
    events += [StoryStarted(story_id=f"s{i}", title="", status="ready_for_dev") for i in (7, 30)]
    events.append(
        StoryFinished(story_id="s40", status="failed", cycles=10, cost_usd=1.0, duration_s=5)
    )
    model = folded(events)
    text = text_of(render(model, 10.0, max_rows=6))
    shown = [line.split()[0] for line in text.splitlines()[2:] if line.startswith("s")]
    # active and failed stories first, then the earliest pending ones; shown in story order
    assert shown == ["s0", "s1", "s7", "s30", "s40"]
    assert "… and 45 more (0 done, 45 pending)" in text


def test_summary_table_lists_every_story_with_totals() -> None:
    model = folded(story_events())
    model.apply(
        StoryFinished(
            story_id="1.2",
            status="failed",
            cycles=10,
            cost_usd=2.5,
            duration_s=700,
            failure_reason="max cycles: QA FAIL",
        ),
        30.0,
    )
    model.apply(
        RunFinished(status="failed", cost_usd=2.62, duration_s=725.0, reason="1 story failed"), 31.0
    )
    text = text_of(summary_table(model))
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ ")}
    assert "Login form" in lines["1.1"]
    assert "done" in lines["1.1"]
    assert "38.1s" in lines["1.1"]
    assert "failed" in lines["1.2"]
    assert "11m40s" in lines["1.2"]
    assert "max cycles: QA FAIL" in lines["1.2"]
    assert "pending" in lines["1.3"]
    assert "$2.62" in lines["total"]
    assert "12m05s" in lines["total"]
    assert "gates: ruff passed, pytest failed" in text
    assert "1 story failed" in text


# --- RichProgress -------------------------------------------------------------------------------


async def feed(
    events: list[Event], progress: RichProgress | PlainProgress | JsonlProgress, *, buffer: float
) -> None:
    send, receive = anyio.create_memory_object_stream[Event](buffer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(progress.run, receive)
        async with send:
            for event in events:
                await send.send(event)


@pytest.mark.anyio
async def test_rich_progress_draws_then_prints_the_summary() -> None:
    console = capture_console()
    progress = RichProgress(console, get_time=StepClock(0.01), max_cycles=10)
    await feed(
        [*story_events(), RunFinished(status="failed", cost_usd=0.3, duration_s=40.0)],
        progress,
        buffer=100,
    )
    out = console.export_text()
    assert progress.frames >= 1
    assert progress.model.run_status == "failed"
    assert "bmad-trio: epic docs/epic-1.md" in out
    summary = out[out.index("bmad-trio: epic") :]
    assert "Login form" in summary
    assert "$0.30" in summary
    assert "40.0s" in summary


@pytest.mark.anyio
@pytest.mark.parametrize("buffer", [0, 20_000])
async def test_rich_progress_frames_are_bounded_by_the_clock_not_the_events(buffer: int) -> None:
    stories = [f"{epic}.{n}" for epic in range(1, 6) for n in range(1, 11)]
    events: list[Event] = [
        RunStarted(run_id="r", epic="e", project="p", stories=tuple(stories), budget_usd=50.0)
    ]
    for story in stories:
        events.append(StoryStarted(story_id=story, title=f"story {story}", status="draft"))
        events.append(PhaseStarted(story_id=story, phase="develop", role="dev", cycle=1))
        events += [
            AgentActivity(story_id=story, role="dev", tool="Edit", target=f"src/m{i}.py")
            for i in range(200)
        ]
        events.append(
            StoryFinished(story_id=story, status="done", cycles=1, cost_usd=0.1, duration_s=3)
        )
    clock = StepClock(step=0.0001)  # 10_000+ events read the clock a few times each: a few seconds
    progress = RichProgress(capture_console(), get_time=clock, refresh_per_second=8)
    await feed(events, progress, buffer=buffer)
    assert progress.model.events_seen == len(events) == 50 * 203 + 1
    fake_seconds = clock.now
    assert progress.frames <= fake_seconds * 8 + 3
    assert progress.frames < 60  # versus 10_151 events
    assert all(story.status == "done" for story in progress.model.stories.values())


@pytest.mark.anyio
async def test_rich_progress_closes_its_stream_when_cancelled() -> None:
    send, receive = anyio.create_memory_object_stream[Event](10)
    progress = RichProgress(capture_console(), get_time=StepClock(0.01))
    async with send, anyio.create_task_group() as tg:
        tg.start_soon(progress.run, receive)
        await send.send(story_events()[0])
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    with pytest.raises(anyio.ClosedResourceError):
        receive.receive_nowait()


# --- plain and jsonl ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_plain_progress_writes_one_readable_line_per_event() -> None:
    lines: list[str] = []
    progress = PlainProgress(lines.append, get_time=StepClock(step=2.0), max_cycles=10)
    events = story_events()
    events[4:4] = [
        AgentActivity(story_id="1.1", role="dev", tool="Edit", target="src/login.py"),
        AgentActivity(story_id="1.1", role="dev", tool="Bash", target="pytest -q"),
    ]
    events.append(RunPaused(reason="usage limit", until_ts=1300.0, ts=1000.0))
    events.append(RunResumed())
    events.append(
        RunFinished(status="failed", cost_usd=0.3, duration_s=41.0, reason="gate pytest failed")
    )
    await feed(events, progress, buffer=0)
    assert all(line.endswith("\n") for line in lines)
    text = "".join(lines)
    assert text.splitlines() == [
        "[00:00] run r-42 started: epic docs/epic-1.md, 3 stories, budget $5.00",
        '[00:02] 1.1 started "Login form" (draft)',
        "[00:04] 1.1 develop (dev, cycle 1/10)",
        "[00:06] 1.1   dev: Edit src/login.py",
        "[00:10] 1.1   dev: Bash pytest -q",
        "[00:12] 1.1 dev session ok $0.05 20.0s",
        "[00:14] 1.1 develop ok",
        "[00:16] 1.1 status in_progress -> review",
        "[00:18] 1.1 review (qa, cycle 2/10)",
        "[00:20] 1.1 qa session ok $0.07 18.1s",
        "[00:22] 1.1 status review -> done",
        "[00:24] 1.1 done $0.12 38.1s (2 cycles)",
        '[00:26] 1.2 started "Logout" (ready_for_dev)',
        "[00:28] 1.2 develop (dev, cycle 3/10)",
        "[00:30] 1.2   dev: Write src/logout.py",
        "[00:32] gate ruff (attempt 1)",
        "[00:34] gate ruff passed: All checks passed!",
        "[00:36] gate pytest (attempt 2)",
        "[00:38] gate pytest FAILED: 2 failed, 10 passed",
        "[00:40] paused: usage limit, resuming in 5m00s",
        "[00:42] resumed",
        "[00:41] run failed $0.30 41.0s: gate pytest failed",
    ]


def test_a_start_warning_and_refusals_are_shown_in_every_mode() -> None:
    started = RunStarted(
        run_id="r-1",
        epic="e.md",
        project="/p",
        stories=("1.1",),
        warnings=("agents' shell commands run without the OS sandbox (bwrap not found)",),
    )
    refused = ToolRefused(
        story_id="1.1",
        role="qa",
        tool="Bash",
        target="src/app.py",
        reason="sandbox: write outside the role's area",
    )
    lines: list[str] = []
    progress = PlainProgress(lines.append, get_time=StepClock())
    progress.handle(started)
    progress.handle(refused)
    text = "".join(lines).splitlines()
    assert text[1].endswith(
        "warning: agents' shell commands run without the OS sandbox (bwrap not found)"
    )
    assert text[2].endswith(
        "1.1   qa: refused Bash src/app.py: sandbox: write outside the role's area"
    )
    model = ProgressModel()
    model.apply(started)
    model.apply(refused)
    assert model.refusals == 1
    console = Console(file=io.StringIO(), width=120)
    console.print(render(model))
    assert "warning: agents' shell commands run without the OS sandbox" in console.file.getvalue()  # type: ignore[attr-defined]
    converter = make_converter()
    data = json.loads(json.dumps(event_to_json(converter, refused)))
    assert data["type"] == "tool_refused"
    assert event_from_json(converter, data) == refused


def test_plain_progress_can_show_every_activity_and_flushes() -> None:
    lines: list[str] = []
    flushes: list[None] = []
    progress = PlainProgress(
        lines.append, flush=lambda: flushes.append(None), get_time=StepClock(), all_activity=True
    )
    for _ in range(3):
        progress.handle(AgentActivity(story_id="1.1", role="dev", tool="Read", target="a.py"))
    assert len(lines) == len(flushes) == 3


@pytest.mark.anyio
async def test_jsonl_progress_round_trips_every_event() -> None:
    out = io.StringIO()
    flushes: list[None] = []
    progress = JsonlProgress(out.write, flush=lambda: flushes.append(None))
    events = story_events()
    await feed(events, progress, buffer=0)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(flushes) == len(events)
    converter = make_converter()
    decoded = [event_from_json(converter, json.loads(line)) for line in lines]
    assert decoded == events
    assert json.loads(lines[0])["type"] == "run_started"


@pytest.mark.anyio
async def test_a_story_moving_off_a_worker_is_a_plain_line() -> None:
    lines: list[str] = []
    progress = PlainProgress(lines.append, get_time=StepClock())
    moved = StoryMoved(story_id="1.1", worker="w1", reason="cannot reach the shared remote: x")
    await feed([moved], progress, buffer=0)
    assert [line.split("] ", 1)[1] for line in lines] == [
        "1.1 moves off worker w1: cannot reach the shared remote: x\n"
    ]
