"""Test helpers for bmad-trio and for users' own tests: a mock agent runner and the scripted
Anthropic Messages API server (:class:`FakeAnthropicAPI`) that the real Claude Code CLI talks to."""

from ._bmad_actor import BmadActor as BmadActor
from ._bmad_actor import StoryContext as StoryContext
from ._bmad_actor import bmad_actor_scenario as bmad_actor_scenario
from ._bmad_actor import parse_context as parse_context
from ._fake_api import FakeAnthropicAPI as FakeAnthropicAPI
from ._fake_api import serve_fake_api as serve_fake_api
from ._mock_runner import MockAgentRunner as MockAgentRunner
from ._mock_runner import MockHandler as MockHandler
from ._scenario import ApiRequest as ApiRequest
from ._scenario import Fault as Fault
from ._scenario import Reply as Reply
from ._scenario import Responder as Responder
from ._scenario import Rule as Rule
from ._scenario import Scenario as Scenario
from ._scenario import TextBlock as TextBlock
from ._scenario import ToolUseBlock as ToolUseBlock
from ._scenario import load_scenario as load_scenario
from ._scenario import scenario_from_mapping as scenario_from_mapping

__all__ = [
    "ApiRequest",
    "BmadActor",
    "FakeAnthropicAPI",
    "Fault",
    "MockAgentRunner",
    "MockHandler",
    "Reply",
    "Responder",
    "Rule",
    "Scenario",
    "StoryContext",
    "TextBlock",
    "ToolUseBlock",
    "bmad_actor_scenario",
    "load_scenario",
    "parse_context",
    "scenario_from_mapping",
    "serve_fake_api",
]
