"""A BMAD v6 project end to end through the real CLI: QA is v6 code-review, no gate files (issue 14).

``bmad-trio run`` runs as a subprocess against the scripted model server, whose BMAD actor plays
the v6 workflows (create-story, dev-story, code-review) through real tool calls. Story 1.2's first
code review leaves a ``[Review][Patch]`` finding and sets ``in-progress``; Dev fixes and ticks it;
the second review sets ``done``. Both event loops.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import CliProcess, StoreView, api_env, status_json
from _git_project import init_repository
from anyio.from_thread import start_blocking_portal
from test_v6_review import ARTIFACTS, make_v6_project

from bmad_trio._bmad import parse_story, read_sprint_status
from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

pytestmark = [pytest.mark.e2e]


def _v6_project(root: Path) -> Path:
    """The unit tests' v6 project (tests/test_v6_review.py), with a unittest quality gate."""
    make_v6_project(root)
    (root / "tests").mkdir()
    python = shlex.quote(sys.executable)
    (root / "bmad-trio.toml").write_text(
        f'[[gates]]\nname = "unittest"\ncommand = "{python} -m unittest discover -s tests"\n'
    )
    return init_repository(root)  # what `run` needs


@pytest.fixture
def api() -> Iterator[FakeAnthropicAPI]:
    with start_blocking_portal("trio") as portal:
        server = FakeAnthropicAPI(bmad_actor_scenario({"1.2"}))
        with portal.wrap_async_context_manager(server) as running:
            yield running


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_v6_project_runs_to_done_through_code_review(
    backend: str, tmp_path: Path, api: FakeAnthropicAPI
) -> None:
    project = _v6_project(tmp_path / "v6")
    env = api_env(api)
    with CliProcess(
        ["run", "1", "--project", str(project), "--progress", "plain", "--backend", backend],
        env=env,
        cwd=project,
        stderr_path=tmp_path / "run.err",
    ) as proc:
        code = proc.wait()
        assert code == 0, (proc.lines[-20:], proc.stderr()[-3000:])
    assert "Traceback" not in proc.stderr()

    status = status_json(project, env)
    assert status["status"] == "done", status
    sprint = read_sprint_status(project / ARTIFACTS / "sprint-status.yaml")
    for key in ("1-1-add-greeting", "1-2-add-farewell"):
        story = parse_story(project / ARTIFACTS / f"{key}.md")
        assert story.status_text == "done", key
        assert sprint[key] == "done", sprint
    text = (project / ARTIFACTS / "sprint-status.yaml").read_text()
    assert re.search(r"(?m)^  1-1-add-greeting: done +# first story$", text), text
    assert "epic-1-retrospective: optional" in text

    first = (project / ARTIFACTS / "1-1-add-greeting.md").read_text()
    assert "Status: done" in first
    assert "### Review Findings" not in first  # a clean review writes no findings
    second = (project / ARTIFACTS / "1-2-add-farewell.md").read_text()
    assert re.search(
        r"(?m)^- \[x\] \[Review\]\[Patch\] Tests for story 1\.2 do not cover an empty name", second
    ), second
    assert not list(project.rglob("*.yml")), "v6 has no QA gate files"
    assert (project / "add_greeting.py").is_file()

    view = StoreView(project)
    assert view.ok_sessions() == Counter(
        {
            ("1.1", "sm"): 1,
            ("1.1", "dev"): 1,
            ("1.1", "qa"): 1,
            ("1.2", "sm"): 1,
            ("1.2", "dev"): 2,
            ("1.2", "qa"): 2,
        }
    )
    review_details = [p.detail for p in view.phases if p.phase == "review"]
    assert review_details.count("code review: done, no open patch finding") == 2
    assert any("changes requested" in d for d in review_details), review_details
    phases = [p.phase for p in view.phases if p.story_id == "1.1"]
    assert "approve" not in phases  # create-story wrote ready-for-dev
