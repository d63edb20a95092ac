"""The exception tree. Every error the library raises on purpose derives from :class:`BmadError`.

::

    BmadError
    ├── ConfigError          bad configuration or command-line input (exit 2)
    │   ├── ConfigValueError a value out of range (also a ValueError)
    │   └── ConfigTypeError  a value of the wrong type (also a TypeError)
    ├── ProjectError         a BMAD project file is missing, malformed or unsafe (exit 2)
    ├── StateError           the run store is unusable: corrupt, foreign, locked, unknown run (exit 2)
    ├── PreflightError       no CLI, no auth, API unreachable (exit 3)
    │   └── RepositoryError  the project's git repository is not ready for a run (exit 2)
    ├── GitError             a git command failed (names the command and git's first error line)
    ├── AgentError           an agent session could not run or ended badly
    │   ├── AgentAPIError    the model API refused or failed (category, HTTP status)
    │   ├── AgentCLIError    the Claude Code CLI failed (its real stderr text)
    │   └── AgentTimeout     the session or idle deadline passed
    ├── GateError            a quality gate could not run (missing tool, bad command)
    └── RunAbort             the run stopped early on purpose: no new session starts (exit 1)
        └── BudgetSpent      the run's budget is spent (exit 1)

Third-party errors are translated at the boundary where they occur; an internal ExceptionGroup never
escapes the public API: :func:`collapse` turns a group of BmadErrors into its most severe member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, cast

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PREFLIGHT",
    "EXIT_USAGE",
    "AgentAPIError",
    "AgentCLIError",
    "AgentError",
    "AgentTimeout",
    "BmadError",
    "BudgetSpent",
    "ConfigError",
    "ConfigTypeError",
    "ConfigValueError",
    "GateError",
    "GitError",
    "PreflightError",
    "ProjectError",
    "RepositoryError",
    "RunAbort",
    "StateError",
    "collapse",
    "exit_code_for",
    "unwrap_single",
]


class BmadError(Exception):
    """Base of every error bmad-trio raises on purpose."""

    @property
    def exit_code(self) -> int:
        """The command line's exit code for this error (from :data:`EXIT_CODES`)."""
        code = exit_code_for(self)
        return EXIT_FAILED if code is None else code  # never None: BmadError is in the table


class ConfigError(BmadError):
    """Bad configuration or command-line input; names the file and key."""


class ConfigValueError(ConfigError, ValueError):
    """A configuration value is out of range or malformed (e.g. a NaN timeout)."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value has the wrong type (e.g. a string where a number belongs)."""


class ProjectError(BmadError):
    """A BMAD project file is missing, malformed or unsafe; names the file and line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class StateError(BmadError):
    """The run store cannot be used: corrupt, foreign, locked by another run, or unknown run id."""


class PreflightError(BmadError):
    """A precondition for spending money failed: no CLI, no auth, API unreachable."""


class RepositoryError(PreflightError):
    """The project's git repository is not ready for a run: not a work tree, no commit yet, uncommitted
    changes, detached HEAD, git missing or too old. The message says which command fixes it.
    Bad input, so exit 2 (nothing was run or written), unlike the other preflight failures."""


class GitError(BmadError):
    """A git command failed. ``args`` are git's arguments, ``stderr`` its full error output."""

    def __init__(
        self,
        message: str,
        *,
        args: tuple[str, ...] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        self.git_args = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class AgentError(BmadError):
    """An agent session could not run or ended badly."""


class AgentAPIError(AgentError):
    """The model API refused or failed; ``category`` is e.g. ``rate_limit``, ``status`` the HTTP code."""

    def __init__(self, message: str, *, category: str, status: int | None = None) -> None:
        self.category = category
        self.status = status
        super().__init__(message)


class AgentCLIError(AgentError):
    """The Claude Code CLI failed; ``stderr`` holds its real (redacted) error output."""

    def __init__(self, message: str, *, stderr: str = "", exit_code: int | None = None) -> None:
        self.stderr = stderr
        self.cli_exit_code = exit_code
        super().__init__(message)


class AgentTimeout(AgentError):
    """A session passed its overall or idle deadline."""


class GateError(BmadError):
    """A quality gate could not run at all (as opposed to running and failing)."""


class RunAbort(BmadError):
    """Stop the whole run (no new sessions): e.g. the API refused the credentials.

    A run ends ``failed`` with this as its reason (exit 1); the library catches it inside the run.
    """


class BudgetSpent(RunAbort):
    """The run's budget is spent; no new session may start."""


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PREFLIGHT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES: Final[Mapping[type[BaseException], int]] = {
    BmadError: EXIT_FAILED,
    ConfigError: EXIT_USAGE,
    ProjectError: EXIT_USAGE,
    StateError: EXIT_USAGE,
    PreflightError: EXIT_PREFLIGHT,
    RepositoryError: EXIT_USAGE,
    GitError: EXIT_FAILED,
    AgentError: EXIT_FAILED,
    GateError: EXIT_FAILED,
    RunAbort: EXIT_FAILED,
    BudgetSpent: EXIT_FAILED,
    KeyboardInterrupt: EXIT_INTERRUPTED,
}
"""The one table of exit codes: each error class of the tree (and Ctrl-C) with the command line's
exit code for it. A class not listed takes its nearest listed base's code."""


def exit_code_for(error: BaseException) -> int | None:
    """The exit code :data:`EXIT_CODES` gives ``error``'s class or its nearest listed base; None for
    an error outside the table (a bug: the command line lets it propagate)."""
    for cls in type(error).__mro__:
        code = EXIT_CODES.get(cls)
        if code is not None:
            return code
    return None


def unwrap_single(exc: BaseException) -> BaseException:
    """The one real error inside (nested) single-member exception groups, else ``exc`` itself."""
    current: BaseException = exc
    while True:
        inner = cast(tuple[BaseException, ...], getattr(current, "exceptions", ()))
        if len(inner) != 1 or not isinstance(cast(object, current), BaseExceptionGroup):
            return current
        current = inner[0]


def collapse(exc: BaseException) -> BaseException:
    """What to report for ``exc``: the one error inside single-member exception groups; for a group
    whose every leaf is a :class:`BmadError`, the most severe of them (the highest ``exit_code``,
    the first on a tie); anything else (a bug, a cancellation, a mixed group) unchanged."""
    single = unwrap_single(exc)
    if not isinstance(single, BaseExceptionGroup):
        return single
    group = cast(BaseExceptionGroup[BaseException], single)
    leaves = _leaves(group)
    errors = [leaf for leaf in leaves if isinstance(leaf, BmadError)]
    if not errors or len(errors) != len(leaves):
        return group
    return max(errors, key=lambda error: error.exit_code)  # max() keeps the first on a tie


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            out.extend(_leaves(cast(BaseExceptionGroup[BaseException], inner)))
        else:
            out.append(inner)
    return out
