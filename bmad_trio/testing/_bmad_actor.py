"""The built-in BMAD actor: a scripted model that plays SM, Dev, QA and fixer through real tool calls.

It works only from the request: the ``## Context`` block at the end of the orchestrator's prompt
(role, story, file paths), the working directory named in the CLI's system prompt, and the tool
results already in the conversation. The step is the number of model turns so far, so the server
keeps no per-session state.

Context block (keys are case-insensitive; unknown lines are ignored)::

    ## Context
    - role: sm|dev|qa|fixer
    - story: 1.2
    - story title: Add greeting
    - story file: docs/stories/1.2.add-greeting.md
    - epic file: docs/prd/epic-1.md
    - gate file: docs/qa/gates/1.2-add-greeting.yml
    - package: src/sample_app
    - review: first|again
    - findings: <free text>
    - gate command: <command and output>
    - sprint status: _bmad-output/implementation-artifacts/sprint-status.yaml
    - bmad: v6
    - task: resolve merge conflict
    - conflicts: src/app.py, README.md

With ``bmad: v6`` the roles act like BMAD v6's workflows: SM (create-story) writes a plain
``Status: ready-for-dev`` line and moves the story's sprint-status entry; Dev (dev-story) also moves
it to ``review``; QA (code-review) writes no gate file but appends ``### Review Findings`` with
``- [ ] [Review][Patch] …`` items to the story's tasks, sets its Status to ``done`` or
``in-progress`` and syncs the sprint-status entry.

A Dev session with ``task: resolve merge conflict`` reads each file named in ``conflicts`` and
writes it back with every conflict block replaced by both sides (the run's branch's lines, then the
story's), the way a union merge would.

Dev writes ``<package>/<name>.py`` with a function ``<name>()`` (``name`` is the story title in
snake case) and ``tests/test_<name>.py``, a unittest test that puts ``<package>``'s parent directory
(or the project root when there is no package) on ``sys.path`` and imports ``<package>.<name>``, so it
passes under both ``python -m unittest discover -s tests`` and pytest.
"""

from __future__ import annotations

import datetime as _dt
import keyword
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

import attrs

from ._scenario import ApiRequest, Fault, Reply, Scenario, TextBlock, ToolUseBlock

__all__ = ["BmadActor", "StoryContext", "bmad_actor_scenario", "parse_context"]

_CONTEXT_HEADING = re.compile(r"^\s*#{1,6}\s*Context\s*$", re.IGNORECASE | re.MULTILINE)
_CONTEXT_LINE = re.compile(r"^\s*[-*]\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
_READ_LINE = re.compile(r"^\s*(\d+)(?:\t|→)(.*)$")
_WORKDIR = re.compile(r"(?:Primary working directory|Working directory)\s*:\s*(\S.*?)\s*$", re.M)
_STORY_HEADING = re.compile(r"^#{2,4}\s*Story\s+(\d+)\.(\d+[a-z]?)\s*:?\s*(.*?)\s*#*\s*$")
_HEADING = re.compile(r"^(#{1,6})\s")
_PATH_IN_OUTPUT = re.compile(r"([\w./-]+\.(?:py|md|ya?ml|toml|txt|json|cfg|ini))(?::\d+)?")


@attrs.frozen(kw_only=True)
class StoryContext:
    """The parsed ``## Context`` block of an orchestrator prompt."""

    role: str
    story: str = ""
    story_title: str = ""
    story_file: str = ""
    epic_file: str = ""
    gate_file: str = ""
    package: str = ""
    review: str = "first"
    findings: str = ""
    gate_command: str = ""
    sprint_status: str = ""
    """v6: the sprint-status.yaml the story's entry is in."""
    bmad: str = ""
    """``v6`` when the project runs BMAD v6 (QA is code-review, no gate file)."""
    task: str = ""
    """What a Dev session is for when it is not the story's implementation (a merge conflict)."""
    conflicts: tuple[str, ...] = ()
    """The files a resolver session must resolve."""


def parse_context(text: str) -> StoryContext | None:
    """Parse the last ``## Context`` block of ``text``; ``None`` if there is none or no role.

    Continuation lines (not starting with ``-``) are appended to the previous key's value.
    """
    matches = list(_CONTEXT_HEADING.finditer(text))
    if not matches:
        return None
    values: dict[str, str] = {}
    last_key = ""
    for line in text[matches[-1].end() :].splitlines():
        if not line.strip():
            continue
        if _HEADING.match(line.strip()):
            break
        found = _CONTEXT_LINE.match(line)
        if found:
            last_key = "_".join(found.group(1).lower().split())
            values[last_key] = found.group(2)
        elif last_key:
            values[last_key] = f"{values[last_key]}\n{line.strip()}".strip()
    role = values.get("role", "").strip().lower()
    if not role:
        return None
    return StoryContext(
        role=role,
        story=values.get("story", ""),
        story_title=values.get("story_title", ""),
        story_file=values.get("story_file", ""),
        epic_file=values.get("epic_file", ""),
        gate_file=values.get("gate_file", ""),
        package=values.get("package", "").strip().strip("/"),
        review=(values.get("review", "") or "first").strip().lower(),
        findings=values.get("findings", ""),
        gate_command=values.get("gate_command", ""),
        sprint_status=values.get("sprint_status", "").strip(),
        bmad=values.get("bmad", "").strip().lower(),
        task=values.get("task", "").strip().lower(),
        conflicts=tuple(
            name.strip() for name in values.get("conflicts", "").split(",") if name.strip()
        ),
    )


def read_output_text(result: str) -> str:
    """File text from a Read tool result (``cat -n`` style numbered lines; other lines dropped)."""
    lines = [m.group(2) for m in map(_READ_LINE.match, result.splitlines()) if m]
    return "\n".join(lines) + ("\n" if lines else "")


def identifier(title: str, story: str) -> str:
    """A snake_case Python identifier for a story (from its title, else its id)."""
    name = re.sub(r"\W+", "_", title.lower(), flags=re.ASCII).strip("_")
    if not name:
        name = "story_" + re.sub(r"\W+", "_", story, flags=re.ASCII).strip("_")
    if name[0].isdigit():
        name = f"story_{name}"
    if keyword.iskeyword(name):
        name += "_"
    return name[:60].rstrip("_") or "story"


def _today() -> str:
    return _dt.datetime.now(_dt.UTC).date().isoformat()


def _epic_story_section(epic: str, story: str) -> tuple[str, list[str], list[str]]:
    """(title, statement lines, acceptance criteria lines) of ``story`` in an epic's text."""
    lines = epic.splitlines()
    start = None
    title = ""
    for index, line in enumerate(lines):
        found = _STORY_HEADING.match(line.strip())
        if found and f"{found.group(1)}.{found.group(2)}" == story:
            start, title = index, found.group(3)
            break
    if start is None:
        return "", [], []
    level = len(lines[start].strip()) - len(lines[start].strip().lstrip("#"))
    statement: list[str] = []
    criteria: list[str] = []
    in_criteria = False
    for line in lines[start + 1 :]:
        stripped = line.strip()
        heading = _HEADING.match(stripped)
        if heading and len(heading.group(1)) <= level:
            break
        if "acceptance criteria" in stripped.lower():
            in_criteria = True
            continue
        if not stripped or heading:
            continue
        (criteria if in_criteria else statement).append(stripped)
    return title, statement, criteria


@attrs.frozen
class _Plan:
    """What one role does at each turn, given everything seen so far."""

    ctx: StoryContext
    request: ApiRequest
    root: str

    def path(self, relative: str) -> str:
        if not relative or relative.startswith("/") or not self.root:
            return relative
        return str(PurePosixPath(self.root) / relative)

    def read_result(self, relative: str) -> tuple[str, bool] | None:
        """(file text, ok) of the latest Read of ``relative`` in this conversation."""
        wanted = {self.path(relative), relative}
        results = self.request.all_tool_results()
        found: tuple[str, bool] | None = None
        for use in self.request.tool_uses():
            if use.name == "Read" and use.input.get("file_path") in wanted and use.id in results:
                result = results[use.id]
                found = (read_output_text(result.text), not result.is_error)
        return found

    def failed_tools(self) -> list[str]:
        """Error texts of the latest turn's tool results (a failed Read of a new file is fine)."""
        errors: list[str] = []
        uses = {u.id: u for u in self.request.tool_uses()}
        for result in self.request.tool_results:
            use = uses.get(result.tool_use_id)
            if result.is_error and not (use is not None and use.name == "Read"):
                errors.append(f"{use.name if use else 'tool'}: {result.text.strip()[:300]}")
        return errors

    @property
    def name(self) -> str:
        return identifier(self.ctx.story_title, self.ctx.story)

    @property
    def v6(self) -> bool:
        return self.ctx.bmad == "v6"

    def code_paths(self) -> tuple[str, str]:
        module_dir = self.ctx.package or "."
        module = str(PurePosixPath(module_dir) / f"{self.name}.py")
        return module, f"tests/test_{self.name}.py"


def _sm(plan: _Plan, turn: int) -> Reply:
    ctx = plan.ctx
    if turn == 0:
        if not ctx.epic_file or not ctx.story_file:
            return Reply.text("SM: the prompt names no epic file or story file; nothing drafted.")
        return Reply.tools(
            Reply.read(plan.path(ctx.epic_file)),
            Reply.read(plan.path(ctx.story_file)),
            *_sprint_read(plan),
        )
    if turn == 1:
        epic = plan.read_result(ctx.epic_file)
        if epic is None or not epic[1]:
            return Reply.text(f"SM: could not read the epic file {ctx.epic_file}; nothing drafted.")
        title, statement, criteria = _epic_story_section(epic[0], ctx.story)
        title = ctx.story_title or title or f"Story {ctx.story}"
        return Reply.tools(
            Reply.write(plan.path(ctx.story_file), _story_text(plan, title, statement, criteria)),
            *_sprint_edit(plan, "ready-for-dev"),
            text=f"Drafting story {ctx.story} from {ctx.epic_file}.",
        )
    status = "ready-for-dev" if plan.v6 else "Draft"
    return Reply.text(f"Story {ctx.story} drafted in {ctx.story_file} (Status: {status}).")


def _story_text(plan: _Plan, title: str, statement: Sequence[str], criteria: Sequence[str]) -> str:
    ctx = plan.ctx
    module, test = plan.code_paths()
    statement = statement or [
        "**As a** user,",
        f"**I want** {title[:1].lower() + title[1:]},",
        "**so that** the product does what the epic asks.",
    ]
    criteria = criteria or [f"1. {title} works as described in the epic."]
    numbers = [m.group(1) for m in (re.match(r"(\d+)\.", c) for c in criteria) if m]
    acs = ", ".join(numbers) or "1"
    return "\n".join(
        [
            f"# Story {ctx.story}: {title}",
            "",
            *(["Status: ready-for-dev"] if plan.v6 else ["## Status", "", "Draft"]),
            "",
            "## Story",
            "",
            *statement,
            "",
            "## Acceptance Criteria",
            "",
            *criteria,
            "",
            "## Tasks / Subtasks",
            "",
            f"- [ ] Task 1: Implement `{plan.name}` (AC: {acs})",
            f"  - [ ] Write `{plan.name}()` in `{module}`",
            f"  - [ ] Add unit tests in `{test}`",
            f"- [ ] Task 2: Verify the acceptance criteria (AC: {acs})",
            "  - [ ] Run the test suite",
            "",
            "## Dev Notes",
            "",
            f"Source: {ctx.epic_file} (Story {ctx.story}).",
            "",
            "### Testing",
            "",
            "- unittest-style tests under `tests/`, run with `python -m unittest` and pytest.",
            "",
            "## Change Log",
            "",
            "| Date | Version | Description | Author |",
            "| --- | --- | --- | --- |",
            f"| {_today()} | 0.1 | Initial draft | Bob (Scrum Master) |",
            "",
            "## Dev Agent Record",
            "",
            "### Agent Model Used",
            "",
            "### Debug Log References",
            "",
            "### Completion Notes List",
            "",
            "### File List",
            "",
            *([] if plan.v6 else ["## QA Results", ""]),
        ]
    )


def _module_text(plan: _Plan) -> str:
    ctx = plan.ctx
    title = ctx.story_title or f"Story {ctx.story}"
    return (
        f'"""Story {ctx.story}: {title}."""\n\n'
        "from __future__ import annotations\n\n\n"
        f'def {plan.name}(name: str = "world") -> str:\n'
        f'    """Return the message of story {ctx.story}."""\n'
        f'    return f"{title}: {{name}}"\n'
    )


def _test_text(plan: _Plan) -> str:
    ctx = plan.ctx
    title = ctx.story_title or f"Story {ctx.story}"
    package = PurePosixPath(ctx.package) if ctx.package else None
    if package is not None and all(p.isidentifier() for p in package.parts[-1:]):
        parents = len(package.parts) - 1
        base = "ROOT" + "".join(f' / "{part}"' for part in package.parts[:parents])
        target = f"{package.parts[-1]}.{plan.name}"
    else:
        base, target = "ROOT", plan.name
    camel = "".join(part.title() for part in plan.name.split("_") if part) or "Story"
    return (
        f'"""Tests for story {ctx.story}: {title}."""\n\n'
        "from __future__ import annotations\n\n"
        "import sys\n"
        "import unittest\n"
        "from pathlib import Path\n\n"
        "ROOT = Path(__file__).resolve().parents[1]\n"
        f"sys.path.insert(0, str({base}))\n\n"
        f"from {target} import {plan.name}  # noqa: E402\n\n\n"
        f"class {camel}Test(unittest.TestCase):\n"
        f"    def test_{plan.name}(self) -> None:\n"
        f'        self.assertEqual({plan.name}("BMAD"), "{title}: BMAD")\n\n'
        f"    def test_{plan.name}_default(self) -> None:\n"
        f'        self.assertTrue({plan.name}().endswith("world"))\n\n\n'
        'if __name__ == "__main__":\n'
        "    unittest.main()\n"
    )


def _status_edit(plan: _Plan, story: str, new_status: str) -> ToolUseBlock | None:
    """An Edit replacing the value under ``## Status`` (or a ``Status:`` line) with ``new_status``."""
    lines = story.splitlines()
    for index, line in enumerate(lines):
        if line.strip().lower() == "## status":
            for value_index in range(index + 1, len(lines)):
                value = lines[value_index]
                if value.strip():
                    old = "\n".join(lines[index : value_index + 1])
                    new = "\n".join([*lines[index:value_index], new_status])
                    return Reply.edit(plan.path(plan.ctx.story_file), old, new)
            return None
        if re.match(r"^\s*Status\s*:", line):
            return Reply.edit(plan.path(plan.ctx.story_file), line, f"Status: {new_status}")
    return None


def _dev(plan: _Plan, turn: int) -> Reply:
    ctx = plan.ctx
    module, test = plan.code_paths()
    if turn == 0:
        if not ctx.story_file:
            return Reply.text("Dev: the prompt names no story file; nothing implemented.")
        return Reply.tools(
            Reply.read(plan.path(ctx.story_file)),
            Reply.read(plan.path(module)),
            Reply.read(plan.path(test)),
            *_sprint_read(plan),
            text=f"Implementing story {ctx.story}.",
        )
    story = plan.read_result(ctx.story_file)
    if story is None or not story[1]:
        return Reply.text(f"Dev: could not read the story file {ctx.story_file}; stopping.")
    if turn == 1:
        note = f" Addressing QA findings: {ctx.findings}" if ctx.findings else ""
        return Reply.tools(
            Reply.write(plan.path(module), _module_text(plan)),
            Reply.write(plan.path(test), _test_text(plan)),
            text=f"Writing {module} and {test}.{note}",
        )
    if turn == 2:
        if errors := plan.failed_tools():
            return Reply.text("Dev: writing the code failed: " + "; ".join(errors))
        text = story[0]
        edits: list[ToolUseBlock] = []
        if "- [ ]" in text:
            edits.append(Reply.edit(plan.path(ctx.story_file), "- [ ]", "- [x]", replace_all=True))
        listing = "\n".join(f"- {p}" for p in (module, test))
        if "### File List" in text and f"- {module}" not in text:
            edits.append(
                Reply.edit(
                    plan.path(ctx.story_file), "### File List", f"### File List\n\n{listing}"
                )
            )
        status = _status_edit(plan, text, "review" if plan.v6 else "Review")
        if status is not None:
            edits.append(status)
        edits += _sprint_edit(plan, "review")
        if not edits:
            return Reply.text(f"Story {ctx.story} implemented; the story file needed no update.")
        return Reply.tools(*edits, text="Updating the story file.")
    if errors := plan.failed_tools():
        return Reply.text("Dev: updating the story failed: " + "; ".join(errors))
    status = "review" if plan.v6 else "Review"
    return Reply.text(f"Story {ctx.story} implemented ({module}, {test}); Status: {status}.")


def _file_list(story: str) -> list[str]:
    lines = story.splitlines()
    files: list[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped.lower().startswith("### file list"):
            inside = True
            continue
        if inside and _HEADING.match(stripped):
            break
        if inside and stripped.startswith(("-", "*")):
            files.append(stripped.lstrip("-* ").strip("`"))
    return files


def _sprint_read(plan: _Plan) -> list[ToolUseBlock]:
    """v6: a Read of the sprint-status file (the edit needs its current line)."""
    if not plan.v6 or not plan.ctx.sprint_status:
        return []
    return [Reply.read(plan.path(plan.ctx.sprint_status))]


def _sprint_edit(plan: _Plan, word: str) -> list[ToolUseBlock]:
    """v6: an Edit moving the story's ``development_status`` line to ``word`` (none if absent)."""
    if not plan.v6 or not plan.ctx.sprint_status:
        return []
    found = plan.read_result(plan.ctx.sprint_status)
    if found is None or not found[1]:
        return []
    epic, _, number = plan.ctx.story.partition(".")
    key = re.compile(
        rf"^(\s+['\"]?{re.escape(epic)}-{re.escape(number)}(?:-[^:'\"]*)?['\"]?\s*:\s*)([\w-]+)(.*)$"
    )
    for line in found[0].splitlines():
        match = key.match(line)
        if match is not None and match.group(2) != word:
            new = match.group(1) + word + match.group(3)
            return [Reply.edit(plan.path(plan.ctx.sprint_status), line, new)]
    return []


def _qa(plan: _Plan, turn: int, fail_first: frozenset[str]) -> Reply:
    if plan.v6:
        return _code_review(plan, turn, fail_first)
    ctx = plan.ctx
    if turn == 0:
        if not ctx.story_file or not ctx.gate_file:
            return Reply.text("QA: the prompt names no story file or gate file; no review.")
        return Reply.tools(Reply.read(plan.path(ctx.story_file)), text=f"Reviewing {ctx.story}.")
    story = plan.read_result(ctx.story_file)
    if story is None or not story[1]:
        return Reply.text(f"QA: could not read the story file {ctx.story_file}; no review.")
    files = _file_list(story[0])
    if turn == 1:
        targets = files or [ctx.story_file]
        return Reply.tools(*(Reply.read(plan.path(f)) for f in targets))
    if turn == 2:
        missing = [f for f in files if (r := plan.read_result(f)) is None or not r[1]]
        issues: list[dict[str, str]] = []
        if not files:
            issues.append(_issue(1, "high", "The File List is empty: nothing was implemented."))
        for f in missing:
            issues.append(_issue(len(issues) + 1, "high", f"{f} is listed but cannot be read."))
        if ctx.story in fail_first and ctx.review != "again":
            issues.append(
                _issue(
                    len(issues) + 1,
                    "medium",
                    f"Tests for story {ctx.story} do not cover an empty name.",
                    "Add a test calling the function with an empty string.",
                )
            )
        gate = "FAIL" if issues else "PASS"
        return Reply.tools(
            Reply.write(plan.path(ctx.gate_file), _gate_text(ctx, gate, issues)),
            *_qa_results_edit(plan, story[0], gate, issues),
            text=f"Gate {gate} for story {ctx.story}.",
        )
    if errors := plan.failed_tools():
        return Reply.text("QA: writing the review failed: " + "; ".join(errors))
    gate = (
        "FAIL" if "gate: FAIL" in _last_written(plan.request, plan.path(ctx.gate_file)) else "PASS"
    )
    verdict = "Ready for Done" if gate == "PASS" else "Changes Required"
    return Reply.text(
        f"QA review of story {ctx.story}: gate {gate}. Recommended status: {verdict}."
    )


def _review_issues(plan: _Plan, files: Sequence[str], fail_first: frozenset[str]) -> list[str]:
    """The patch findings of a review: missing files, and the scripted first-review finding."""
    ctx = plan.ctx
    missing = [f for f in files if (r := plan.read_result(f)) is None or not r[1]]
    issues: list[str] = []
    if not files:
        issues.append("The File List is empty: implement the story [story file]")
    issues += [f"{f} is listed but cannot be read [{f}]" for f in missing]
    if ctx.story in fail_first and ctx.review != "again":
        _, test = plan.code_paths()
        issues.append(f"Tests for story {ctx.story} do not cover an empty name [{test}:1]")
    return issues


def _code_review(plan: _Plan, turn: int, fail_first: frozenset[str]) -> Reply:
    """QA as BMAD v6 code-review: findings into the story, Status and sprint-status set."""
    ctx = plan.ctx
    if turn == 0:
        if not ctx.story_file:
            return Reply.text("Code review: the prompt names no story file; no review.")
        return Reply.tools(
            Reply.read(plan.path(ctx.story_file)),
            *_sprint_read(plan),
            text=f"Reviewing {ctx.story}.",
        )
    story = plan.read_result(ctx.story_file)
    if story is None or not story[1]:
        return Reply.text(f"Code review: could not read the story file {ctx.story_file}.")
    files = _file_list(story[0])
    if turn == 1:
        return Reply.tools(*(Reply.read(plan.path(f)) for f in files or [ctx.story_file]))
    if turn == 2:
        issues = _review_issues(plan, files, fail_first)
        word = "in-progress" if issues else "done"
        edits: list[ToolUseBlock] = []
        findings = _findings_edit(plan, story[0], issues)
        if findings is not None:
            edits.append(findings)
        status = _status_edit(plan, story[0], word)
        if status is not None:
            edits.append(status)
        edits += _sprint_edit(plan, word)
        if not edits:
            return Reply.text(f"Code review of story {ctx.story}: nothing could be recorded.")
        return Reply.tools(*edits, text=f"Code review of story {ctx.story}: {len(issues)} patch.")
    if errors := plan.failed_tools():
        return Reply.text("Code review: updating the story failed: " + "; ".join(errors))
    return Reply.text(f"**Review Complete!** Story {ctx.story} reviewed; status and sprint synced.")


def _findings_edit(plan: _Plan, story: str, issues: Sequence[str]) -> ToolUseBlock | None:
    """An Edit appending ``### Review Findings`` at the end of the story's Tasks / Subtasks."""
    if not issues:
        return None  # a clean review writes no findings (code-review's "clean review shortcut")
    lines = story.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.strip().lower().startswith("## tasks")), None
    )
    if start is None:
        return None
    after = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
    if after is None:
        return None
    block = "\n".join(
        ["### Review Findings", "", *(f"- [ ] [Review][Patch] {issue}" for issue in issues), ""]
    )
    return Reply.edit(plan.path(plan.ctx.story_file), lines[after], f"{block}\n{lines[after]}")


def _last_written(request: ApiRequest, path: str) -> str:
    text = ""
    for use in request.tool_uses():
        if use.name == "Write" and use.input.get("file_path") == path:
            text = str(use.input.get("content", ""))
    return text


def _issue(number: int, severity: str, finding: str, action: str = "Fix it.") -> dict[str, str]:
    return {
        "id": f"QA-{number:03d}",
        "severity": severity,
        "finding": finding,
        "suggested_action": action,
    }


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _gate_text(ctx: StoryContext, gate: str, issues: Sequence[Mapping[str, str]]) -> str:
    reason = (
        "All acceptance criteria are met and tested." if gate == "PASS" else issues[0]["finding"]
    )
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    lines = [
        "schema: 1",
        f"story: {_yaml_str(ctx.story)}",
        f"story_title: {_yaml_str(ctx.story_title)}",
        f"gate: {gate}",
        f"status_reason: {_yaml_str(reason)}",
        'reviewer: "Quinn (Test Architect)"',
        f"updated: {_yaml_str(now)}",
    ]
    if issues:
        lines.append("top_issues:")
        for issue in issues:
            lines.append(f"  - id: {_yaml_str(issue['id'])}")
            for key in ("severity", "finding", "suggested_action"):
                lines.append(f"    {key}: {_yaml_str(issue[key])}")
    else:
        lines.append("top_issues: []")
    return "\n".join(lines) + "\n"


def _qa_results_edit(
    plan: _Plan, story: str, gate: str, issues: Sequence[Mapping[str, str]]
) -> list[ToolUseBlock]:
    if "## QA Results" not in story:
        return []
    findings = "\n".join(f"- {i['id']} ({i['severity']}): {i['finding']}" for i in issues)
    verdict = "Ready for Done" if gate == "PASS" else "Changes Required"
    block = (
        f"## QA Results\n\n### Review Date: {_today()}\n\n### Reviewed By: Quinn (Test Architect)\n\n"
        f"Gate: {gate} → {plan.ctx.gate_file}\n\n"
        + (f"{findings}\n\n" if findings else "No issues found.\n\n")
        + f"Recommended Status: {verdict}\n"
    )
    return [Reply.edit(plan.path(plan.ctx.story_file), "## QA Results", block.rstrip("\n"))]


def resolve_conflict_blocks(text: str) -> str:
    """``text`` with each conflict block replaced by both of its sides (the base of a diff3 block
    dropped): a union merge."""
    out: list[str] = []
    state = "outside"
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<< "):
            state = "ours"
        elif line.startswith("||||||| ") and state == "ours":
            state = "base"
        elif line.startswith("=======") and state in ("ours", "base"):
            state = "theirs"
        elif line.startswith(">>>>>>> ") and state == "theirs":
            state = "outside"
        elif state != "base":
            out.append(line)
    return "".join(out)


def _resolver(plan: _Plan, turn: int) -> Reply:
    files = plan.ctx.conflicts
    if not files:
        return Reply.text("Resolver: no conflicting file was named.")
    if turn == 0:
        reads = [Reply.read(plan.path(name)) for name in files]
        return Reply.tools(*reads, text="Reading the conflicting files.")
    if turn == 1:
        writes: list[ToolUseBlock] = []
        for name in files:
            found = plan.read_result(name)
            if found is None or not found[1]:
                continue
            writes.append(Reply.write(plan.path(name), resolve_conflict_blocks(found[0])))
        if not writes:
            return Reply.text("Resolver: could not read the conflicting files.")
        return Reply.tools(*writes, text="Keeping both sides of every conflict.")
    return Reply.text("Resolver: every conflict is resolved.")


def _fixer(plan: _Plan, turn: int) -> Reply:
    ctx = plan.ctx
    named = [m.group(1) for m in _PATH_IN_OUTPUT.finditer(ctx.gate_command)]
    target = named[0] if named else ""
    if not target:
        return Reply.text("Fixer: no file is named in the gate output; nothing to fix.")
    if turn == 0:
        return Reply.tools(Reply.read(plan.path(target)), text=f"Looking at {target}.")
    if turn == 1:
        found = plan.read_result(target)
        if found is None or not found[1]:
            return Reply.text(f"Fixer: could not read {target}.")
        fixed = "\n".join(line.rstrip() for line in found[0].splitlines()).rstrip("\n") + "\n"
        if fixed == found[0]:
            return Reply.text(f"Fixer: {target} has no trivial problem to fix.")
        return Reply.tools(Reply.write(plan.path(target), fixed), text="Trimming whitespace.")
    return Reply.text(f"Fixer: tidied {target}.")


@attrs.frozen(kw_only=True)
class BmadActor:
    """A responder that plays SM, Dev, QA and fixer for prompts with a ``## Context`` block.

    ``fail_first_review``: story ids whose first QA review (``review: first``) ends with gate FAIL
    and findings; later reviews pass. Requests without a context block get ``None`` (the next
    responder or the scenario's default answers).
    """

    fail_first_review: frozenset[str] = frozenset()

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        ctx = None
        for text in request.user_texts():
            ctx = parse_context(text) or ctx
            if ctx is not None:
                break
        if ctx is None:
            return None
        found = _WORKDIR.search(request.system_text)
        plan = _Plan(ctx, request, found.group(1) if found else "")
        turn = request.assistant_turns
        if ctx.role == "sm":
            return _sm(plan, turn)
        if ctx.role == "dev" and ctx.task == "resolve merge conflict":
            return _resolver(plan, turn)
        if ctx.role == "dev":
            return _dev(plan, turn)
        if ctx.role == "qa":
            return _qa(plan, turn, self.fail_first_review)
        if ctx.role == "fixer":
            return _fixer(plan, turn)
        return Reply(blocks=(TextBlock(f"Unknown role {ctx.role!r}; nothing done."),))


def bmad_actor_scenario(
    fail_first_review: frozenset[str] | set[str] | Sequence[str] = frozenset(),
    *,
    latency_s: float = 0.0,
    delta_delay_s: float = 0.0,
    model: str | None = None,
) -> Scenario:
    """A scenario whose model plays the BMAD roles (see :class:`BmadActor`)."""
    return Scenario(
        responders=(BmadActor(fail_first_review=frozenset(fail_first_review)),),
        default=Reply.text("OK"),
        latency_s=latency_s,
        delta_delay_s=delta_delay_s,
        model=model,
    )
