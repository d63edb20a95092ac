"""Measure how well ``bmad-trio plan`` reads real BMAD projects.

Usage: ``python -m bench.plan_corpus CORPUS_DIR [--verbose] [--json OUT]``, where CORPUS_DIR holds
one checked-out project per subdirectory (nothing is written into it).

For every project the script finds epics and story files on its own, with simple heuristics that
share no code with bmad-trio (so the two can disagree), runs ``bmad-trio plan --json`` for each
epic number (in-process, through the CLI's ``main``), and judges every story:

- file: a story file whose name carries the story id exists → plan must name one of those files;
  none exists → plan must name none (and propose drafting it).
- status: when plan names a file, it must have read a status (or say why not, as ``problem``)
  and its next step must not be "draft".

A plan that exits non-zero for an epic counts every story of that epic wrong. The per-story rows
(``--verbose``) are for judging the heuristics' verdicts by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

_SKIP_DIRS = {"node_modules", ".git", "_bmad", "bmad", ".bmad-core", "site-packages", ".venv"}
_EPIC_NAME = re.compile(r"^(?:\d+-)?(?:epics?(?:[-_.].*)?|epic-details|prd)\.md$", re.IGNORECASE)
_NOT_EPIC = re.compile(
    r"retro|tech-spec|summary|validation|architecture|alignment|completion|inventory|decision"
    r"|list|index|structure|preparation|report|plan\b",
    re.IGNORECASE,
)
_STORY_HEAD = re.compile(
    r"^(?:#{1,4}\s*(?:\d+(?:\.\d+)*\.?\s+)?(?:\*\*)?Story\s+([A-Za-z]?\d+)\.(\d+[A-Za-z]?)\b"
    r"|\*\*Story\s+([A-Za-z]?\d+)\.(\d+[A-Za-z]?)\s*:)"
)
_STORY_DIR = re.compile(r"^(?:stories|implementation-artifacts|sprint-artifacts)$", re.IGNORECASE)
_STORY_FILE = re.compile(
    r"^(?:story[-_]?)?([A-Za-z]?\d+)[.-](\d+[A-Za-z]?)(?:\.md$|[.-](?!\d+[.-]))", re.IGNORECASE
)
_NOT_STORY = re.compile(
    r"\.(?:validation-report|validation|context|report|summary)\.md$|^validation-report",
    re.IGNORECASE,
)


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    stack = [root]
    while stack:
        here = stack.pop()
        for entry in sorted(here.iterdir()):
            if entry.is_dir():
                if entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                    stack.append(entry)
            elif entry.suffix.lower() == ".md":
                found.append(entry)
    return found


def _epic_stories(files: list[Path]) -> dict[tuple[str, Path], dict[str, Path]]:
    """(epic number, epic file) → story id → the epic file declaring it."""
    epics: dict[tuple[str, Path], dict[str, Path]] = defaultdict(dict)
    for path in files:
        if not _EPIC_NAME.match(path.name) or _NOT_EPIC.search(path.name) or ".story." in path.name:
            continue
        if any(_STORY_DIR.match(part) for part in path.parts):
            continue
        fence = False
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fence = not fence
                continue
            match = _STORY_HEAD.match(line.strip()) if not fence else None
            if match is not None:
                epic = match.group(1) or match.group(3)
                story = match.group(2) or match.group(4)
                epics[(epic.upper(), path)].setdefault(f"{epic}.{story}".lower(), path)
    return epics


def _story_files(files: list[Path]) -> dict[str, list[Path]]:
    """story id (lower case) → files under a story directory whose names carry it."""
    stories: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        if not any(_STORY_DIR.match(part) for part in path.parent.parts):
            continue
        if _NOT_STORY.search(path.name):
            continue
        match = _STORY_FILE.match(path.name)
        if match is not None:
            stories[f"{match.group(1)}.{match.group(2)}".lower()].append(path)
    return stories


def _plan(project: Path, epic: str) -> tuple[int, dict[str, Any] | None, str, float]:
    from bmad_trio._cli import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["plan", "--json", "--project", str(project), epic])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 2)
    elapsed = time.perf_counter() - started
    data = json.loads(out.getvalue()) if code == 0 and out.getvalue().strip() else None
    return code, data, err.getvalue().strip(), elapsed


def measure(project: Path, verbose: bool) -> dict[str, Any]:
    files = _walk(project)
    epics = _epic_stories(files)
    story_files = _story_files(files)
    rows: list[dict[str, Any]] = []
    slowest = 0.0
    for epic, epic_file in sorted(epics, key=lambda e: (len(e[0]), e[0], e[1])):
        declared = epics[(epic, epic_file)]
        code, data, error, elapsed = _plan(project, epic)
        how = "number"
        picked = (data or {}).get("epic")
        if (code != 0 and ("cannot find" in error or "several files" in error)) or (
            picked is not None and picked != str(epic_file.relative_to(project))
        ):
            # the number is ambiguous or elsewhere: run the file, as a user would
            code, data, error, elapsed = _plan(project, str(epic_file))
            how = "file"
        slowest = max(slowest, elapsed)
        planned = {s["story_id"].lower(): s for s in (data or {}).get("stories", [])}
        for story_id in declared:
            expected = story_files.get(story_id, [])
            got = planned.get(story_id)
            row: dict[str, Any] = {"epic": epic, "story": story_id, "via": how}
            row["expected"] = [str(p.relative_to(project)) for p in expected]
            if got is None:
                row.update(file_ok=False, status_ok=False, why=error or "story not in plan")
            else:
                got_file = got.get("file")
                row["file"] = got_file
                row["status"] = got.get("status")
                row["next"] = got.get("next")
                row["problem"] = got.get("problem")
                file_ok = got_file in row["expected"] if expected else got_file is None
                status_ok = file_ok and (
                    got_file is None
                    or (got.get("status") is not None and "draft" not in got["next"].lower())
                    or bool(got.get("problem"))
                )
                row.update(file_ok=file_ok, status_ok=status_ok)
            rows.append(row)
    total = len(rows)
    result = {
        "project": project.name,
        "epics": len(epics),
        "stories": total,
        "files_right": sum(r["file_ok"] for r in rows),
        "status_right": sum(r["status_ok"] for r in rows),
        "slowest_plan_s": round(slowest, 3),
        "rows": rows,
    }
    if verbose:
        for row in rows:
            mark = "ok " if row["file_ok"] and row["status_ok"] else "BAD"
            print(
                f"  {mark} {row['epic']:>3} {row['story']:<7} file={row.get('file')} "
                f"status={row.get('status')} next={row.get('next')!r} expected={row['expected']}"
                + (f" problem={row['problem']}" if row.get("problem") else "")
                + (f" why={row['why']}" if row.get("why") else "")
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="directory with one project per subdirectory")
    parser.add_argument("--verbose", action="store_true", help="one line per story")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write all rows as JSON")
    parser.add_argument("--only", action="append", help="measure only these projects")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    for project in sorted(p for p in args.corpus.iterdir() if p.is_dir()):
        if args.only and project.name not in args.only:
            continue
        if args.verbose:
            print(f"== {project.name}")
        results.append(measure(project, args.verbose))
    print(
        f"{'project':<28} {'epics':>5} {'stories':>7} {'files ok':>9} {'all ok':>7} {'slowest':>8}"
    )
    for r in results:
        print(
            f"{r['project']:<28} {r['epics']:>5} {r['stories']:>7} {r['files_right']:>9} "
            f"{r['status_right']:>7} {r['slowest_plan_s']:>7.2f}s"
        )
    stories = sum(r["stories"] for r in results)
    files = sum(r["files_right"] for r in results)
    right = sum(r["status_right"] for r in results)
    if stories:
        print(
            f"total: {stories} stories; file right {files} ({100 * files / stories:.1f} %); "
            f"file and status right {right} ({100 * right / stories:.1f} %)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
