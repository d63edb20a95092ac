"""A small, faithful re-creation of the design bmad-trio replaces, for the comparison bench.

It follows the original ``epic_driver.py`` as described in the seed report
(/work/shared/seed/cancel-scope-report.zh.md, sections 3-4):

- ``asyncio.run(main())`` and every step awaited in that one main task: no ``create_task``, no
  task group; each agent session is one ``claude_agent_sdk.query()`` call, wrapped in
  ``asyncio.shield`` (the original's "protect the SDK call from outside cancellation").
- The story's status is read by a model: a StatusParser session per cycle. The original sent the
  story to the model and parsed the status out of its answer; here the story file's text goes into
  the prompt after :data:`bench.workload.STATUS_QUESTION` and the scripted model answers with the
  status it finds there (the scripted server cannot read the disk), in BMAD v4 wording, which this
  script parses with a regex, as the original StatusParser did.
- The Dev-QA loop per story, at most 10 cycles: parse status → ``await asyncio.sleep(2.0)`` ("wait
  for SDK cleanup") → Draft / Ready for Development / In Progress: Dev; Ready for Review: QA;
  Done: stop → ``await asyncio.sleep(1.0)`` ("wait for the status update").
- SM drafts each story that has no file yet (one session) before the loop.

The agents are the same scripted BMAD actor as bmad-trio's (same ``## Context`` block), so both
designs do the same work with the same model. Two adaptations, both in the original's favour: the
actor's QA writes the gate file but never the story Status (the original's QA agent set the Status
itself), so right after a QA session this script sets Done (gate PASS) or In Progress in Python,
without a model call; and no quality gates run (bmad-trio's bench runs with ``skip_gates`` too).
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workload import STATUS_QUESTION

__all__ = ["EpicDriver", "run_original"]

log = logging.getLogger("bench.original_design")

_STORY = re.compile(r"^#{2,4}\s*Story\s+(\d+\.\d+)\s*:\s*(.*?)\s*$", re.MULTILINE)
_ANSWER = re.compile(
    r"(Ready for Development|Ready for Review|Ready for Done|In Progress|Draft|Done|Failed)",
    re.IGNORECASE,
)
_STATUS_BLOCK = re.compile(r"(^##\s*Status\s*\n+)([^\n]*)", re.MULTILINE)
_GATE = re.compile(r"^gate:\s*(\w+)", re.MULTILINE)
SM_TOOLS = ["Read", "Glob", "Grep", "Write", "Edit"]
DEV_TOOLS = ["Read", "Glob", "Grep", "Write", "Edit", "MultiEdit", "Bash"]
QA_TOOLS = ["Read", "Glob", "Grep", "Write", "Edit", "Bash"]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class EpicDriver:
    """The original orchestrator's shape: one object, one task, SDK calls awaited in sequence."""

    def __init__(
        self,
        project: Path,
        epic: Path,
        env: dict[str, str],
        record: dict[str, Any],
        max_cycles: int = 10,
    ) -> None:
        self.project = project
        self.epic = epic
        self.env = env
        self.record = record
        self.max_cycles = max_cycles
        self.config_dir = tempfile.mkdtemp(prefix="bench-original-claude-")
        record.setdefault("sessions", [])

    # -- the SDK call, as the original made it ----------------------------------------------------

    async def _execute_sdk(self, prompt: str, tools: list[str], story: str, role: str) -> str:
        from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

        options = ClaudeAgentOptions(
            cwd=str(self.project),
            env={**self.env, "CLAUDE_CONFIG_DIR": self.config_dir},
            setting_sources=[],
            permission_mode="acceptEdits",
            allowed_tools=tools,
            system_prompt={"type": "preset", "preset": "claude_code"},
        )

        async def consume() -> str:
            text = ""
            async for message in query(prompt=prompt, options=options):
                if isinstance(message, ResultMessage):
                    text = message.result or ""
            return text

        started, wall = time.perf_counter(), time.time()
        outcome = "ok"
        try:
            result = await asyncio.shield(consume())
        except Exception as exc:  # the original logged SDK errors and carried on
            log.warning("SDK call failed: %r", exc)
            outcome, result = "error", ""
        self.record["sessions"].append(
            {
                "story": story,
                "role": role,
                "outcome": outcome,
                "duration_s": time.perf_counter() - started,
                "started_at": wall,
            }
        )
        return result

    # -- the workflow ---------------------------------------------------------------------------

    def parse_epic(self) -> list[tuple[str, str]]:
        return _STORY.findall(self.epic.read_text())

    def story_path(self, sid: str, title: str) -> Path:
        return self.project / "docs" / "stories" / f"{sid}.{_slug(title)}.md"

    def gate_path(self, sid: str, title: str) -> Path:
        return self.project / "docs" / "qa" / "gates" / f"{sid}-{_slug(title)}.yml"

    def _context(self, role: str, sid: str, title: str, review: str | None = None) -> str:
        lines = [
            "## Context",
            f"- role: {role}",
            f"- story: {sid}",
            f"- story title: {title}",
            f"- story file: {self.story_path(sid, title).relative_to(self.project).as_posix()}",
            f"- epic file: {self.epic.relative_to(self.project).as_posix()}",
            f"- gate file: {self.gate_path(sid, title).relative_to(self.project).as_posix()}",
        ]
        if review:
            lines.append(f"- review: {review}")
        return "\n".join(lines)

    async def _parse_story_status(self, sid: str, title: str) -> str:
        """The StatusParser: ask the model for the story's status (one SDK session)."""
        text = self.story_path(sid, title).read_text()
        prompt = (
            f"What is the status of story {sid}? Answer with the status value only.\n\n"
            f"{STATUS_QUESTION}\n\n{text}"
        )
        answer = await self._execute_sdk(prompt, [], sid, "status")
        found = _ANSWER.search(answer)
        return found.group(1).title() if found else "Unknown"

    async def execute_sm_phase(self, sid: str, title: str) -> None:
        prompt = f"Draft story {sid} from the epic.\n\n" + self._context("sm", sid, title)
        await self._execute_sdk(prompt, SM_TOOLS, sid, "sm")

    async def execute_dev_phase(self, sid: str, title: str) -> None:
        prompt = f"Implement story {sid}.\n\n" + self._context("dev", sid, title)
        await self._execute_sdk(prompt, DEV_TOOLS, sid, "dev")

    async def execute_qa_phase(self, sid: str, title: str, review: str) -> None:
        prompt = f"Review story {sid}.\n\n" + self._context("qa", sid, title, review)
        await self._execute_sdk(prompt, QA_TOOLS, sid, "qa")
        gate = self.gate_path(sid, title)
        found = _GATE.search(gate.read_text()) if gate.is_file() else None
        verdict = (
            "Done" if found and found.group(1).upper() in ("PASS", "WAIVED") else "In Progress"
        )
        path = self.story_path(sid, title)
        path.write_text(_STATUS_BLOCK.sub(lambda m: m.group(1) + verdict, path.read_text(), 1))

    async def process_story(self, sid: str, title: str) -> bool:
        if not self.story_path(sid, title).is_file():
            await self.execute_sm_phase(sid, title)
        reviews = 0
        iteration = 1
        while iteration <= self.max_cycles:
            current_status = await self._parse_story_status(sid, title)
            await asyncio.sleep(2.0)  # "wait for SDK cleanup"
            if current_status in ("Done", "Ready For Done"):
                return True
            if current_status in ("Draft", "Ready For Development", "In Progress"):
                await self.execute_dev_phase(sid, title)
            elif current_status == "Ready For Review":
                reviews += 1
                await self.execute_qa_phase(sid, title, "first" if reviews == 1 else "again")
            await asyncio.sleep(1.0)  # "wait for the status update"
            iteration += 1
        return False

    async def run(self) -> bool:
        ok = True
        done = 0
        for sid, title in self.parse_epic():
            story_ok = await self.process_story(sid, title)
            done += story_ok
            ok = ok and story_ok
        self.record["stories_done"] = done
        return ok


def run_original(
    project: Path, epic: Path, env: dict[str, str], record: dict[str, Any], max_cycles: int = 10
) -> None:
    """``asyncio.run`` the original driver; fills ``record`` like the new design's driver."""
    driver = EpicDriver(project, epic, env, record, max_cycles)
    record["stories"] = len(driver.parse_epic())
    record["run_start"] = time.time()
    started = time.perf_counter()
    ok = asyncio.run(driver.run())
    record["wall_s"] = time.perf_counter() - started
    record["run_end"] = time.time()
    record["status"] = "done" if ok else "failed"
