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
- next: the next step plan proposes must follow from what is on disk, read here independently:
  the story file's status words (done in any form → ``nothing (done)``; review → a review, unless
  the newest QA gate passes and is not older than the story's last dated change, or the words say
  QA passed → no QA re-run; in progress → Dev continues; ready → Dev implements; draft → approve;
  blocked/failed → nothing), a v6 ``sprint-status.yaml`` saying ``done`` wins over the file, and
  a story is drafted only when no file anywhere in the project's story folders carries its id
  (by name or by a ``# Story N.M`` heading). Words this script cannot classify only need plan to
  show a status or a problem.

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


def _walk(root: Path, suffixes: tuple[str, ...] = (".md",)) -> list[Path]:
    found: list[Path] = []
    stack = [root]
    while stack:
        here = stack.pop()
        for entry in sorted(here.iterdir()):
            if entry.is_dir():
                if entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                    stack.append(entry)
            elif entry.suffix.lower() in suffixes:
                found.append(entry)
    return found


# -- the next step, judged independently of bmad-trio --------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_STATUS_HEADING = re.compile(r"^#{1,3}\s*\W*\s*(?:Story\s+)?Statu[st]\W*$", re.IGNORECASE)
_STATUS_LABEL = re.compile(
    r"^[\s>*_`#-]*(?:Story\s+)?Statu[st][*_`\s]*:[*_`\s]*(?P<value>.+?)\s*$", re.IGNORECASE
)
_STATUS_ROW = re.compile(r"^\s*\|\s*[*_]*Statu[st][*_]*\s*\|(?P<value>[^|]+)\|", re.IGNORECASE)
_FRONT_LABEL = re.compile(r"^status\s*:\s*['\"]?(?P<value>[^'\"#]+)", re.IGNORECASE)
# (category, words); the earliest word in the value decides, longer phrases first at a place
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("passed", r"ready\s+for\s+done|review\s+passed|qa\s+passed|passed\s+qa|qa\s+approved"),
    (
        "review",
        r"ready\s+for\s+(?:code\s+)?review|ready\s+for\s+qa\w*|in\s+review|under\s+review"
        r"|code[\s-]+review|awaiting\s+review|pending\s+review|review|in\s+qa|en\s+revue",
    ),
    (
        "in_progress",
        r"in[\s_-]*progress|in\s+development|in\s+dev|changes\s+required|changes\s+requested"
        r"|contexted|started|en\s+cours|implementing|work\s+in\s+progress",
    ),
    (
        "ready",
        r"approved|planning\s+complete|ready[\s_-]+for[\s_-]+dev\w*|ready[\s_-]+for[\s_-]+implementation|drafted|ready"
        r"|approuv\w*|pr\u00eat\w*",
    ),
    ("draft", r"draft|backlog|proposed|planned|todo|not\s+started|brouillon|\u00e0\s+faire"),
    (
        "blocked",
        r"blocked|on[\s-]+hold|deferred|postponed|cancell?ed|superseded|obsolete|failed|paused"
        r"|bloqu\w*|annul\w*",
    ),
    (
        "done",
        r"done|completed?|closed|finished|merged|shipped|released|delivered|termin\w*|valid\w*",
    ),
)
_CATEGORY_WORDS = [
    (name, re.compile(rf"(?<![\w-])(?:{words})(?![\w-])", re.IGNORECASE))
    for name, words in _CATEGORIES
]
_DATE = re.compile(r"\b(20\d\d-[01]\d-[0-3]\d)\b")
_CHANGE_HEAD = re.compile(r"^#{2,3}\s*(?:Change\s*Log|Dev\s+Agent\s+Record)", re.IGNORECASE)
_GATE_LINE = re.compile(r"^(?:gate|decision)\s*:\s*['\"]?([A-Za-z][A-Za-z _-]*)", re.M)
_UPDATED_LINE = re.compile(
    r"^(?:updated|last_updated|timestamp|date)\s*:.*?(20\d\d-\d\d-\d\d)", re.M
)
_HEAD_STORY = re.compile(r"^#\s*Story\s+([A-Za-z]?\d+)\.(\d+[A-Za-z]?)\b", re.IGNORECASE)


def _status_value(text: str) -> str | None:
    """The story's status value as written: front matter, a Status heading, label or table row."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        for line in lines[1:60]:
            if line.strip() == "---":
                break
            front = _FRONT_LABEL.match(line)
            if front is not None:
                return front.group("value").strip()
    fence = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            fence = not fence
            continue
        if fence:
            continue
        if _STATUS_HEADING.match(line.strip()):
            for below in lines[index + 1 : index + 8]:
                if below.strip() and not below.strip().startswith("<!--"):
                    label = _STATUS_LABEL.match(below)
                    return (label.group("value") if label else below).strip()
            return None
        for pattern in (_STATUS_LABEL, _STATUS_ROW):
            match = pattern.match(line)
            if match is not None and match.group("value").strip(" *_`"):
                return match.group("value").strip()
    return None


def _category(value: str | None) -> str | None:
    """draft/ready/in_progress/review/passed/done/blocked, or None when no word is known."""
    if not value:
        return None
    found: list[tuple[int, int, str]] = []
    for name, pattern in _CATEGORY_WORDS:
        match = pattern.search(value)
        if match is not None:
            found.append((match.start(), -len(match.group(0)), name))
    if found:
        return min(found)[2]
    if "\u2705" in value or "\u2714" in value:  # a lone check mark, no words
        return "done"
    return None


def _last_change(text: str) -> str | None:
    """The latest YYYY-MM-DD in the Change Log / Dev Agent Record sections."""
    latest: str | None = None
    inside = False
    for line in text.splitlines():
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if _CHANGE_HEAD.match(line):
                inside = True
                continue
            if level <= 2:
                inside = False
        if inside:
            for day in _DATE.findall(line):
                latest = max(latest or day, day)
    return latest


def _gates(files: list[Path]) -> dict[str, list[tuple[str, str, Path]]]:
    """story id → [(updated, decision, file)] for every gate file in a ``gates`` folder."""
    gates: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
    for path in files:
        if path.parent.name.lower() != "gates":
            continue
        match = re.match(r"^([A-Za-z]?\d+)\.(\d+[A-Za-z]?)(?:[-.]|$)", path.stem)
        if match is None:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        decision = _GATE_LINE.search(text)
        updated = _UPDATED_LINE.search(text)
        gates[f"{match.group(1)}.{match.group(2)}".lower()].append(
            (
                updated.group(1) if updated else "",
                decision.group(1).strip().upper() if decision else "",
                path,
            )
        )
    return gates


def _sprint_done(files: list[Path]) -> dict[str, str]:
    """story id → its v6 sprint-status word, from every sprint-status.yaml in the project."""
    import yaml

    words: dict[str, str] = {}
    for path in files:
        if path.name != "sprint-status.yaml":
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
        except yaml.YAMLError:
            continue
        section = data.get("development_status") if isinstance(data, dict) else None
        if not isinstance(section, dict):
            continue
        for key, value in section.items():
            match = re.match(r"^(\d+)-(\d+[a-z]?)(?:-|$)", str(key), re.IGNORECASE)
            if match is not None and isinstance(value, str):
                words.setdefault(
                    f"{match.group(1)}.{match.group(2)}".lower(), value.strip().lower()
                )
    return words


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2}


def _file_title(lines: list[str]) -> str:
    for line in lines:
        match = re.match(r"^#\s*Story\s+\S+\s*[:\-]?\s*(.*)$", line.strip(), re.IGNORECASE)
        match = match or re.match(r"""^title:\s*["']?(.*?)["']?\s*$""", line.strip())
        if match is not None:
            return match.group(1)
    return ""


def _any_story_file(project: Path, files: list[Path], story_id: str, title: str) -> list[Path]:
    """Files anywhere in a story-like folder (stories, artifacts, sprints) carrying ``story_id``
    by name or by its first ``# Story N.M`` heading; sub-stories (``5.4.1-…``) do not count. In an
    archive folder the file must also carry the story's title (archives keep old numberings)."""
    epic, number = story_id.split(".")
    named = re.compile(
        rf"^(?:story[-_ ]?)?0*{re.escape(epic)}[.-]{re.escape(number)}(?![.-]\d+[.-])"
        rf"(?:[.\-_ ]|\.md$)",
        re.IGNORECASE,
    )
    found: list[Path] = []
    for path in files:
        parts = [p.lower() for p in path.relative_to(project).parts[:-1]]
        archived = any("archive" in p for p in parts)
        if not archived and not any(
            ("stor" in p or "artifact" in p or "sprint" in p) for p in parts
        ):
            continue
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                head = [handle.readline() for _ in range(8)]
        except OSError:
            continue
        carries = named.match(path.name) is not None
        for line in head:
            match = _HEAD_STORY.match(line.strip())
            if match is not None:
                carries = carries or f"{match.group(1)}.{match.group(2)}".lower() == story_id
                break
        if carries and archived:
            wanted, have = _words(title), _words(_file_title(head))
            carries = bool(wanted) and len(wanted & have) >= len(wanted) / 2
        if carries:
            found.append(path)
    return found


_NEXT_FOR = {
    "done": ("nothing (done)", "done:"),
    "passed": ("done: its review already passed",),
    "review": ("qa reviews", "code review"),
    "in_progress": ("dev continues",),
    "ready": ("dev implements",),
    "draft": ("approve", "wait for approval"),
    "blocked": ("nothing (blocked", "nothing (failed"),
    "none": ("sm drafts", "create-story drafts"),
}


def _expected_next(
    story_id: str,
    got_file: Path | None,
    gates: dict[str, list[tuple[str, str, Path]]],
    sprint: dict[str, str],
) -> tuple[str | None, str]:
    """(expected category or None when unknown, why) for the file plan chose."""
    if sprint.get(story_id) == "done":
        return "done", "sprint-status says done"
    if got_file is None:
        return "none", "no file"
    text = got_file.read_text(encoding="utf-8", errors="replace")
    value = _status_value(text)
    category = _category(value)
    why = f"status {value!r}"
    if category == "review":
        story_gates = sorted(gates.get(story_id, []), key=lambda g: g[0], reverse=True)
        if story_gates:
            updated, decision, path = story_gates[0]
            last = _last_change(text)
            passing = decision.startswith(("PASS", "WAIVED", "CONCERNS", "CONDITIONAL"))
            if passing and (not updated or not last or last <= updated):
                return (
                    "passed",
                    f"{why}; gate {decision} of {updated or '?'} ({path.name}), last change {last}",
                )
            why += f"; gate {decision or '?'} of {updated or '?'}, last change {last}"
    return category, why


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


def _judge_next(
    project: Path,
    files: list[Path],
    story_id: str,
    got: dict[str, Any],
    gates: dict[str, list[tuple[str, str, Path]]],
    sprint: dict[str, str],
) -> dict[str, Any]:
    next_step = re.sub(r"^after [^:]*: ", "", str(got.get("next") or "")).lower()
    got_file = project / got["file"] if got.get("file") else None
    expected, why = _expected_next(story_id, got_file, gates, sprint)
    if expected == "none":
        elsewhere = _any_story_file(project, files, story_id, str(got.get("title") or ""))
        if elsewhere:
            names = ", ".join(str(p.relative_to(project)) for p in elsewhere[:3])
            return {"next_ok": False, "judged": f"drafted, but a file carries its id: {names}"}
    if expected is None:  # words this script cannot classify: a status or a problem is enough
        ok = bool(got.get("problem")) or (
            got.get("status") is not None and "drafts" not in next_step
        )
        return {"next_ok": ok, "loose": True, "judged": None if ok else f"unclassified {why}"}
    if got.get("problem"):
        return {"next_ok": False, "judged": f"expected {expected} ({why}), plan shows a problem"}
    ok = next_step.startswith(_NEXT_FOR[expected])
    return {
        "next_ok": ok,
        "expected_next": expected,
        "judged": None if ok else f"expected {expected} ({why})",
    }


def _plan(project: Path, epic: str) -> tuple[int, dict[str, Any] | None, str, float]:
    from bmad_trio._commandline._main import main

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
    gates = _gates(_walk(project, (".yml", ".yaml")))
    sprint = _sprint_done(_walk(project, (".yaml",)))
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
                row.update(
                    file_ok=False, status_ok=False, next_ok=False, why=error or "story not in plan"
                )
            else:
                got_file = got.get("file")
                row["file"] = got_file
                row["status"] = got.get("status")
                row["next"] = got.get("next")
                row["problem"] = got.get("problem")
                # a finished story moved to an archive folder: proof it is done, nothing to draft
                archived = (
                    got_file is not None
                    and "archive" in got_file.lower()
                    and str(got.get("next", "")).startswith("nothing (done)")
                )
                file_ok = got_file in row["expected"] if expected else got_file is None or archived
                status_ok = file_ok and (
                    got_file is None
                    or (got.get("status") is not None and "draft" not in got["next"].lower())
                    or bool(got.get("problem"))
                )
                row.update(file_ok=file_ok, status_ok=status_ok)
                row.update(_judge_next(project, files, story_id, got, gates, sprint))
            rows.append(row)
    total = len(rows)
    result = {
        "project": project.name,
        "epics": len(epics),
        "stories": total,
        "files_right": sum(r["file_ok"] for r in rows),
        "status_right": sum(r["status_ok"] for r in rows),
        "next_right": sum(r["next_ok"] for r in rows),
        "slowest_plan_s": round(slowest, 3),
        "rows": rows,
    }
    if verbose:
        for row in rows:
            mark = "ok " if row["file_ok"] and row["status_ok"] and row["next_ok"] else "BAD"
            print(
                f"  {mark} {row['epic']:>3} {row['story']:<7} file={row.get('file')} "
                f"status={row.get('status')} next={row.get('next')!r} expected={row['expected']}"
                + (f" problem={row['problem']}" if row.get("problem") else "")
                + (f" why={row['why']}" if row.get("why") else "")
                + (f" judged={row['judged']}" if row.get("judged") else "")
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
        f"{'project':<28} {'epics':>5} {'stories':>7} {'file %':>7} {'status %':>8} {'next %':>7}"
        f" {'slowest':>8}"
    )

    def pct(part: int, whole: int) -> str:
        return f"{100 * part / whole:.1f}" if whole else "-"

    for r in results:
        print(
            f"{r['project']:<28} {r['epics']:>5} {r['stories']:>7} "
            f"{pct(r['files_right'], r['stories']):>7} {pct(r['status_right'], r['stories']):>8} "
            f"{pct(r['next_right'], r['stories']):>7} {r['slowest_plan_s']:>7.2f}s"
        )
    stories = sum(r["stories"] for r in results)
    files = sum(r["files_right"] for r in results)
    right = sum(r["status_right"] for r in results)
    after = sum(r["next_right"] for r in results)
    if stories:
        print(
            f"total: {stories} stories; file right {files} ({pct(files, stories)} %); "
            f"file and status right {right} ({pct(right, stories)} %); "
            f"next step right {after} ({pct(after, stories)} %)"
        )
    loose = sum(bool(row.get("loose")) for r in results for row in r["rows"])
    print(f"(next step judged loosely, status words not classified here: {loose} stories)")
    misses = [(r["project"], row) for r in results for row in r["rows"] if not row["next_ok"]]
    for name, row in misses:
        print(
            f"MISS {name} {row['story']}: file={row.get('file')} next={row.get('next')!r}"
            f" — {row.get('judged') or row.get('why')}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
