"""MockAgentRunner: an AgentRunner for unit tests whose sessions are plain Python callables."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._agents._runner import AgentMessage, Outcome, SessionResult, SessionSpec

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

__all__ = ["MockAgentRunner", "MockHandler"]

MockHandler = Callable[[SessionSpec], "SessionResult | Awaitable[SessionResult | None] | None"]


class MockAgentRunner:
    """Runs each session by calling ``handler(spec)``, which may act on disk like an agent would.

    The handler returns a :class:`SessionResult` (or ``None`` for a plain OK result costing
    ``default_cost_usd``); it may be async and may sleep, so tests can cancel sessions mid-way.
    Every spec is recorded in :attr:`calls`. Cancellation propagates out of the handler unchanged.
    """

    def __init__(
        self,
        handler: MockHandler | None = None,
        *,
        default_cost_usd: float = 0.01,
        messages: Callable[[SessionSpec], list[AgentMessage]] | None = None,
    ) -> None:
        self._handler = handler
        self._default_cost_usd = default_cost_usd
        self._messages = messages
        self.calls: list[SessionSpec] = []

    async def run_session(
        self,
        spec: SessionSpec,
        messages: MemoryObjectSendStream[AgentMessage] | None = None,
    ) -> SessionResult:
        """Call the handler; send its scripted messages; closes ``messages``."""
        self.calls.append(spec)
        start = anyio.current_time()
        try:
            if messages is not None and self._messages is not None:
                for message in self._messages(spec):
                    await messages.send(message)
            result: SessionResult | None = None
            if self._handler is not None:
                produced = self._handler(spec)
                result = await produced if inspect.isawaitable(produced) else produced
            await anyio.lowlevel.checkpoint()
        finally:
            if messages is not None:
                messages.close()
        if result is None:
            result = SessionResult(
                outcome=Outcome.OK,
                cost_usd=self._default_cost_usd,
                turns=1,
                duration_s=anyio.current_time() - start,
            )
        return result

    async def aclose(self) -> None:
        """Nothing to release: the handler's sessions end with their callers."""
        await anyio.lowlevel.checkpoint()
