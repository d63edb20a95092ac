"""The end of a run: bring the integration branch to the user (``finish`` setting)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Literal

import anyio
from attrs import frozen

from bmad_trio._errors import GitError

from ._command import git
from ._preflight import dirty_paths
from ._worktrees import registrations

__all__ = ["FinishResult", "finish"]


@frozen
class FinishResult:
    """What :func:`finish` did.

    ``status``: ``merged`` (the user's branch was fast-forwarded), ``up_to_date``, ``left`` (the
    branch was left for the user; ``command`` is what to run), ``pushed``, ``push_failed``.
    ``pr_output``/``pr_returncode`` are the PR command's, when one ran.
    """

    mode: Literal["merge", "branch", "push"]
    status: Literal["merged", "up_to_date", "left", "pushed", "push_failed"]
    message: str
    command: str | None = None
    pr_output: str | None = None
    pr_returncode: int | None = None


async def finish(
    project: Path,
    *,
    mode: Literal["merge", "branch", "push"],
    integration_branch: str,
    user_branch: str,
    start_commit: str,
    remote: str | None,
    pr_command: str | None,
    title: str,
) -> FinishResult:
    """Hand the run's work over.

    ``merge``: fast-forward ``user_branch`` to the integration branch, only if it still points at
    ``start_commit`` and, where it is checked out, that checkout has no uncommitted change
    (``git merge --ff-only`` there; ``git update-ref`` with the old value checked when it is checked
    out nowhere); else leave it and return the exact command to run. ``branch``: leave the branch.
    ``push``: ``git push <remote> <branch>`` (never forced), then ``pr_command`` if given: split with
    :func:`shlex.split`, ``{branch}``/``{base}``/``{title}`` replaced in each argument, run without a
    shell, its output captured.

    Cancellation: kills the git command or PR command under way; a fast-forward or push is atomic.
    """
    project = Path(project)
    if mode == "branch":
        return FinishResult(
            mode=mode, status="left", message=f"the run's work is on branch {integration_branch}"
        )
    if mode == "push":
        return await _push(project, integration_branch, user_branch, remote, pr_command, title)
    return await _fast_forward(project, integration_branch, user_branch, start_commit)


async def _fast_forward(
    project: Path, integration: str, user_branch: str, start_commit: str
) -> FinishResult:
    target = (
        await git("rev-parse", "--verify", f"refs/heads/{integration}^{{commit}}", cwd=project)
    ).stdout.strip()
    tip = (
        await git("rev-parse", "--verify", f"refs/heads/{user_branch}^{{commit}}", cwd=project)
    ).stdout.strip()
    if tip == target:
        return FinishResult(
            mode="merge", status="up_to_date", message=f"{user_branch} already has the run's work"
        )
    checkout = await _checked_out_at(project, user_branch)
    where = checkout or project
    manual = f"git -C {shlex.quote(str(where))} merge {shlex.quote(integration)}"
    if tip != start_commit:
        return FinishResult(
            mode="merge",
            status="left",
            message=f"{user_branch} moved during the run (now {tip[:12]}); the work stays on {integration}",
            command=f"git -C {shlex.quote(str(where))} switch {shlex.quote(user_branch)} && {manual}"
            if checkout is None
            else manual,
        )
    if checkout is None:
        await git(
            "update-ref",
            "-m",
            f"bmad-trio: fast-forward to {integration}",
            f"refs/heads/{user_branch}",
            target,
            start_commit,
            cwd=project,
        )
        return FinishResult(
            mode="merge", status="merged", message=f"{user_branch} fast-forwarded to {integration}"
        )
    dirty = await dirty_paths(checkout, exclude_state_of=_subdir(project, checkout))
    if dirty:
        return FinishResult(
            mode="merge",
            status="left",
            message=f"{checkout} has uncommitted changes; the work stays on {integration}",
            command=f"git -C {shlex.quote(str(checkout))} merge --ff-only {shlex.quote(integration)}",
        )
    result = await git(
        "merge", "--ff-only", "--quiet", f"refs/heads/{integration}", cwd=checkout, check=False
    )
    if not result.ok:
        return FinishResult(
            mode="merge",
            status="left",
            message=f"fast-forward of {user_branch} failed: {result.stderr.strip().splitlines()[0] if result.stderr.strip() else result.returncode}",
            command=f"git -C {shlex.quote(str(checkout))} merge --ff-only {shlex.quote(integration)}",
        )
    return FinishResult(
        mode="merge", status="merged", message=f"{user_branch} fast-forwarded to {integration}"
    )


def _subdir(project: Path, checkout: Path) -> PurePosixPath | None:
    try:
        relative = project.resolve().relative_to(checkout.resolve())
    except ValueError:
        return None
    return PurePosixPath(relative.as_posix()) if relative.parts else PurePosixPath(".")


async def _checked_out_at(project: Path, branch: str) -> Path | None:
    for registration in await registrations(project):
        if registration.branch == f"refs/heads/{branch}":
            return registration.path
    return None


async def _push(
    project: Path, branch: str, base: str, remote: str | None, pr_command: str | None, title: str
) -> FinishResult:
    if not remote:
        raise GitError("finish = push needs a remote (none configured)")
    pushed = await git(
        "push",
        "--quiet",
        remote,
        f"refs/heads/{branch}:refs/heads/{branch}",
        cwd=project,
        check=False,
    )
    if not pushed.ok:
        return FinishResult(
            mode="push",
            status="push_failed",
            message=f"git push {remote} {branch} failed: {pushed.stderr.strip()[:300]}",
            command=f"git -C {shlex.quote(str(project))} push {shlex.quote(remote)} {shlex.quote(branch)}",
        )
    if not pr_command:
        return FinishResult(mode="push", status="pushed", message=f"pushed {branch} to {remote}")
    argv = [
        arg.replace("{branch}", branch).replace("{base}", base).replace("{title}", title)
        for arg in shlex.split(pr_command)
    ]
    try:
        ran = await anyio.run_process(
            argv, cwd=project, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=False
        )
    except OSError as exc:
        return FinishResult(
            mode="push",
            status="pushed",
            message=f"pushed {branch} to {remote}; the PR command could not start: {exc}",
            pr_output=str(exc),
        )
    return FinishResult(
        mode="push",
        status="pushed",
        message=f"pushed {branch} to {remote}; PR command exited {ran.returncode}",
        pr_output=ran.stdout.decode("utf-8", "replace"),
        pr_returncode=ran.returncode,
    )
