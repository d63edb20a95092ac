"""A done story's way onto the run's branch: queue it for the merge lane; on a conflict rebase it
and let a resolver session fix the conflicts, on a refusing commit hook let a fixer session fix
what the hook reports, then queue it again.

Runs in the story's own task (the lane never waits on a model). Cancellation kills the session or
git command in flight; a rebase left half-way is undone when the run resumes.
"""

from __future__ import annotations

import logging

import anyio
import attrs

from .. import _git
from .._bmad import EpicStory
from .._events import PhaseFinished, PhaseStarted
from ._prompts import RolePlan, hook_fixer_plan, resolver_plan
from ._run_services import PhaseVerdict, RunServices, StoryReport
from ._workspace import GitWorkspace, StoryPlace

__all__ = ["land_done_story"]

log = logging.getLogger("bmad_trio.merge")

_MARKERS = ("<<<<<<< ", ">>>>>>> ")


async def land_done_story(
    services: RunServices,
    workspace: GitWorkspace,
    place: StoryPlace,
    story: EpicStory,
    report: StoryReport,
) -> StoryReport:
    """Land a done story; its report, failed ("merge conflict in …") when it cannot land.

    ``services`` are the story's (its layout is the story's worktree). Raises RunAbort/BudgetSpent
    from the resolver or fixer sessions.
    """
    assert place.worktree is not None
    assert place.branch is not None
    config, sid = services.config, story.story_id
    if await workspace.landed(place):
        return report  # landed before an interruption: nothing to do (no second merge phase)
    resolutions = hook_fixes = 0
    while True:
        phase_id = await _start(services, sid, "merge", "code", resolutions + hook_fixes + 1)
        outcome = await workspace.land(place, story, cost_usd=report.cost_usd)
        if outcome.status == "landed":
            await _end(services, phase_id, sid, "merge", True, f"landed as {outcome.commit}")
            return report
        if outcome.status == "gates_failed":
            await _end(services, phase_id, sid, "merge", False, outcome.output)
            return await _failed(services, report, outcome.output)
        if outcome.status in ("error", "not_git"):
            await _end(services, phase_id, sid, "merge", False, outcome.output)
            return await _failed(services, report, f"could not land: {outcome.output}")
        files = ", ".join(outcome.files) or "(unknown files)"
        if outcome.status == "hook_failed":
            await _end(services, phase_id, sid, "merge", False, "the commit hook refused it")
            if hook_fixes >= config.gate_fix_attempts:
                return await _failed(
                    services,
                    report,
                    f"the repository's commit hook refused the merge: {_tail(outcome.output)}",
                )
            hook_fixes += 1
            plan = hook_fixer_plan(place.layout, story, output=outcome.output)
            if not await _session(services, sid, "hook-fix", plan, hook_fixes):
                continue
            await workspace.checkpoint(
                place,
                story=story,
                role="fixer",
                cycle=hook_fixes,
                what="fix what the commit hook reported",
                cost_usd=0.0,
            )
            continue
        await _end(services, phase_id, sid, "merge", False, f"conflict in {files}")
        # Bring the story onto the run's branch as it is now; a conflict stops the rebase and a
        # resolver session fixes it, as often as merge_attempts allows.
        rebase = await _git.rebase_story(place.worktree, onto=workspace.integration.branch)
        while rebase.status == "conflict":
            if resolutions >= config.merge_attempts:
                await _git.abort_rebase(place.worktree)
                return await _failed(
                    services, report, "merge conflict in " + ", ".join(rebase.files)
                )
            resolutions += 1
            plan = resolver_plan(
                place.layout,
                story,
                files=rebase.files,
                onto=workspace.integration.branch,
                branch=place.branch,
            )
            await _session(services, sid, "resolve", plan, resolutions)
            left = await anyio.to_thread.run_sync(_with_markers, place, rebase.files)
            if left:
                log.info("story %s: conflict markers left in %s", sid, ", ".join(left))
                continue  # the same stop again, with one attempt fewer
            rebase = await _git.continue_rebase(place.worktree)


async def _session(
    services: RunServices, sid: str, phase: str, plan: RolePlan, attempt: int
) -> bool:
    phase_id = await _start(services, sid, phase, plan.role.value, attempt)
    result = await services.run_session(plan, story_id=sid, cycle=attempt, phase_id=phase_id)
    ok = services.handle_outcome(result) is PhaseVerdict.CHECK_DISK
    await _end(services, phase_id, sid, phase, ok, result.outcome.value)
    return ok


async def _start(services: RunServices, sid: str, phase: str, role: str, cycle: int) -> int:
    phase_id = await services.store.start_phase(services.run_id, sid, phase, role, cycle)
    await services.emit(PhaseStarted(story_id=sid, phase=phase, role=role, cycle=cycle))
    return phase_id


async def _end(
    services: RunServices, phase_id: int, sid: str, phase: str, ok: bool, detail: str
) -> None:
    await services.store.finish_phase(phase_id, ok, detail)
    await services.emit(PhaseFinished(story_id=sid, phase=phase, cycle=0, ok=ok, detail=detail))


async def _failed(services: RunServices, report: StoryReport, reason: str) -> StoryReport:
    await services.store.update_story(
        services.run_id, report.story_id, status="failed", failure_reason=reason
    )
    return attrs.evolve(report, status="failed", failure_reason=reason)


def _with_markers(place: StoryPlace, files: tuple[str, ...]) -> list[str]:
    assert place.worktree is not None
    left: list[str] = []
    for name in files:
        try:
            text = (place.worktree / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # deleted: a resolution too
        if any(line.startswith(_MARKERS) for line in text.splitlines()):
            left.append(name)
    return left


def _tail(output: str, limit: int = 400) -> str:
    text = " ".join(output.split())
    return text if len(text) <= limit else "…" + text[-limit:]
