"""Role prompts, tool allowlists and write permissions for each agent session.

When the project has BMAD installed, prompts point the agent at the project's own agent and task
files (v4 ``.bmad-core/agents/*.md`` + tasks; v6 the installed workflows); otherwise built-in
instructions carry the same rules. Every prompt ends with a ``## Context`` block of facts the code
has established (story id, files, review round...). Paths are relative to the project and use
forward slashes. Pure functions, no I/O beyond ``Path`` arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .._agents._runner import Role
from .._bmad import EpicStory, Layout

__all__ = ["RolePlan", "fixer_plan", "role_plan"]

_READ = ("Read", "Glob", "Grep")
ROLE_TOOLS: Mapping[Role, tuple[str, ...]] = {
    Role.SM: (*_READ, "Write", "Edit"),
    Role.DEV: (*_READ, "Write", "Edit", "MultiEdit", "Bash"),
    Role.QA: (*_READ, "Write", "Edit", "Bash"),
    Role.FIXER: (*_READ, "Write", "Edit", "MultiEdit", "Bash"),
}
"""Per-role allowlists: SM may only write story files and QA may not edit code (see writable)."""
SHELL_WRITES_PROJECT: Mapping[Role, bool] = {
    Role.SM: False,
    Role.DEV: True,
    Role.QA: False,
    Role.FIXER: True,
}
"""Whether the role's shell may write the project under the OS sandbox. The sandbox cannot grant
single files inside a read-only project, so QA's shell gets none of it: QA writes its gate and
story files with file tools, which the writable globs confine (SM has no shell)."""


@attrs.frozen
class RolePlan:
    """What one session is told and allowed to do."""

    role: Role
    prompt: str
    system_prompt: str
    allowed_tools: tuple[str, ...]
    writable_paths: tuple[str, ...]


def rel(layout: Layout, path: Path) -> str:
    """``path`` relative to the project, with forward slashes."""
    try:
        return path.relative_to(layout.project).as_posix()
    except ValueError:
        return path.as_posix()


def _context(items: Sequence[tuple[str, str | None]]) -> str:
    lines = ["## Context"]
    for key, value in items:
        if value:
            lines.append(f"- {key}: {' '.join(value.split()) if key != 'findings' else value}")
    return "\n".join(lines)


def _system(role: Role, *, v6: bool = False) -> str:
    common = (
        "You are one agent in an automated BMAD workflow run by bmad-trio. Work only inside the "
        "project directory. Do the job below completely, then stop with a one-paragraph summary. "
        "The orchestrator checks the files on disk, not your summary."
    )
    rules = {
        Role.SM: "You are the Scrum Master. You write story files only; never write code.",
        Role.DEV: (
            "You are the Developer. In the story file you may change only the task checkboxes, "
            "Dev Agent Record, File List, Change Log and Status."
        ),
        Role.QA: (
            "You are the QA reviewer. You may write only the QA gate file and the story's QA "
            "Results section. Never change the story's Status and never edit code."
        ),
        Role.FIXER: "You fix quality-gate failures with the smallest correct change.",
    }
    if v6:
        rules[Role.DEV] = (
            "You are the Developer (BMAD v6 dev-story). In the story file you may change only the "
            "task and review-finding checkboxes, Dev Agent Record, File List, Change Log and Status."
        )
        rules[Role.SM] = (
            "You are the Scrum Master (BMAD v6 create-story). You write the story file and its "
            "sprint-status entry only; never write code."
        )
        rules[Role.QA] = (
            "You are the code reviewer (BMAD v6 code-review). You may edit only the story file "
            "(review findings and Status), its sprint-status entry and the deferred-work file. "
            "Never edit code."
        )
    return f"{common}\n{rules[role]}"


def _installed(layout: Layout, role: Role) -> str:
    """A pointer to the project's own BMAD agent/task files for this role, if installed."""
    agent = {Role.SM: "sm", Role.DEV: "dev", Role.QA: "qa"}.get(role)
    task = {Role.SM: "create-next-story", Role.QA: "review-story"}.get(role)
    workflow = {Role.SM: "create-story", Role.DEV: "dev-story", Role.QA: "code-review"}.get(role)
    parts: list[str] = []
    if agent and agent in layout.agent_files:
        parts.append(f"Act as the agent defined in {rel(layout, layout.agent_files[agent])}.")
    if task and task in layout.task_files:
        parts.append(f"Follow the task {rel(layout, layout.task_files[task])}.")
    if workflow and workflow in layout.workflow_dirs:
        parts.append(f"Follow the BMAD workflow in {rel(layout, layout.workflow_dirs[workflow])}/.")
    if parts:
        parts.append("Run non-interactively: do not stop to ask questions; decide and proceed.")
    return " ".join(parts)


def guess_package_dir(project: Path) -> str | None:
    """Where the project's code lives (``src/<pkg>`` or a top-level package), for context only."""
    src = project / "src"
    candidates = sorted(src.glob("*/__init__.py")) if src.is_dir() else []
    candidates += sorted(
        p for p in project.glob("*/__init__.py") if p.parent.name not in ("tests", "docs")
    )
    return candidates[0].parent.relative_to(project).as_posix() if candidates else None


def role_plan(
    layout: Layout,
    role: Role,
    story: EpicStory,
    *,
    story_file: Path,
    epic_file: Path,
    gate_file: Path,
    review_round: int = 1,
    findings: str | None = None,
) -> RolePlan:
    """The prompt, tools and writable globs for an SM, Dev or QA session on one story."""
    story_rel = rel(layout, story_file)
    gates_rel = rel(layout, layout.gates_dir)
    sid = story.story_id
    installed = _installed(layout, role)
    v6 = layout.version == "v6"
    sprint_rel = rel(layout, layout.sprint_status_path) if layout.sprint_status_path else None
    if v6 and role in (Role.SM, Role.QA):
        task, writable = _v6_task(
            layout, role, story, story_rel, rel(layout, epic_file), sprint_rel
        )
    elif role is Role.SM:
        task = (
            f"Draft the story file for story {sid} ({story.title}) of the epic {rel(layout, epic_file)}. "
            f"Write it to {story_rel} in the BMAD story format: a '# Story {sid}: {story.title}' "
            "title, a '## Status' section set to Draft, the user story, the acceptance criteria "
            "copied from the epic, '## Tasks / Subtasks' as '- [ ]' checkboxes that cover every "
            "criterion, Dev Notes, a Change Log table, an empty Dev Agent Record with a File List, "
            "and an empty QA Results section."
        )
        writable = (story_rel,)
    elif role is Role.DEV:
        task = (
            f"Implement story {sid} ({story.title}) as described in {story_rel}. Write the code and "
            "tests, run the tests, tick every task checkbox you completed, list every file you "
            "created or changed in the File List, and when all tasks are done set the story's "
            "Status to Review."
        )
        if findings and v6:
            task += (
                " Code review of a previous attempt left open findings in the story file "
                "([Review][Patch]/[AI-Review] items; listed under 'findings' below): fix each one "
                "first and tick its checkbox, as dev-story does for review follow-ups."
            )
        elif findings:
            task += (
                " QA reviewed a previous attempt and asked for changes: fix every finding listed "
                "under 'findings' below first (BMAD's apply-qa-fixes)."
            )
        writable = ("**",)
    elif role is Role.QA:
        task = (
            f"Review story {sid} ({story.title}) in {story_rel} against its acceptance criteria: "
            "read the code and tests in its File List and run the tests. Write your decision to "
            f'the gate file {rel(layout, gate_file)} as YAML with schema: 1, story: "{sid}", '
            "gate: PASS | CONCERNS | FAIL | WAIVED, status_reason, reviewer, updated, and top_issues "
            "(each with id, severity, finding, suggested_action). Summarise your review in the "
            "story's QA Results section. Do not change the story's Status."
        )
        writable = (f"{gates_rel}/*", story_rel)
    else:
        raise ValueError(f"role_plan does not handle {role}; use fixer_plan")
    context = _context(
        [
            ("role", role.value),
            ("story", sid),
            ("story title", story.title),
            ("story file", story_rel),
            ("epic file", rel(layout, epic_file)),
            ("gate file", None if v6 else rel(layout, gate_file)),
            ("sprint status", sprint_rel if v6 else None),
            ("bmad", "v6" if v6 else None),
            ("package", guess_package_dir(layout.project)),
            ("review", ("first" if review_round <= 1 else "again") if role is Role.QA else None),
            ("findings", findings if role is Role.DEV else None),
        ]
    )
    prompt = "\n\n".join(part for part in (installed, task, context) if part)
    return RolePlan(role, prompt, _system(role, v6=v6), ROLE_TOOLS[role], writable)


def _v6_task(
    layout: Layout,
    role: Role,
    story: EpicStory,
    story_rel: str,
    epic_rel: str,
    sprint_rel: str | None,
) -> tuple[str, tuple[str, ...]]:
    """The v6 SM (create-story) and QA (code-review) jobs and what each may write."""
    sid = story.story_id
    sprint_part = (
        f" Then, if {sprint_rel} exists, set the story's development_status entry there to the "
        "same value, editing only that line and keeping every comment and the layout."
        if sprint_rel
        else ""
    )
    if role is Role.SM:
        task = (
            f"Create the story file for story {sid} ({story.title}) of {epic_rel}, as BMAD v6 "
            f"create-story does. Write it to {story_rel}: a '# Story {sid}: {story.title}' title, "
            "then a plain line 'Status: ready-for-dev' (not a heading), '## Story' (As a / I want / "
            "so that), '## Acceptance Criteria' copied from the epic, '## Tasks / Subtasks' as "
            "'- [ ]' checkboxes that cover every criterion, '## Dev Notes', and '## Dev Agent "
            "Record' with an empty '### File List'."
            + (
                f" Then, if {sprint_rel} exists, move the story's development_status entry there "
                "from backlog to ready-for-dev (and its epic-N entry from backlog to in-progress), "
                "editing only those lines and keeping every comment and the layout."
                if sprint_rel
                else ""
            )
        )
        writable = (story_rel, *((sprint_rel,) if sprint_rel else ()))
        return task, writable
    artifacts = layout.sprint_status_path.parent if layout.sprint_status_path else layout.story_dir
    deferred = rel(layout, artifacts / "deferred-work.md")
    task = (
        f"Run BMAD v6 code review on story {sid} ({story.title}) in {story_rel}, without asking "
        "anything: check every acceptance criterion and every ticked task against the code and "
        "tests in its File List, and run the tests. Do not edit code. Write your findings into "
        "the story file as the code-review workflow does: a '### Review Findings' subsection at "
        "the end of '## Tasks / Subtasks' with one line per finding: "
        "'- [ ] [Review][Patch] <title> [<file>:<line>]' for a fix the developer must make "
        "(leave patch findings as action items), '- [x] [Review][Defer] <title> — deferred, "
        f"pre-existing' for a pre-existing issue (also listed in {deferred}); decide "
        "decision-needed findings yourself (as patch or defer). Then set the story's Status line "
        "to 'done' when no patch finding and no high or medium issue is open, else to "
        "'in-progress'." + sprint_part
    )
    writable = (story_rel, *((sprint_rel,) if sprint_rel else ()), deferred)
    return task, writable


def fixer_plan(layout: Layout, gate_name: str, failure: str) -> RolePlan:
    """A fixer session for a failed quality gate; ``failure`` is the command and its output."""
    task = (
        f"The quality gate '{gate_name}' failed. Read its output below, find the cause in the "
        "project's code or tests and fix it with the smallest correct change. Do not weaken or "
        "delete tests, and do not change the gate's configuration."
    )
    context = _context(
        [
            ("role", Role.FIXER.value),
            ("gate", gate_name),
            ("package", guess_package_dir(layout.project)),
            ("gate command", failure),
        ]
    )
    return RolePlan(
        Role.FIXER,
        f"{task}\n\n{context}",
        _system(Role.FIXER),
        ROLE_TOOLS[Role.FIXER],
        ("**",),
    )


def resolver_plan(
    layout: Layout, story: EpicStory, *, files: Sequence[str], onto: str, branch: str
) -> RolePlan:
    """A Dev session that resolves the conflicts of rebasing story ``branch`` onto ``onto``."""
    task = (
        f"Story {story.story_id} ('{story.title}') is done on branch {branch}, but it conflicts "
        f"with the run's branch {onto}, where other stories have landed since it started. Git has "
        "stopped a rebase of the story onto that branch. In each conflicting file listed below, "
        "resolve every conflict (the <<<<<<< ======= >>>>>>> blocks): keep what both sides meant "
        "to do (the story's change and the other stories' changes), remove every conflict "
        "marker, and keep the project's tests passing. Do not run git commands: the "
        "orchestrator continues the rebase when you are done."
    )
    context = _context(
        [
            ("role", Role.DEV.value),
            ("task", "resolve merge conflict"),
            ("story", story.story_id),
            ("story title", story.title),
            ("conflicts", ", ".join(files)),
            ("branch", branch),
            ("onto", onto),
        ]
    )
    return RolePlan(
        Role.DEV,
        f"{task}\n\n{context}",
        _system(Role.DEV, v6=layout.version == "v6"),
        ROLE_TOOLS[Role.DEV],
        ("**",),
    )


def hook_fixer_plan(layout: Layout, story: EpicStory, *, output: str) -> RolePlan:
    """A fixer session for a story the repository's commit hook refused to land."""
    task = (
        f"Story {story.story_id} ('{story.title}') is done, but the repository's commit hook "
        "refused it when it was merged onto the run's branch. Read the hook's output below and "
        "fix what it reports in the project's files with the smallest correct change. Do not "
        "change or disable the hook, and do not run git commands."
    )
    context = _context(
        [
            ("role", Role.FIXER.value),
            ("story", story.story_id),
            ("package", guess_package_dir(layout.project)),
            ("gate command", f"commit hook\n{output}"),
        ]
    )
    return RolePlan(
        Role.FIXER,
        f"{task}\n\n{context}",
        _system(Role.FIXER),
        ROLE_TOOLS[Role.FIXER],
        ("**",),
    )
