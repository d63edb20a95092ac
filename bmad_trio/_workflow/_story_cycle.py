"""The story cycle: code decides every transition from what is on disk.

A :class:`StoryCycle` takes one story from "no file" to done (or failed/blocked) following the
decision table of CONTRACT.md. Each phase is one agent session (see
:meth:`RunServices.run_session`), then a check of the expected change on disk. Nothing here sleeps
to "let things settle" and nothing asks a model for a status.

Cancellation: every await is a cancellation point; cancelling a story's scope kills its session
and leaves the store saying which phase was in flight, so ``resume`` re-runs exactly that phase
from the story's on-disk status.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import anyio
import attrs

from .._agents._runner import Role, SessionResult
from .._bmad import (
    EpicStory,
    QaGate,
    QaGateDecision,
    Story,
    StoryStatus,
    find_qa_gate_file,
    find_story_file,
    new_story_path,
    parse_story,
    read_qa_gate,
    read_story_state,
    set_story_status,
    sprint_keys_for,
)
from .._bmad._textio import write_text_atomic
from .._bmad._v6_review import (
    ReviewOutcome,
    ReviewVerdict,
    decide_review,
    open_findings_text,
    review_items,
)
from .._errors import GitError, ProjectError
from .._events import PhaseFinished, PhaseStarted, StoryStatusChanged
from ._prompts import RolePlan, rel, role_plan
from ._run_services import PhaseVerdict, RunAbort, RunServices, StoryReport, story_report
from ._workspace import StoryPlace, Workspace

__all__ = ["CycleProgress", "StoryCycle"]

log = logging.getLogger("bmad_trio.workflow")

_MAX_API_RETRIES = 8
_COMMIT_LIMIT_S = 120.0
"""How long a phase commit may take (it runs shielded from cancellation; see _checkpoint)."""
_FINDINGS_LIMIT = 6000


@attrs.define
class _Disk:
    path: Path | None
    story: Story | None
    error: str | None = None
    """Why the story file at ``path`` does not parse (None: it parses, or there is none)."""
    recorded: StoryStatus | None = None
    """A more advanced status the project already recorded (v6 sprint-status ``done``, or a
    review that already passed), read only before this run works on the story: see _read_disk."""

    @property
    def status(self) -> StoryStatus | None:
        if self.recorded is not None:
            return self.recorded
        return self.story.status if self.story else None


@attrs.frozen
class CycleProgress:
    """What a story cycle counts in memory, so that a cycle taken up elsewhere (another worker,
    after :meth:`StoryCycle.run_phases` stopped) goes on counting from there. Plain data: it
    travels as JSON through the distributed engine's checkpoints."""

    cycles: int = 0
    sm_attempts: int = 0
    api_retries: int = 0
    review_failures: int = 0
    findings: str | None = None
    phases: int = 0
    """Sessions run for the story so far: once one ran, our own decisions rule (see _read_disk)."""


class StoryCycle:
    """Takes one story through SM → approval → Dev → QA → decision until done, failed or blocked."""

    def __init__(
        self,
        services: RunServices,
        story: EpicStory,
        *,
        cycles: int = 0,
        workspace: Workspace | None = None,
        place: StoryPlace | None = None,
        progress: CycleProgress | None = None,
    ) -> None:
        self.s = services
        """The story's services: their layout is the story's own tree (its git worktree)."""
        self.story = story
        self._workspace = workspace
        self._place = place
        start = progress if progress is not None else CycleProgress(cycles=cycles)
        self.cycles = start.cycles
        self._sm_attempts = start.sm_attempts
        self._api_retries = start.api_retries
        self._findings: str | None = start.findings
        self._review_failures = start.review_failures
        """v6 code reviews in a row that left no verdict (bounded by max_cycles)."""
        self._phases = start.phases
        self._last_status: StoryStatus | None = None
        self._started = anyio.current_time()

    @property
    def sid(self) -> str:
        return self.story.story_id

    @property
    def _v6(self) -> bool:
        """BMAD v6: QA is v6 code-review (findings in the story, status set by it; no gate file)."""
        return self.s.layout.version == "v6"

    @property
    def progress(self) -> CycleProgress:
        """The counts so far, to take the cycle up again with (see :class:`CycleProgress`)."""
        return CycleProgress(
            cycles=self.cycles,
            sm_attempts=self._sm_attempts,
            api_retries=self._api_retries,
            review_failures=self._review_failures,
            findings=self._findings,
            phases=self._phases,
        )

    async def run(self) -> StoryReport:
        """Run the cycle to an end state; returns the story's report. Raises RunAbort/BudgetSpent."""
        report = await self.run_phases(None)
        assert report is not None
        return report

    async def run_phases(self, limit: int | None) -> StoryReport | None:
        """Run the cycle until it ends (its report) or until ``limit`` sessions have run and the
        next would start (None: the caller commits, and takes the cycle up again with
        :attr:`progress`, maybe on another machine). Raises RunAbort/BudgetSpent."""
        config = self.s.config
        ran_before = self._phases
        while True:
            if limit is not None and self._phases - ran_before >= limit:
                return None
            disk = await self._read_disk()
            if disk.error is not None:
                ended = await self._unreadable(disk)
                if ended is not None:
                    return ended
                continue
            status = disk.status
            await self._note_status(status, disk.path)
            if status is None:
                if self._sm_attempts >= config.max_cycles:
                    return await self._fail(
                        f"the SM did not write a parseable story file in {self._sm_attempts} attempts",
                        disk.path,
                    )
                self._sm_attempts += 1
                await self._draft()
            elif status is StoryStatus.DRAFT:
                if not config.auto_approve:
                    return await self._finish(
                        StoryStatus.BLOCKED,
                        "the story is a draft awaiting approval (auto_approve is off)",
                    )
                await self._approve(disk)
            elif status in (StoryStatus.READY_FOR_DEV, StoryStatus.IN_PROGRESS):
                if self.cycles >= config.max_cycles:
                    return await self._fail(
                        f"not done after {config.max_cycles} Dev/QA cycles"
                        + (f"; last findings: {self._findings[:300]}" if self._findings else ""),
                        disk.path,
                    )
                self.cycles += 1
                await self._develop(disk)
            elif status is StoryStatus.REVIEW:
                ended = await (self._review_v6(disk) if self._v6 else self._review(disk))
                if ended is not None:
                    return ended
            elif status is StoryStatus.DONE:
                if disk.recorded is StoryStatus.DONE and disk.path is not None:
                    # Finished before this run (review passed, or sprint-status says done): the
                    # story file is brought in line, as the decision after QA would have done.
                    await self._set_status(disk.path, StoryStatus.DONE)
                return await self._finish(StoryStatus.DONE, None)
            else:
                row = await self.s.store.get_story(self.s.run_id, self.sid)
                reason = row.failure_reason or f"the story file says {status.value}"
                return await self._finish(status, reason)

    # -- disk ---------------------------------------------------------------------------------

    async def _read_disk(self) -> _Disk:
        """The story as its file says, found and read the way ``plan`` does.

        Before this run has worked on the story (no phase of it in the store), the project's own
        record may be ahead of the file: v6 sprint-status saying ``done``, or a v4 story at review
        whose passing gate is newer than its last change. That work is not redone. Once a phase
        of ours ran, our own decisions rule: code-review may have written ``done`` to sprint-status
        before the code sent the story back, and sprint-status never moves backwards.
        """
        layout, story, config = self.s.layout, self.story, self.s.config
        sprint = self.s.sprint_status
        consult = not self._phases and not await self.s.store.phases(self.s.run_id, self.sid)

        def read() -> _Disk:
            entries = sprint.entries() if sprint is not None and sprint.path.is_file() else {}
            development = {key: entry.word for key, entry in entries.items()}
            keys = sprint_keys_for(development, story.story_id)
            path = find_story_file(layout, story.story_id, story.title, keys=keys)
            if path is None:
                return _Disk(None, None)
            try:
                parsed = parse_story(path)
            except ProjectError as exc:
                log.warning("story %s: %s", story.story_id, exc)
                if self._sm_attempts and not self.cycles:
                    return _Disk(path, None)  # the SM wrote something unusable: draft again
                return _Disk(path, None, error=str(exc))
            if not consult:
                return _Disk(path, parsed)
            state = read_story_state(
                layout,
                story.story_id,
                story.title,
                path,
                sprint_entries=entries,
                strict_concerns=config.strict_concerns,
            )
            recorded: StoryStatus | None = None
            if state.review is not None and state.review.finished and not self._v6:
                recorded = StoryStatus.DONE
                log.info("story %s: %s; no QA re-run", story.story_id, state.review.reason)
            elif state.status is not None and state.status is not parsed.status:
                recorded = state.status
                log.info("story %s: %s", story.story_id, state.effective.conflict or "")
            return _Disk(path, parsed, recorded=recorded)

        try:
            return await anyio.to_thread.run_sync(read)
        except ProjectError as exc:  # sprint-status itself unreadable: the file alone decides
            log.warning("story %s: sprint status not read: %s", story.story_id, exc)
            sprint = None  # read() sees this binding when it runs again
            return await anyio.to_thread.run_sync(read)

    async def _unreadable(self, disk: _Disk) -> StoryReport | None:
        """The story file does not parse. Broken by a Dev or QA session of this story: a Dev cycle
        repairs it (the parse error is its findings), and past max cycles the story fails with the
        parse error. Broken before any session of ours touched it: the story is blocked. Either
        way only this story is concerned; the others go on."""
        assert disk.error is not None
        if not self.cycles:
            return await self._finish(
                StoryStatus.BLOCKED, f"the story file cannot be read: {disk.error}"
            )
        if self.cycles >= self.s.config.max_cycles:
            return await self._fail(
                f"the story file does not parse after {self.cycles} Dev/QA cycles: {disk.error}",
                disk.path,
            )
        self.cycles += 1
        self._findings = (
            f"The story file no longer parses: {disk.error}\n"
            "Repair it first (keep its content; restore its structure and Status line), "
            "then finish the story's tasks and set its status to Review."
        )
        await self._develop(disk)
        return None

    async def _note_status(self, status: StoryStatus | None, path: Path | None) -> None:
        if status is None or status == self._last_status:
            return
        old, self._last_status = self._last_status, status
        await self.s.store.update_story(
            self.s.run_id,
            self.sid,
            status=status.value,
            story_file=rel(self.s.layout, path) if path else None,
            cycles=self.cycles,
        )
        await self.s.emit(
            StoryStatusChanged(story_id=self.sid, old=old.value if old else None, new=status.value)
        )

    async def _set_status(self, path: Path, status: StoryStatus) -> None:
        """Write a status the orchestrator decided (story file, and v6 sprint-status.yaml)."""
        layout = self.s.layout

        sprint = self.s.sprint_status

        def write() -> None:
            set_story_status(path, status, project=layout.project)
            if sprint is not None and sprint.path.is_file():
                try:  # through the run's one writer: its lock keeps concurrent updates whole
                    sprint.advance(self.sid, status, title=self.story.title)
                except ProjectError as exc:  # no key for this story: the file is the user's
                    log.warning("sprint status not updated: %s", exc)

        await anyio.to_thread.run_sync(write)
        await self._checkpoint("code", f"status {status.value}")

    async def _checkpoint(self, role: str, what: str, cost_usd: float = 0.0) -> None:
        """Commit what changed on the story's branch since the last commit (git workspaces only).

        Called once a phase's changes are on disk and before the store records the phase as
        finished: a phase the store calls finished is committed, so a resume never redoes it,
        and a phase in flight is rolled back to this commit."""
        if self._workspace is None or self._place is None:
            return
        # Shielded, but bounded: a phase whose work is on disk is committed even when the run is
        # being cancelled right now (Ctrl-C just after a session ended), so a resume never runs
        # finished work again. A commit is a few local git commands; past the limit the story
        # fails instead of recording a phase that has no commit.
        with anyio.move_on_after(_COMMIT_LIMIT_S, shield=True) as scope:
            await self._workspace.checkpoint(
                self._place,
                story=self.story,
                role=role,
                cycle=self.cycles,
                what=what,
                cost_usd=cost_usd,
            )
        if scope.cancelled_caught:
            raise GitError(f"committing {what!r} took longer than {_COMMIT_LIMIT_S:.0f} s")

    # -- phases -------------------------------------------------------------------------------

    async def _phase(self, phase: str, plan: RolePlan, cycle: int) -> tuple[bool, int, float]:
        """Run one session for ``phase``; True when the agent ran to completion (disk unchecked).

        A retryable API failure waits out the pause and runs the session again (not counted).
        Returns (ran_ok, phase_id, phase_start_wall_time).
        """
        while True:
            started_wall = time.time()
            phase_id = await self.s.store.start_phase(
                self.s.run_id, self.sid, phase, plan.role.value, cycle
            )
            await self.s.emit(
                PhaseStarted(story_id=self.sid, phase=phase, role=plan.role.value, cycle=cycle)
            )

            async def commit(result: SessionResult, role: str = plan.role.value) -> None:
                # The session's work, committed as soon as it is recorded (shielded there by
                # run_session): a cancel between the session and the phase's end loses nothing.
                await self._checkpoint(
                    role, f"{phase} session {result.outcome.value}", result.cost_usd
                )

            result = await self.s.run_session(
                plan, story_id=self.sid, cycle=cycle, phase_id=phase_id, on_finished=commit
            )
            self._phases += 1
            await self.s.store.update_story(self.s.run_id, self.sid, add_duration=result.duration_s)
            verdict = self.s.handle_outcome(result)
            if verdict is PhaseVerdict.RETRY:
                self._api_retries += 1
                detail = f"API {result.api_error_category}: {result.error}; retrying after a pause"
                await self._end_phase(phase_id, phase, cycle, False, detail)
                if self._api_retries > _MAX_API_RETRIES:
                    raise RunAbort(f"the model API kept failing: {result.error}")
                continue
            if verdict is PhaseVerdict.FAILED_ATTEMPT:
                detail = f"{result.outcome.value}: {result.error or 'no detail'}"
                await self._end_phase(phase_id, phase, cycle, False, detail)
                return False, phase_id, started_wall
            return True, phase_id, started_wall

    async def _end_phase(
        self, phase_id: int, phase: str, cycle: int, ok: bool, detail: str
    ) -> None:
        # The session's own work was committed when it ended (see _phase); this commits what the
        # code changed since (a status it decided), if anything.
        await self._checkpoint("code", f"{phase}: {detail}")
        await self.s.store.finish_phase(phase_id, ok, detail)
        await self.s.emit(
            PhaseFinished(story_id=self.sid, phase=phase, cycle=cycle, ok=ok, detail=detail)
        )

    def _plan(self, role: Role, story_file: Path, *, review_round: int = 1) -> RolePlan:
        layout = self.s.layout
        gate = self._gate_path()
        return role_plan(
            layout,
            role,
            self.story,
            story_file=story_file,
            epic_file=self.s.epic.path,
            gate_file=gate,
            review_round=review_round,
            findings=self._findings if role is Role.DEV else None,
        )

    def _gate_path(self) -> Path:
        existing = find_qa_gate_file(self.s.layout, self.sid)
        return existing or self.s.layout.gates_dir / f"{self.sid}-{self.story.slug}.yml"

    async def _draft(self) -> None:
        path = new_story_path(self.s.layout, self.sid, self.story.title)
        ran, phase_id, _ = await self._phase("draft", self._plan(Role.SM, path), self._sm_attempts)
        if not ran:
            return
        disk = await self._read_disk()
        ok = disk.story is not None
        detail = "story file written" if ok else "the SM left no parseable story file"
        await self._end_phase(phase_id, "draft", self._sm_attempts, ok, detail)

    async def _approve(self, disk: _Disk) -> None:
        assert disk.path is not None
        phase_id = await self.s.store.start_phase(self.s.run_id, self.sid, "approve", "code", 0)
        await self.s.emit(PhaseStarted(story_id=self.sid, phase="approve", role="code", cycle=0))
        await self._set_status(disk.path, StoryStatus.READY_FOR_DEV)
        await self._end_phase(phase_id, "approve", 0, True, "auto-approved")

    async def _develop(self, disk: _Disk) -> None:
        assert disk.path is not None
        if disk.status is StoryStatus.IN_PROGRESS and self._findings is None:
            if self._v6:
                self._findings = self._findings_from_story(disk)
            else:
                self._findings = await self._findings_from_gate()
        if disk.status is StoryStatus.READY_FOR_DEV:
            await self._set_status(disk.path, StoryStatus.IN_PROGRESS)
        ran, phase_id, _ = await self._phase(
            "develop", self._plan(Role.DEV, disk.path), self.cycles
        )
        if not ran:
            return
        after = await self._read_disk()
        story = after.story
        problems: list[str] = []
        if story is None:
            problems.append(f"the story file no longer parses: {after.error or 'it is gone'}")
        else:
            if story.status is not StoryStatus.REVIEW:
                problems.append(f"status is {story.status.value}, not review")
            if story.unchecked_tasks:
                problems.append(f"{story.unchecked_tasks} task(s) left unticked")
            if self._v6:
                still_open = [i for i in review_items(story) if i.blocking]
                if still_open:
                    problems.append(f"{len(still_open)} review finding(s) left open")
        ok = not problems
        detail = "implemented; ready for review" if ok else "; ".join(problems)
        await self._end_phase(phase_id, "develop", self.cycles, ok, detail)
        if ok:
            self._findings = None

    async def _review(self, disk: _Disk) -> None:
        assert disk.path is not None
        phases = await self.s.store.phases(self.s.run_id, self.sid)
        reviews = [p for p in phases if p.phase == "review"]
        last = phases[-1] if phases else None
        gate: QaGate | None = None
        if last is not None and last.phase == "review" and last.ok:
            gate = await self._read_gate(since=None)  # resumed after QA finished: decide, no re-run
        else:
            ran, phase_id, started = await self._phase(
                "review",
                self._plan(Role.QA, disk.path, review_round=len(reviews) + 1),
                max(self.cycles, 1),
            )
            if ran:
                gate = await self._read_gate(since=started)
            detail = f"gate {gate.gate.value}" if gate else "QA wrote no gate file"
            if ran or gate is not None:
                await self._end_phase(
                    phase_id, "review", max(self.cycles, 1), gate is not None, detail
                )
        await self._decide(disk.path, gate)

    async def _review_v6(self, disk: _Disk) -> StoryReport | None:
        """QA as BMAD v6 code-review, then the decision from the story file it left (no gate).

        Returns a report when the story ends here (no verdict after max_cycles reviews).
        """
        assert disk.path is not None
        path, config = disk.path, self.s.config
        story_file = rel(self.s.layout, path)
        phases = await self.s.store.phases(self.s.run_id, self.sid)
        reviews = [p for p in phases if p.phase == "review"]
        last = phases[-1] if phases else None
        if last is not None and last.phase == "review" and last.ok and disk.story is not None:
            # Resumed after the review finished but before its decision was written: decide now
            # (a review that gave a verdict left one on disk; if not, review again below).
            verdict = decide_review(disk.story, story_file=story_file, changed=True)
            if verdict.outcome is not ReviewOutcome.FAILED_ATTEMPT:
                await self._apply_v6_verdict(path, verdict)
                return None
        if self._review_failures >= config.max_cycles:
            return await self._fail(
                f"code review left no verdict in {self._review_failures} attempt(s)", path
            )
        cycle = max(self.cycles, 1)
        before = await anyio.to_thread.run_sync(path.read_bytes)
        ran, phase_id, _ = await self._phase(
            "review", self._plan(Role.QA, path, review_round=len(reviews) + 1), cycle
        )
        if not ran:
            # A failed session's edits are not a verdict: the status goes back to review.
            self._review_failures += 1
            await anyio.to_thread.run_sync(self._back_to_review, path, before)
            return None
        after_bytes = await anyio.to_thread.run_sync(path.read_bytes)
        try:
            story = await anyio.to_thread.run_sync(parse_story, path)
        except ProjectError as exc:
            self._review_failures += 1
            await self._end_phase(phase_id, "review", cycle, False, f"story file unreadable: {exc}")
            await anyio.to_thread.run_sync(_restore, path, before)  # undo the breakage
            return None
        verdict = decide_review(story, story_file=story_file, changed=after_bytes != before)
        ok = verdict.outcome is not ReviewOutcome.FAILED_ATTEMPT
        await self._end_phase(phase_id, "review", cycle, ok, verdict.reason)
        await self._apply_v6_verdict(path, verdict)
        return None

    def _back_to_review(self, path: Path, before: bytes) -> None:
        """After a failed review session: a story it broke is restored, a status it set undone."""
        try:
            status = parse_story(path).status
        except ProjectError:
            _restore(path, before)
            return
        if status is not StoryStatus.REVIEW:
            set_story_status(path, StoryStatus.REVIEW, project=self.s.layout.project)

    async def _apply_v6_verdict(self, path: Path, verdict: ReviewVerdict) -> None:
        if verdict.outcome is ReviewOutcome.DONE:
            self._review_failures = 0
            await self._set_status(path, StoryStatus.DONE)  # syncs sprint-status if QA did not
        elif verdict.outcome is ReviewOutcome.IN_PROGRESS:
            self._review_failures = 0
            self._findings = verdict.findings
            await self._set_status(path, StoryStatus.IN_PROGRESS)
        elif verdict.outcome is ReviewOutcome.FAILED_ATTEMPT:
            self._review_failures += 1
            log.warning("story %s: %s", self.sid, verdict.reason)

    def _findings_from_story(self, disk: _Disk) -> str | None:
        """v6: the open review findings in the story file (e.g. after a resume), or None."""
        if disk.story is None or disk.path is None:
            return None
        items = review_items(disk.story)
        if not any(not i.checked and i.kind != "defer" for i in items):
            return None
        return open_findings_text(disk.story, items, story_file=rel(self.s.layout, disk.path))

    async def _read_gate(self, since: float | None) -> QaGate | None:
        layout, sid = self.s.layout, self.sid

        def read() -> QaGate | None:
            path = find_qa_gate_file(layout, sid)
            if path is None or (since is not None and os.stat(path).st_mtime < since - 1.0):
                return None
            try:
                return read_qa_gate(path)
            except ProjectError as exc:
                log.warning("story %s: unreadable gate: %s", sid, exc)
                return None

        return await anyio.to_thread.run_sync(read)

    async def _decide(self, path: Path, gate: QaGate | None) -> None:
        """The decision table: PASS/WAIVED → done; CONCERNS → done unless strict; else back to Dev."""
        decision = gate.gate if gate else None
        done = decision in (QaGateDecision.PASS, QaGateDecision.WAIVED) or (
            decision is QaGateDecision.CONCERNS and not self.s.config.strict_concerns
        )
        try:
            if done:
                await self._set_status(path, StoryStatus.DONE)
                return
            self._findings = (
                _findings_text(gate) if gate else "QA wrote no gate file; review again."
            )
            await self._set_status(path, StoryStatus.IN_PROGRESS)
        except ProjectError as exc:  # QA left the file unparseable: the loop sends Dev to repair it
            log.warning("story %s: status not written: %s", self.sid, exc)

    async def _findings_from_gate(self) -> str | None:
        gate = await self._read_gate(since=None)
        if gate is None or gate.gate in (QaGateDecision.PASS, QaGateDecision.WAIVED):
            return None
        return _findings_text(gate)

    # -- endings ------------------------------------------------------------------------------

    async def _fail(self, reason: str, path: Path | None) -> StoryReport:
        if path is not None:
            try:
                await self._set_status(path, StoryStatus.FAILED)
            except ProjectError as exc:
                log.warning("story %s: could not mark failed on disk: %s", self.sid, exc)
        return await self._finish(StoryStatus.FAILED, reason)

    async def _finish(self, status: StoryStatus, reason: str | None) -> StoryReport:
        row = await self.s.store.update_story(
            self.s.run_id,
            self.sid,
            status=status.value,
            phase=None,
            cycles=self.cycles,
            failure_reason=reason,
        )
        # The row has the status and cycles just written; the reason is kept as given (the row's
        # copy is redacted for the store).
        return story_report(row, self.story.title, failure_reason=reason)


def _restore(path: Path, data: bytes) -> None:
    """Put a story file back as it was (atomically: temp file + os.replace)."""
    bom = data.startswith(b"\xef\xbb\xbf")
    write_text_atomic(path, data[3 if bom else 0 :].decode("utf-8"), bom=bom)


def _findings_text(gate: QaGate) -> str:
    lines = [f"QA gate {gate.gate.value} ({gate.path.name}): {gate.status_reason}".strip()]
    for issue in gate.top_issues:
        action = f" → {issue.suggested_action}" if issue.suggested_action else ""
        lines.append(f"[{issue.severity}] {issue.id}: {issue.finding}{action}")
    return "\n".join(lines)[:_FINDINGS_LIMIT]
