"""Helpers for the embedding tests: a sample project and a disk agent that can hang mid-run.

These tests run with pytest-trio (``-p no:anyio``); the asyncio test is a plain sync test that calls
``asyncio.run``. ``tests/`` is on ``sys.path`` (pytest inserts the directory of ``tests/conftest.py``),
so the shared :mod:`_disk_agent` is importable here.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
from _disk_agent import DiskAgent, make_project
from _disk_agent import run_config as config_for

from bmad_trio import SessionResult, SessionSpec
from bmad_trio.testing import MockAgentRunner, parse_context

__all__ = ["HangingAgent", "config_for", "make_project", "signal_handlers"]


class HangingAgent:
    """A :class:`DiskAgent` whose first session for ``hang_at`` (story, role) never ends.

    When that session starts, ``on_hang`` is called (e.g. to cancel the caller's scope) and the
    session sleeps until it is cancelled; it never reaches the disk agent, so ``disk.sessions``
    counts only sessions that did their job. Later sessions (after a resume) behave normally.
    """

    def __init__(
        self, hang_at: tuple[str, str], on_hang: Callable[[], object] | None = None
    ) -> None:
        self.disk = DiskAgent()
        self.hang_at = hang_at
        self.on_hang = on_hang
        self.armed = True
        self.hung = 0

    def runner(self) -> MockAgentRunner:
        return MockAgentRunner(self.handle)

    async def handle(self, spec: SessionSpec) -> SessionResult:
        context = parse_context(spec.prompt)
        if self.armed and context is not None and (context.story, context.role) == self.hang_at:
            self.armed = False
            self.hung += 1
            if self.on_hang is not None:
                self.on_hang()
            await anyio.sleep_forever()
        return await self.disk.handle(spec)


def signal_handlers() -> dict[int, object]:
    """Every signal's current handler (to check that the library installs none)."""
    handlers: dict[int, object] = {}
    for number in signal.valid_signals():
        try:
            handlers[int(number)] = signal.getsignal(number)
        except (OSError, ValueError):  # pragma: no cover - platform-specific signals
            continue
    return handlers
