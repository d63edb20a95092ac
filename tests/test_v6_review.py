"""BMAD v6: QA is v6 code-review (findings in the story, status set by it), decided by code (issue 14).

The agent here edits files the way the official v6 workflows do: create-story writes
``Status: ready-for-dev`` and moves the sprint-status entry; dev-story ticks tasks (review
follow-ups included) and sets ``review``; code-review appends ``### Review Findings`` to the tasks,
sets ``done`` or ``in-progress`` and syncs sprint-status. No QA gate file exists anywhere.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import attrs
import pytest
from _git_project import init_repository

from bmad_trio import Outcome, RunConfig, SessionResult, SessionSpec, run_epic
from bmad_trio._bmad import detect_layout, parse_story, read_sprint_status
from bmad_trio._bmad._v6_review import ReviewOutcome, decide_review, review_items
from bmad_trio._state._store import open_store
from bmad_trio.testing import MockAgentRunner, parse_context

EPICS = """\
# Sample - Epic Breakdown

## Epic 1: Greetings

### Story 1.1: Add greeting

As a user,
I want a greeting,
So that I feel welcome.

**Acceptance Criteria:**

**Given** a name
**When** I call greet
**Then** I get a greeting

### Story 1.2: Add farewell

As a user,
I want a farewell,
So that I know we are done.

**Acceptance Criteria:**

**Given** a name
**When** I call farewell
**Then** I get a farewell
"""

SPRINT = """\
# generated: 2026-11-29
# STATUS DEFINITIONS: backlog | ready-for-dev | in-progress | review | done
project: sample
story_location: _bmad-output/implementation-artifacts

development_status:
  epic-1: backlog
  1-1-add-greeting: backlog   # first story
  1-2-add-farewell: backlog
  epic-1-retrospective: optional
"""

ARTIFACTS = Path("_bmad-output/implementation-artifacts")


def make_v6_project(root: Path) -> Path:
    (root / "_bmad" / "bmm").mkdir(parents=True)
    (root / "_bmad" / "bmm" / "config.yaml").write_text(
        'output_folder: "{project-root}/_bmad-output"\n'
    )
    planning = root / "_bmad-output" / "planning-artifacts"
    planning.mkdir(parents=True)
    (planning / "epics.md").write_text(EPICS)
    (root / ARTIFACTS).mkdir(parents=True)
    (root / ARTIFACTS / "sprint-status.yaml").write_text(SPRINT)
    return root


def make_v6_repository(root: Path) -> Path:
    """:func:`make_v6_project` committed as the first commit of a git repository (what ``run``
    needs on the command line)."""
    return init_repository(make_v6_project(root))


def _set_sprint(root: Path, sprint_rel: str, story_id: str, word: str) -> None:
    path = root / sprint_rel
    epic, number = story_id.split(".")
    pattern = re.compile(rf"^(  {epic}-{number}-[\w-]+: )[\w-]+", re.M)
    path.write_text(pattern.sub(lambda m: m.group(1) + word, path.read_text(), count=1))


def _set_status(path: Path, word: str) -> None:
    path.write_text(re.sub(r"(?m)^Status: .*$", f"Status: {word}", path.read_text(), count=1))


@attrs.define
class V6Agent:
    """SM/Dev/QA acting like BMAD v6 create-story, dev-story and code-review, straight on disk.

    ``review``: story id → what its code reviews do, one word per review (then ``clean``):
    ``clean`` (done, no findings), ``patch`` (a [Review][Patch] finding, in-progress),
    ``done-with-patch`` (says done but leaves a patch finding open), ``findings-no-status``
    (writes a patch finding, leaves the status at review), ``nothing`` (writes nothing).
    """

    review: dict[str, list[str]] = attrs.field(factory=dict[str, list[str]])
    sessions: Counter[tuple[str, str]] = attrs.field(factory=Counter[tuple[str, str]])
    specs: list[SessionSpec] = attrs.field(factory=list[SessionSpec])

    def runner(self) -> MockAgentRunner:
        return MockAgentRunner(self.handle)

    async def handle(self, spec: SessionSpec) -> SessionResult:
        ctx = parse_context(spec.prompt)
        assert ctx is not None, spec.prompt
        self.specs.append(spec)
        self.sessions[(ctx.story, ctx.role)] += 1
        root = spec.cwd
        story = root / ctx.story_file
        if ctx.role == "sm":
            story.write_text(
                f"# Story {ctx.story}: {ctx.story_title}\n\nStatus: ready-for-dev\n\n"
                "## Story\n\nAs a user,\nI want it,\nso that it works.\n\n"
                "## Acceptance Criteria\n\n1. It works.\n\n"
                "## Tasks / Subtasks\n\n- [ ] Task 1 (AC: 1)\n  - [ ] Subtask 1.1\n\n"
                "## Dev Notes\n\n## Dev Agent Record\n\n### File List\n"
            )
            _set_sprint(root, ctx.sprint_status, ctx.story, "ready-for-dev")
        elif ctx.role == "dev":
            text = story.read_text().replace("- [ ]", "- [x]")
            story.write_text(text.replace("### File List\n", "### File List\n\n- code.py\n", 1))
            _set_status(story, "review")
            _set_sprint(root, ctx.sprint_status, ctx.story, "review")
            (root / "code.py").write_text("x = 1\n")
        elif ctx.role == "qa":
            plan = self.review.get(ctx.story, [])
            self._code_review(root, story, ctx.sprint_status, plan.pop(0) if plan else "clean")
        return SessionResult(outcome=Outcome.OK, cost_usd=0.01, turns=2, duration_s=0.01)

    @staticmethod
    def _code_review(root: Path, story: Path, sprint_rel: str, mode: str) -> None:
        if mode == "nothing":
            return
        text = story.read_text()
        n = text.count("### Review Findings") + 1
        lines = ["", "### Review Findings", ""]
        if mode in ("patch", "done-with-patch", "findings-no-status"):
            lines.append(f"- [ ] [Review][Patch] Handle an empty name (round {n}) [code.py:1]")
        lines.append("- [x] [Review][Defer] Logging is noisy [code.py:1] — deferred, pre-existing")
        text = text.replace("\n## Dev Notes", "\n".join(lines) + "\n\n## Dev Notes", 1)
        story.write_text(text)
        word = {"clean": "done", "done-with-patch": "done", "patch": "in-progress"}.get(mode)
        if word is not None:
            _set_status(story, word)
            story_id = re.search(r"^# Story (\S+):", text, re.M)
            assert story_id is not None
            _set_sprint(root, sprint_rel, story_id.group(1), word)


def _config(project: Path, **overrides: object) -> RunConfig:
    fields: dict[str, object] = {
        "epic_number": 1,
        "project": project,
        "skip_gates": True,
        "max_cycles": 3,
        "workspace": "checkout",
    }
    fields.update(overrides)
    return RunConfig(**fields)  # pyright: ignore[reportArgumentType]


def _story(project: Path, key: str) -> Path:
    return project / ARTIFACTS / f"{key}.md"


def _sprint(project: Path) -> dict[str, str]:
    return read_sprint_status(project / ARTIFACTS / "sprint-status.yaml")


def _dev_prompts(agent: V6Agent, story_id: str) -> list[str]:
    return [
        s.prompt
        for s in agent.specs
        if f"- story: {story_id}\n" in s.prompt and "- role: dev" in s.prompt
    ]


# --- the decision rules, on story files ---------------------------------------------------------

STORY = """\
# Story 1.1: Add greeting

Status: {status}

## Tasks / Subtasks

- [x] Task 1 (AC: 1)
{review}
## Dev Agent Record
"""


def _verdict(tmp_path: Path, status: str, review: str, *, changed: bool = True) -> ReviewOutcome:
    path = tmp_path / "1-1-add-greeting.md"
    path.write_text(STORY.format(status=status, review=review))
    return decide_review(parse_story(path), story_file=path.name, changed=changed).outcome


@pytest.mark.parametrize(
    ("status", "review", "changed", "expected"),
    [
        ("done", "", True, ReviewOutcome.DONE),
        ("done", "\n### Review Findings\n\n- [x] [Review][Patch] fixed [a.py:1]\n", True, "done"),
        ("done", "\n### Review Findings\n\n- [x] [Review][Defer] old [a.py:1]\n", True, "done"),
        ("done", "\n### Review Findings\n\n- [ ] [Review][Patch] fix it [a.py:1]\n", True, "back"),
        ("done", "\n### Review Findings\n\n- [ ] [Review][Decision] which way\n", True, "back"),
        ("done", "\n### Review Follow-ups (AI)\n\n- [ ] [AI-Review][Low] style\n", True, "done"),
        ("done", "\n### Review Follow-ups (AI)\n\n- [ ] [AI-Review][High] no AC2\n", True, "back"),
        ("done", "\n### Review Follow-ups (AI)\n\n- [ ] [AI-Review][Medium] list\n", True, "back"),
        (
            "in-progress",
            "\n### Review Findings\n\n- [ ] [Review][Patch] x [a.py:1]\n",
            True,
            "back",
        ),
        ("in-progress", "", True, "back"),
        ("review", "", False, "retry"),
        ("review", "\n### Review Findings\n\n- [x] [Review][Defer] old\n", True, "retry"),
        ("review", "\n### Review Findings\n\n- [ ] [Review][Patch] x [a.py:1]\n", True, "back"),
        ("blocked", "", True, ReviewOutcome.AS_WRITTEN),
    ],
)
def test_the_decision_rules(
    tmp_path: Path, status: str, review: str, changed: bool, expected: object
) -> None:
    names = {
        "done": ReviewOutcome.DONE,
        "back": ReviewOutcome.IN_PROGRESS,
        "retry": ReviewOutcome.FAILED_ATTEMPT,
    }
    wanted = names.get(expected, expected) if isinstance(expected, str) else expected
    assert _verdict(tmp_path, status, review, changed=changed) is wanted


def test_findings_are_read_from_both_v6_forms_once(tmp_path: Path) -> None:
    path = tmp_path / "1-1-add-greeting.md"
    review = (
        "\n### Review Findings\n\n- [ ] [Review][Patch] Null check [a.py:3]\n"
        "- [x] [Review][Defer] Old thing [b.py:1] — deferred, pre-existing\n"
        "\n### Review Follow-ups (AI)\n\n- [ ] [AI-Review][High] AC 2 missing [c.py:9]\n"
    )
    path.write_text(STORY.format(status="in-progress", review=review))
    story = parse_story(path)
    items = review_items(story)
    assert [(i.kind, i.severity, i.checked, i.blocking) for i in items] == [
        ("patch", None, False, True),
        ("defer", None, True, False),
        ("ai-review", "high", False, True),
    ]
    verdict = decide_review(story, story_file="x/1-1-add-greeting.md", changed=True)
    assert verdict.findings is not None
    assert "Null check [a.py:3]" in verdict.findings
    assert "AC 2 missing" in verdict.findings
    assert "Old thing" not in verdict.findings
    assert "x/1-1-add-greeting.md" in verdict.findings


# --- whole runs ---------------------------------------------------------------------------------

pytestmark_anyio = pytest.mark.anyio


@pytestmark_anyio
async def test_v6_stories_go_to_done_by_code_review_without_gate_files(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent()
    report = await run_epic(_config(project), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    for key in ("1-1-add-greeting", "1-2-add-farewell"):
        story = parse_story(_story(project, key))
        assert story.status_text == "done"
        assert _sprint(project)[key] == "done"
    assert _sprint(project)["epic-1-retrospective"] == "optional"
    sprint_text = (project / ARTIFACTS / "sprint-status.yaml").read_text()
    assert re.search(r"(?m)^  1-1-add-greeting: done +# first story$", sprint_text)
    assert not list(project.rglob("*.yml")), "v6 has no QA gate files"
    for story_id in ("1.1", "1.2"):
        assert [agent.sessions[(story_id, r)] for r in ("sm", "dev", "qa")] == [1, 1, 1]
    qa = next(s for s in agent.specs if "- role: qa" in s.prompt)
    assert qa.writable_paths == (
        f"{ARTIFACTS.as_posix()}/1-1-add-greeting.md",
        f"{ARTIFACTS.as_posix()}/sprint-status.yaml",
        f"{ARTIFACTS.as_posix()}/deferred-work.md",
    )
    assert "gate file" not in qa.prompt
    assert "### Review Findings" in qa.prompt
    sm = next(s for s in agent.specs if "- role: sm" in s.prompt)
    assert sm.writable_paths == (
        f"{ARTIFACTS.as_posix()}/1-1-add-greeting.md",
        f"{ARTIFACTS.as_posix()}/sprint-status.yaml",
    )
    assert "Status: ready-for-dev" in sm.prompt
    async with open_store(project) as store:
        phases = [p.phase for p in await store.phases(report.run_id, "1.1")]
    assert phases == ["draft", "develop", "review"]  # create-story wrote ready-for-dev: no approve


@pytestmark_anyio
async def test_patch_findings_go_back_to_dev_with_the_findings(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent(review={"1.2": ["patch"]})
    report = await run_epic(_config(project), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.2", "dev")] == 2
    assert agent.sessions[("1.2", "qa")] == 2
    assert report.stories[1].cycles == 2
    second = _dev_prompts(agent, "1.2")[1]
    assert "[Review][Patch] Handle an empty name (round 1) [code.py:1]" in second
    assert "tick its checkbox" in second
    story = parse_story(_story(project, "1-2-add-farewell"))
    assert all(i.checked for i in review_items(story))


@pytestmark_anyio
async def test_done_with_an_open_patch_finding_goes_back_to_dev(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent(review={"1.1": ["done-with-patch"]})
    report = await run_epic(_config(project, stories=("1.1",)), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "dev")] == 2
    assert "Handle an empty name (round 1)" in _dev_prompts(agent, "1.1")[1]
    async with open_store(project) as store:
        details = [
            p.detail for p in await store.phases(report.run_id, "1.1") if p.phase == "review"
        ]
    assert details[0] == "code review set done but left 1 blocking finding(s) open"


@pytestmark_anyio
async def test_findings_without_a_status_go_back_to_dev(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent(review={"1.1": ["findings-no-status"]})
    report = await run_epic(_config(project, stories=("1.1",)), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "dev")] == 2
    assert agent.sessions[("1.1", "qa")] == 2


@pytestmark_anyio
async def test_a_review_that_writes_nothing_is_a_failed_attempt(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent(review={"1.1": ["nothing", "clean"]})
    report = await run_epic(_config(project, stories=("1.1",)), runner=agent.runner())
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "dev")] == 1  # not sent back to Dev: reviewed again
    assert agent.sessions[("1.1", "qa")] == 2
    async with open_store(project) as store:
        reviews = [p for p in await store.phases(report.run_id, "1.1") if p.phase == "review"]
    assert [(p.ok, p.detail) for p in reviews] == [
        (False, "code review wrote nothing"),
        (True, "code review: done, no open patch finding"),
    ]


@pytestmark_anyio
async def test_reviews_that_never_decide_fail_the_story_after_max_cycles(tmp_path: Path) -> None:
    project = make_v6_project(tmp_path)
    agent = V6Agent(review={"1.1": ["nothing"] * 5})
    report = await run_epic(_config(project, stories=("1.1",)), runner=agent.runner())
    assert report.status == "failed"
    assert agent.sessions[("1.1", "qa")] == 3
    assert report.stories[0].failure_reason == "code review left no verdict in 3 attempt(s)"
    assert parse_story(_story(project, "1-1-add-greeting")).status.value == "failed"


@pytestmark_anyio
async def test_a_failed_review_session_does_not_count_its_edits(tmp_path: Path) -> None:
    """A QA session that crashed after writing ``done`` is no verdict: reviewed again."""
    project = make_v6_project(tmp_path)
    agent = V6Agent()
    crashed: list[bool] = []

    async def handle(spec: SessionSpec) -> SessionResult:
        ctx = parse_context(spec.prompt)
        assert ctx is not None
        if ctx.role == "qa" and not crashed:
            crashed.append(True)
            _set_status(spec.cwd / ctx.story_file, "done")
            return SessionResult(outcome=Outcome.CLI_ERROR, error="the CLI died", duration_s=0.01)
        return await agent.handle(spec)

    report = await run_epic(_config(project, stories=("1.1",)), runner=MockAgentRunner(handle))
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "qa")] == 1  # the real review after the crashed one


def test_the_layout_of_the_fixture_is_v6(tmp_path: Path) -> None:
    layout = detect_layout(make_v6_project(tmp_path))
    assert layout.version == "v6"
    assert layout.sprint_status_path == (tmp_path / ARTIFACTS / "sprint-status.yaml").resolve()


@pytestmark_anyio
@pytest.mark.parametrize("session_ok", [True, False])
async def test_a_review_that_breaks_the_story_file_is_undone(
    tmp_path: Path, session_ok: bool
) -> None:
    """A review (finished or crashed) that leaves the story unparseable: restored, reviewed again."""
    project = make_v6_project(tmp_path)
    agent = V6Agent()
    broken: list[bytes] = []

    async def handle(spec: SessionSpec) -> SessionResult:
        ctx = parse_context(spec.prompt)
        assert ctx is not None
        if ctx.role == "qa" and not broken:
            path = spec.cwd / ctx.story_file
            broken.append(path.read_bytes())
            path.write_text("not a story any more\n")
            if session_ok:
                return SessionResult(outcome=Outcome.OK, cost_usd=0.01, duration_s=0.01)
            return SessionResult(outcome=Outcome.CLI_ERROR, error="the CLI died", duration_s=0.01)
        return await agent.handle(spec)

    report = await run_epic(_config(project, stories=("1.1",)), runner=MockAgentRunner(handle))
    assert report.status == "done", report.failure_reason
    assert agent.sessions[("1.1", "qa")] == 1  # the real review after the broken one
    story = parse_story(_story(project, "1-1-add-greeting"))
    assert story.status_text == "done"
    restored = broken[0].decode().replace("Status: review", "Status: done")
    before_findings = restored.split("\n## Dev Notes", 1)[0]
    assert _story(project, "1-1-add-greeting").read_text().startswith(before_findings)
    async with open_store(project) as store:
        reviews = [p for p in await store.phases(report.run_id, "1.1") if p.phase == "review"]
    assert [p.ok for p in reviews] == [False, True]
    if session_ok:
        assert (reviews[0].detail or "").startswith("story file unreadable:")
