"""``python -m bench.reading``: how fast bmad-trio reads a BMAD project (no model, no CLI).

Measures, on a synthetic project of N stories built in a temp dir: parsing the epic, finding and
parsing every story file, and the whole ``plan`` (what ``run`` and ``resume`` do before the first
session). Prints one JSON object; never asserts a time (the goal, plan < 0.5 s for 50 stories, is
read off the figures, not checked in a test on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bmad_trio._bmad import detect_layout, find_story_file, parse_epic, parse_story
from bmad_trio._commandline._plan import make_plan
from bmad_trio._config import load_config


def build_project(root: Path, stories: int) -> Path:
    """An epic of ``stories`` stories with v6-style criteria; files for four fifths of them."""
    parts = ["# Epic 1: Big\n"]
    for n in range(1, stories + 1):
        parts.append(
            f"\n### Story 1.{n}: Story number {n}\n\nAs a user,\nI want feature {n},\n"
            "So that it works.\n\n**Acceptance Criteria:**\n\n**Given** a state\n**When** an action\n"
            "**Then** a result\n" + (f"\n**Dependencies:** Story 1.{n - 1}\n" if n > 1 else "")
        )
        if n <= stories * 4 // 5:
            story = root / "docs" / "stories" / f"1.{n}.story-number-{n}.md"
            story.parent.mkdir(parents=True, exist_ok=True)
            story.write_text(
                f"# Story 1.{n}: Story number {n}\n\n## Status\n\nDone\n\n## Tasks / Subtasks\n\n"
                "- [x] Task 1 (AC: 1)\n  - [x] Subtask\n"
            )
    epic = root / "docs" / "prd" / "epic-1.md"
    epic.parent.mkdir(parents=True, exist_ok=True)
    epic.write_text("".join(parts))
    return epic


def _median_ms(work: Callable[[], object], rounds: int) -> float:
    work()  # warm caches and imports
    times: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(stories: int, rounds: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        epic = build_project(root, stories)
        layout = detect_layout(root)
        ids = [f"1.{n}" for n in range(1, stories * 4 // 5 + 1)]

        def find_and_parse() -> None:
            for story_id in ids:
                path = find_story_file(layout, story_id)
                assert path is not None, story_id
                parse_story(path)

        config = load_config(root, overrides={"epic": Path("1")})
        return {
            "stories": stories,
            "epic_parse_ms": _median_ms(lambda: parse_epic(epic), rounds),
            "story_files_find_and_parse_ms": _median_ms(find_and_parse, rounds),
            "plan_ms": _median_ms(lambda: make_plan(config), rounds),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reading")
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.stories, args.rounds), indent=2))


if __name__ == "__main__":
    main()
