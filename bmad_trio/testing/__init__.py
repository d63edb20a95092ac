"""Test helpers for bmad-trio and for users' own tests: a mock agent runner and (soon) the scripted
Anthropic Messages API server that the real Claude Code CLI talks to."""

from ._mock_runner import MockAgentRunner as MockAgentRunner
from ._mock_runner import MockHandler as MockHandler

__all__ = ["MockAgentRunner", "MockHandler"]
