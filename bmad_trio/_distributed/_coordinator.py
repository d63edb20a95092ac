"""The coordinator's side of ``run --engine dbos``: story cycles run by workers, as if local.

The run's scheduler and merge lane stay in the coordinator. For each story it starts, the story's
branch (made from the run's branch's tip, as on one machine) is pushed to the shared remote and
its cycle enqueued as a DBOS workflow; while a worker runs it, the events its sessions emit are
relayed into this run's event stream and store (the live display, ``status``, costs and
``events.jsonl`` see them); when the cycle ends, its branch is fetched back and the story lands
through the merge lane like a local one.

Cancellation: cancelling a story's wait leaves its workflow to the workers (it belongs to the
engine, not to this process): ``resume`` attaches to it again by its id, ``<run>/<story>``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, cast

import anyio
import attrs

from .. import _git
from .._agents._runner import Outcome, SessionResult
from .._bmad import EpicStory
from .._bmad._textio import write_text_atomic
from .._config import RunConfig
from .._converter import event_from_json, make_converter
from .._errors import ConfigError, GitError, RunAbort
from .._events import Event, PhaseFinished, PhaseStarted, SessionFinished, StoryStatusChanged
from .._state._run_files import RunFiles
from .._workflow._prepare import config_to_json
from .._workflow._run_services import RunServices, StoryReport, story_report
from .._workflow._workspace import StoryPlace
from ._engine import CycleOutcome, EngineClient
from ._shared import SharedState, call_retrying

__all__ = ["RemoteCycles", "open_remote_cycles"]

log = logging.getLogger("bmad_trio.run")

_NO_WORKER_S = 30.0
"""A story queued this long with no worker heard from in as long gets a warning in the log."""
_POLL_S = 0.5
"""How often a waiting story looks at its workflow and its new events (an I/O poll: no
transition depends on its timing)."""


def open_remote_cycles(config: RunConfig, files: RunFiles) -> RemoteCycles:
    """The run's link to the engine (ConfigError when the run is not configured for one)."""
    if not config.database:
        raise ConfigError("engine = dbos needs the engine's database: --database URL")
    return RemoteCycles(config, files)


class RemoteCycles:
    """Runs the run's story cycles on workers; see the module docstring."""

    def __init__(self, config: RunConfig, files: RunFiles) -> None:
        assert config.database is not None
        self._config = config
        self._client = EngineClient(config.database)
        self._shared = SharedState(config.database)
        self._converter = make_converter()
        self._files = files
        self._relayed_path = files.root / "relayed.json"
        self._relayed: dict[str, int] = _read_relayed(self._relayed_path)
        """Per story, the last event id relayed into this run (a resume does not count twice)."""
        self._phase_ids: dict[str, int] = {}
        self._opened = False
        self._recorded: set[str] | None = None
        """The labels of the sessions this run's store has (read once, on the first)."""

    async def aclose(self) -> None:
        """Close the database connections (shielded: they are a pool's sockets)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._client.close)
            await anyio.to_thread.run_sync(self._shared.dispose)

    async def run_cycle(
        self, services: RunServices, story: EpicStory, place: StoryPlace
    ) -> StoryReport:
        """Run the story's cycle on a worker and return its report, its branch fetched back into
        ``place``. Cancellation: see the module docstring."""
        assert place.worktree is not None
        assert place.branch is not None
        run_id, story_id = services.run_id, story.story_id
        await self._publish(place.worktree, place.branch)
        job = await self._job(services, story, place)
        if not self._opened:  # before the run's first cycle
            await self._open(services)
        workflow_id, where = f"{run_id}/{story_id}", f"story {story_id}"
        await call_retrying(functools.partial(self._client.enqueue, workflow_id, job), log, where)
        outcome = await self._follow(services, story_id, workflow_id)
        await self._fetch_transcripts(run_id, story_id, where)
        store = services.store
        if outcome.output is not None and outcome.output.get("abort"):
            # Budget spent or credentials refused on the worker: the whole run stops, as here.
            raise RunAbort(str(outcome.output["abort"]))
        if outcome.state == "failed" or outcome.output is None:
            reason = f"the story cycle failed on a worker: {outcome.error}"
            row = await store.update_story(
                run_id, story_id, status="failed", phase=None, failure_reason=reason
            )
            return story_report(row, story.title, failure_reason=reason)
        # The story's branch as the worker left it: the lane lands this.
        remote = services.config.remote
        worktree = place.worktree
        await _git.git("fetch", "--quiet", remote, f"refs/heads/{place.branch}", cwd=worktree)
        await _git.git("reset", "--quiet", "--hard", "FETCH_HEAD", cwd=worktree)
        report = self._converter.structure(outcome.output["report"], StoryReport)
        row = await store.update_story(
            run_id,
            story_id,
            status=report.status,
            phase=None,
            cycles=report.cycles,
            failure_reason=report.failure_reason,
        )
        return story_report(row, story.title, failure_reason=report.failure_reason)

    async def _job(
        self, services: RunServices, story: EpicStory, place: StoryPlace
    ) -> dict[str, Any]:
        """What a worker needs to run the story's cycle: where, on which branch, with which
        settings (the run's, without the database URL: workers have their own)."""
        assert place.worktree is not None
        top = await _git.git("rev-parse", "--show-toplevel", cwd=place.worktree)
        project_top = Path(top.stdout.strip())
        return {
            "run_id": services.run_id,
            "story_id": story.story_id,
            "branch": place.branch,
            "project_rel": place.layout.project.relative_to(project_top).as_posix(),
            "epic_rel": place.epic.path.relative_to(project_top).as_posix(),
            "config": config_to_json(attrs.evolve(services.config, database=None)),
        }

    async def _open(self, services: RunServices) -> None:
        """The engine's tables and ours, and the run's shared budget and pause."""
        await call_retrying(self._client.migrate, log, "the engine's tables")
        await call_retrying(self._shared.create, log, "bmad-trio's tables")
        run_id = services.run_id
        spent = await services.store.run_cost(run_id)
        opening = functools.partial(
            self._shared.open_run, run_id, services.config.budget_usd, spent, services.budget.jobs
        )
        await call_retrying(opening, log, "opening the run")
        self._opened = True

    async def _follow(self, services: RunServices, story_id: str, workflow_id: str) -> CycleOutcome:
        """Relay the story's events until its workflow has ended; its outcome."""
        run_id, where = services.run_id, f"story {story_id}"
        queued_by, warned = anyio.current_time() + _NO_WORKER_S, False
        while True:
            # The outcome first, then the events: once it has ended, every event is in.
            outcome = await call_retrying(
                functools.partial(self._client.outcome, workflow_id), log, where
            )
            after = self._relayed.get(story_id, 0)
            rows = await call_retrying(
                functools.partial(self._shared.events_after, run_id, story_id, after), log, where
            )
            for event_id, _worker, body in rows:
                event = event_from_json(self._converter, body)
                await self._mirror(services, event, event_id)
                await services.emit(event)
                self._relayed[story_id] = event_id
            if rows:
                relayed = dict(self._relayed)
                await anyio.to_thread.run_sync(_write_relayed, self._relayed_path, relayed)
            if outcome.state in ("succeeded", "failed"):
                return outcome
            if outcome.state == "queued" and not warned and anyio.current_time() > queued_by:
                warned = await self._warn_without_workers(where)
            await anyio.sleep(_POLL_S)

    async def _warn_without_workers(self, where: str) -> bool:
        """Say so when a story waits in the queue and no worker is alive to take it (a run started
        before its workers, or every worker gone): it waits, it is not lost. True once said."""
        live = await call_retrying(
            functools.partial(self._shared.live_workers, _NO_WORKER_S), log, where
        )
        if live:
            return False
        log.warning(
            "%s waits in the queue and no worker is alive: start `bmad-trio worker --database …`",
            where,
        )
        return True

    async def _fetch_transcripts(self, run_id: str, story_id: str, where: str) -> None:
        """The story's transcripts, from the workers that ran its sessions, into this run's
        transcripts folder (each written whole: temp file, then rename)."""
        found = await call_retrying(
            functools.partial(self._shared.transcripts, run_id, story_id), log, where
        )
        folder = self._files.transcripts_dir

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in found:
                write_text_atomic(folder / Path(name).name, text)

        await anyio.to_thread.run_sync(write)

    async def _publish(self, worktree: Path, branch: str) -> None:
        """Put the story's branch on the shared remote; one already there with more on it (a
        resumed run, whose workers pushed phases) is taken back here instead."""
        remote = self._config.remote
        pushed = await _git.git(
            "push", "--quiet", remote, f"HEAD:refs/heads/{branch}", cwd=worktree, check=False
        )
        if pushed.ok:
            return
        await _git.git("fetch", "--quiet", remote, f"refs/heads/{branch}", cwd=worktree)
        ours = await _git.git(
            "merge-base", "--is-ancestor", "HEAD", "FETCH_HEAD", cwd=worktree, check=False
        )
        if ours.returncode != 0:
            raise GitError(f"{remote} has a branch {branch} that did not grow from this run's")
        await _git.git("reset", "--quiet", "--hard", "FETCH_HEAD", cwd=worktree)

    async def _mirror(self, services: RunServices, event: Event, event_id: int) -> None:
        """Record a worker's event in this run's store, as the local story cycle would have.

        A session is recorded once, whatever happens: its label carries the event's id, and a
        coordinator killed after recording it but before noting the event as relayed finds it
        there on resume (costs never count twice)."""
        store, run_id = services.store, services.run_id
        if isinstance(event, PhaseStarted):
            self._phase_ids[event.story_id] = await store.start_phase(
                run_id, event.story_id, event.phase, event.role, event.cycle
            )
        elif isinstance(event, PhaseFinished):
            phase_id = self._phase_ids.pop(event.story_id, None)
            if phase_id is not None:
                await store.finish_phase(phase_id, event.ok, event.detail)
        elif isinstance(event, SessionFinished):
            label = f"{event.story_id}-{event.cycle}-{event.role}#{event_id}"
            if self._recorded is None:
                self._recorded = {row.label for row in await store.sessions(run_id)}
            if label in self._recorded:
                return
            self._recorded.add(label)
            result = SessionResult(
                outcome=Outcome(event.outcome),
                cost_usd=event.cost_usd,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                duration_s=event.duration_s,
                error=event.error,
            )
            transcript = self._files.transcript_path(event.story_id, event.cycle, event.role)
            await store.record_session(
                run_id,
                event.story_id,
                self._phase_ids.get(event.story_id),
                event.role,
                event.cycle,
                label,
                result,
                transcript.relative_to(services.config.project),
            )
        elif isinstance(event, StoryStatusChanged):
            await store.update_story(run_id, event.story_id, status=event.new)


def _read_relayed(path: Path) -> dict[str, int]:
    try:
        data: object = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    items = cast(dict[str, object], data).items()
    return {key: value for key, value in items if isinstance(value, int)}


def _write_relayed(path: Path, relayed: dict[str, int]) -> None:
    write_text_atomic(path, json.dumps(relayed))
