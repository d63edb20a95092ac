"""``bmad-trio`` as a process, with the real Claude Code CLI (bundled in claude-agent-sdk) against
the scripted model server: the demo end to end, Ctrl-C and SIGKILL mid-run then ``resume``, and two
runs on one project.

The scripted server runs in this test process (a blocking portal's thread), so its request log is
available; only ``bmad-trio`` itself runs as a subprocess. Every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from _cli_helpers import (
    CliProcess,
    Event,
    StoreView,
    api_env,
    clean_env,
    run_cli,
    server_sessions,
    status_json,
    tagged_with_orchestrator,
    wait_until_untagged,
)
from anyio.from_thread import start_blocking_portal

from bmad_trio._commandline._demo import (
    DEMO_EPIC,
    DEMO_FAIL_FIRST_REVIEW,
    DEMO_STORY_IDS,
    scaffold_demo,
)
from bmad_trio._state._run_lock import RunLock
from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

pytestmark = [pytest.mark.e2e]

STORIES = set(DEMO_STORY_IDS)
EXPECTED_OK_SESSIONS: Counter[tuple[str | None, str]] = Counter(
    {
        ("1.1", "sm"): 1,
        ("1.1", "dev"): 1,
        ("1.1", "qa"): 1,
        ("1.2", "sm"): 1,
        ("1.2", "dev"): 2,  # QA fails 1.2's first review: one fix cycle
        ("1.2", "qa"): 2,
        ("1.3", "sm"): 1,
        ("1.3", "dev"): 1,
        ("1.3", "qa"): 1,
    }
)
"""Sessions of a clean demo run (its gates pass on the first attempt: no fixer)."""
SDK_RACE = "Unhandled exception in detached trio task"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return scaffold_demo(tmp_path / "demo").root


@pytest.fixture
def api() -> Iterator[FakeAnthropicAPI]:
    """The demo's scripted model, served from a thread of this process."""
    with start_blocking_portal("trio") as portal:
        server = FakeAnthropicAPI(bmad_actor_scenario(set(DEMO_FAIL_FIRST_REVIEW)))
        with portal.wrap_async_context_manager(server) as running:
            yield running


def _types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def _assert_jsonl(proc: CliProcess) -> list[Event]:
    """Every stdout line of ``--progress jsonl`` is a JSON object with ``type`` and ``ts``."""
    events: list[Event] = []
    for line in proc.lines:
        event: object = json.loads(line)
        assert isinstance(event, dict), line
        parsed = cast(Event, event)
        assert isinstance(parsed.get("type"), str), line
        assert isinstance(parsed.get("ts"), int | float), line
        events.append(parsed)
    return events


def _assert_all_done(project: Path, env: dict[str, str]) -> dict[str, object]:
    status = status_json(project, env)
    assert status["status"] == "done", status
    stories = cast(list[dict[str, Any]], status["stories"])
    assert {s["story_id"] for s in stories} == STORIES
    for story in stories:
        assert story["status"] == "done", story
        assert story["cost_usd"] > 0, story
    assert isinstance(status["cost_usd"], float)
    assert status["cost_usd"] > 0
    for story_id in DEMO_STORY_IDS:
        text = (project / "docs" / "stories" / f"{story_id}.story.md").read_text()
        assert "Done" in text, text
    return status


def _assert_code_written(project: Path) -> None:
    for name in ("add_greeting", "add_farewell", "add_shout"):
        assert (project / "src" / "sample_app" / f"{name}.py").is_file(), name
        assert (project / "tests" / f"test_{name}.py").is_file(), name


# -- (a) the demo, end to end --------------------------------------------------------------------


def test_demo_end_to_end_plain(tmp_path: Path, demo: Path) -> None:
    env = clean_env()  # no key, no base URL: the demo brings its own scripted server
    with CliProcess(
        ["demo", str(demo), "--progress", "plain"],
        env=env,
        cwd=tmp_path,
        stderr_path=tmp_path / "demo.err",
    ) as proc:
        code = proc.wait()
        out = "\n".join(proc.lines)
        assert code == 0, (out[-3000:], proc.stderr()[-3000:])
    assert "Traceback" not in proc.stderr()
    assert "run done" in out
    assert "Where to look:" in out
    for story_id in DEMO_STORY_IDS:
        assert f"{story_id} done" in out

    status = _assert_all_done(demo, env)
    _assert_code_written(demo)
    for story_id in DEMO_STORY_IDS:
        assert list((demo / "docs" / "qa" / "gates").glob(f"{story_id}-*.yml")), story_id
    run_dir = demo / ".bmad-trio" / "runs" / str(status["run_id"])
    transcripts = sorted(p.name for p in (run_dir / "transcripts").glob("*.jsonl"))
    assert len(transcripts) >= sum(EXPECTED_OK_SESSIONS.values()), transcripts
    for story_id in DEMO_STORY_IDS:
        assert any(name.startswith(f"{story_id}-") for name in transcripts), transcripts
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert all("type" in e and "ts" in e for e in events)
    assert events[0]["type"] == "run_started"
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["status"] == "done"
    assert (run_dir / "run.log").is_file()

    view = StoreView(demo)
    assert view.ok_sessions() == EXPECTED_OK_SESSIONS
    assert view.run.cost_usd == pytest.approx(sum(s.cost_usd for s in view.sessions))


# -- (b, c) interrupt mid-run, then resume -------------------------------------------------------


def _nth_session_finished(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: _types(events).count("session_finished") >= n


def _dev_in_flight(story_id: str) -> Callable[[list[Event]], bool]:
    """A Dev session of ``story_id`` has used a tool and has not finished."""

    def check(events: list[Event]) -> bool:
        active = [e for e in events if e["type"] == "agent_activity" and e["story_id"] == story_id]
        finished = [
            e
            for e in events
            if e["type"] == "session_finished" and e["story_id"] == story_id and e["role"] == "dev"
        ]
        return any(e["role"] == "dev" for e in active) and not finished

    return check


POINTS: dict[str, Callable[[list[Event]], bool]] = {
    "after-4th-session": _nth_session_finished(4),
    "session-in-flight": _dev_in_flight("1.2"),
}


def _start_run(project: Path, env: dict[str, str], tmp_path: Path, name: str) -> CliProcess:
    return CliProcess(
        # One story at a time: the tests count the one session an interrupt cuts short.
        ["run", DEMO_EPIC, "--project", str(project), "--progress", "jsonl", "--jobs", "1"],
        env=env,
        cwd=project,
        stderr_path=tmp_path / f"{name}.err",
    )


def _resume_and_check(
    project: Path,
    env: dict[str, str],
    api: FakeAnthropicAPI,
    tmp_path: Path,
    before: StoreView,
    *,
    killed: bool = False,
) -> None:
    """``resume`` completes the run; nothing that had finished ok ran again.

    ``killed``: the run was SIGKILLed, so its in-flight session is on the server but not in the
    store (nobody could record it)."""
    with CliProcess(
        ["resume", "--project", str(project), "--progress", "jsonl"],
        env=env,
        cwd=project,
        stderr_path=tmp_path / "resume.err",
    ) as resume:
        code = resume.wait()
        assert code == 0, (resume.lines[-5:], resume.stderr()[-3000:])
        events = _assert_jsonl(resume)
    assert wait_until_untagged(resume.pid) == []
    assert events[0]["type"] == "run_started"
    assert events[0]["resumed"] is True
    assert events[0]["run_id"] == before.run.run_id
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["status"] == "done"

    status = _assert_all_done(project, env)
    assert status["run_id"] == before.run.run_id
    _assert_code_written(project)

    after = StoreView(project, before.run.run_id)
    # every phase that had finished ok before the interruption is still the only one of its kind
    ok_before = {p.id: (p.story_id, p.phase, p.cycle) for p in before.phases if p.ok}
    ok_after = {p.id: (p.story_id, p.phase, p.cycle) for p in after.phases if p.ok}
    assert ok_before.items() <= ok_after.items()
    assert all(n == 1 for n in after.ok_phase_keys().values()), after.ok_phase_keys()
    # ... and no session that had finished ok ran twice: the ok sessions are exactly a clean run's
    assert after.ok_sessions() == EXPECTED_OK_SESSIONS, after.sessions
    not_ok = [s for s in after.sessions if s.outcome != "ok"]
    assert len(not_ok) <= 1, not_ok
    assert all(s.outcome == "cancelled" for s in not_ok), not_ok
    # the server agrees: per (story, role), sessions started = ok ones (+ the interrupted one)
    seen = server_sessions(api)
    recorded = after.all_sessions()
    assert set(seen) == {k for k in EXPECTED_OK_SESSIONS if k[0] is not None}
    for (story_id, role), count in seen.items():
        assert count >= EXPECTED_OK_SESSIONS[(story_id, role)], (story_id, role, seen)
    unrecorded = sum(seen.values()) - sum(recorded.values())
    assert 0 <= unrecorded <= (1 if killed else 0), (seen, recorded)
    # the run's cost is the sum of its sessions' (across the interruption)
    total = sum(s.cost_usd for s in after.sessions)
    assert after.run.cost_usd == pytest.approx(total)
    assert status["cost_usd"] == pytest.approx(total, abs=1e-5)
    assert events[-1]["cost_usd"] == pytest.approx(total)


@pytest.mark.parametrize("point", sorted(POINTS))
def test_ctrl_c_mid_run_then_resume(
    point: str, tmp_path: Path, demo: Path, api: FakeAnthropicAPI
) -> None:
    env = api_env(api)
    with _start_run(demo, env, tmp_path, "run") as run:
        run.wait_for_event(POINTS[point], point)
        sent = run.signal(signal.SIGINT)
        code = run.wait()
        exit_s = time.monotonic() - sent
        stderr = run.stderr()
        assert code == 130, (code, run.lines[-5:], stderr[-3000:])
        events = _assert_jsonl(run)
    print(f"Ctrl-C at {point}: exit 130 after {exit_s:.2f} s")
    # Known bug (intermittent): Ctrl-C while the SDK answers a control request (tool permission)
    # makes its detached trio task fail to write to the killed CLI; the SDK logs a warning with a
    # traceback and, with no logging handler configured, Python's last-resort handler prints it.
    sdk_race = SDK_RACE in stderr
    if not sdk_race:
        assert "Traceback" not in stderr, stderr
    assert "interrupting" in stderr
    assert events
    assert events[0]["type"] == "run_started"
    status = status_json(demo, env)
    run_dir = demo / ".bmad-trio" / "runs" / str(status["run_id"])
    logged = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert logged[-1]["type"] == "run_finished"
    assert logged[-1]["status"] == "interrupted"
    assert wait_until_untagged(run.pid) == [], "CLI/tool processes outlived the run"
    assert status["status"] == "interrupted", status
    assert any(s["status"] != "done" for s in status["stories"]), status

    before = StoreView(demo)
    assert before.run.status == "interrupted"
    _resume_and_check(demo, env, api, tmp_path, before)
    if sdk_race:
        pytest.xfail(
            "bmad-trio printed the SDK's 'Unhandled exception in detached trio task' traceback "
            "on Ctrl-C (no logging handler for claude_agent_sdk in the CLI)"
        )


def test_sigkill_mid_run_then_resume(tmp_path: Path, demo: Path, api: FakeAnthropicAPI) -> None:
    env = api_env(api)
    with _start_run(demo, env, tmp_path, "run") as run:
        run.wait_for_event(_dev_in_flight("1.2"), "1.2's Dev session in flight")
        assert tagged_with_orchestrator(run.pid), "no CLI process tagged with the run's pid"
        run.signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
    killed_at = time.monotonic()
    left = wait_until_untagged(run.pid)
    print(f"SIGKILL: tagged processes gone after {time.monotonic() - killed_at:.2f} s")
    assert left == [], f"CLI/tool processes survived SIGKILL of their orchestrator: {left}"
    lock = RunLock.for_project(demo)
    lock.acquire()  # the kernel dropped the dead run's lock
    lock.release()

    before = StoreView(demo)
    assert before.run.status == "running"  # killed: nobody marked it
    assert status_json(demo, env)["status"] == "running"
    _resume_and_check(demo, env, api, tmp_path, before, killed=True)


# -- (d) two runs on one project -----------------------------------------------------------------


def test_second_run_on_the_same_project_exits_2(
    tmp_path: Path, demo: Path, api: FakeAnthropicAPI
) -> None:
    """Fails today: the lock's StateError reaches ``main()`` wrapped in ExceptionGroups (see
    tests/test_cli.py::test_run_missing_epic_exits_2_and_writes_nothing): traceback, exit 1."""
    env = api_env(api)
    with _start_run(demo, env, tmp_path, "first") as first:
        first.wait_for_event(lambda e: "phase_started" in _types(e), "the first run under way")
        try:
            second = run_cli(
                ["run", DEMO_EPIC, "--project", str(demo), "--progress", "jsonl"],
                env=env,
                cwd=demo,
            )
            assert first.proc.poll() is None, "the first run ended before the second was tried"
        finally:
            first.signal(signal.SIGINT)
            first_code = first.wait()
    assert first_code == 130, first.stderr()[-3000:]
    assert second.stdout == ""
    assert "Traceback" not in second.stderr, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr[-3000:]
    assert "another bmad-trio run holds" in lines[0]
    assert str(demo / ".bmad-trio" / "run.lock") in lines[0]
    assert f"pid {first.pid}" in lines[0]
    assert second.returncode == 2
    # the second run wrote no run of its own
    view = StoreView(demo)
    assert view.run.status == "interrupted"
