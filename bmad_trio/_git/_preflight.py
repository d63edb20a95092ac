"""Is the project's repository ready for a run? :func:`check_repository` (async, raises) for ``run``;
:func:`describe_git_needs` (sync, never raises) for ``plan``, ``status`` and ``doctor``."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath
from typing import Final

from attrs import frozen

from bmad_trio._errors import GitError, RepositoryError
from bmad_trio._state._paths import STATE_DIR_NAME

from ._command import MIN_GIT_VERSION, git, git_env, parse_version

__all__ = [
    "RepoState",
    "check_repository",
    "describe_git_needs",
    "dirty_paths",
    "parse_porcelain_z",
]

_MAX_LISTED: Final = 10
_INIT_COMMANDS: Final = 'git init && git add -A && git commit -m "initial commit"'
_FIRST_COMMIT: Final = 'git add -A && git commit -m "initial commit"'


@frozen
class RepoState:
    """The repository a run starts from.

    ``project_subdir`` is the project's folder relative to ``top_level`` (``.`` when they are the same):
    inside a worktree the project lives at ``worktree / project_subdir``. ``note`` says, for a run with
    ``--allow-dirty`` over uncommitted changes, that those changes are not part of the run.
    """

    top_level: Path
    project_subdir: PurePosixPath
    branch: str | None
    head: str
    dirty: tuple[str, ...]
    note: str | None


def parse_porcelain_z(output: str) -> list[str]:
    """The paths of ``git status --porcelain=v1 -z`` output (for a rename, the new path)."""
    fields = output.split("\0")
    paths: list[str] = []
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if "R" in status or "C" in status:
            index += 1  # the rename's or copy's source path follows as its own field
    return paths


def _is_state_path(path: str, state_prefix: str) -> bool:
    return path == state_prefix.rstrip("/") or path.startswith(state_prefix)


def _state_prefix(subdir: PurePosixPath) -> str:
    return f"{STATE_DIR_NAME}/" if str(subdir) == "." else f"{subdir}/{STATE_DIR_NAME}/"


def _relative_subdir(project: Path, top_level: Path) -> PurePosixPath:
    try:
        relative = Path(project).resolve().relative_to(top_level.resolve())
    except ValueError:
        return PurePosixPath(".")
    return PurePosixPath(relative.as_posix()) if relative.parts else PurePosixPath(".")


def _summarise(paths: tuple[str, ...]) -> str:
    shown = ", ".join(paths[:_MAX_LISTED])
    more = len(paths) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


async def dirty_paths(
    worktree: Path, *, exclude_state_of: PurePosixPath | None = None
) -> tuple[str, ...]:
    """Uncommitted changes in ``worktree`` (tracked and untracked, paths relative to its top level),
    leaving out the state folder of the project at ``exclude_state_of``. Cancellation: kills ``git``."""
    result = await git(
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=normal",
        cwd=worktree,
        # Read-only: don't take index.lock to refresh the index, so the user's own git never waits.
        env_extra={"GIT_OPTIONAL_LOCKS": "0"},
    )
    paths = parse_porcelain_z(result.stdout)
    if exclude_state_of is not None:
        prefix = _state_prefix(exclude_state_of)
        paths = [path for path in paths if not _is_state_path(path, prefix)]
    return tuple(paths)


async def check_repository(project: Path, *, allow_dirty: bool) -> RepoState:
    """The state of the repository holding ``project``; raises :class:`RepositoryError` (exit 2,
    one-line message with the fixing command) when ``run`` cannot start from it.

    Checks, in order: git installed and ≥ 2.30, a work tree, at least one commit, a branch checked out
    (not a detached HEAD), no uncommitted changes (unless ``allow_dirty``). Writes nothing.
    Cancellation: the git command under way is killed; nothing to undo.
    """
    project = Path(project)
    if not project.is_dir():
        raise RepositoryError(f"{project}: no such directory")
    try:
        version = (await git("version", cwd=project)).stdout
    except GitError as exc:
        raise RepositoryError(f"{exc} (install git {_min_version()} or newer)") from None
    parsed = parse_version(version)
    if parsed is not None and parsed[:2] < MIN_GIT_VERSION:
        raise RepositoryError(
            f"git {'.'.join(map(str, parsed))} is too old: bmad-trio needs git {_min_version()} or newer"
        )
    inside = await git("rev-parse", "--is-inside-work-tree", cwd=project, check=False)
    if not inside.ok or inside.stdout.strip() != "true":
        raise RepositoryError(
            f"{project} is not in a git work tree; bmad-trio runs on a repository: {_INIT_COMMANDS}"
        )
    top_level = Path((await git("rev-parse", "--show-toplevel", cwd=project)).stdout.strip())
    head = await git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", cwd=project, check=False)
    if not head.ok:
        raise RepositoryError(f"{top_level} has no commit yet; make the first one: {_FIRST_COMMIT}")
    symbolic = await git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=project, check=False)
    branch = symbolic.stdout.strip() if symbolic.ok else None
    if branch is None:
        raise RepositoryError(
            f"{top_level} is on a detached HEAD; a run needs a branch to start from: git switch -c <name>"
        )
    subdir = _relative_subdir(project, top_level)
    dirty = await dirty_paths(top_level, exclude_state_of=subdir)
    note = None
    if dirty:
        if not allow_dirty:
            raise RepositoryError(
                f"{top_level} has uncommitted changes: {_summarise(dirty)}; "
                "commit them, set them aside with `git stash -u`, or run with --allow-dirty"
            )
        note = (
            f"the run starts from commit {head.stdout.strip()[:12]} on {branch}; "
            f"{len(dirty)} uncommitted change(s) ({_summarise(dirty)}) are not part of it"
        )
    return RepoState(
        top_level=top_level,
        project_subdir=subdir,
        branch=branch,
        head=head.stdout.strip(),
        dirty=dirty,
        note=note,
    )


def _min_version() -> str:
    return ".".join(map(str, MIN_GIT_VERSION))


def _run_sync(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=cwd,
            env=git_env({"GIT_OPTIONAL_LOCKS": "0"}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def describe_git_needs(project: Path) -> list[str]:
    """What ``run`` would need from git before it can start, one sentence each; empty when ready.

    For ``plan``, ``status`` and ``doctor``, which work without git: never raises, writes nothing.
    Synchronous (short ``git`` subprocesses, each bounded to 30 s); call it from a worker thread
    when inside an event loop.
    """
    project = Path(project)
    version = _run_sync(["version"], project) if project.is_dir() else None
    if version is None or version.returncode != 0:
        return [f"run needs git {_min_version()} or newer on PATH"]
    parsed = parse_version(version.stdout)
    if parsed is not None and parsed[:2] < MIN_GIT_VERSION:
        return [f"run needs git {_min_version()} or newer (found {'.'.join(map(str, parsed))})"]
    inside = _run_sync(["rev-parse", "--is-inside-work-tree"], project)
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != "true":
        return [f"run needs a git repository with a first commit: {_INIT_COMMANDS}"]
    needs: list[str] = []
    head = _run_sync(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], project)
    if head is None or head.returncode != 0:
        needs.append(f"run needs a first commit: {_FIRST_COMMIT}")
        return needs
    branch = _run_sync(["symbolic-ref", "--quiet", "--short", "HEAD"], project)
    if branch is None or branch.returncode != 0:
        needs.append("run needs a branch checked out (HEAD is detached): git switch -c <name>")
    top = _run_sync(["rev-parse", "--show-toplevel"], project)
    status = _run_sync(
        ["status", "--porcelain=v1", "-z", "--untracked-files=normal"],
        Path(top.stdout.strip()) if top and top.returncode == 0 else project,
    )
    if status is not None and status.returncode == 0 and top is not None:
        prefix = _state_prefix(_relative_subdir(project, Path(top.stdout.strip())))
        dirty = tuple(p for p in parse_porcelain_z(status.stdout) if not _is_state_path(p, prefix))
        if dirty:
            needs.append(
                f"run needs a clean work tree or --allow-dirty; uncommitted: {_summarise(dirty)}"
            )
    return needs
