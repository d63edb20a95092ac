"""The run's worktrees under ``<project>/.bmad-trio/worktrees/<run>/``: one integration worktree
(``_integration``) and one per story, each on its own branch.

Internal git operations here run with the user's hooks switched off (``core.hooksPath=/dev/null``):
a worktree is a checkpoint area, not a commit the user's policy applies to.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final, Literal

import anyio
import anyio.to_thread
from attrs import frozen

from bmad_trio._errors import GitError
from bmad_trio._state._paths import safe_name, worktrees_dir

from ._command import NO_HOOKS, git, git_version
from ._merge import is_landed
from ._preflight import dirty_paths
from ._state_folder import ensure_state_ignored
from ._trailers import commit_trailer_values

__all__ = [
    "INTEGRATION_DIR_NAME",
    "RemoveResult",
    "Worktree",
    "WorktreeInfo",
    "create_integration",
    "create_story_worktree",
    "integration_path",
    "list_worktrees",
    "registrations",
    "remove_worktree_if_merged",
    "story_branch_name",
    "story_path",
]

INTEGRATION_DIR_NAME: Final = "_integration"

_RUN_TRAILER: Final = "Bmad-Run"


@frozen
class Worktree:
    """A worktree of the run: its folder and branch; ``notes`` say what it lacks (e.g. LFS files left
    as pointers because git-lfs is not installed)."""

    path: Path
    branch: str
    notes: tuple[str, ...] = ()


@frozen
class WorktreeInfo:
    """A worktree found under the state folder. ``merged`` is None for an integration worktree and
    when the run's integration worktree is gone (nothing to compare against)."""

    path: Path
    run_id: str
    branch: str | None
    head: str | None
    clean: bool
    merged: bool | None


@frozen
class RemoveResult:
    """What :func:`remove_worktree_if_merged` did: ``removed``, else ``reason`` says why it kept it."""

    removed: bool
    reason: Literal["removed", "not_merged", "dirty", "missing"]
    detail: str


@frozen
class Registration:
    """One entry of ``git worktree list --porcelain``; ``branch`` is a full ref name."""

    path: Path
    head: str | None
    branch: str | None


def story_branch_name(integration_branch: str, story_key: str) -> str:
    """The story branch beside ``integration_branch``: ``bmad/epic-1`` + ``1.2`` →
    ``bmad/epic-1-story-1.2``. (Not ``bmad/epic-1/1.2``: git stores refs as paths, so a branch
    ``bmad/epic-1`` and a branch under ``bmad/epic-1/`` cannot both exist.)"""
    key = safe_name(story_key)
    while ".." in key:
        key = key.replace("..", ".")
    key = key.removesuffix(".lock")
    return f"{integration_branch}-story-{key}"


def integration_path(project: Path, run_id: str) -> Path:
    """``<project>/.bmad-trio/worktrees/<run>/_integration``."""
    return worktrees_dir(project) / safe_name(run_id) / INTEGRATION_DIR_NAME


def story_path(project: Path, run_id: str, story_key: str) -> Path:
    """``<project>/.bmad-trio/worktrees/<run>/<story-key>``."""
    return worktrees_dir(project) / safe_name(run_id) / safe_name(story_key)


async def create_integration(
    project: Path, *, run_id: str, branch: str, start_commit: str
) -> Worktree:
    """The run's integration worktree on ``branch`` (e.g. ``bmad/epic-1``), created from
    ``start_commit``; on resume the existing one is reused.

    Raises :class:`GitError` when ``branch`` already exists with commits not made by this run (a
    branch name taken) or is checked out elsewhere. Cancellation: kills the git command under way;
    a half-made worktree is completed (or reset) by the next call for the same run.
    """
    return await _ensure_worktree(
        Path(project),
        integration_path(project, run_id),
        branch=branch,
        base=start_commit,
        run_id=run_id,
    )


async def create_story_worktree(
    project: Path, *, run_id: str, story_key: str, branch: str, base_commit: str
) -> Worktree:
    """A story's worktree on ``branch`` (see :func:`story_branch_name`), created from ``base_commit`` (the
    integration tip); reused when it exists. Same errors and cancellation as :func:`create_integration`."""
    return await _ensure_worktree(
        Path(project),
        story_path(project, run_id, story_key),
        branch=branch,
        base=base_commit,
        run_id=run_id,
    )


async def _ensure_worktree(
    project: Path, path: Path, *, branch: str, base: str, run_id: str
) -> Worktree:
    # Before the folder exists, so that the user's checkout never sees it.
    await anyio.to_thread.run_sync(ensure_state_ignored, project)
    known = await registrations(project)
    mine = _find(known, path)
    folder = anyio.Path(path)
    if mine is not None and await folder.is_dir():
        if mine.branch != f"refs/heads/{branch}":
            raise GitError(
                f"{path} is a worktree of {mine.branch or 'a detached HEAD'}, not of {branch}"
            )
        return await _finish_checkout(project, Worktree(path=path, branch=branch))
    if mine is not None:  # registered, but its folder was deleted: forget the registration
        await git("worktree", "prune", cwd=project, check=False)
    for other in known:
        if other.branch == f"refs/heads/{branch}" and not _same(other.path, path):
            raise GitError(
                f"branch {branch} is already checked out at {other.path}; "
                "choose another branch prefix"
            )
    if await folder.exists() and [entry async for entry in folder.iterdir()]:
        raise GitError(f"{path} exists and is not a worktree of this repository; move it away")
    await folder.parent.mkdir(parents=True, exist_ok=True)
    exists = await git(
        "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=project, check=False
    )
    if exists.ok:
        await _check_leftover(project, branch=branch, base=base, run_id=run_id)
        await git(*NO_HOOKS, "worktree", "add", str(path), branch, cwd=project)
    else:
        await git(*NO_HOOKS, "worktree", "add", "-b", branch, str(path), base, cwd=project)
    return await _finish_checkout(project, Worktree(path=path, branch=branch))


async def _check_leftover(project: Path, *, branch: str, base: str, run_id: str) -> None:
    """An existing branch is reused only if every commit it has beyond ``base`` was made by this run."""
    commits = await commit_trailer_values(project, [f"{base}..refs/heads/{branch}"], _RUN_TRAILER)
    foreign = [commit for commit, runs in commits if run_id not in runs]
    if foreign:
        raise GitError(
            f"branch {branch} already exists with {len(foreign)} commit(s) not made by run {run_id} "
            f"(newest {foreign[0][:12]}); the branch name is taken: rename or delete it "
            f"(git branch -m {branch} <new-name>) or choose another branch prefix"
        )


async def _finish_checkout(project: Path, worktree: Worktree) -> Worktree:
    """Sparse checkout, submodules and LFS content, as the user's own checkout has them."""
    notes: list[str] = []
    await _apply_sparse_checkout(project, worktree.path)
    if (worktree.path / ".gitmodules").is_file():
        result = await git(
            *NO_HOOKS,
            "submodule",
            "update",
            "--init",
            "--recursive",
            cwd=worktree.path,
            check=False,
        )
        if not result.ok:
            first = (result.stderr.strip().splitlines() or ["exit code " + str(result.returncode)])[
                -1
            ]
            notes.append(f"submodules could not be checked out in {worktree.path}: {first}")
    if await _uses_lfs(worktree.path):
        if (await git("lfs", "version", cwd=worktree.path, check=False)).ok:
            pulled = await git("lfs", "pull", cwd=worktree.path, check=False)
            if not pulled.ok:
                notes.append(
                    f"git lfs pull failed in {worktree.path}: {pulled.stderr.strip()[:200]}"
                )
        else:
            notes.append(
                f"the repository uses Git LFS but git-lfs is not installed: LFS files in {worktree.path} "
                "stay pointer files"
            )
    return Worktree(path=worktree.path, branch=worktree.branch, notes=tuple(notes))


async def _apply_sparse_checkout(project: Path, worktree: Path) -> None:
    sparse = await git("config", "--bool", "core.sparseCheckout", cwd=project, check=False)
    if sparse.stdout.strip() != "true":
        return
    source = await _git_path(project, "info/sparse-checkout")
    target = await _git_path(worktree, "info/sparse-checkout")
    if not source.is_file():
        return
    if not target.is_file():  # git ≥ 2.36 copies the patterns itself; older git leaves them behind
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    await git(*NO_HOOKS, "sparse-checkout", "reapply", cwd=worktree)


async def _git_path(cwd: Path, name: str) -> Path:
    result = await git("rev-parse", "--git-path", name, cwd=cwd)
    path = Path(result.stdout.strip())
    return path if path.is_absolute() else cwd / path


async def _uses_lfs(worktree: Path) -> bool:
    listed = await git("ls-files", "-z", "--", ".gitattributes", "*/.gitattributes", cwd=worktree)
    for name in filter(None, listed.stdout.split("\0")):
        try:
            if "filter=lfs" in (worktree / name).read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _find(registrations: list[Registration], path: Path) -> Registration | None:
    return next((r for r in registrations if _same(r.path, path)), None)


async def registrations(project: Path) -> list[Registration]:
    """Every worktree git knows for the repository of ``project`` (``git worktree list``).
    Cancellation: kills git."""
    version = await git_version(project)
    nul = version is not None and version[:2] >= (2, 36)  # -z arrived in git 2.36
    result = await git("worktree", "list", "--porcelain", *(["-z"] if nul else []), cwd=project)
    lines = result.stdout.split("\0" if nul else "\n")
    out: list[Registration] = []
    fields: dict[str, str] = {}
    for line in [*lines, ""]:
        if not line:
            if "worktree" in fields:
                out.append(
                    Registration(
                        path=Path(fields["worktree"]),
                        head=fields.get("HEAD"),
                        branch=fields.get("branch"),
                    )
                )
            fields = {}
            continue
        key, _, value = line.partition(" ")
        fields[key] = value
    return out


async def list_worktrees(project: Path) -> list[WorktreeInfo]:
    """The worktrees under ``<project>/.bmad-trio/worktrees`` (integration and story worktrees of
    every run), with whether each is clean and, for story worktrees, landed on its run's integration
    branch. Read-only. Cancellation: kills the git command under way."""
    root = worktrees_dir(project)
    found: list[WorktreeInfo] = []
    known = await registrations(Path(project))
    integration_branches: dict[str, str] = {}
    for reg in known:
        run = _run_of(reg.path, root)
        if run is not None and reg.path.name == INTEGRATION_DIR_NAME and reg.branch:
            integration_branches[run] = reg.branch.removeprefix("refs/heads/")
    for reg in known:
        run = _run_of(reg.path, root)
        if run is None:
            continue
        branch = reg.branch.removeprefix("refs/heads/") if reg.branch else None
        clean = reg.path.is_dir() and not await dirty_paths(reg.path)
        merged: bool | None = None
        integration = integration_branches.get(run)
        if reg.path.name != INTEGRATION_DIR_NAME and integration is not None and branch is not None:
            merged = await is_landed(Path(project), integration, branch)
        found.append(
            WorktreeInfo(
                path=reg.path, run_id=run, branch=branch, head=reg.head, clean=clean, merged=merged
            )
        )
    return found


def _run_of(path: Path, root: Path) -> str | None:
    try:
        relative = path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return relative.parts[0] if len(relative.parts) == 2 else None


async def remove_worktree_if_merged(
    project: Path, wt: Worktree, integration_branch: str
) -> RemoveResult:
    """Remove ``wt`` only if its branch has landed on ``integration_branch`` (see
    :func:`~bmad_trio._git._merge.is_landed`) and it has no uncommitted change; otherwise keep it and
    say why. The story branch itself is kept (it holds the phase commits).

    Cancellation: kills the git command under way; a removal cut short is finished by ``git worktree
    prune`` or the next call.
    """
    project = Path(project)
    if not wt.path.is_dir():
        return RemoveResult(removed=False, reason="missing", detail=f"{wt.path} does not exist")
    dirty = await dirty_paths(wt.path)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        return RemoveResult(removed=False, reason="dirty", detail=f"uncommitted changes: {shown}")
    if not await is_landed(project, integration_branch, wt.branch):
        return RemoveResult(
            removed=False,
            reason="not_merged",
            detail=f"{wt.branch} has not landed on {integration_branch}",
        )
    # --force: we checked cleanliness ourselves (git refuses any worktree holding submodules without it).
    await git("worktree", "remove", "--force", str(wt.path), cwd=project)
    return RemoveResult(removed=True, reason="removed", detail=f"removed {wt.path}")
