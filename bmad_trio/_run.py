"""A run: the task-group tree from epic to quality gates, and its public entry points.

::

    open_run / serve_run / run_epic            (caller's task)
    └── run task group                         Run._main: prepare, schedule, gates, finish
        └── story task (one per story)         CapacityLimiter(jobs) + dependency edges
            └── session task group             RunServices.run_session: agent + transcript relay

Cancelling the caller's scope cancels the whole tree: sessions are killed, the store keeps the
phase that was in flight (so ``resume`` re-runs just that), the run is marked ``interrupted`` and
``events.jsonl`` gets a final RunFinished. No async generator here holds a task group or cancel
scope: :class:`open_run` is a plain class with ``__aenter__``/``__aexit__``.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import cattrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._agent import AgentRunner
from ._bmad import Epic, EpicStory, Layout, StoryStatus, detect_layout, find_epic, parse_epic
from ._config import RunConfig, resumed_config
from ._converter import make_converter
from ._errors import BmadError, ConfigError, StateError, collapse
from ._events import Event, RunFinished, RunStarted, StoryFinished, StoryStarted
from ._gate_phase import run_quality_gates
from ._lock import RunLock
from ._redact import Redactor
from ._runfiles import RunFiles
from ._services import Budget, GateReport, PauseGate, RunAbort, RunServices, StoryReport
from ._store import Store, state_db_path
from ._story_cycle import StoryCycle

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

log = logging.getLogger("bmad_trio.run")

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

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def exit_code(self) -> int:
        """0 done, 1 a story or gate failed, 130 interrupted (CONTRACT.md)."""
        return {"done": 0, "failed": 1, "interrupted": 130}[self.status]


def config_to_json(config: RunConfig) -> str:
    """The run's config as JSON for the store (so ``resume`` runs with the same settings)."""
    converter = make_converter()
    data: dict[str, Any] = converter.unstructure(config)
    return json.dumps(data, default=str)


def config_from_json(text: str, **overrides: object) -> RunConfig:
    """Rebuild a stored config; ``overrides`` (non-None values) win."""
    converter = make_converter()
    try:
        data: dict[str, Any] = json.loads(text)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return converter.structure(data, RunConfig)
    except (ValueError, cattrs.BaseValidationError) as exc:
        raise StateError(f"the stored configuration of this run is unreadable: {exc}") from None


@attrs.define
class _Prepared:
    config: RunConfig
    layout: Layout
    epic: Epic
    stories: tuple[EpicStory, ...]


def prepare_run(config: RunConfig) -> _Prepared:
    """Validate everything before anything is written (bad input → ConfigError/ProjectError)."""
    layout = detect_layout(
        config.project,
        story_location=config.story_location,
        epic_location=config.epic_location,
        qa_location=config.qa_location,
    )
    epic_arg = config.epic
    if epic_arg is None and config.epic_number is None:
        raise ConfigError("no epic given: pass an epic file or an epic number")
    epic_path = (
        None
        if epic_arg is None
        else (epic_arg if epic_arg.is_absolute() else config.project / epic_arg)
    )
    if epic_path is not None and epic_path.is_file():
        epic = parse_epic(epic_path, number=config.epic_number)
    elif epic_arg is None or epic_arg.name.isdigit():
        number = config.epic_number if epic_arg is None else int(epic_arg.name)
        epic = find_epic(layout, number)
    else:
        raise ConfigError(f"{epic_arg}: epic file not found")
    stories = epic.stories
    if config.stories:
        known = {s.story_id for s in epic.stories}
        unknown = [s for s in config.stories if s not in known]
        if unknown:
            raise ConfigError(f"--story {unknown[0]}: no such story in {epic.path.name}")
        stories = tuple(s for s in epic.stories if s.story_id in config.stories)
    return _Prepared(config, layout, epic, stories)


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
        self._runner = runner
        self._resume = resume
        self._resume_overrides = None if resume_overrides is None else frozenset(resume_overrides)
        self._overridden: tuple[str, ...] = ()
        self._environ = dict(os.environ if environ is None else environ)
        self.config: RunConfig = config
        send, receive = anyio.create_memory_object_stream[Event](event_buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self.events: EventStream = EventStream(receive)
        """Every event of the run, in order; ends when the run ends."""
        self._events_open = True
        self._detached = False
        self._blocked_send: anyio.CancelScope | None = None
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

    async def _emit(self, event: Event, files: RunFiles | None) -> None:
        """Write the event to events.jsonl, then hand it to ``events``' reader.

        While the ``open_run`` block runs, a full buffer holds the run back (backpressure). Once
        the block is left (:meth:`_detach`), nobody may be reading any more: events that do not fit
        are dropped from the stream (events.jsonl still has them), so the run never blocks on them.
        """
        if files is not None:
            files.write_event(event)
        if not self._events_open:
            return
        try:
            if self._detached:
                self._send.send_nowait(event)
                return
            with anyio.CancelScope() as scope:
                self._blocked_send = scope
                await self._send.send(event)
            self._blocked_send = None
        except anyio.WouldBlock:
            pass
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._events_open = False  # the consumer closed its end: keep running

    def _detach(self) -> None:
        """The ``open_run`` block has ended: stop waiting for an event reader (never close it)."""
        self._detached = True
        if self._blocked_send is not None:
            self._blocked_send.cancel()

    async def _main(self, *, task_status: anyio.abc.TaskStatus[Run]) -> None:
        """Prepare (validation errors go to ``task_status``' caller), then run to the end."""
        try:
            await self._run(task_status)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
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
        prepared: _Prepared,
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
        log_handle = files.attach_log()
        runner, owned_runner = self._runner, False
        if runner is None:
            from ._claude_runner import ClaudeAgentRunner

            runner, owned_runner = ClaudeAgentRunner(cli_path=config.cli_path), True

        async def emit(event: Event) -> None:
            await self._emit(event, files)

        services = RunServices(
            config=config,
            layout=layout,
            epic=epic,
            runner=runner,
            store=store,
            files=files,
            run_id=run_id,
            emit=emit,
            budget=Budget(
                config.budget_usd, spent, jobs=config.jobs, stories=len(prepared.stories)
            ),
            pause=PauseGate(emit),
            api_backoff_s=config.rate_limit_backoff,
        )
        status: RunStatus = "failed"
        reason: str | None = None
        stories: dict[str, StoryReport] = {}
        gates: list[GateReport] = []
        try:
            for position, story in enumerate(prepared.stories):
                await store.upsert_story(
                    run_id, story.story_id, title=story.title, position=position, status="draft"
                )
            await emit(
                RunStarted(
                    run_id=run_id,
                    epic=str(epic.path),
                    project=str(config.project),
                    stories=tuple(s.story_id for s in prepared.stories),
                    budget_usd=config.budget_usd,
                    resumed=resumed,
                )
            )
            task_status.started(self)
            log.info("run %s started: %d stories", run_id, len(prepared.stories))
            if resumed:
                overridden = ", ".join(self._overridden) or "nothing"
                log.info("resumed with the stored settings; overridden: %s", overridden)
            try:
                await _schedule(services, prepared.stories, stories, gates)
                all_done = all(r.status == StoryStatus.DONE.value for r in stories.values())
                if config.skip_gates or not config.gates:
                    pass
                elif all_done:
                    _keep_last(gates, await run_quality_gates(services, config.gates))
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
            except RunAbort as exc:
                reason = str(exc)
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
            with anyio.CancelScope(shield=True):
                cost = await store.run_cost(run_id)
                duration = anyio.current_time() - started
                await store.set_run_status(run_id, status, reason)
                story_reports = [
                    stories.get(s.story_id) or await _report_from_store(store, run_id, s)
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
                )
                self._report = report
                await emit(
                    RunFinished(status=status, cost_usd=cost, duration_s=duration, reason=reason)
                )
                log.info("run %s %s: $%.4f, %.1f s", run_id, status, cost, duration)
                if owned_runner:
                    aclose = getattr(runner, "aclose", None)
                    if aclose is not None:
                        await aclose()
                log_handle.detach()
                files.close()


async def _report_from_store(store: Store, run_id: str, story: EpicStory) -> StoryReport:
    row = await store.get_story(run_id, story.story_id)
    return StoryReport(
        story_id=story.story_id,
        title=story.title,
        status=row.status,
        cycles=row.cycles,
        cost_usd=row.cost_usd,
        duration_s=row.duration_s,
        failure_reason=row.failure_reason,
    )


async def _schedule(
    services: RunServices,
    stories: tuple[EpicStory, ...],
    reports: dict[str, StoryReport],
    gates: list[GateReport],
) -> None:
    """Run every story: at most ``jobs`` at once, in epic order, each after its dependencies.

    A story whose dependency did not finish done is blocked; a failed story stops the others only
    with ``stop_on_failure``. RunAbort (budget, refused credentials) stops every story. With
    ``gates_after_each_story`` the quality gates run after each story that ends done.
    """
    config = services.config
    limiter = anyio.CapacityLimiter(config.jobs)
    finished = {s.story_id: anyio.Event() for s in stories}
    turn = [anyio.Event() for _ in stories]  # story i may queue for the limiter after story i-1
    selected = set(finished)
    abort: list[RunAbort] = []

    async def one(index: int, story: EpicStory, tg: anyio.abc.TaskGroup) -> None:
        try:
            for dep in story.dependencies:
                if dep in finished:
                    await finished[dep].wait()
            blockers = [
                d
                for d in story.dependencies
                if d in selected and (reports.get(d) is None or reports[d].status != "done")
            ]
            if index:
                await turn[index - 1].wait()
            if blockers:
                turn[index].set()
                reports[story.story_id] = await _blocked(services, story, blockers)
                return
            async with limiter:
                turn[index].set()
                row = await services.store.get_story(services.run_id, story.story_id)
                await services.emit(
                    StoryStarted(story_id=story.story_id, title=story.title, status=row.status)
                )
                report = await StoryCycle(services, story, cycles=row.cycles).run()
            reports[story.story_id] = report
            await services.emit(_story_finished(report))
            if report.status == "done" and config.gates_after_each_story and not config.skip_gates:
                _keep_last(gates, await run_quality_gates(services, config.gates))
            if report.status != "done" and config.stop_on_failure:
                abort.append(
                    RunAbort(f"story {story.story_id} {report.status}: {report.failure_reason}")
                )
                tg.cancel_scope.cancel()
        except RunAbort as exc:
            abort.append(exc)
            tg.cancel_scope.cancel()
        finally:
            services.budget.story_ended()
            turn[index].set()
            finished[story.story_id].set()

    async with anyio.create_task_group() as tg:
        for index, story in enumerate(stories):
            tg.start_soon(one, index, story, tg)
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


async def _blocked(services: RunServices, story: EpicStory, blockers: list[str]) -> StoryReport:
    reason = "blocked by " + ", ".join(blockers)
    await services.store.update_story(
        services.run_id, story.story_id, status="blocked", failure_reason=reason
    )
    report = await _report_from_store(services.store, services.run_id, story)
    await services.emit(_story_finished(report))
    return report


def _story_finished(report: StoryReport) -> StoryFinished:
    return StoryFinished(
        story_id=report.story_id,
        status=report.status,
        cycles=report.cycles,
        cost_usd=report.cost_usd,
        duration_s=report.duration_s,
        failure_reason=report.failure_reason,
    )


class open_run:
    """``async with open_run(config) as run:`` starts a run in a task group this object owns.

    Entering returns once the run is under way (validation errors, a held lock or a bad store raise
    here, before anything is written). Leaving the block waits for the run to end; an exception in
    the block cancels it. Cancelling the caller's scope stops the run cleanly and leaves resumable
    state. ``resume`` continues the latest run (True) or the given run id, with that run's stored
    settings: only the fields of ``config`` named in ``resume_overrides`` replace them (None: the
    fields of ``config`` that differ from RunConfig's defaults); ``config.project`` says where.
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
            tg.cancel_scope.cancel()
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
            tg.cancel_scope.cancel()
        self._run._detach()  # pyright: ignore[reportPrivateUsage] - the run must not block on events
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
