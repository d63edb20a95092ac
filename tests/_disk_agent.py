"""A scripted agent for MockAgentRunner: does each role's job directly on disk, from the prompt."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs

from bmad_trio import Outcome, RunConfig, SessionResult, SessionSpec
from bmad_trio.testing import MockAgentRunner, parse_context
from bmad_trio.testing._bmad_actor import resolve_conflict_blocks

EPIC = """\
# Sample PRD

## Epic 1: Greetings

### Story 1.1: Add greeting
As a user, I want a greeting, so that I feel welcome.

#### Acceptance Criteria
1. greet() returns a greeting.

### Story 1.2: Add farewell
As a user, I want a farewell, so that I know we are done.

#### Acceptance Criteria
1. farewell() returns a farewell.

### Story 1.3: Add shout
As a user, I want to shout, so that I am heard.

Depends on: 1.1

#### Acceptance Criteria
1. shout() upper-cases text.
"""


def make_project(root: Path, epic: str = EPIC) -> Path:
    (root / "docs" / "prd").mkdir(parents=True)
    (root / "docs" / "prd" / "epic-1.md").write_text(epic)
    return root


def run_config(project: Path, **overrides: object) -> RunConfig:
    """The unit tests' RunConfig for a project made by :func:`make_project`: its epic, no quality
    gates, three cycles, and the agents working in the project folder itself (``checkout``: these
    tests are about the story cycle; the git model has its own, tests/test_git_run.py and
    tests/git/); ``overrides`` replace any field."""
    fields: dict[str, object] = {
        "epic": project / "docs" / "prd" / "epic-1.md",
        "project": project,
        "skip_gates": True,
        "max_cycles": 3,
        "workspace": "checkout",
    }
    fields.update(overrides)
    return RunConfig(**fields)  # pyright: ignore[reportArgumentType]


@attrs.define
class DiskAgent:
    """Plays SM, Dev, QA and fixer by editing files; counts sessions per (story, role)."""

    fail_first_review: set[str] = attrs.field(factory=set[str])
    lazy_dev: set[str] = attrs.field(factory=set[str])
    gate_word: str = "PASS"
    cost_usd: float = 0.01
    delay_s: float = 0.0
    outcomes: dict[str, list[SessionResult]] = attrs.field(factory=dict[str, list[SessionResult]])
    """role -> results returned (instead of acting) by the next sessions of that role."""
    on_session: Callable[[SessionSpec], None] | None = None
    sessions: Counter[tuple[str, str]] = attrs.field(factory=Counter[tuple[str, str]])
    prompts: list[str] = attrs.field(factory=list[str])

    def runner(self) -> MockAgentRunner:
        return MockAgentRunner(self.handle)

    async def handle(self, spec: SessionSpec) -> SessionResult:
        context = parse_context(spec.prompt)
        assert context is not None, spec.prompt
        self.prompts.append(spec.prompt)
        self.sessions[(context.story or context.role, context.role)] += 1
        if self.on_session is not None:
            self.on_session(spec)
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        scripted = self.outcomes.get(context.role)
        if scripted:
            return scripted.pop(0)
        root = spec.cwd
        if context.task == "resolve merge conflict":
            for name in context.conflicts:
                path = root / name
                path.write_text(resolve_conflict_blocks(path.read_text()))
        elif context.role == "sm":
            self._draft(root / context.story_file, context.story, context.story_title)
        elif context.role == "dev" and context.story not in self.lazy_dev:
            self._develop(root / context.story_file, root)
        elif context.role == "qa":
            first = self.sessions[(context.story, "qa")] == 1
            word = "FAIL" if first and context.story in self.fail_first_review else self.gate_word
            self._review(root / context.gate_file, context.story, word)
        elif context.role == "fixer":
            (root / "fixed").write_text("ok\n")
        return SessionResult(outcome=Outcome.OK, cost_usd=self.cost_usd, turns=2, duration_s=0.01)

    @staticmethod
    def _draft(path: Path, story_id: str, title: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Story {story_id}: {title}\n\n## Status\n\nDraft\n\n## Story\n\nAs a user...\n\n"
            "## Tasks / Subtasks\n\n- [ ] Task 1 (AC: 1)\n  - [ ] subtask\n- [ ] Task 2\n\n"
            "## Dev Agent Record\n\n### File List\n\n## QA Results\n"
        )

    @staticmethod
    def _develop(path: Path, root: Path) -> None:
        text = path.read_text().replace("- [ ]", "- [x]")
        text = re.sub(r"(## Status\n\n)\w[\w ]*", r"\1Review", text)
        path.write_text(text)
        (root / "code.py").write_text("x = 1\n")

    @staticmethod
    def _review(path: Path, story_id: str, word: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        issues = "top_issues:\n  - id: T-1\n    severity: high\n    finding: no tests\n    suggested_action: add tests\n"
        path.write_text(
            f'schema: 1\nstory: "{story_id}"\ngate: {word}\nstatus_reason: "reviewed"\n'
            + (issues if word != "PASS" else "top_issues: []\n")
        )
