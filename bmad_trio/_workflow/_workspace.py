"""Where a run's agents work, and how their work reaches the integration branch.

Two kinds of workspace, chosen by ``RunConfig.workspace``:

- :class:`GitWorkspace` (``worktrees``, the default): the run integrates on its own branch in its
  own worktree, started from the commit the run began at; each story gets a branch and a worktree
  from the integration tip (its dependencies are merged by then), every phase that changed files
  is committed there, and a done story reaches the integration branch through the merge lane.
  The user's checkout is not touched until :meth:`GitWorkspace.finish`.
- :class:`CheckoutWorkspace` (``checkout``): the agents edit the project folder itself; nothing is
  committed. For folders that are not git repositories.

The merge lane is one task (:meth:`GitWorkspace.serve_lane`) and the only writer of the
integration branch: stories queue in completion order; a story that conflicts goes back to its own
task, which rebases it and runs a resolver session there, so the lane never waits on a model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Protocol

import anyio
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import _git
from .._bmad import Epic, EpicStory, Layout, SprintStatusFile, StoryStatus
from .._bmad._textio import write_text_atomic
from .._config import RunConfig
from .._errors import GitError, ProjectError
from .._events import Event, MergeConflict, StoryMerged
from .._git._worktrees import INTEGRATION_DIR_NAME
from .._state._paths import run_dir, worktrees_dir

__all__ = [
    "CheckoutWorkspace",
    "GitWorkspace",
    "LandOutcome",
    "StoryPlace",
    "Workspace",
    "open_workspace",
]

log = logging.getLogger("bmad_trio.workspace")

_GIT_FILE: str = "git.json"
"""Per run, in the run's folder: the commit the run started at and its branches (for resume)."""


@attrs.define
class StoryPlace:
    """Where one story's sessions work: its layout (project root = its worktree) and branch."""

    layout: Layout
    epic: Epic
    branch: str | None = None
    worktree: Path | None = None
    base_commit: str | None = None


@attrs.frozen
class LandOutcome:
    """What the merge lane did with a done story."""

    status: Literal["landed", "conflict", "hook_failed", "gates_failed", "error", "not_git"]
    commit: str | None = None
    files: tuple[str, ...] = ()
    output: str = ""


class Workspace(Protocol):
    """What the story cycle needs from a workspace."""

    async def checkpoint(
        self,
        place: StoryPlace,
        *,
        story: EpicStory,
        role: str,
        cycle: int,
        what: str,
        cost_usd: float,
    ) -> str | None: ...


@attrs.define
class CheckoutWorkspace:
    """The project folder itself: every story works there, nothing is committed."""

    layout: Layout
    epic: Epic
    integration_lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    """Held while quality gates run after a story (there is no lane to keep out)."""

    @property
    def integration_layout(self) -> Layout:
        return self.layout

    def close_lane(self) -> None:
        """No lane here: nothing to close."""

    def close(self) -> None:
        """Nothing to close."""

    @property
    def branch(self) -> str | None:
        return None

    async def open_story(self, story: EpicStory) -> StoryPlace:
        await anyio.lowlevel.checkpoint()
        return StoryPlace(self.layout, self.epic)

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
        await anyio.lowlevel.checkpoint()
        return None

    async def land(self, place: StoryPlace, story: EpicStory, *, cost_usd: float) -> LandOutcome:
        await anyio.lowlevel.checkpoint()
        return LandOutcome("not_git")

    async def commit_integration(self, message: str) -> str | None:
        await anyio.lowlevel.checkpoint()
        return None


@attrs.define
class StoryRecord:
    """One story's git facts, for ``status``: its branch, worktree and the commit it landed as."""

    branch: str = ""
    worktree: str = ""
    merged_commit: str = ""


@attrs.define
class GitRecord:
    """``runs/<run_id>/git.json``: where the run started, its branches, and per story its facts.

    Written when the run starts (so a resume finds the same start commit and branches) and after
    each change, atomically."""

    start_commit: str
    user_branch: str
    branch: str
    project: str
    """The repository's top level (the user's checkout)."""
    stories: dict[str, StoryRecord] = attrs.field(factory=dict[str, StoryRecord])

    @classmethod
    def read(cls, path: Path) -> GitRecord:
        """Raises GitError for a missing or unreadable file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stories = {
                str(k): StoryRecord(
                    **{f: str(v[f]) for f in ("branch", "worktree", "merged_commit")}
                )
                for k, v in data.pop("stories", {}).items()
            }
            return cls(
                **{f: str(data[f]) for f in ("start_commit", "user_branch", "branch", "project")},
                stories=stories,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GitError(f"{path}: not a readable record of a run's git state ({exc})") from None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(attrs.asdict(self), indent=2) + "\n")


@attrs.frozen
class _LandRequest:
    place: StoryPlace
    story: EpicStory
    cost_usd: float
    reply: MemoryObjectSendStream[LandOutcome]


@attrs.define
class GitWorkspace:
    """A run on git: the integration worktree, one worktree per story, and the merge lane.

    Made by :func:`open_workspace`; :meth:`serve_lane` must run (in the run's task group) while
    stories land. Every git call is a subprocess that a cancel kills; a run killed part-way is
    made consistent again by :func:`open_workspace` on resume (a merge or rebase in progress is
    undone, a phase in flight rolled back to its last commit), so nothing here needs a shield.
    """

    config: RunConfig
    run_id: str
    project: Path
    """The repository's top level (the user's checkout)."""
    layout: Layout
    """The run's layout in the user's checkout (as ``prepare_run`` detected it)."""
    epic: Epic
    start_commit: str
    user_branch: str
    integration: _git.Worktree
    record_path: Path
    record: GitRecord
    integration_lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    """Held by the lane while it lands a story (and checks it), and while a story's worktree is
    made from the run's branch's tip (never a tip the lane may still take back)."""
    verify: Callable[[EpicStory], Awaitable[str | None]] | None = None
    """Run by the lane after a landing, before the landing counts (the quality gates on the
    merged result, with ``gates_after_each_story``): None keeps it, a text takes it back (the
    branch is reset to where it was) and fails the story with that text."""
    _lane_send: MemoryObjectSendStream[_LandRequest] = attrs.field(init=False)
    _lane_receive: MemoryObjectReceiveStream[_LandRequest] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Unbounded on purpose: a story that queues to land must never wait for the lane to take
        # it (the lane may be busy landing another story); there are at most ``stories`` items.
        self._lane_send, self._lane_receive = anyio.create_memory_object_stream[_LandRequest](
            float("inf")
        )

    @property
    def integration_layout(self) -> Layout:
        return self.layout.rerooted(self._project_in(self.integration.path))

    @property
    def branch(self) -> str | None:
        return self.integration.branch

    def _rerooted(self, root: Path) -> tuple[Layout, Epic]:
        layout = self.layout.rerooted(root)
        epic_path = _moved(self.epic.path, self.layout.project, root)
        epic = self.epic if not epic_path.is_file() else attrs.evolve(self.epic, path=epic_path)
        return layout, epic

    async def open_story(self, story: EpicStory) -> StoryPlace:
        """The story's worktree: made from the integration tip the first time (its dependencies
        have landed by then), reused as it is on resume."""
        branch = _git.story_branch_name(self.integration.branch, story.story_id)
        # Under the lock: a tip the lane is still checking is not one yet, and worktrees are made
        # one at a time (git writes the repository's shared worktree records and config).
        async with self.integration_lock:
            tip = await _head(self.integration.path)
            worktree = await _git.create_story_worktree(
                self.project,
                run_id=self.run_id,
                story_key=story.key,
                branch=branch,
                base_commit=tip,
            )
        layout, epic = self._rerooted(self._project_in(worktree.path))
        await self._note_story(story.story_id, branch=branch, worktree=str(worktree.path))
        return StoryPlace(layout, epic, branch=branch, worktree=worktree.path, base_commit=tip)

    def _project_in(self, worktree: Path) -> Path:
        """The project folder inside a worktree (the project may be a sub-folder of the repository)."""
        return worktree / self.layout.project.relative_to(self.project)

    async def _note_story(self, story_id: str, **fields: str) -> None:
        entry = self.record.stories.setdefault(story_id, StoryRecord())
        for name, value in fields.items():
            setattr(entry, name, value)
        await anyio.to_thread.run_sync(self.record.write, self.record_path)

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
        """Commit what the phase changed on the story's branch (None: nothing changed).

        v6 ``sprint-status.yaml`` is put back first: only the merge lane writes it, on the
        integration branch, so two stories never conflict on it.
        """
        assert place.worktree is not None
        await self._restore_sprint_status(place)
        trailers = self._trailers(story, role=role, cycle=cycle, cost_usd=cost_usd)
        return await _git.commit_phase(
            place.worktree, message=f"{story.story_id} {role}: {what}", trailers=trailers
        )

    async def land(self, place: StoryPlace, story: EpicStory, *, cost_usd: float) -> LandOutcome:
        """Queue the story for the merge lane and wait for its outcome. Cancelling the wait leaves
        the request queued: the lane lands it (or not) all the same, and a resume sees that."""
        send, receive = anyio.create_memory_object_stream[LandOutcome](1)
        with receive:
            await self._lane_send.send(_LandRequest(place, story, cost_usd, send))
            return await receive.receive()

    async def landed(self, place: StoryPlace) -> bool:
        """Has the story's branch, as it is now, landed on the run's branch already?"""
        assert place.branch is not None
        return await _git.is_landed(self.project, self.integration.branch, place.branch)

    def close_lane(self) -> None:
        """No more stories will land: the lane ends once it has landed those queued."""
        self._lane_send.close()

    def close(self) -> None:
        """The run is over: close both ends of the lane's queue (the lane may never have run),
        and the reply stream of every request still queued (a cancelled run leaves some)."""
        self._lane_send.close()
        while True:
            try:
                request = self._lane_receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            request.reply.close()
        self._lane_receive.close()

    async def serve_lane(self, emit: Callable[[Event], Awaitable[None]]) -> None:
        """The merge lane: land queued stories one at a time, in the order they came.

        Ends when :meth:`close_lane` has been called and the queue is empty. Cancelling it kills
        the git command in flight; the next resume undoes a landing left half-way."""
        async with self._lane_receive:
            async for request in self._lane_receive:
                with request.reply:
                    async with self.integration_lock:
                        try:
                            outcome = await self._land_now(request)
                        except GitError as exc:
                            # One story that git cannot land fails alone; the lane goes on (the
                            # integration worktree was reset to its tip by land_story).
                            log.warning("story %s did not land: %s", request.story.story_id, exc)
                            outcome = LandOutcome("error", output=str(exc))
                    await _announce(emit, request.story, request.place, outcome)
                    request.reply.send_nowait(outcome)

    async def _land_now(self, request: _LandRequest) -> LandOutcome:
        story, place = request.story, request.place
        assert place.branch is not None
        if await _git.is_landed(self.project, self.integration.branch, place.branch):
            return LandOutcome("landed", await _head(self.integration.path))
        trailers = self._trailers(story, role="merge", cycle=0, cost_usd=request.cost_usd)
        result = await _git.land_story(
            self.integration.path,
            story_branch=place.branch,
            message=f"{story.story_id}: {story.title}",
            trailers=trailers,
        )
        if result.status != "landed":
            return LandOutcome(result.status, None, tuple(result.files), result.output)
        commit = result.commit
        synced = await self._sync_sprint_status(story)
        if self.verify is not None:
            problem = await self.verify(story)
            if problem is not None:
                # The landing does not count: the branch goes back to where it was, so no
                # other story ever starts from (or lands onto) a result that failed its gates.
                await _git.git(
                    "reset", "--hard", "--quiet", result.previous, cwd=self.integration.path
                )
                await _git.git("clean", "-fd", "--quiet", cwd=self.integration.path)
                return LandOutcome("gates_failed", output=problem)
        await self._note_story(story.story_id, merged_commit=commit or "")
        return LandOutcome("landed", synced or commit)

    async def commit_integration(self, message: str) -> str | None:
        """Commit what run-level sessions (quality-gate fixers) changed in the integration
        worktree. Only called when no story is landing (the lane is idle or closed)."""
        return await _git.commit_phase(
            self.integration.path,
            message=message,
            trailers={"Bmad-Run": self.run_id, "Bmad-Role": "fixer"},
        )

    async def finish(self) -> _git.FinishResult:
        """Hand the run's branch to the user the way ``finish`` says (see RunConfig.finish)."""
        return await _git.finish(
            self.project,
            mode=self.config.finish,
            integration_branch=self.integration.branch,
            user_branch=self.user_branch,
            start_commit=self.start_commit,
            remote=self.config.remote,
            pr_command=self.config.pr_command,
            title=f"Epic {self.epic.number}: {self.epic.title}",
        )

    async def recover(self) -> None:
        """After a crash: the integration worktree back at its last commit (a merge that was under
        way is undone; the branch only ever moves by a whole commit), and every story worktree of
        this run back at its last phase commit (the phase in flight runs again)."""
        for action in await _git.recover_integration(self.integration.path):
            log.info("run branch %s: %s", self.integration.branch, action)
        for info in await _git.list_worktrees(self.project):
            if info.run_id == self.run_id and info.path != self.integration.path:
                for action in await _git.recover_story_worktree(info.path):
                    log.info("story worktree %s: %s", info.path.name, action)

    # -- helpers --------------------------------------------------------------------------------

    def _trailers(
        self, story: EpicStory, *, role: str, cycle: int, cost_usd: float
    ) -> dict[str, str]:
        return phase_trailers(self.run_id, story, role=role, cycle=cycle, cost_usd=cost_usd)

    def _sprint_rel(self) -> str | None:
        path = self.layout.sprint_status_path
        if path is None:
            return None
        try:
            return path.relative_to(self.layout.project).as_posix()
        except ValueError:
            return None

    async def _restore_sprint_status(self, place: StoryPlace) -> None:
        rel = self._sprint_rel()
        if rel is not None and place.worktree is not None:
            await _restore_path(self._project_in(place.worktree), rel)

    async def _sync_sprint_status(self, story: EpicStory) -> str | None:
        """v6: the landed story is ``done`` in the integration branch's sprint-status.yaml."""
        rel = self._sprint_rel()
        if rel is None:
            return None
        root = self._project_in(self.integration.path)
        path = root / rel
        if not path.is_file():
            return None

        def advance() -> None:
            try:
                SprintStatusFile(path, project=root).advance(
                    story.story_id, StoryStatus.DONE, title=story.title
                )
            except ProjectError as exc:  # no key for this story: the file is the user's
                log.warning("sprint status not updated: %s", exc)

        await anyio.to_thread.run_sync(advance)
        return await _git.commit_phase(
            self.integration.path,
            message=f"{story.story_id}: sprint status done",
            trailers={"Bmad-Story": story.story_id, "Bmad-Run": self.run_id, "Bmad-Role": "merge"},
        )


def phase_trailers(
    run_id: str, story: EpicStory, *, role: str, cycle: int, cost_usd: float
) -> dict[str, str]:
    """The trailers of a story's commits (phase commits here and on workers, landings)."""
    return {
        "Bmad-Story": story.story_id,
        "Bmad-Role": role,
        "Bmad-Cycle": str(cycle),
        "Bmad-Run": run_id,
        "Bmad-Cost-USD": f"{cost_usd:.4f}",
    }


async def _announce(
    emit: Callable[[Event], Awaitable[None]],
    story: EpicStory,
    place: StoryPlace,
    outcome: LandOutcome,
) -> None:
    if outcome.status == "landed":
        await emit(
            StoryMerged(
                story_id=story.story_id, branch=place.branch or "", commit=outcome.commit or ""
            )
        )
    elif outcome.status in ("conflict", "hook_failed"):
        await emit(
            MergeConflict(
                story_id=story.story_id,
                branch=place.branch or "",
                files=outcome.files,
                reason=outcome.status,
            )
        )


async def _head(worktree: Path) -> str:
    return (await _git.git("rev-parse", "HEAD", cwd=worktree)).stdout.strip()


async def _restore_path(root: Path, relative: str) -> None:
    """``relative`` (under ``root``, a worktree's project folder) back as the last commit has it:
    checked out again if it is committed, removed if it is new."""
    tracked = await _git.git("ls-files", "--error-unmatch", "--", relative, cwd=root, check=False)
    if tracked.ok:
        await _git.git("checkout", "HEAD", "--", relative, cwd=root)
    else:
        (root / relative).unlink(missing_ok=True)


def _moved(path: Path, old_root: Path, new_root: Path) -> Path:
    try:
        return new_root / path.relative_to(old_root)
    except ValueError:
        return path


# -- opening a workspace ------------------------------------------------------------------------


async def open_workspace(
    config: RunConfig, layout: Layout, epic: Epic, *, run_id: str, run_dir: Path, resumed: bool
) -> CheckoutWorkspace | GitWorkspace:
    """The run's workspace; on resume, the one the run started with, made consistent again.

    ``worktrees``: checks the repository first (see :func:`bmad_trio._git.check_repository`;
    PreflightError before anything is written), then makes (or finds again) the integration
    worktree. Cancellation kills the git command in flight; a half-made worktree is found and
    reused by the resume.
    """
    if config.workspace == "checkout":
        await anyio.lowlevel.checkpoint()
        return CheckoutWorkspace(layout, epic)
    record_path = run_dir / _GIT_FILE
    if resumed and record_path.is_file():
        record = GitRecord.read(record_path)
    else:
        state = await _git.check_repository(config.project, allow_dirty=config.allow_dirty)
        if state.branch is None:  # check_repository refuses a detached HEAD; keep pyright sure
            raise GitError("the checkout is on a detached HEAD")
        record = GitRecord(
            start_commit=state.head,
            user_branch=state.branch,
            branch=f"{config.branch_prefix}epic-{epic.number}",
            project=str(state.top_level),
        )
        await anyio.to_thread.run_sync(record.write, record_path)
    start, user_branch = record.start_commit, record.user_branch
    branch, top = record.branch, Path(record.project)
    _git.ensure_state_ignored(config.project)
    integration = await _git.create_integration(
        top, run_id=run_id, branch=branch, start_commit=start
    )
    workspace = GitWorkspace(
        config=config,
        run_id=run_id,
        project=top,
        layout=layout,
        epic=epic,
        start_commit=start,
        user_branch=user_branch,
        integration=integration,
        record_path=record_path,
        record=record,
    )
    if resumed:
        try:
            await workspace.recover()
        except BaseException:  # a cancel included: nobody else holds the workspace to close it
            workspace.close()
            raise
    return workspace


def read_record(run_dir: Path) -> GitRecord | None:
    """The git record of the run whose folder is ``run_dir``; None for a checkout run (or one
    whose record is unreadable)."""
    try:
        return GitRecord.read(run_dir / _GIT_FILE)
    except GitError:
        return None


# -- cleaning up --------------------------------------------------------------------------------


async def clean_worktrees(project: Path) -> list[str]:
    """``bmad-trio clean``: remove the worktrees and branches of stories that have landed, and of
    runs whose branch is merged into the user's branch; keep everything else (unmerged, or with
    uncommitted changes). One line per worktree: what was removed, or what was kept and why.

    Story worktrees go first, so a run's branch is still there to tell what landed. Cancellation
    kills the git command in flight; running ``clean`` again finishes the job.
    """
    lines: list[str] = []
    if not worktrees_dir(project).is_dir():
        await anyio.lowlevel.checkpoint()
        return lines
    infos = await _git.list_worktrees(project)
    for info in sorted(infos, key=lambda i: i.path.name == INTEGRATION_DIR_NAME):
        branch = info.branch or "(no branch)"
        if info.path.name == INTEGRATION_DIR_NAME:
            record = read_record(run_dir(project, info.run_id))
            base = record.user_branch if record is not None else None
            merged = (
                base is not None
                and info.branch is not None
                and (
                    await _git.git(
                        "merge-base", "--is-ancestor", info.branch, base, cwd=project, check=False
                    )
                ).ok
            )
            if not info.clean:
                lines.append(f"kept {info.path} ({branch}): uncommitted changes")
            elif not merged:
                into = base or "your branch"
                lines.append(
                    f"kept {info.path} ({branch}): not merged into {into}; "
                    f"merge it with: git merge --ff-only {branch}"
                )
            else:
                await _git.git("worktree", "remove", "--force", str(info.path), cwd=project)
                await _git.git("branch", "-D", branch, cwd=project, check=False)
                lines.append(f"removed {info.path} and branch {branch} (merged into {base})")
            continue
        integration = _integration_branch(infos, info.run_id)
        if info.branch is None or integration is None:
            lines.append(f"kept {info.path} ({branch}): its run's branch is gone")
            continue
        result = await _git.remove_worktree_if_merged(
            project, _git.Worktree(path=info.path, branch=info.branch), integration
        )
        if result.removed:
            await _git.git("branch", "-D", info.branch, cwd=project, check=False)
            lines.append(f"removed {info.path} and branch {branch} (landed on {integration})")
        else:
            lines.append(f"kept {info.path} ({branch}): {result.detail}")
    await _git.git("worktree", "prune", cwd=project, check=False)
    root = worktrees_dir(project)
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return lines


def _integration_branch(infos: list[_git.WorktreeInfo], run_id: str) -> str | None:
    for info in infos:
        if info.run_id == run_id and info.path.name == INTEGRATION_DIR_NAME:
            return info.branch
    return None
