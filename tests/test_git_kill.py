"""SIGKILL of the orchestrator in the middle of git's work (a phase commit, a landing), then
``resume``: the run's branch is consistent, nothing committed is lost or redone.

The orchestrator is a child process running :func:`bmad_trio.run_epic` with the scripted
:class:`DiskAgent`; a ``git`` wrapper first on its PATH does the real work, then, for the chosen
git command, tells the test and waits forever, so the kill lands exactly there (no timing luck).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent
from _git_project import git, log_subjects, make_git_project

from bmad_trio import RunConfig, run_epic

pytestmark = pytest.mark.anyio

TESTS = Path(__file__).parent

_WRAPPER = """\
#!{python}
import os, subprocess, sys, time
real = {real!r}
done = subprocess.run([real, *sys.argv[1:]])
args = sys.argv[1:]
if {trigger!r} in args and not os.path.exists({marker!r}):
    with open({marker!r}, "w") as handle:
        handle.write(str(os.getpid()) + " " + " ".join(args))
    while True:
        time.sleep(3600)
sys.exit(done.returncode)
"""

_ORCHESTRATOR = """\
import anyio, sys
sys.path.insert(0, {tests!r})
from _disk_agent import DiskAgent
from bmad_trio import RunConfig, run_epic

config = RunConfig(
    epic={epic!r}, project={project!r}, skip_gates=True, max_cycles=3, jobs=1, finish="branch"
)
anyio.run(lambda: run_epic(config, runner=DiskAgent().runner()))
"""


def _config(project: Path) -> RunConfig:
    return RunConfig(
        epic=project / "docs" / "prd" / "epic-1.md",
        project=project,
        skip_gates=True,
        max_cycles=3,
        jobs=1,
        finish="branch",
    )


async def _kill_when(project: Path, tmp_path: Path, trigger: str) -> str:
    """Start the orchestrator; SIGKILL it once git has run ``trigger`` (e.g. ``--squash``).
    Returns the git command line it was killed after."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "marker"
    wrapper = bin_dir / "git"
    real = shutil.which("git")
    assert real is not None
    wrapper.write_text(
        _WRAPPER.format(python=sys.executable, real=real, trigger=trigger, marker=str(marker))
    )
    wrapper.chmod(0o755)
    script = tmp_path / "orchestrator.py"
    epic = project / "docs" / "prd" / "epic-1.md"
    script.write_text(
        textwrap.dedent(
            _ORCHESTRATOR.format(tests=str(TESTS), epic=str(epic), project=str(project))
        )
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    process = await anyio.open_process(
        [sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    async with process:
        with anyio.fail_after(300):
            while not marker.exists():
                if process.returncode is not None:
                    raise AssertionError("the orchestrator ended before git got there")
                await anyio.sleep(0.05)  # polling a file the wrapper writes: state, not timing
        process.send_signal(signal.SIGKILL)
        await process.wait()
    pid, _, command = marker.read_text().partition(" ")
    os.kill(int(pid), signal.SIGKILL)  # the parked wrapper itself: nothing of the test outlives it
    return command


@pytest.mark.parametrize("trigger", ["--squash", "commit"])
async def test_sigkill_in_git_then_resume_leaves_a_consistent_branch(
    tmp_path: Path, trigger: str
) -> None:
    project = make_git_project(tmp_path / "project")
    killed_after = await _kill_when(project, tmp_path, trigger)
    assert trigger in killed_after
    agent = DiskAgent()
    report = await run_epic(_config(project), runner=agent.runner(), resume=True)
    assert report.status == "done", report.failure_reason
    subjects = log_subjects(project, "bmad/epic-1")
    for title in ("1.1: Add greeting", "1.2: Add farewell", "1.3: Add shout"):
        assert subjects.count(title) == 1, subjects  # landed once, never twice
    integration = project / ".bmad-trio" / "worktrees" / report.run_id / "_integration"
    assert git(integration, "status", "--porcelain") == ""
    assert git(project, "fsck", "--no-progress", "--no-dangling") == ""
    # What was committed before the kill was not redone: 1.1's draft ran in the killed process.
    assert agent.sessions[("1.1", "sm")] == 0
