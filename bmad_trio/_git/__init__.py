"""The git layer of a run: git is the substrate (the ``git`` command line ≥ 2.30 through anyio
subprocesses; no reimplementation).

The model::

    main ──────●  (the user's branch: untouched during the run; fast-forwarded at the end)
                \\
    bmad/epic-1  ●─────────S1─────────S2──  (integration: one squashed commit per landed story)
                  \\        ↑           ↑
    bmad/epic-1-story-1.1 ●─sm─dev─qa   │   (story branches: one commit per phase, trailers)
                    \\                  │
    bmad/epic-1-story-1.2 ●─sm─dev─qa───┘

(A story branch cannot be named ``bmad/epic-1/<story>``: git keeps refs as paths, so ``bmad/epic-1``
and ``bmad/epic-1/…`` cannot both exist; :func:`story_branch_name` makes the names.)

Worktrees live in the state folder, which git (and so the user's tools) ignore:
``<project>/.bmad-trio/worktrees/<run>/_integration`` for the integration branch and
``<project>/.bmad-trio/worktrees/<run>/<story-key>`` per story. Internal commits and rebases run without
the user's hooks; landing a story runs them. Every function that runs git kills it when cancelled.
"""

from __future__ import annotations

from ._command import MIN_GIT_VERSION, GitResult, git, git_version
from ._commits import DEFAULT_IDENTITY, Identity, commit_phase, rollback_to_last_commit
from ._finish import FinishResult, finish
from ._merge import (
    STORY_BRANCH_TRAILER,
    STORY_HEAD_TRAILER,
    LandResult,
    RebaseResult,
    abort_rebase,
    continue_rebase,
    is_landed,
    land_story,
    rebase_in_progress,
    rebase_story,
    recover_integration,
    recover_story_worktree,
)
from ._preflight import RepoState, check_repository, describe_git_needs, dirty_paths
from ._state_folder import ensure_state_ignored
from ._worktrees import (
    RemoveResult,
    Worktree,
    WorktreeInfo,
    create_integration,
    create_story_worktree,
    integration_path,
    list_worktrees,
    remove_worktree_if_merged,
    story_branch_name,
    story_path,
)

__all__ = [
    "DEFAULT_IDENTITY",
    "MIN_GIT_VERSION",
    "STORY_BRANCH_TRAILER",
    "STORY_HEAD_TRAILER",
    "FinishResult",
    "GitResult",
    "Identity",
    "LandResult",
    "RebaseResult",
    "RemoveResult",
    "RepoState",
    "Worktree",
    "WorktreeInfo",
    "abort_rebase",
    "check_repository",
    "commit_phase",
    "continue_rebase",
    "create_integration",
    "create_story_worktree",
    "describe_git_needs",
    "dirty_paths",
    "ensure_state_ignored",
    "finish",
    "git",
    "git_version",
    "integration_path",
    "is_landed",
    "land_story",
    "list_worktrees",
    "rebase_in_progress",
    "rebase_story",
    "recover_integration",
    "recover_story_worktree",
    "remove_worktree_if_merged",
    "rollback_to_last_commit",
    "story_branch_name",
    "story_path",
]
