"""A run: the task-group tree from epic to quality gates, and its public entry points.

::

    open_run / serve_run / run_epic            (caller's task)
    └── run task group                         Run._main: prepare, schedule, gates, finish
        └── story task (one per started story) _schedule starts them: ``jobs`` at once, in run order
            └── session task group             RunServices.run_session: agent + transcript relay

Cancelling the caller's scope cancels the whole tree: sessions are killed, the store keeps the
phase that was in flight (so ``resume`` re-runs just that), the run is marked ``interrupted`` and
``events.jsonl`` gets a final RunFinished. No async generator here holds a task group or cancel
scope: :class:`open_run` is a plain class with ``__aenter__``/``__aexit__``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.memory import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
    MemoryObjectStreamStatistics,
)

from .. import _git
from .._agents._runner import AgentRunner
from .._agents._sandbox import Sandbox
from .._bmad import (
    Epic,
    EpicStory,
    Layout,
    StoryStatus,
    cross_epic_dependency_met,
)
from .._config import RunConfig, effective_jobs, resumed_config
from .._errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BmadError,
    ConfigError,
    GitError,
    StateError,
    collapse,
)
from .._events import Event, RunFinished, RunStarted, StoryStarted
from .._state._paths import state_db_path
from .._state._redact import Redactor
from .._state._run_files import RunFiles, mark_task_as_run
from .._state._run_lock import RunLock
from .._state._store import Store
from ._merge_phase import land_done_story
from ._prepare import PreparedRun, config_from_json, config_to_json, prepare_run, run_sandbox_for
from ._quality_gate_phase import run_quality_gates
from ._run_services import (
    Budget,
    GateReport,
    PauseGate,
    RunAbort,
    RunServices,
    StoryReport,
    story_finished,
    story_report,
)
from ._story_cycle import StoryCycle
from ._story_order import run_order, widest_level
from ._workspace import CheckoutWorkspace, GitWorkspace, open_workspace

__all__ = [
    "EventStream",
    "GateReport",
    "Run",
    "RunReport",
    "StoryReport",
    "config_from_json",
    "config_to_json",
    "open_run",
    "run_epic",
    "serve_run",
]

RunStatus = Literal["done", "failed", "interrupted"]


@attrs.frozen(kw_only=True)
class RunReport:
    """What a run did. ``stories`` is one entry per selected story, in epic order; ``gates`` one
    entry per quality gate: its last result (with ``gates_after_each_story`` a gate runs several
    times, and only its last run counts)."""

    run_id: str
    status: RunStatus
    stories: tuple[StoryReport, ...]
    gates: tuple[GateReport, ...] = ()
    cost_usd: float = 0.0
    duration_s: float = 0.0
    failure_reason: str | None = None
    branch: str | None = None
    """The run's git branch, holding every story that landed (None for a ``checkout`` run)."""
    finish: str | None = None
    """What became of ``branch`` at the end (see ``RunConfig.finish``), e.g. the command that
    merges it when your branch had moved."""

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def exit_code(self) -> int:
        """0 done, 1 a story or gate failed, 130 interrupted (CONTRACT.md)."""
        return {"done": EXIT_OK, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}[
            self.status
        ]


class EventStream(anyio.abc.ObjectReceiveStream[Event]):
    """The run's events: a bounded receive stream that closes itself once it has ended.

    Iterate it (``async for event in run.events``) from any task; the iteration ends when the run
    does. Closing it early is fine: the run goes on and events.jsonl still gets every event.
    """

    def __init__(self, inner: MemoryObjectReceiveStream[Event]) -> None:
        self._inner = inner
        self._ended = False
        # A reader that stops part-way (cancelled, say) owes us no close: the stream is the run's,
        # so it closes when dropped. Closing it earlier could race with a reader's next receive.
        weakref.finalize(self, inner.close)

    async def receive(self) -> Event:
        if self._ended:
            raise anyio.EndOfStream
        try:
            return await self._inner.receive()
        except anyio.EndOfStream:
            self._end()
            raise

    def _end(self) -> None:
        self._ended = True
        self._inner.close()

    def statistics(self) -> MemoryObjectStreamStatistics:
        """The underlying memory stream's statistics (buffered items, tasks waiting to send)."""
        return self._inner.statistics()

    def close(self) -> None:
        """Stop receiving events (the run is not affected)."""
        self._inner.close()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()


class Run:
    """A run under way. ``events`` is a bounded stream of event objects (close it to ignore them);
    :meth:`wait` returns the :class:`RunReport`. Made by :func:`open_run` or :func:`serve_run`."""

    def __init__(
        self,
        config: RunConfig,
        runner: AgentRunner | None,
        *,
        resume: str | bool = False,
        event_buffer: int = 256,
        environ: Mapping[str, str] | None = None,
        resume_overrides: Iterable[str] | None = None,
    ) -> None:
        if event_buffer < 1:
            # The run sends RunStarted before ``open_run`` returns, so before anyone can read: with
            # no room for it, entering would wait forever.
            raise ConfigError(
                f"event_buffer must be at least 1 (got {event_buffer}): the run's first event "
                "has to fit in the buffer before the caller can read it"
            )
        self._runner = runner
        self._resume = resume
        self._resume_overrides = None if resume_overrides is None else frozenset(resume_overrides)
        self._overridden: tuple[str, ...] = ()
        self._sandbox: Sandbox | None = None
        self._sandbox_warning: str | None = None
        self._environ = dict(os.environ if environ is None else environ)
        self.config: RunConfig = config
        send, receive = anyio.create_memory_object_stream[Event](event_buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self.events: EventStream = EventStream(receive)
        """Every event of the run, in order; ends when the run ends."""
        self._events_open = True
        self._detached = False
        self._blocked_sends: set[anyio.CancelScope] = set()
        """One scope per task blocked in ``send`` right now (with ``jobs`` > 1 there are several)."""
        self._finished = anyio.Event()
        self._report: RunReport | None = None
        self._error: BaseException | None = None
        self.run_id: str | None = None

    async def wait(self) -> RunReport:
        """Wait for the run to end; its report (raises what stopped it, if it crashed)."""
        await self._finished.wait()
        if self._report is None:
            raise self._error or RuntimeError("the run ended without a report")
        return self._report

    def report(self) -> RunReport | None:
        """The report once the run has ended, else None."""
        return self._report

    # -- the event stream ---------------------------------------------------------------------------
    #
    # Every event goes two ways: to events.jsonl (always, synchronously, never blocked) and to
    # ``run.events``, a bounded memory stream read by the caller. The stream has three phases:
    #
    # 1. Attached (the ``open_run`` block is running): a full buffer makes the emitting task wait
    #    for the reader. That is back-pressure on purpose: a reader that falls behind slows the run
    #    down instead of losing events. Each waiting sender registers its own cancel scope in
    #    ``_blocked_sends`` (with ``jobs`` > 1 several story tasks can wait at once).
    # 2. Closed by the reader (``run.events.close()``): sending raises BrokenResourceError, and we
    #    stop sending at all (``_events_open``); the run goes on.
    # 3. Detached (the block was left, :meth:`_detach`): nobody can be reading any more, or not for
    #    long, so waiting would only hold the run back, and ``open_run.__aexit__`` waits for the run
    #    to end: waiting there for a reader who never comes is a deadlock. So detaching cancels
    #    every registered sender's scope (their events are dropped from the stream), and later
    #    events are only offered (``send_nowait``): what fits the buffer is kept for a late reader,
    #    the rest is dropped. events.jsonl still has every event.
    #
    # And one rule for cleanup: no shielded await may wait for a reader, since no cancellation
    # can end that wait. The final RunFinished of a run that ends by an exception is only offered.

    def _record(self, event: Event, files: RunFiles) -> Event:
        """Redact the event and append it to events.jsonl; returns the redacted event, which is what
        the stream gets too (redacted once, so the file and every reader see the same object)."""
        return files.write_event(event)

    def _offer(self, event: Event) -> None:
        """Put the event in the stream if there is room, else drop it (never waits)."""
        if not self._events_open:
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            pass  # dropped from the stream only; events.jsonl has it
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._events_open = False  # the reader closed its end: stop sending, keep running

    async def _publish(self, event: Event) -> None:
        """Hand the event to the reader, waiting for room while the ``open_run`` block runs.

        Cancellation: the wait ends when the caller's scope is cancelled (Cancelled propagates) or
        when the block is left (the event is dropped, no exception).
        """
        if not self._events_open:
            return
        if self._detached:
            self._offer(event)
            return
        # No await between the check above and registering the scope: _detach cannot slip in
        # between, so a sender is either registered before detaching or sees ``_detached``.
        # Why a scope of its own and not the caller's: detaching must end this one wait only,
        # never the story task that emits (its work goes on; the event just skips the stream).
        # A cancel of the scope is absorbed at the ``with``; a cancel from outside (the caller's
        # scope) passes through as usual.
        with anyio.CancelScope() as scope:
            self._blocked_sends.add(scope)
            try:
                await self._send.send(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._events_open = False  # the reader closed its end: stop sending, keep running
            finally:
                self._blocked_sends.discard(scope)

    async def _emit(self, event: Event, files: RunFiles) -> None:
        """Write the event (redacted) to events.jsonl, then hand it to ``events``' reader (see the
        comment above for when that waits)."""
        # The file first, synchronously: whatever then happens to the send (the reader is slow,
        # the block is left, the caller cancels us while we wait), events.jsonl has the event, in
        # the order the run produced it.
        await self._publish(self._record(event, files))

    def _detach(self) -> None:
        """The ``open_run`` block has ended: stop waiting for an event reader (never close it, a
        late reader may still drain what is buffered). Synchronous: safe from any cleanup."""
        # Set the flag before cancelling: a sender that checks it after this line offers instead
        # of waiting, and every sender registered before it is cancelled below. A copy of the set,
        # since a cancelled sender removes itself (later, when it runs again, but still).
        self._detached = True
        for scope in list(self._blocked_sends):
            scope.cancel(reason="the open_run block was left: the run no longer waits for a reader")

    async def _main(self, *, task_status: anyio.abc.TaskStatus[Run]) -> None:
        """Prepare (validation errors go to ``task_status``' caller), then run to the end."""
        try:
            await self._run(task_status)
        except BaseException as exc:
            self._error = exc  # for wait(): a crash is raised to whoever waits for the report
            raise
        finally:
            # Closing the send side ends the reader's ``async for`` once it has drained the
            # buffer; the Event wakes every wait(). Both synchronous: nothing here can hang.
            self._send.close()
            self._finished.set()

    async def _run(self, task_status: anyio.abc.TaskStatus[Run]) -> None:
        config = self.config
        redactor = Redactor.from_environ(self._environ)
        store: Store | None = None
        if self._resume is not False:
            if not state_db_path(config.project).is_file():
                raise StateError(f"no run to resume in {config.project}")
            store = await Store.open(config.project, redactor=redactor)
            try:
                run_id = await self._resume_target(store)
                row = await store.get_run(run_id)
                stored = config_from_json(row.config_json)
                # The stored run's settings; only what the caller named overrides them.
                config, self._overridden = resumed_config(stored, config, self._resume_overrides)
            except BaseException:
                await store.aclose()
                raise
        prepared = await anyio.to_thread.run_sync(prepare_run, config)
        if store is None and config.workspace == "worktrees":
            # Before anything is written: not a repository, no commit, a dirty checkout or a
            # detached HEAD is bad input (exit 2) that names the commands that fix it.
            await _git.check_repository(config.project, allow_dirty=config.allow_dirty)
        self._sandbox, self._sandbox_warning = await run_sandbox_for(config)
        lock = RunLock.for_project(config.project)
        try:
            lock.acquire()
        except BaseException:
            if store is not None:
                await store.aclose()
            raise
        try:
            if store is None:
                store = await Store.open(config.project, redactor=redactor)
            await self._execute(prepared, store, redactor, task_status)
        finally:
            # Cannot hang: closing waits only for the SQLite statement in flight, itself bounded
            # by the database's busy timeout.
            with anyio.CancelScope(shield=True):
                if store is not None:
                    await store.aclose()
            lock.release()

    async def _resume_target(self, store: Store) -> str:
        if isinstance(self._resume, str):
            await store.get_run(self._resume)  # StateError for an unknown id
            return self._resume
        latest = await store.latest_run_id()
        if latest is None:
            raise StateError(f"no run to resume in {self.config.project}")
        return latest

    async def _execute(
        self,
        prepared: PreparedRun,
        store: Store,
        redactor: Redactor,
        task_status: anyio.abc.TaskStatus[Run],
    ) -> None:
        config, layout, epic = prepared.config, prepared.layout, prepared.epic
        self.config = config
        resumed = self._resume is not False
        if resumed:
            run_id = await self._resume_target(store)
            await store.set_run_status(run_id, "running")
        else:
            run_id = await store.create_run(str(epic.path), config_to_json(config))
        self.run_id = run_id
        started = anyio.current_time()
        spent = await store.run_cost(run_id)
        files = RunFiles(config.project, run_id, redactor)
        # run.log gets this run's lines only: the records of this task and of every task it starts
        # (the run's whole tree) are marked with the run id; another run in the same process has
        # its own mark. This task is the run's own, made by open_run for it alone.
        mark_task_as_run(run_id)
        log_handle = files.attach_log()
        log = log_handle.logger
        runner, owned_runner = self._runner, False
        if runner is None:
            from .._agents._claude_runner import ClaudeAgentRunner

            runner, owned_runner = ClaudeAgentRunner(cli_path=config.cli_path), True

        async def emit(event: Event) -> None:
            await self._emit(event, files)

        jobs = effective_jobs(config, widest_level(prepared.stories))
        workspace: CheckoutWorkspace | GitWorkspace | None = None
        remote = None
        if config.engine == "dbos":
            from .._distributed import open_remote_cycles

            remote = open_remote_cycles(config, files)

        services = RunServices(
            config=config,
            layout=layout,
            epic=epic,
            runner=runner,
            store=store,
            files=files,
            run_id=run_id,
            emit=emit,
            budget=Budget(config.budget_usd, spent, jobs=jobs, stories=len(prepared.stories)),
            pause=PauseGate(emit),
            api_backoff_s=config.rate_limit_backoff,
            sandbox=self._sandbox,
            remote=remote,
        )
        status: RunStatus = "failed"
        reason: str | None = None
        stories: dict[str, StoryReport] = {}
        gates: list[GateReport] = []
        ended_normally = False  # False while an exception (a cancel included) ends the run
        final: Event | None = None
        finish: str | None = None
        try:
            # The stories first: a run cancelled while its workspace is made (a slow first
            # `git worktree add`) still has them to report, and `resume` finds them.
            for position, story in enumerate(prepared.stories):
                await store.upsert_story(
                    run_id, story.story_id, title=story.title, position=position, status="draft"
                )
            # Where the agents work: the run's git worktrees (made, or on resume found again and
            # made consistent after a crash), or the checkout itself.
            workspace = await open_workspace(
                config, layout, epic, run_id=run_id, run_dir=files.root, resumed=resumed
            )
            await emit(
                RunStarted(
                    run_id=run_id,
                    epic=str(epic.path),
                    project=str(config.project),
                    stories=tuple(s.story_id for s in prepared.stories),
                    budget_usd=config.budget_usd,
                    resumed=resumed,
                    warnings=(self._sandbox_warning,) if self._sandbox_warning else (),
                )
            )
            if self._sandbox_warning:
                log.warning("%s", self._sandbox_warning)
            task_status.started(self)
            log.info("run %s started: %d stories", run_id, len(prepared.stories))
            if resumed:
                overridden = ", ".join(self._overridden) or "nothing"
                log.info("resumed with the stored settings; overridden: %s", overridden)
            try:
                await _schedule(services, workspace, jobs, prepared.stories, stories, gates)
                all_done = all(r.status == StoryStatus.DONE.value for r in stories.values())
                if config.skip_gates or not config.gates:
                    pass
                elif all_done:
                    # On the merged result: every story has landed, the lane has ended.
                    merged = _at(services, workspace.integration_layout)
                    _keep_last(gates, await run_quality_gates(merged, config.gates))
                    await workspace.commit_integration("quality gates: the fixers' changes")
                else:  # a gate that ran after a story keeps that (its last) result
                    ran = {g.name for g in gates}
                    gates += [
                        GateReport(
                            name=g.name,
                            passed=False,
                            attempts=0,
                            skipped=True,
                            detail="skipped: not every story is done",
                        )
                        for g in config.gates
                        if g.name not in ran
                    ]
                failed = [r for r in stories.values() if r.status != StoryStatus.DONE.value]
                failed_gates = [g for g in gates if not g.passed and not g.skipped]
                if failed:
                    reason = f"{len(failed)} story(ies) not done: " + ", ".join(
                        f"{r.story_id} {r.status}" for r in failed
                    )
                elif failed_gates:
                    reason = "gate(s) failed: " + ", ".join(g.name for g in failed_gates)
                else:
                    status = "done"
                finish = await _finish(workspace, status)
            except RunAbort as exc:
                reason = str(exc)
            ended_normally = True
        except BaseException as exc:
            error = collapse(exc)  # a group from the story tasks: its most severe BmadError
            if isinstance(error, anyio.get_cancelled_exc_class()):
                status, reason = "interrupted", "interrupted; `bmad-trio resume` continues"
            elif isinstance(error, BmadError):
                reason = str(error)
            else:
                reason = f"internal error: {error!r}"
            raise
        finally:
            # Shielded, so an interrupted run is still recorded as such. It cannot hang: the store
            # calls are single SQLite statements bounded by the database's busy timeout, closing
            # our runner kills its processes without waiting for them, and RunFinished is only
            # offered to the stream here, never awaited (no reader can hold up this block).
            with anyio.CancelScope(shield=True):
                try:
                    cost = await store.run_cost(run_id)
                    duration = anyio.current_time() - started
                    branch = None if workspace is None else workspace.branch
                    await store.set_run_status(run_id, status, reason)
                    story_reports = [
                        stories.get(s.story_id) or await _recorded_report(store, run_id, s)
                        for s in prepared.stories
                    ]
                    report = RunReport(
                        run_id=run_id,
                        status=status,
                        stories=tuple(story_reports),
                        gates=tuple(gates),
                        cost_usd=cost,
                        duration_s=duration,
                        failure_reason=reason,
                        branch=branch,
                        finish=finish,
                    )
                    self._report = report
                    final = self._record(
                        RunFinished(
                            status=status,
                            cost_usd=cost,
                            duration_s=duration,
                            reason=reason,
                            branch=branch,
                            finish=finish,
                        ),
                        files,
                    )
                    if not ended_normally:
                        # An exception is on its way out: no waiting for a reader.
                        self._offer(final)
                    log.info("run %s %s: $%.4f, %.1f s", run_id, status, cost, duration)
                finally:  # whatever the store said, the run's files and processes go
                    if owned_runner:
                        await runner.aclose()
                    if remote is not None:
                        await remote.aclose()
                    if workspace is not None:
                        workspace.close()
                    log_handle.detach()
                    files.close()
        # A normal end: RunFinished waits for room like every other event, so a reader that is
        # behind still gets it (after the shielded block: a cancel or detach can end this wait).
        assert final is not None
        await self._publish(final)


async def _report_from_store(store: Store, run_id: str, story: EpicStory) -> StoryReport:
    return story_report(await store.get_story(run_id, story.story_id), story.title)


async def _recorded_report(store: Store, run_id: str, story: EpicStory) -> StoryReport:
    """The story's report for the run's end: as stored, or an untouched draft when the run ended
    before it recorded its stories (cancelled while writing them)."""
    try:
        return await _report_from_store(store, run_id, story)
    except StateError:
        return StoryReport(
            story_id=story.story_id, title=story.title, status="draft", cycles=0, cost_usd=0.0,
            duration_s=0.0,
        )  # fmt: skip


def _at(services: RunServices, layout: Layout, epic: Epic | None = None) -> RunServices:
    """The run's services working in another tree (a story's worktree, the integration worktree):
    same budget, store, pause and locks; sessions start there and write only there."""
    return attrs.evolve(services, layout=layout, epic=epic or services.epic)


async def _finish(workspace: CheckoutWorkspace | GitWorkspace, status: str) -> str | None:
    """Hand the run's branch over (git workspaces): as ``finish`` says when every story is done,
    else leave it and say how to merge what landed."""
    if not isinstance(workspace, GitWorkspace):
        return None
    branch = workspace.integration.branch
    if status != "done":
        return (
            f"the run's branch {branch} keeps the stories that landed; "
            f"merge it when you are ready: git merge --ff-only {branch}"
        )
    result = await workspace.finish()
    return result.message


async def _schedule(
    services: RunServices,
    workspace: CheckoutWorkspace | GitWorkspace,
    jobs: int,
    stories: tuple[EpicStory, ...],
    reports: dict[str, StoryReport],
    gates: list[GateReport],
) -> None:
    """Run every story: at most ``jobs`` at once, each after the selected stories it depends on.

    Stories start in :func:`run_order` (dependencies first, epic order otherwise), so with
    ``jobs=1`` the run takes exactly the order ``plan`` shows. A story whose dependency did not end
    done is blocked; a failed story stops the others only with ``stop_on_failure``. RunAbort
    (budget, refused credentials) stops every story. With ``gates_after_each_story`` the quality
    gates run after each story that ends done. Cancellation cancels every story task.
    """
    config = services.config
    selected = {s.story_id for s in stories}
    # The scheduler is one loop, in this task: look at the state, start or block every story it
    # can, then sleep until some story's state changes, and look again. Story tasks only report
    # back (``ended``, ``running``, ``changed``); they never wait for each other. So nothing can
    # wait in a circle: a story that waits for a dependency is simply not started yet, and holds
    # no slot. (An earlier design gave every story a task at once, waiting for its dependencies
    # and then for "its turn" after the story before it in epic order: a story depending on a
    # *later* story waited for that story, which waited for its turn after it. Deadlock.)
    pending = list(run_order(stories))  # not started yet, in the order they may start
    ended: set[str] = set()  # reached an end state: done, failed or blocked (gates included)
    running = 0  # stories holding one of the ``jobs`` slots (their agent work is under way)
    in_flight = 0  # story tasks started, not ended (a task runs its gates after its slot)
    # Why an Event and not a condition or a channel: the scheduler needs only "something changed,
    # look again", never what changed (it re-reads ``ended``/``running``). An anyio Event cannot be
    # cleared, so each wake() sets the current one and arms a new one; a wake while the scheduler
    # is busy scanning is not lost, since the scan already sees the new state.
    changed = anyio.Event()  # set when a story task's state changes, then replaced
    # RunAbort is collected, not raised from the story task: raising it would make the task group
    # wrap it in an ExceptionGroup together with the Cancelled of every sibling we stop.
    abort: list[RunAbort] = []

    def wake() -> None:
        nonlocal changed
        changed.set()  # wakes the scheduler if it sleeps on this one ...
        changed = anyio.Event()  # ... and arms a fresh one for its next sleep

    def dependencies(story: EpicStory) -> list[str]:
        # Only selected stories are waited for. One not selected, or of another epic, is read
        # from disk once, below: finished counts as met, anything else blocks (as `plan` says).
        return [d for d in story.dependencies if d in selected and d != story.story_id]

    def unmet_outside() -> dict[str, list[str]]:
        layout = services.layout
        listings: dict[Path, list[Path]] = {}
        outside = {d for s in stories for d in s.dependencies if d not in selected}
        met = {d: cross_epic_dependency_met(layout, d, listings=listings) for d in outside}
        return {
            s.story_id: [d for d in s.dependencies if d in outside and not met[d]] for s in stories
        }

    outside_blockers = await anyio.to_thread.run_sync(unmet_outside)

    async def run_story(story: EpicStory, tg: anyio.abc.TaskGroup) -> None:
        # One task per started story, in the scheduler's task group ``tg``. Cancelling ``tg``
        # (stop_on_failure, RunAbort, or the caller's cancel from above) cancels every story
        # task; each still runs its ``finally`` blocks, so the counters and ``ended`` stay true
        # and the store keeps the phase that was in flight (``resume`` re-runs just that).
        nonlocal running, in_flight
        try:
            try:
                row = await services.store.get_story(services.run_id, story.story_id)
                try:
                    place = await workspace.open_story(story)
                    mine = _at(services, place.layout, place.epic)
                    await services.emit(
                        StoryStarted(
                            story_id=story.story_id,
                            title=story.title,
                            status=row.status,
                            branch=place.branch,
                        )
                    )
                    if services.remote is not None:  # on a worker, through the engine
                        report = await services.remote.run_cycle(mine, story, place)
                    else:
                        cycle = StoryCycle(
                            mine, story, cycles=row.cycles, workspace=workspace, place=place
                        )
                        report = await cycle.run()
                    if report.status == "done" and isinstance(workspace, GitWorkspace):
                        # Its dependents start only once it has landed: from the merged tip.
                        report = await land_done_story(mine, workspace, place, story, report)
                except GitError as exc:
                    # git could not do this story's part (its worktree, a phase commit): the
                    # story fails alone, its work kept where git left it; the others go on.
                    report = await _failed(services, story, f"git: {exc}")
            finally:
                running -= 1  # the agent work is over: the slot may go to the next story now
                wake()
            # From here on the story holds no slot, only its place in ``in_flight``: its quality
            # gates (with gates_after_each_story) run while the next story's agent work starts.
            reports[story.story_id] = report
            await services.emit(story_finished(report))
            if (
                report.status == "done"
                and config.gates_after_each_story
                and not config.skip_gates
                and not isinstance(workspace, GitWorkspace)  # there the lane runs them: verify()
            ):
                async with workspace.integration_lock:
                    merged = _at(services, workspace.integration_layout)
                    _keep_last(gates, await run_quality_gates(merged, config.gates or ()))
                    await workspace.commit_integration(
                        f"quality gates after {story.story_id}: the fixers' changes"
                    )
            if report.status != "done" and config.stop_on_failure:
                reason = f"story {story.story_id} {report.status}: {report.failure_reason}"
                abort.append(RunAbort(reason))
                # Cancels the other story tasks, and this one at its next checkpoint (the
                # ``finally`` below has none before its wake()).
                tg.cancel_scope.cancel(reason=f"stop_on_failure: {reason}")
        except RunAbort as exc:
            # Budget spent or credentials refused: no story may start another session.
            abort.append(exc)
            tg.cancel_scope.cancel(reason=f"the run is stopping: {exc}")
        finally:
            services.budget.story_ended()
            # Dependents are decided only now, after this story's gates: they build on its result.
            in_flight -= 1
            ended.add(story.story_id)
            wake()

    # The scheduler's own scope: the loop below runs in the body of ``tg``, so leaving the loop
    # (nothing pending) then waits at the end of the ``async with`` for every story task still in
    # flight. A cancel of ``tg`` from a story task also cancels the loop's ``changed.wait()``,
    # and the loop ends by Cancelled (absorbed by ``tg``'s own scope, since ``tg`` was cancelled).
    async def verify(story: EpicStory) -> str | None:
        # The merge lane calls this after landing ``story``, still holding the run's branch:
        # the quality gates (and their fixers) on the merged result decide whether it stays.
        merged = _at(services, workspace.integration_layout)
        try:
            results = await run_quality_gates(merged, config.gates or ())
        except RunAbort as exc:  # budget spent in a fixer: the run stops, as in a story's task
            abort.append(exc)
            tg.cancel_scope.cancel(reason=f"the run is stopping: {exc}")
            return f"the run stopped: {exc}"
        _keep_last(gates, results)
        await workspace.commit_integration(
            f"quality gates after {story.story_id}: the fixers' changes"
        )
        failed = [g for g in results if not g.passed and not g.skipped]
        if not failed:
            return None
        return "quality gate(s) failed on the merged result: " + "; ".join(
            f"{g.name}: {g.detail}" for g in failed
        )

    async with anyio.create_task_group() as tg:
        if isinstance(workspace, GitWorkspace):
            if config.gates_after_each_story and not config.skip_gates and config.gates:
                workspace.verify = verify
            # The merge lane: the one task that writes the run's branch. It ends once the last
            # story has landed and close_lane() below has closed its queue.
            tg.start_soon(workspace.serve_lane, services.emit, name="merge lane")
        while pending:
            progressed = False
            for story in list(pending):
                deps = dependencies(story)
                if not all(d in ended for d in deps):
                    continue  # a dependency is still pending or running: not yet
                blockers = [d for d in deps if d not in reports or reports[d].status != "done"]
                blockers += [
                    f"{d} (not in this run, not done)" for d in outside_blockers[story.story_id]
                ]
                if blockers:
                    # Decided at once and needs no slot: blocked stories do no agent work.
                    pending.remove(story)
                    reports[story.story_id] = await _blocked(services, story, blockers)
                    ended.add(story.story_id)
                    progressed = True
                    break  # that awaited: the state may have moved on, scan again from the start
                if running < jobs:
                    # The first ready story in run order gets the free slot.
                    pending.remove(story)
                    running += 1
                    in_flight += 1
                    tg.start_soon(run_story, story, tg, name=f"story {story.story_id}")
                    progressed = True
            if progressed or not pending:
                continue  # look again: a story just blocked may block others in turn
            # Nothing could start. Something must be in flight, or we would wait forever: the
            # earliest pending story in run order has every dependency ended or in flight (they
            # all come before it), and with nothing in flight it would have been startable.
            assert in_flight, f"scheduler stuck with {[s.story_id for s in pending]} pending"
            # Sleep until a story task calls wake(). No lost wake-up: wake() replaces ``changed``
            # only after setting it, and we took the current one just now, with no await since
            # the scan that found nothing to do.
            await changed.wait()
        # Every story has started or been blocked; the lane must outlive the last landing, and
        # only then may its queue close (else the task group would wait on the lane forever).
        while in_flight:
            await changed.wait()
        workspace.close_lane()
    # Every story task has ended here (the task group waited for them). With several aborts
    # (two stories hit the budget at once) the first one is the run's reason.
    if abort:
        raise abort[0]


def _keep_last(gates: list[GateReport], results: list[GateReport]) -> None:
    """Record gate results; a gate that ran before keeps only its latest result (its place stays)."""
    for result in results:
        index = next((i for i, g in enumerate(gates) if g.name == result.name), None)
        if index is None:
            gates.append(result)
        else:
            gates[index] = result


async def _failed(services: RunServices, story: EpicStory, reason: str) -> StoryReport:
    await services.store.update_story(
        services.run_id, story.story_id, status="failed", phase=None, failure_reason=reason
    )
    return await _report_from_store(services.store, services.run_id, story)


async def _blocked(services: RunServices, story: EpicStory, blockers: list[str]) -> StoryReport:
    reason = "blocked by " + ", ".join(blockers)
    await services.store.update_story(
        services.run_id, story.story_id, status="blocked", failure_reason=reason
    )
    report = await _report_from_store(services.store, services.run_id, story)
    await services.emit(story_finished(report))
    return report


class open_run:
    """``async with open_run(config) as run:`` starts a run in a task group this object owns.

    Entering returns once the run is under way (validation errors, a held lock or a bad store raise
    here, before anything is written). Leaving the block waits for the run to end; an exception in
    the block cancels it. Cancelling the caller's scope stops the run cleanly and leaves resumable
    state. ``resume`` continues the latest run (True) or the given run id. ``event_buffer`` (at
    least 1, else ConfigError here) bounds ``run.events``; once the block is left the run never
    waits for its reader. ``environ``'s secrets are redacted from everything the run writes and
    from the events it streams.
    A resumed run uses that run's stored settings: only the fields of ``config`` named in
    ``resume_overrides`` replace them (None: the fields of ``config`` that differ from RunConfig's
    defaults); ``config.project`` says where.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        runner: AgentRunner | None = None,
        resume: str | bool = False,
        event_buffer: int = 256,
        environ: Mapping[str, str] | None = None,
        resume_overrides: Iterable[str] | None = None,
    ) -> None:
        self._run = Run(
            config,
            runner,
            resume=resume,
            event_buffer=event_buffer,
            environ=environ,
            resume_overrides=resume_overrides,
        )
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Run:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await tg.start(self._run._main)  # pyright: ignore[reportPrivateUsage]
        except BaseException as exc:
            # The run did not get under way (bad input, held lock) or we were cancelled while it
            # was starting: stop whatever part of it runs, and close the stream nobody will read,
            # so a sender blocked on it fails at once instead of waiting.
            tg.cancel_scope.cancel(reason=f"open_run could not start the run: {exc!r}")
            self._run.events.close()
            try:
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseException as group:
                raise collapse(group) from None
            raise collapse(exc) from None
        return self._run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        if exc is not None:
            tg.cancel_scope.cancel(reason=f"the open_run block raised {exc!r}")
        # From here on nobody reads the events (the block is over), yet the run may go on for
        # long: detach, so it never waits for a reader while we wait for it to end.
        self._run._detach()  # pyright: ignore[reportPrivateUsage]
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        except BaseException as group:
            raise collapse(group) from None


async def run_epic(
    config: RunConfig,
    *,
    runner: AgentRunner | None = None,
    resume: str | bool = False,
    resume_overrides: Iterable[str] | None = None,
) -> RunReport:
    """Run the epic to its end and return the report (events are written to events.jsonl only).

    Cancelling the caller's scope stops the run cleanly, leaves resumable state, and re-raises.
    ``resume`` and ``resume_overrides`` as for :class:`open_run`.
    """
    async with open_run(
        config, runner=runner, resume=resume, resume_overrides=resume_overrides
    ) as run:
        run.events.close()
        return await run.wait()


async def serve_run(
    config: RunConfig,
    *,
    runner: AgentRunner | None = None,
    resume: str | bool = False,
    task_status: anyio.abc.TaskStatus[Run] = anyio.TASK_STATUS_IGNORED,
    resume_overrides: Iterable[str] | None = None,
) -> RunReport:
    """For ``await nursery.start(serve_run, config)``: ``task_status.started(run)`` once the run is
    under way; returns the report when it ends. Read ``run.events`` or close it."""
    async with open_run(
        config, runner=runner, resume=resume, resume_overrides=resume_overrides
    ) as run:
        task_status.started(run)
        return await run.wait()
