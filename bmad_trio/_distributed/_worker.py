"""``bmad-trio worker``: take story cycles from the engine's queue and run them, phase by phase.

A story cycle is the DBOS workflow ``bmad_trio.story_cycle``; each of its steps runs one phase
(one agent session and the code's decision after it) in the worker's own clone of the shared
repository, commits it and pushes it to the story's branch with ``--force-with-lease``. A step's
output is the cycle's counts (:class:`CycleProgress`), checkpointed by DBOS. So when a worker
dies mid-phase, another worker takes the workflow up again (see ``_heartbeat``): the finished
steps are not run again, and the step in flight starts over from the last pushed phase commit.
What runs next is decided from the story file on the branch, as on one machine.

Threads: DBOS runs each workflow in a thread of its own; a step calls into this worker's event
loop (trio or asyncio) through an anyio blocking portal, so the sessions, git and the store run
on the loop like everywhere else. Cancellation (Ctrl-C, the embedding app's cancel): the phases
in flight are cancelled (their sessions killed, nothing pushed), their workflows stay PENDING in
the database, and this worker's heartbeat is expired so that a live worker re-enqueues them at
once. DBOS is process-global: one worker per process.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.from_thread import BlockingPortal
from dbos import DBOS, DBOSConfig

from .. import _git
from .._agents._runner import AgentRunner
from .._bmad import EpicStory
from .._config import RunConfig
from .._converter import event_to_json, make_converter
from .._errors import ConfigError, GitError, RunAbort, StateError
from .._events import Event, StoryMoved
from .._state._paths import safe_name
from .._state._redact import Redactor
from .._state._run_files import RunFiles
from .._state._store import Store
from .._workflow._prepare import PreparedRun, config_from_json, prepare_run, run_sandbox_for
from .._workflow._run_services import RunServices
from .._workflow._story_cycle import CycleProgress, StoryCycle
from .._workflow._workspace import StoryPlace, phase_trailers
from ._engine import APP_VERSION, QUEUE_NAME, WORKFLOW_NAME
from ._run_limits import SharedBudget, SharedPauseGate
from ._shared import DATABASE_ERRORS, SharedState, call_retrying

__all__ = ["WorkerSettings", "serve_worker"]

log = logging.getLogger("bmad_trio.worker")

_APP_NAME = "bmad-trio"
_HANDED_OVER = "handed its stories over"


class WorkerStopping(BaseException):
    """Raised in a DBOS step when the worker is stopping. A BaseException on purpose: DBOS
    records an ``Exception`` as the workflow's error, but lets this one through without
    recording anything, so the workflow stays PENDING and another worker takes it up."""


class LeaseLost(GitError):
    """Someone else pushed the story's branch while this phase ran: the same story cycle ran
    twice at once (a worker declared dead was only slow, and its cycle was re-enqueued). The
    phase's work here is dropped; the branch keeps the other's, and the cycle goes on from it."""


class RemoteUnreachable(GitError):
    """This worker cannot fetch from or push to the shared remote: it hands its stories over to
    the other workers and stops (see ``_hand_over``)."""


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """How a worker runs (``bmad-trio worker``'s options)."""

    database: str
    """The engine's database (``postgresql://…``), the coordinator's ``--database``."""
    repo: str
    """The shared repository to clone, fetch story branches from and push them to."""
    workdir: Path
    """The worker's own folder: its clone, its store, transcripts and logs."""
    jobs: int = 2
    """Story cycles this worker runs at once (DBOS's ``worker_concurrency`` of the queue)."""
    name: str | None = None
    """This worker's executor id (default: host, pid and a random part). A worker restarted under
    the same name takes up its own unfinished cycles at once."""
    heartbeat_s: float = 2.0
    dead_after_s: float = 10.0
    """A worker silent this long is dead: a live one re-enqueues its story cycles."""
    poll_s: float = 0.5
    """How often the queue is polled for a story cycle to take."""
    cli_path: Path | None = None


async def serve_worker(
    settings: WorkerSettings,
    *,
    runner: AgentRunner | None = None,
    environ: dict[str, str] | None = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve story cycles until cancelled; ``task_status.started`` gets the executor id once the
    worker takes work. Cancellation: see the module docstring."""
    await _Worker(settings, runner, environ).serve(task_status)


class _Worker:
    def __init__(
        self, settings: WorkerSettings, runner: AgentRunner | None, environ: dict[str, str] | None
    ) -> None:
        self.settings = settings
        self.executor_id = (
            settings.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.clone = settings.workdir / "repo"
        self._runner = runner
        self._environ = environ
        self._portal: BlockingPortal | None = None
        self._stopping = False
        self._shared = SharedState(settings.database)
        self._store: Store | None = None
        self._redactor = Redactor.from_environ(environ)
        self._converter = make_converter()
        self._serving: anyio.CancelScope | None = None
        self._lost_remote: str | None = None
        """Why this worker stopped on its own (it cannot reach the remote), or None."""
        self._tree_lock = anyio.Lock()
        """git writes the clone's shared records (worktrees, config) one command at a time."""

    async def serve(self, task_status: anyio.abc.TaskStatus[str]) -> None:
        settings = self.settings
        await anyio.Path(settings.workdir).mkdir(parents=True, exist_ok=True)
        await self._ensure_clone()
        await call_retrying(self._shared.create, log, "bmad-trio's tables")
        owned_runner = self._runner is None
        if self._runner is None:
            from .._agents._claude_runner import ClaudeAgentRunner

            self._runner = ClaudeAgentRunner(cli_path=settings.cli_path)
        launched = False
        try:
            self._store = await Store.open(settings.workdir, redactor=self._redactor)
            async with BlockingPortal() as portal:
                self._portal = portal
                try:
                    async with anyio.create_task_group() as tg:
                        self._serving = tg.cancel_scope
                        launched = True  # set first: a cancel while DBOS launches still ends it
                        await anyio.to_thread.run_sync(self._launch)
                        await anyio.to_thread.run_sync(self._beat, True)
                        tg.start_soon(self._heartbeat, name="heartbeat")
                        log.info(
                            "worker %s serving %s (jobs %d)",
                            *(self.executor_id, QUEUE_NAME, settings.jobs),
                        )
                        task_status.started(self.executor_id)
                        await anyio.sleep_forever()
                finally:
                    # Before the portal's exit cancels the phases in flight: their steps must
                    # see the worker stopping, and raise WorkerStopping (their workflows stay
                    # pending) rather than the cancellation (DBOS would record it as a failure).
                    self._stopping = True
        finally:
            # Shielded: the worker's own cleanup must run to its end (it is bounded: DBOS's
            # shutdown does not wait for workflows, each statement has the pool's timeouts).
            with anyio.CancelScope(shield=True):
                self._stopping = True
                if launched:
                    await anyio.to_thread.run_sync(self._shut_down)
                await anyio.to_thread.run_sync(self._shared.dispose)
                if self._store is not None:
                    await self._store.aclose()
                if owned_runner:
                    await self._runner.aclose()
        if self._lost_remote is not None:
            raise RemoteUnreachable(
                f"worker {self.executor_id}: {self._lost_remote}; its stories went to other workers"
            )

    # -- DBOS, in worker threads -----------------------------------------------------------------

    def _launch(self) -> None:
        config: DBOSConfig = {
            "name": _APP_NAME,
            "system_database_url": self.settings.database,
            "executor_id": self.executor_id,
            "application_version": APP_VERSION,
        }
        DBOS(config=config)

        def story_cycle(job: dict[str, Any]) -> dict[str, Any]:  # DBOS wants a plain function
            return self._story_cycle(job)

        DBOS.workflow(name=WORKFLOW_NAME)(story_cycle)
        DBOS.launch()
        DBOS.register_queue(
            QUEUE_NAME,
            worker_concurrency=self.settings.jobs,
            polling_interval_sec=self.settings.poll_s,
            on_conflict="always_update",
        )

    def _shut_down(self) -> None:
        DBOS.destroy(destroy_registry=True)
        try:
            left = _HANDED_OVER if self._lost_remote is not None else "it was stopped"
            self._shared.expire(self.executor_id, left)
        except DATABASE_ERRORS as exc:  # the database is away: the others find us silent anyway
            log.warning("worker %s: could not expire its heartbeat: %s", self.executor_id, exc)

    def _beat(self, starting: bool = False) -> list[str]:
        """Say we are alive; claim the dead (their cycles are re-enqueued here, by DBOS)."""
        settings = self.settings
        self._shared.beat(
            self.executor_id, socket.gethostname(), os.getpid(), settings.jobs, starting=starting
        )
        dead = self._shared.claim_dead(self.executor_id, settings.dead_after_s)
        for executor, left_reason in dead:
            handles = DBOS._recover_pending_workflows([executor])  # pyright: ignore[reportPrivateUsage]
            log.warning(
                "worker %s is silent: %d story cycle(s) re-enqueued", executor, len(handles)
            )
            if left_reason == _HANDED_OVER:
                continue  # it said so on each story itself (_hand_over)
            for handle in handles:
                run_id, _, story_id = handle.get_workflow_id().partition("/")
                reason = (
                    left_reason or f"it fell silent (no heartbeat for {settings.dead_after_s:g} s)"
                )
                self._add_event(
                    run_id, StoryMoved(story_id=story_id, worker=executor, reason=reason)
                )
        return [executor for executor, _ in dead]

    def _add_event(self, run_id: str, event: StoryMoved) -> None:
        body = event_to_json(self._converter, event)
        self._shared.add_event(run_id, event.story_id, self.executor_id, body)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            try:
                await anyio.to_thread.run_sync(self._beat)
            except Exception as exc:  # the database restarting: beat again next time
                log.warning("worker %s: heartbeat failed: %s", self.executor_id, exc)

    def _story_cycle(self, job: dict[str, Any]) -> dict[str, Any]:
        """The workflow (runs in a DBOS thread): one step per phase until the story ends."""
        progress: dict[str, Any] = job.get("progress") or {}
        while True:
            output: dict[str, Any] = DBOS.run_step(
                {"name": "phase"}, self._phase_step, job, progress
            )
            report: dict[str, Any] | None = output["report"]
            ended = output.get("abort") or (report["status"] if report else None)
            log.info("story %s: phase step done: %s", job["story_id"], ended or "next phase")
            if ended:
                return output
            progress = output["progress"]

    def _phase_step(self, job: dict[str, Any], progress: dict[str, Any]) -> dict[str, Any]:
        """A step (runs in a DBOS thread): one phase, on this worker's event loop."""
        portal = self._portal
        if self._stopping or portal is None:
            raise WorkerStopping
        try:
            return portal.call(self._run_phase, job, progress)
        except RemoteUnreachable as exc:
            self._hand_over(portal, job, str(exc))
            raise WorkerStopping from exc
        except BaseException as exc:
            if self._stopping:
                raise WorkerStopping from exc
            raise

    def _hand_over(self, portal: BlockingPortal, job: dict[str, Any], reason: str) -> None:
        """This worker cannot reach the remote: say so on the story, and stop the worker. Its
        workflows stay PENDING and its heartbeat is expired on the way out (_shut_down), so a
        live worker re-enqueues them at its next heartbeat; a worker that can reach the remote
        takes them (a supervisor that restarts this one brings it back once the remote is)."""
        moved = StoryMoved(story_id=job["story_id"], worker=self.executor_id, reason=reason)
        try:
            self._add_event(job["run_id"], moved)
        except DATABASE_ERRORS as exc:
            log.warning("worker %s: could not record %s: %s", self.executor_id, moved, exc)
        portal.call(self._stop_serving, reason)

    def _stop_serving(self, reason: str) -> None:
        if self._lost_remote is None:
            self._lost_remote = reason
            log.error("worker %s stops: %s", self.executor_id, reason)
        if self._serving is not None:
            self._serving.cancel(reason=f"worker {self.executor_id} stops: {reason}")

    # -- one phase, on the event loop --------------------------------------------------------------

    async def _run_phase(self, job: dict[str, Any], progress: dict[str, Any]) -> dict[str, Any]:
        """One phase of the job's story, from its branch's tip on the remote to the phase commit
        pushed there; the step's output (see :func:`_output`). Cancellation: kills the session;
        nothing is pushed, and the next step starts from the same tip."""
        run_id, story_id, branch = job["run_id"], job["story_id"], job["branch"]
        worktree, lease = await self._story_tree(run_id, story_id, branch)
        prepared = await self._prepare(job, worktree)
        story = _find(prepared.stories, story_id)
        files = RunFiles(self.settings.workdir, run_id, self._redactor)
        started = time.time()
        try:
            services = await self._services(prepared, run_id, story, files)
            place = StoryPlace(prepared.layout, prepared.epic, branch=branch, worktree=worktree)
            commits = _BranchCommits(run_id)
            cycle = StoryCycle(
                services,
                story,
                workspace=commits,
                place=place,
                progress=CycleProgress(**progress),
            )
            try:
                report = await cycle.run_phases(1)
            except RunAbort as exc:  # budget spent, credentials refused: the run stops
                return _output(cycle.progress, abort=str(exc))
            # What the code decided after the session (a status it wrote) goes with the phase.
            await commits.commit(worktree, story, "decision", cycle.cycles)
            try:
                await _push(worktree, branch, lease)
            except LeaseLost as exc:
                # Not an error of the story: the next step starts from the branch as the other
                # execution left it (what to do next is read from the story file there).
                log.warning("story %s: %s; this phase's work is dropped", story_id, exc)
                return _output(CycleProgress(**progress))
        finally:
            files.close()
        await self._upload_transcripts(files, run_id, story_id, since=started)
        ended = None if report is None else self._converter.unstructure(report)
        return _output(cycle.progress, report=ended)

    async def _prepare(self, job: dict[str, Any], worktree: Path) -> PreparedRun:
        """The run's settings (as the coordinator stored them) and project, in our worktree."""
        config: RunConfig = attrs.evolve(
            config_from_json(job["config"]),
            engine="local",  # this worker runs the cycle itself
            project=worktree / job["project_rel"],
            epic=worktree / job["epic_rel"],
            cli_path=self.settings.cli_path,
            progress="plain",
        )
        return await anyio.to_thread.run_sync(prepare_run, config)

    async def _services(
        self, prepared: PreparedRun, run_id: str, story: EpicStory, files: RunFiles
    ) -> RunServices:
        """What the story's cycle uses here: our store and runner, the run's shared budget and
        pause, and events that go to the coordinator through the database."""
        store, runner = self._store, self._runner
        assert store is not None
        assert runner is not None
        story_id, config = story.story_id, prepared.config
        await _ensure_run_rows(store, run_id, prepared.epic.path, story)
        sandbox, warning = await run_sandbox_for(config)
        if warning:
            log.warning("%s", warning)

        async def emit(event: Event) -> None:
            files.write_event(event)
            body = event_to_json(self._converter, event)
            add = functools.partial(
                self._shared.add_event, run_id, story_id, self.executor_id, body
            )
            await call_retrying(add, log, f"story {story_id}: an event")

        budget = SharedBudget(self._shared, run_id, story_id, self.executor_id, config.budget_usd)
        return RunServices(
            config=config,
            layout=prepared.layout,
            epic=prepared.epic,
            runner=runner,
            store=store,
            files=files,
            run_id=run_id,
            emit=emit,
            budget=budget,
            pause=SharedPauseGate(self._shared, run_id, emit),
            api_backoff_s=config.rate_limit_backoff,
            sandbox=sandbox,
        )

    async def _upload_transcripts(
        self, files: RunFiles, run_id: str, story_id: str, *, since: float
    ) -> None:
        """This step's transcripts (the files it wrote to) go to the database, for the
        coordinator to keep with the run's own."""
        prefix = safe_name(story_id) + "-"

        def written() -> list[tuple[str, str]]:
            folder = files.transcripts_dir
            paths = folder.glob(f"{prefix}*.jsonl") if folder.is_dir() else ()
            return [
                (path.name, path.read_text(encoding="utf-8", errors="replace"))
                for path in paths
                if path.stat().st_mtime >= since - 1.0  # (coarse file-system clocks)
            ]

        for name, text in await anyio.to_thread.run_sync(written):
            put = functools.partial(
                self._shared.put_transcript, run_id, story_id, name, self.executor_id, text
            )
            await call_retrying(put, log, f"story {story_id}: a transcript")

    async def _ensure_clone(self) -> None:
        if await anyio.Path(self.clone / ".git").exists():
            return
        await _git.git(
            "clone",
            "--quiet",
            "--no-checkout",
            self.settings.repo,
            str(self.clone),
            cwd=self.settings.workdir,
        )

    async def _story_tree(self, run_id: str, story_id: str, branch: str) -> tuple[Path, str]:
        """The story's worktree in our clone, at the branch's tip on the remote (anything left
        by a phase cut short here is thrown away); and that tip, the lease of our push."""
        tree = self.settings.workdir / "stories" / run_id / _safe(story_id)
        async with self._tree_lock:
            await _with_remote(
                "fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
                cwd=self.clone,
            )  # fmt: skip
            tip = (
                await _git.git("rev-parse", f"refs/remotes/origin/{branch}", cwd=self.clone)
            ).stdout.strip()
            if not await anyio.Path(tree / ".git").exists():
                await _git.git("worktree", "prune", cwd=self.clone)
                await _git.git(
                    "worktree", "add", "--quiet", "-B", branch, str(tree), tip, cwd=self.clone
                )
        await _git.git("reset", "--quiet", "--hard", tip, cwd=tree)
        await _git.git("clean", "-fdq", cwd=tree)
        return tree, tip


@attrs.frozen
class _BranchCommits:
    """The story cycle's workspace on a worker: phase commits on the story's branch (pushed
    at the end of the step, not here)."""

    run_id: str

    async def checkpoint(
        self,
        place: StoryPlace,
        *,
        story: EpicStory,
        role: str,
        cycle: int,
        what: str,
        cost_usd: float,
    ) -> str | None:
        assert place.worktree is not None
        return await self.commit(place.worktree, story, what, cycle, role=role, cost_usd=cost_usd)

    async def commit(
        self,
        worktree: Path,
        story: EpicStory,
        what: str,
        cycle: int,
        *,
        role: str = "code",
        cost_usd: float = 0.0,
    ) -> str | None:
        trailers = phase_trailers(self.run_id, story, role=role, cycle=cycle, cost_usd=cost_usd)
        return await _git.commit_phase(
            worktree, message=f"{story.story_id} {role}: {what}", trailers=trailers
        )


async def _push(worktree: Path, branch: str, lease: str) -> None:
    """Push the story's branch; :class:`LeaseLost` if someone else pushed it since we fetched
    ``lease`` (the same story cycle running twice: a worker thought dead was only slow)."""
    head = (await _git.git("rev-parse", "HEAD", cwd=worktree)).stdout.strip()
    if head == lease:
        return  # the phase changed nothing
    try:
        await _with_remote(
            "push", "--quiet", f"--force-with-lease=refs/heads/{branch}:{lease}",
            "origin", f"HEAD:refs/heads/{branch}",
            cwd=worktree,
        )  # fmt: skip
    except RemoteUnreachable:
        raise
    except GitError as exc:
        tip = await _git.git("ls-remote", "origin", f"refs/heads/{branch}", cwd=worktree)
        if tip.stdout.split()[:1] != [lease]:
            raise LeaseLost(f"{branch} moved on the remote while this phase ran") from exc
        raise


async def _with_remote(*args: str, cwd: Path) -> None:
    """A git command that talks to the shared remote. Failing, it is asked whether the remote
    answers at all: if not, :class:`RemoteUnreachable`; if so, git's own error (e.g. a lease
    that no longer holds) stands."""
    try:
        await _git.git(*args, cwd=cwd)
    except GitError as exc:
        probe = await _git.git("ls-remote", "--heads", "origin", cwd=cwd, check=False)
        if probe.ok:
            raise
        raise RemoteUnreachable(f"cannot reach the shared remote: {exc}") from exc


async def _ensure_run_rows(store: Store, run_id: str, epic: Path, story: EpicStory) -> None:
    """This worker's store records the run and story, so the story cycle's records have a home."""
    try:
        await store.get_run(run_id)
    except StateError:
        await store.create_run(str(epic), run_id=run_id)
    try:
        await store.get_story(run_id, story.story_id)
    except StateError:
        await store.upsert_story(
            run_id, story.story_id, title=story.title, position=0, status="draft"
        )


def _output(
    progress: CycleProgress, *, report: dict[str, Any] | None = None, abort: str | None = None
) -> dict[str, Any]:
    """A step's output, as DBOS checkpoints it: the cycle's counts, and how the story ended
    (``report``) or why the run must stop (``abort``), or neither (the next phase comes)."""
    return {"report": report, "abort": abort, "progress": attrs.asdict(progress)}


def _find(stories: tuple[EpicStory, ...], story_id: str) -> EpicStory:
    for story in stories:
        if story.story_id == story_id:
            return story
    raise ConfigError(f"story {story_id} is not in the epic on its branch")


def _safe(story_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in story_id)
