"""Phase commits on a story branch (checkpoints: the user's hooks don't run, nothing is signed) and
rolling a story worktree back to its last one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from attrs import frozen

from ._command import NO_HOOKS, git
from ._trailers import format_message, write_message_file

__all__ = [
    "DEFAULT_IDENTITY",
    "Identity",
    "commit_phase",
    "identity_args",
    "rollback_to_last_commit",
]


@frozen
class Identity:
    """An author and committer identity."""

    name: str
    email: str


DEFAULT_IDENTITY: Final = Identity(name="bmad-trio", email="bmad-trio@localhost")
"""The identity of bmad-trio's commits in a repository with no ``user.name``/``user.email``
configured (the user's config is never written)."""


async def identity_args(worktree: Path, default: Identity = DEFAULT_IDENTITY) -> tuple[str, ...]:
    """``-c user.name=… -c user.email=…`` for the parts of the identity the repository (with its
    global and system config) leaves unset; empty when both are configured. Cancellation: kills git."""
    args: list[str] = []
    for key, value in (("user.name", default.name), ("user.email", default.email)):
        configured = await git("config", "--get", key, cwd=worktree, check=False)
        if not configured.ok or not configured.stdout.strip():
            args += ["-c", f"{key}={value}"]
    return tuple(args)


async def commit_phase(
    wt_path: Path,
    *,
    message: str,
    trailers: Mapping[str, str],
    identity_default: Identity = DEFAULT_IDENTITY,
) -> str | None:
    """Commit everything in the story worktree (``git add -A``) as one phase checkpoint; the new
    commit's id, or None when the phase changed nothing.

    The message ends with ``trailers`` (``Bmad-Story``, ``Bmad-Role``, ``Bmad-Cycle``, ``Bmad-Run``,
    ``Bmad-Cost-USD`` …) in the form ``git interpret-trailers --parse`` reads. The user's hooks do not
    run (``--no-verify`` and no hooks path) and the commit is not signed: it is a checkpoint, checked
    when the story lands. Cancellation: kills git; a commit cut short leaves the branch at the
    previous commit (git moves the branch last) and maybe a stale ``index.lock``, which
    :func:`~bmad_trio._git._merge.recover_story_worktree` removes.
    """
    text = format_message(message, trailers)
    await git(*NO_HOOKS, "add", "-A", cwd=wt_path)
    staged = await git("diff", "--cached", "--quiet", cwd=wt_path, check=False)
    if staged.returncode == 0:
        return None
    who = await identity_args(wt_path, identity_default)
    await git(
        *NO_HOOKS,
        *who,
        "commit",
        "--no-verify",
        "--no-gpg-sign",
        "--cleanup=whitespace",
        "--quiet",
        "-F",
        str(await write_message_file(wt_path, text)),
        cwd=wt_path,
    )
    return (await git("rev-parse", "HEAD", cwd=wt_path)).stdout.strip()


async def rollback_to_last_commit(wt_path: Path) -> None:
    """Throw away everything since the worktree's last commit: ``git reset --hard HEAD`` and
    ``git clean -fd``. Ignored files (``.venv``, build folders, caches) are kept on purpose (``-fd``,
    not ``-fdx``): they are not the phase's work and are costly to rebuild. Untracked nested
    repositories are kept too (git's rule for ``clean`` without a second ``-f``).

    Used on resume for a phase that was in flight; committed phases are never touched.
    Cancellation: kills git; calling it again finishes the job.
    """
    await git(*NO_HOOKS, "reset", "--hard", "--quiet", "HEAD", cwd=wt_path)
    await git("clean", "-fd", "--quiet", cwd=wt_path)
