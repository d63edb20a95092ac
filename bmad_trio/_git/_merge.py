"""The merge lane's primitives: land a story on the integration branch as one squashed commit, rebase a
story onto the integration tip (leaving conflicts for a resolver session), and bring a worktree back
to a consistent commit after a crash.

The integration branch only ever advances by a completed commit, so its HEAD is always a consistent
state: recovery resets to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

from attrs import frozen

from bmad_trio._errors import GitError

from ._command import NO_HOOKS, git
from ._commits import DEFAULT_IDENTITY, Identity, identity_args
from ._trailers import commit_trailer_values, format_message, write_message_file

__all__ = [
    "STORY_BRANCH_TRAILER",
    "STORY_HEAD_TRAILER",
    "LandResult",
    "RebaseResult",
    "abort_rebase",
    "continue_rebase",
    "is_landed",
    "land_story",
    "rebase_in_progress",
    "rebase_story",
    "recover_integration",
    "recover_story_worktree",
]

STORY_BRANCH_TRAILER: Final = "Bmad-Story-Branch"
STORY_HEAD_TRAILER: Final = "Bmad-Story-Head"
_MAX_SKIPS: Final = 1000


@frozen
class LandResult:
    """The outcome of :func:`land_story`.

    ``landed``: ``commit`` is the new integration tip. ``conflict``: ``files`` conflicted; the
    integration worktree is back at ``previous``. ``hook_failed``: the user's pre-commit or commit-msg
    hook (or, rarely, another commit step such as signing) refused the commit; ``output`` is what it
    printed; the integration worktree is back at ``previous``.
    """

    status: Literal["landed", "conflict", "hook_failed"]
    previous: str
    commit: str | None = None
    files: tuple[str, ...] = ()
    output: str = ""


@frozen
class RebaseResult:
    """The outcome of a rebase step: ``rebased`` (``head`` is the story's new tip) or ``conflict``
    (the rebase is left in progress with ``files`` unmerged, for a resolver session to fix)."""

    status: Literal["rebased", "conflict"]
    head: str | None = None
    files: tuple[str, ...] = ()


async def _rev(cwd: Path, rev: str) -> str:
    return (
        await git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=cwd)
    ).stdout.strip()


async def _unmerged(cwd: Path) -> tuple[str, ...]:
    result = await git("diff", "--name-only", "--diff-filter=U", "-z", cwd=cwd)
    return tuple(sorted({p for p in result.stdout.split("\0") if p}))


async def _reset_to(cwd: Path, commit: str) -> None:
    await git(*NO_HOOKS, "reset", "--hard", "--quiet", commit, cwd=cwd)
    await git("clean", "-fd", "--quiet", cwd=cwd)


async def land_story(
    integration_wt: Path,
    *,
    story_branch: str,
    message: str,
    trailers: Mapping[str, str],
    run_hooks: bool = True,
    identity_default: Identity = DEFAULT_IDENTITY,
) -> LandResult:
    """Squash-merge ``story_branch`` onto the integration worktree's branch as ONE commit with
    ``message`` (the story's title) and ``trailers`` plus ``Bmad-Story-Branch`` and
    ``Bmad-Story-Head`` (so :func:`is_landed` can tell later). The story branch keeps its phase commits.

    The user's hooks run on this commit (unless ``run_hooks`` is false). On a conflict or a refused
    commit the integration worktree is reset to its previous tip: never a half merge. A story that
    changes nothing still gets its (empty) commit, so that it counts as landed.

    Cancellation: kills git. If the commit completed, the branch has advanced (``is_landed`` says
    so); otherwise :func:`recover_integration` resets the half-done merge.
    """
    previous = await _rev(integration_wt, "HEAD")
    story_head = await _rev(integration_wt, f"refs/heads/{story_branch}")
    # The identity goes to the merge too: a merge that is not a fast-forward needs one even with
    # --squash (git refuses "Committer identity unknown" in a repository without user.email).
    who = await identity_args(integration_wt, identity_default)
    merged = await git(
        *NO_HOOKS,
        *who,
        "merge",
        "--squash",
        "--no-commit",
        f"refs/heads/{story_branch}",
        cwd=integration_wt,
        check=False,
    )
    if not merged.ok:
        files = await _unmerged(integration_wt)
        await _reset_to(integration_wt, previous)
        if not files:
            raise GitError(
                f"git merge --squash {story_branch}: {(merged.stderr or merged.stdout).strip()[:300]}"
            )
        return LandResult(
            status="conflict", previous=previous, files=files, output=merged.stdout + merged.stderr
        )
    text = format_message(
        message, {**trailers, STORY_BRANCH_TRAILER: story_branch, STORY_HEAD_TRAILER: story_head}
    )
    hooks = () if run_hooks else NO_HOOKS
    verify = () if run_hooks else ("--no-verify",)
    committed = await git(
        *hooks,
        *who,
        "commit",
        *verify,
        "--allow-empty",
        "--cleanup=whitespace",
        "-F",
        str(await write_message_file(integration_wt, text)),
        cwd=integration_wt,
        check=False,
    )
    if not committed.ok:
        await _reset_to(integration_wt, previous)
        return LandResult(
            status="hook_failed",
            previous=previous,
            output=(committed.stdout + committed.stderr).strip(),
        )
    return LandResult(status="landed", previous=previous, commit=await _rev(integration_wt, "HEAD"))


async def _git_path(cwd: Path, name: str) -> Path:
    result = await git("rev-parse", "--git-path", name, cwd=cwd)
    path = Path(result.stdout.strip())
    return path if path.is_absolute() else cwd / path


async def rebase_in_progress(worktree: Path) -> bool:
    """Is a rebase stopped in ``worktree``? Cancellation: kills git."""
    for name in ("rebase-merge", "rebase-apply"):
        if (await _git_path(worktree, name)).exists():
            return True
    return False


async def rebase_story(
    story_wt: Path, onto: str, *, identity_default: Identity = DEFAULT_IDENTITY
) -> RebaseResult:
    """Rebase the story's branch onto ``onto`` (the integration tip). On a conflict the rebase is left
    in progress and the conflicting files returned, so a resolver session can fix them in the
    worktree; then :func:`continue_rebase` (or :func:`abort_rebase`). Hooks don't run.

    Cancellation: kills git; :func:`recover_story_worktree` aborts the rebase it leaves behind.
    """
    who = await identity_args(story_wt, identity_default)
    result = await git(
        *NO_HOOKS, *who, "rebase", "--no-autosquash", onto, cwd=story_wt, check=False
    )
    return await _after_rebase_step(story_wt, result.ok, result.stdout + result.stderr, who)


async def continue_rebase(
    story_wt: Path, *, identity_default: Identity = DEFAULT_IDENTITY
) -> RebaseResult:
    """Stage everything (``git add -A``: the resolver's edits) and continue the rebase; a commit whose
    changes the resolution made empty is dropped. Returns the next conflict, if a later commit
    conflicts too. Cancellation: kills git; the rebase stays in progress."""
    if not await rebase_in_progress(story_wt):
        raise GitError(f"no rebase in progress in {story_wt}")
    who = await identity_args(story_wt, identity_default)
    await git(*NO_HOOKS, "add", "-A", cwd=story_wt)
    result = await git(*NO_HOOKS, *who, "rebase", "--continue", cwd=story_wt, check=False)
    return await _after_rebase_step(story_wt, result.ok, result.stdout + result.stderr, who)


async def _after_rebase_step(
    story_wt: Path, ok: bool, output: str, who: tuple[str, ...]
) -> RebaseResult:
    for _ in range(_MAX_SKIPS):
        if ok or not await rebase_in_progress(story_wt):
            if not ok:
                raise GitError(f"git rebase in {story_wt}: {output.strip()[:300]}")
            return RebaseResult(status="rebased", head=await _rev(story_wt, "HEAD"))
        files = await _unmerged(story_wt)
        if files:
            return RebaseResult(status="conflict", files=files)
        staged = await git("diff", "--cached", "--quiet", cwd=story_wt, check=False)
        if staged.returncode == 0:
            # The commit became empty (its change is already on the target): drop it, as git would.
            step = await git(*NO_HOOKS, *who, "rebase", "--skip", cwd=story_wt, check=False)
        else:
            step = await git(*NO_HOOKS, *who, "rebase", "--continue", cwd=story_wt, check=False)
        ok, output = step.ok, step.stdout + step.stderr
    raise GitError(f"git rebase in {story_wt} did not finish: {output.strip()[:300]}")


async def abort_rebase(story_wt: Path) -> None:
    """Abort a rebase in progress (the branch returns to where it was); nothing if none is.
    Cancellation: kills git; calling it again finishes the job."""
    if await rebase_in_progress(story_wt):
        await git(*NO_HOOKS, "rebase", "--abort", cwd=story_wt)


async def _remove_stale_locks(worktree: Path) -> list[str]:
    removed: list[str] = []
    names = ["index.lock", "HEAD.lock"]
    branch = await git("symbolic-ref", "--quiet", "HEAD", cwd=worktree, check=False)
    if branch.ok:
        names.append(branch.stdout.strip() + ".lock")
    for name in names:
        lock = await _git_path(worktree, name)
        if lock.is_file():
            lock.unlink()
            removed.append(f"removed stale {lock}")
    return removed


async def _recover(worktree: Path) -> list[str]:
    actions = await _remove_stale_locks(worktree)
    if await rebase_in_progress(worktree):
        aborted = await git(*NO_HOOKS, "rebase", "--abort", cwd=worktree, check=False)
        if not aborted.ok:
            await git("rebase", "--quit", cwd=worktree, check=False)
        actions.append("aborted a rebase in progress")
    for name, what in (
        ("MERGE_HEAD", "merge"),
        ("CHERRY_PICK_HEAD", "cherry-pick"),
        ("REVERT_HEAD", "revert"),
    ):
        if (await _git_path(worktree, name)).exists():
            actions.append(f"abandoned a {what} in progress")
    if (await _git_path(worktree, "sequencer")).exists():
        await git("cherry-pick", "--quit", cwd=worktree, check=False)
    if (await _git_path(worktree, "SQUASH_MSG")).exists():
        actions.append("abandoned a squash merge in progress")
        (await _git_path(worktree, "SQUASH_MSG")).unlink(missing_ok=True)
    status = await git("status", "--porcelain=v1", "-z", "--untracked-files=normal", cwd=worktree)
    if status.stdout:
        actions.append("reset uncommitted changes to the last commit")
    await _reset_to(worktree, "HEAD")
    return actions


async def recover_integration(integration_wt: Path) -> list[str]:
    """On resume: bring the integration worktree back to its branch tip. Removes stale lock files of a
    killed git, aborts a merge/rebase/cherry-pick in progress, resets the index and files to HEAD
    (``reset --hard`` + ``clean -fd``; ignored files stay). Returns what it did, for the run's log.

    Call it only while no other git command runs in that worktree (the run lock guarantees it).
    Cancellation: kills git; calling it again finishes the job.
    """
    return await _recover(integration_wt)


async def recover_story_worktree(story_wt: Path) -> list[str]:
    """On resume: abort a rebase in progress and reset the story worktree to its last commit (as
    :func:`recover_integration`). Committed phases are kept. Cancellation: as :func:`recover_integration`."""
    return await _recover(story_wt)


async def is_landed(repo: Path, integration_branch: str, story_branch: str) -> bool:
    """Has ``story_branch``'s current tip landed on ``integration_branch``? True when the tip is an
    ancestor of it, or when a commit on it (after the tip's fork point) carries the trailer
    ``Bmad-Story-Head: <tip>`` (a squash landing). A missing story branch is not landed.
    Cancellation: kills git."""
    story = await git(
        "rev-parse",
        "--verify",
        "--quiet",
        f"refs/heads/{story_branch}^{{commit}}",
        cwd=repo,
        check=False,
    )
    if not story.ok:
        return False
    head = story.stdout.strip()
    target = f"refs/heads/{integration_branch}"
    ancestor = await git("merge-base", "--is-ancestor", head, target, cwd=repo, check=False)
    if ancestor.returncode == 0:
        return True
    if ancestor.returncode != 1:
        raise GitError(
            f"git merge-base --is-ancestor {head[:12]} {target}: {ancestor.stderr.strip()}"
        )
    landed = await commit_trailer_values(repo, [f"{head}..{target}"], STORY_HEAD_TRAILER)
    return any(head in values for _, values in landed)
