"""Quality gates after each story: never two at once in the tree; the run is judged by each gate's
last result (issue 13, 9)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent, make_project

from bmad_trio import GateCommand, RunConfig, SessionResult, SessionSpec, run_epic
from bmad_trio.testing import MockAgentRunner, parse_context

pytestmark = pytest.mark.anyio

TWO_INDEPENDENT = """\
# PRD

## Epic 1: Two

### Story 1.1: One
As a user, I want one, so that a.

### Story 1.2: Two
As a user, I want two, so that b.
"""

# Each run of the gate marks itself running; the first run holds on (up to 5 s) until a second
# run starts beside it. With gates serialised the first run never sees a second one.
OVERLAP_GATE = """\
import os, pathlib, sys, time
root = pathlib.Path(".gate-runs")
root.mkdir(exist_ok=True)
number = len(list(root.iterdir()))
mine = root / f"run-{number}"
mine.write_text("running")
others = lambda: [p for p in root.iterdir() if p != mine and p.read_text() == "running"]
if others():
    pathlib.Path("overlap").write_text(f"run {number} started while another ran")
if number == 0:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not others():
        time.sleep(0.02)
    if others():
        pathlib.Path("overlap").write_text("a second run started while the first ran")
mine.write_text("done")
"""

# Fails its first two runs (the run after story 1.1 and its re-run after the fixer), then passes.
FLAKY_GATE = """\
import pathlib, sys
counter = pathlib.Path(".gate-count")
count = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(count))
sys.exit(1 if count <= 2 else 0)
"""


def _config(project: Path, **overrides: object) -> RunConfig:
    fields: dict[str, object] = {
        "epic": project / "docs" / "prd" / "epic-1.md",
        "project": project,
        "max_cycles": 3,
        "skip_gates": False,
        "gates_after_each_story": True,
        "workspace": "checkout",
    }
    fields.update(overrides)
    return RunConfig(**fields)  # pyright: ignore[reportArgumentType]


async def test_gates_after_two_stories_that_end_together_never_overlap(tmp_path: Path) -> None:
    project = make_project(tmp_path, TWO_INDEPENDENT)
    agent = DiskAgent()
    both_reviewing = anyio.Event()
    reviewing = 0

    async def qa_together(spec: SessionSpec) -> SessionResult:
        nonlocal reviewing
        context = parse_context(spec.prompt)
        assert context is not None
        if context.role == "qa":
            reviewing += 1
            if reviewing == 2:
                both_reviewing.set()
            await both_reviewing.wait()  # both stories end at about the same time
        return await agent.handle(spec)

    gates = (GateCommand("overlap", (sys.executable, "-c", OVERLAP_GATE), 60),)
    report = await run_epic(
        _config(project, jobs=2, gates=gates), runner=MockAgentRunner(qa_together)
    )
    assert not (project / "overlap").exists(), (project / "overlap").read_text()
    assert report.status == "done", report.failure_reason
    assert len(list((project / ".gate-runs").iterdir())) == 3  # after each story, then at the end


async def test_the_run_is_judged_by_each_gates_last_result(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    gates = (GateCommand("flaky", (sys.executable, "-c", FLAKY_GATE), 60),)
    agent = DiskAgent()
    report = await run_epic(
        _config(project, gates=gates, gate_fix_attempts=1), runner=agent.runner()
    )
    assert (project / ".gate-count").read_text() == "5"  # 2 after 1.1, then 1.2, 1.3, the end
    assert agent.sessions[("fixer", "fixer")] == 1
    assert [(g.name, g.passed) for g in report.gates] == [("flaky", True)]
    assert report.status == "done", report.failure_reason
    assert report.exit_code == 0


async def test_gates_after_each_story_keep_only_the_last_result(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    gates = (
        GateCommand("a", (sys.executable, "-c", "pass"), 60),
        GateCommand("b", (sys.executable, "-c", "pass"), 60),
    )
    report = await run_epic(_config(project, gates=gates), runner=DiskAgent().runner())
    assert report.status == "done"
    assert [(g.name, g.passed, g.attempts) for g in report.gates] == [
        ("a", True, 1),
        ("b", True, 1),
    ]
