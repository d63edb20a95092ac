"""A wide epic through the real CLI, the scripted BMAD actor, real git and the agents' sandbox:
twenty independent stories at ``jobs = 4``, each in its own worktree, all landing through the one
merge lane."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bmad_trio import ClaudeAgentRunner, RunConfig, run_epic
from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]

STORIES = 20


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _wide_project(root: Path) -> Path:
    """A repository whose epic has :data:`STORIES` independent stories; returns the epic."""
    stories = "\n".join(
        f"### Story 1.{n}: Feature number {n}\nAs a user, I want feature {n}.\n\n"
        f"#### Acceptance Criteria\n1. feature {n} returns its message.\n"
        for n in range(1, STORIES + 1)
    )
    epic = root / "docs" / "prd" / "epic-1.md"
    epic.parent.mkdir(parents=True)
    epic.write_text(f"# PRD\n\n## Epic 1: Many features\n\n{stories}")
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.invalid")
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "start")):
        _git(root, *identity, *args)
    return epic


async def test_twenty_stories_at_jobs_4_all_land_on_the_integration_branch(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    epic = _wide_project(project)
    start = _git(project, "rev-parse", "HEAD")
    config = RunConfig(
        epic=epic,
        project=project,
        jobs=4,
        skip_gates=True,
        finish="branch",
        session_timeout=180.0,
        idle_timeout=120.0,
    )
    async with (
        FakeAnthropicAPI(bmad_actor_scenario()) as api,
        ClaudeAgentRunner(env=api.env()) as runner,
    ):
        report = await run_epic(config, runner=runner)

    assert report.status == "done", report.failure_reason
    assert [s.status for s in report.stories] == ["done"] * STORIES
    # the user's checkout is where it was; the run's branch holds one landing per story, on top
    assert _git(project, "rev-parse", "HEAD") == start
    assert _git(project, "status", "--porcelain") == ""
    landed = _git(project, "log", "--format=%s", f"{start}..bmad/epic-1").splitlines()
    assert sorted(landed) == sorted(f"1.{n}: Feature number {n}" for n in range(1, STORIES + 1))
    assert _git(project, "rev-list", "--merges", f"{start}..bmad/epic-1") == ""  # linear
    for n in range(1, STORIES + 1):
        story = _git(project, "show", f"bmad/epic-1:docs/stories/1.{n}.story.md")
        assert re.search(r"^## Status\s+Done$", story, re.MULTILINE), story
        # the story's branch keeps its phase commits: one per agent session (SM, Dev, QA) and
        # the code's own (approval, status), each with its trailers
        roles = _git(
            project, "log", "--format=%(trailers:key=Bmad-Role,valueonly)",
            f"bmad/epic-1..bmad/epic-1-story-1.{n}",
        ).split()  # fmt: skip
        assert sorted(r for r in roles if r != "code") == ["dev", "qa", "sm"], (n, roles)
    assert len(api.message_requests) >= 3 * STORIES
