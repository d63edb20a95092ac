"""bmad-trio: drive BMAD epics through Claude Code with structured concurrency (trio and asyncio).

Public names are imported on first use (PEP 562), so ``bmad-trio --help`` and ``import bmad_trio``
stay fast; type checkers see the plain imports below.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._errors import AgentAPIError as AgentAPIError
from ._errors import AgentCLIError as AgentCLIError
from ._errors import AgentError as AgentError
from ._errors import AgentTimeout as AgentTimeout
from ._errors import BmadError as BmadError
from ._errors import BudgetSpent as BudgetSpent
from ._errors import ConfigError as ConfigError
from ._errors import ConfigTypeError as ConfigTypeError
from ._errors import ConfigValueError as ConfigValueError
from ._errors import GateError as GateError
from ._errors import GitError as GitError
from ._errors import PreflightError as PreflightError
from ._errors import ProjectError as ProjectError
from ._errors import RepositoryError as RepositoryError
from ._errors import RunAbort as RunAbort
from ._errors import StateError as StateError
from ._version import __version__ as __version__

if TYPE_CHECKING:
    from ._agents._claude_runner import ClaudeAgentRunner as ClaudeAgentRunner
    from ._agents._runner import AgentMessage as AgentMessage
    from ._agents._runner import AgentRunner as AgentRunner
    from ._agents._runner import Outcome as Outcome
    from ._agents._runner import Role as Role
    from ._agents._runner import SessionResult as SessionResult
    from ._agents._runner import SessionSpec as SessionSpec
    from ._agents._runner import ToolCall as ToolCall
    from ._agents._runner import ToolRefusal as ToolRefusal
    from ._agents._sandbox import Sandbox as Sandbox
    from ._config import GateCommand as GateCommand
    from ._config import RunConfig as RunConfig
    from ._events import AgentActivity as AgentActivity
    from ._events import Event as Event
    from ._events import GateFinished as GateFinished
    from ._events import GateStarted as GateStarted
    from ._events import MergeConflict as MergeConflict
    from ._events import PhaseFinished as PhaseFinished
    from ._events import PhaseStarted as PhaseStarted
    from ._events import RunFinished as RunFinished
    from ._events import RunPaused as RunPaused
    from ._events import RunResumed as RunResumed
    from ._events import RunStarted as RunStarted
    from ._events import SessionFinished as SessionFinished
    from ._events import StoryFinished as StoryFinished
    from ._events import StoryMerged as StoryMerged
    from ._events import StoryMoved as StoryMoved
    from ._events import StoryStarted as StoryStarted
    from ._events import StoryStatusChanged as StoryStatusChanged
    from ._events import ToolRefused as ToolRefused
    from ._workflow._run import GateReport as GateReport
    from ._workflow._run import Run as Run
    from ._workflow._run import RunReport as RunReport
    from ._workflow._run import StoryReport as StoryReport
    from ._workflow._run import open_run as open_run
    from ._workflow._run import run_epic as run_epic
    from ._workflow._run import serve_run as serve_run

_LAZY: dict[str, str] = {
    "AgentMessage": "._agents._runner",
    "AgentRunner": "._agents._runner",
    "Outcome": "._agents._runner",
    "Role": "._agents._runner",
    "SessionResult": "._agents._runner",
    "SessionSpec": "._agents._runner",
    "ToolCall": "._agents._runner",
    "ToolRefusal": "._agents._runner",
    "Sandbox": "._agents._sandbox",
    "ClaudeAgentRunner": "._agents._claude_runner",
    "GateCommand": "._config",
    "RunConfig": "._config",
    "AgentActivity": "._events",
    "Event": "._events",
    "GateFinished": "._events",
    "GateStarted": "._events",
    "PhaseFinished": "._events",
    "PhaseStarted": "._events",
    "RunFinished": "._events",
    "RunPaused": "._events",
    "RunResumed": "._events",
    "RunStarted": "._events",
    "SessionFinished": "._events",
    "MergeConflict": "._events",
    "StoryMoved": "._events",
    "StoryFinished": "._events",
    "StoryMerged": "._events",
    "StoryStarted": "._events",
    "StoryStatusChanged": "._events",
    "ToolRefused": "._events",
    "GateReport": "._workflow._run",
    "Run": "._workflow._run",
    "RunReport": "._workflow._run",
    "StoryReport": "._workflow._run",
    "open_run": "._workflow._run",
    "run_epic": "._workflow._run",
    "serve_run": "._workflow._run",
}

__all__ = [
    "AgentAPIError",
    "AgentActivity",
    "AgentCLIError",
    "AgentError",
    "AgentMessage",
    "AgentRunner",
    "AgentTimeout",
    "BmadError",
    "BudgetSpent",
    "ClaudeAgentRunner",
    "ConfigError",
    "ConfigTypeError",
    "ConfigValueError",
    "Event",
    "GateCommand",
    "GateError",
    "GateFinished",
    "GateReport",
    "GateStarted",
    "GitError",
    "MergeConflict",
    "Outcome",
    "PhaseFinished",
    "PhaseStarted",
    "PreflightError",
    "ProjectError",
    "RepositoryError",
    "Role",
    "Run",
    "RunAbort",
    "RunConfig",
    "RunFinished",
    "RunPaused",
    "RunReport",
    "RunResumed",
    "RunStarted",
    "Sandbox",
    "SessionFinished",
    "SessionResult",
    "SessionSpec",
    "StateError",
    "StoryFinished",
    "StoryMerged",
    "StoryMoved",
    "StoryReport",
    "StoryStarted",
    "StoryStatusChanged",
    "ToolCall",
    "ToolRefusal",
    "ToolRefused",
    "__version__",
    "open_run",
    "run_epic",
    "serve_run",
]

# The library logs to "bmad_trio"; like any library it prints nothing unless the application
# configures logging (the command line attaches run.log and its own handlers).
logging.getLogger("bmad_trio").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bmad_trio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
