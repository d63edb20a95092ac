"""Byte-exact snapshots of the Rich progress display in typical states.

Each state is built by folding events into a :class:`ProgressModel` with an injected clock (every
reading is explicit), rendered with :func:`render` / :func:`summary_table` on a fixed-size capture
console (100x30, terminal mode, no colour) and compared, byte for byte, with the text stored in
``tests/snapshots/progress/<name>.txt`` (trailing spaces included: Rich pads table cells).

After an intended change to the display, regenerate the snapshots and review the diff::

    UPDATE_SNAPSHOTS=1 python -m pytest -p no:trio tests/test_progress_snapshots.py
    git diff tests/snapshots/

A missing snapshot fails (it is never written silently without ``UPDATE_SNAPSHOTS=1``).
"""

from __future__ import annotations

import difflib
import io
import os
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from bmad_trio._commandline._progress import ProgressModel, render, summary_table
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
    StoryStarted,
    StoryStatusChanged,
)

SNAPSHOTS = Path(__file__).parent / "snapshots" / "progress"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS", "") not in ("", "0")
WIDTH, HEIGHT = 100, 30
T0 = 1_767_225_600.0
"""Wall-clock ``ts`` of the first event (2026-01-01 00:00 UTC); only pauses use it."""


def frame(
    model: ProgressModel,
    now: float | None = None,
    *,
    width: int = WIDTH,
    max_rows: int | None = None,
) -> str:
    """One live frame as RichProgress draws it on a ``width``-column console."""
    return capture(render(model, now, width=width, max_rows=max_rows), width=width)


def capture(renderable: RenderableType, *, width: int = WIDTH) -> str:
    console = Console(
        file=io.StringIO(),
        width=width,
        height=HEIGHT,
        force_terminal=True,
        color_system=None,
        legacy_windows=False,
        record=True,
    )
    console.print(renderable)
    return console.export_text()


def assert_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    data = text.encode()
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        return
    if not path.is_file():
        pytest.fail(f"no snapshot {path}; run with UPDATE_SNAPSHOTS=1 to create it\n{text}")
    expected = path.read_bytes()
    if data != expected:
        diff = difflib.unified_diff(
            expected.decode().splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{path} (stored)",
            tofile=f"{name} (rendered now)",
        )
        pytest.fail(
            f"{name} differs from its snapshot (UPDATE_SNAPSHOTS=1 to accept):\n" + "".join(diff)
        )


def fold(timed: list[tuple[float, Event]], model: ProgressModel | None = None) -> ProgressModel:
    """Apply each event at its display-clock reading."""
    model = model if model is not None else ProgressModel(max_cycles=10)
    for now, event in timed:
        model.apply(event, now)
    return model


def started() -> list[tuple[float, Event]]:
    return [
        (
            0.0,
            RunStarted(
                run_id="20260101-000000-0001",
                epic="docs/prd/epic-1-greetings.md",
                project="/work/demo",
                stories=("1.1", "1.2", "1.3"),
                budget_usd=5.0,
                ts=T0,
            ),
        )
    ]


def mid_run() -> list[tuple[float, Event]]:
    """1.1 done after a QA round trip, 1.2 being developed (a tool in use), 1.3 pending."""
    return [
        *started(),
        (0.5, StoryStarted(story_id="1.1", title="Add greeting", status="draft", ts=T0 + 0.5)),
        (1.0, PhaseStarted(story_id="1.1", phase="develop", role="dev", cycle=1, ts=T0 + 1)),
        (
            4.0,
            AgentActivity(
                story_id="1.1", role="dev", tool="Write", target="src/sample_app/add_greeting.py"
            ),
        ),
        (
            21.0,
            SessionFinished(
                story_id="1.1", role="dev", cycle=1, outcome="ok", cost_usd=0.0412, duration_s=20.0
            ),
        ),
        (21.0, PhaseFinished(story_id="1.1", phase="develop", cycle=1, ok=True)),
        (21.1, StoryStatusChanged(story_id="1.1", old="in_progress", new="review")),
        (21.2, PhaseStarted(story_id="1.1", phase="review", role="qa", cycle=1)),
        (
            39.0,
            SessionFinished(
                story_id="1.1", role="qa", cycle=1, outcome="ok", cost_usd=0.0311, duration_s=17.8
            ),
        ),
        (39.1, StoryStatusChanged(story_id="1.1", old="review", new="done")),
        (
            39.2,
            StoryFinished(
                story_id="1.1", status="done", cycles=1, cost_usd=0.0723, duration_s=38.7
            ),
        ),
        (39.5, StoryStarted(story_id="1.2", title="Add farewell", status="ready_for_dev")),
        (40.0, PhaseStarted(story_id="1.2", phase="develop", role="dev", cycle=2)),
        (
            47.0,
            AgentActivity(story_id="1.2", role="dev", tool="Bash", target="python -m pytest -q"),
        ),
    ]


def test_start() -> None:
    model = fold(started())
    assert_snapshot("start", frame(model, 0.0))


def test_first_story_drafting() -> None:
    model = fold(
        [
            *started(),
            (0.2, StoryStarted(story_id="1.1", title="Add greeting", status="draft")),
            (0.3, PhaseStarted(story_id="1.1", phase="draft", role="sm", cycle=1)),
            (
                2.0,
                AgentActivity(
                    story_id="1.1", role="sm", tool="Read", target="docs/prd/epic-1-greetings.md"
                ),
            ),
        ]
    )
    assert_snapshot("first_story_drafting", frame(model, 3.4))


def test_mid_run_with_activity() -> None:
    model = fold(mid_run())
    assert_snapshot("mid_run", frame(model, 52.3))


def test_paused_on_rate_limit() -> None:
    model = fold(
        [
            *mid_run(),
            (
                48.0,
                SessionFinished(
                    story_id="1.2",
                    role="dev",
                    cycle=2,
                    outcome="rate_limited",
                    cost_usd=0.01,
                    duration_s=8.0,
                    error="429 rate_limit_error",
                ),
            ),
            (48.1, RunPaused(reason="rate limit (HTTP 429)", until_ts=T0 + 48 + 90, ts=T0 + 48)),
        ]
    )
    # 78 s of the 90 s pause left; wide, so the whole header fits (see the xfail tests below)
    paused = frame(model, 60.1, width=160)
    assert_snapshot("paused_rate_limit", paused)
    fold([(138.2, RunResumed())], model)
    assert "PAUSED" not in frame(model, 138.2, width=160)


def test_gates_running_passed_failed_skipped() -> None:
    timed: list[tuple[float, Event]] = [
        *mid_run(),
        (60.0, PhaseFinished(story_id="1.2", phase="develop", cycle=2, ok=True)),
        (60.1, StoryStatusChanged(story_id="1.2", old="in_progress", new="review")),
        (61.0, GateStarted(name="ruff", attempt=1)),
        (62.0, GateFinished(name="ruff", attempt=1, passed=True, detail="All checks passed!")),
        (62.1, GateStarted(name="pytest", attempt=1)),
        (
            70.0,
            GateFinished(
                name="pytest",
                attempt=1,
                passed=False,
                detail="FAILED tests/test_add_farewell.py::test_bye - assert 'by' == 'bye'\n1 failed",
            ),
        ),
        (
            70.1,
            GateFinished(name="mypy", attempt=1, passed=False, skipped=True, detail="not found"),
        ),
        (70.2, GateStarted(name="pytest", attempt=2)),
    ]
    model = fold(timed)
    assert_snapshot("gates", frame(model, 75.0))


def finished(status: str) -> ProgressModel:
    timed: list[tuple[float, Event]] = [
        *mid_run(),
        (
            80.0,
            SessionFinished(
                story_id="1.2", role="dev", cycle=2, outcome="ok", cost_usd=0.05, duration_s=40.0
            ),
        ),
    ]
    if status == "done":
        timed += [
            (
                95.0,
                StoryFinished(
                    story_id="1.2", status="done", cycles=2, cost_usd=0.1234, duration_s=55.5
                ),
            ),
            (96.0, StoryStarted(story_id="1.3", title="Add shout", status="ready_for_dev")),
            (
                130.0,
                StoryFinished(
                    story_id="1.3", status="done", cycles=1, cost_usd=0.0655, duration_s=34.0
                ),
            ),
            (131.0, GateStarted(name="pytest", attempt=1)),
            (135.0, GateFinished(name="pytest", attempt=1, passed=True, detail="12 passed")),
            (135.5, RunFinished(status="done", cost_usd=0.2612, duration_s=135.5)),
        ]
    else:
        timed += [
            (
                700.0,
                StoryFinished(
                    story_id="1.2",
                    status="failed",
                    cycles=10,
                    cost_usd=1.9876,
                    duration_s=660.5,
                    failure_reason="more than 10 cycles: QA gate FAIL (test_bye asserts 'by')",
                ),
            ),
            (
                701.0,
                RunFinished(
                    status="failed",
                    cost_usd=2.0599,
                    duration_s=701.0,
                    reason="story 1.2 failed; 1.3 not started",
                ),
            ),
        ]
    return fold(timed)


def test_final_summary_done() -> None:
    model = finished("done")
    assert_snapshot("summary_done", capture(summary_table(model)))
    assert_snapshot("final_frame_done", frame(model))


def test_final_summary_failed() -> None:
    model = finished("failed")
    assert_snapshot("summary_failed", capture(summary_table(model)))


def test_many_stories_on_a_small_terminal() -> None:
    """What RichProgress draws when the terminal has fewer rows than the epic has stories."""
    ids = tuple(f"2.{n}" for n in range(1, 21))
    timed: list[tuple[float, Event]] = [
        (0.0, RunStarted(run_id="r-many", epic="docs/epic-2.md", project="/p", stories=ids))
    ]
    for n, story_id in enumerate(ids[:5], start=1):
        timed.append((n * 10.0, StoryStarted(story_id=story_id, title="", status="draft")))
        timed.append(
            (
                n * 10.0 + 9,
                StoryFinished(
                    story_id=story_id, status="done", cycles=1, cost_usd=0.05, duration_s=9.0
                ),
            )
        )
    timed += [
        (60.0, StoryStarted(story_id="2.6", title="", status="in_progress")),
        (60.5, PhaseStarted(story_id="2.6", phase="fix", role="dev", cycle=3)),
        (61.0, AgentActivity(story_id="2.6", role="dev", tool="Edit", target="src/app/models.py")),
    ]
    model = fold(timed)
    assert_snapshot("many_stories_folded", frame(model, 65.0, max_rows=8))


# -- the header and rows stay readable on ordinary terminals ---------------------------------------


def test_header_keeps_counts_and_pause_on_a_100_column_terminal() -> None:
    model = fold(
        [
            *mid_run(),
            (48.1, RunPaused(reason="rate limit (HTTP 429)", until_ts=T0 + 48 + 90, ts=T0 + 48)),
        ]
    )
    header = frame(model, 60.1).splitlines()[0]
    assert "1/3 done" in header
    assert "PAUSED: rate limit (HTTP 429)" in header
    assert "resuming in 1m18s" in header


def test_story_rows_fit_an_80_column_terminal() -> None:
    text = frame(fold(mid_run()), 52.3, width=80)
    rows = text.splitlines()[1:5]
    assert rows[0].rstrip().endswith("time"), rows[0]
    assert rows[1].rstrip().endswith("38.7s"), rows[1]
    assert rows[2].rstrip().endswith("12.8s"), rows[2]


def test_snapshots_have_no_strays() -> None:
    """Every stored snapshot belongs to a test here (a renamed test leaves none behind)."""
    names = {
        "start",
        "first_story_drafting",
        "mid_run",
        "paused_rate_limit",
        "gates",
        "summary_done",
        "final_frame_done",
        "summary_failed",
        "many_stories_folded",
    }
    assert {path.stem for path in SNAPSHOTS.glob("*.txt")} <= names
