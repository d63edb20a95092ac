"""The workload every design runs: a synthetic epic, its project, and the scripted model.

The model is :class:`bmad_trio.testing.BmadActor` (it plays SM, Dev and QA through real tool calls),
plus two responders in front of it:

- :class:`RequestClock` records the wall-clock arrival time of every ``POST /v1/messages`` and
  passes the request on (it answers nothing);
- :class:`StatusAnswer` answers the original design's "what is the status of story X" sessions.
  The scripted server cannot read the project's disk, so the original design puts the story file's
  text into that prompt (after :data:`STATUS_QUESTION`) and the responder answers with the value
  under ``## Status`` in BMAD v4 wording ("Ready for Review" for ``Review`` …), which the original
  design then parses, as its StatusParser did with a real model's answer.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from bmad_trio.testing import ApiRequest, BmadActor, Fault, Reply, Scenario

__all__ = [
    "STATUS_QUESTION",
    "RequestClock",
    "StatusAnswer",
    "epic_text",
    "make_project",
    "scenario",
]

STATUS_QUESTION = "## Status question"
"""Marks the original design's status-reading prompt (the story file's text follows it)."""

_STATUS_VALUE = re.compile(r"^##\s*Status\s*\n+\s*([^\n#][^\n]*)", re.MULTILINE)
_V4_WORDING = {
    "draft": "Draft",
    "approved": "Ready for Development",
    "ready for development": "Ready for Development",
    "ready_for_dev": "Ready for Development",
    "in progress": "In Progress",
    "review": "Ready for Review",
    "ready for review": "Ready for Review",
    "done": "Done",
}


def epic_text(stories: int, *, chains: int = 0) -> str:
    """An epic of ``stories`` stories (``1.1`` … ``1.N``), each with one criterion: independent,
    or with ``chains`` > 0 in that many dependency chains (story n depends on story n - chains)."""
    parts = ["# Benchmark PRD", "", "## Epic 1: Benchmark features", ""]
    for number in range(1, stories + 1):
        parts += [
            f"### Story 1.{number}: Add feature {number}",
            f"As a user, I want feature {number}, so that the benchmark has work to do.",
            "",
        ]
        if chains and number > chains:
            parts += [f"Depends on: 1.{number - chains}", ""]
        parts += ["#### Acceptance Criteria", f"1. feature {number} returns its message.", ""]
    return "\n".join(parts)


def make_project(root: Path, stories: int, *, chains: int = 0) -> Path:
    """A fresh project under ``root`` with the epic at ``docs/prd/epic-1.md``, committed as the
    first commit of a new git repository (a run needs one); returns the epic."""
    epic = root / "docs" / "prd" / "epic-1.md"
    epic.parent.mkdir(parents=True)
    epic.write_text(epic_text(stories, chains=chains))
    identity = ("-c", "user.name=bench", "-c", "user.email=bench@bench.invalid")
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-q", "-m", "benchmark project")):
        subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)
    return epic


class RequestClock:
    """A responder that only records when each messages request arrived (``time.time()``)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        self.arrivals.append(time.time())
        return None


class StatusAnswer:
    """Answers the original design's status question from the story text in its prompt."""

    def __init__(self) -> None:
        self.answered = 0

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        for text in request.user_texts():
            if STATUS_QUESTION in text:
                story = text.split(STATUS_QUESTION, 1)[1]
                found = _STATUS_VALUE.search(story)
                raw = found.group(1).strip() if found else "unknown"
                self.answered += 1
                wording = _V4_WORDING.get(raw.lower(), raw)
                return Reply.text(f"The current status of this story is: {wording}")
        return None


def scenario(
    clock: RequestClock,
    status: StatusAnswer,
    *,
    latency_s: float,
    delta_delay_s: float = 0.0,
) -> Scenario:
    """The scripted model: clock, status answers, then the BMAD actor; fixed latency."""
    return Scenario(
        responders=(clock, status, BmadActor()),
        default=Reply.text("OK"),
        latency_s=latency_s,
        delta_delay_s=delta_delay_s,
    )
