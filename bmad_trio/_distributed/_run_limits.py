"""The run's budget and rate-limit pause, shared by every worker through the engine's database.

Drop-in for one machine's :class:`Budget` and :class:`PauseGate` inside a worker's story cycle:
the same rules, with the state in ``bmad_trio_runs``/``bmad_trio_reservations`` (see _shared).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from .._errors import BudgetSpent
from .._events import Event
from .._workflow._run_services import Budget, BudgetReservation, PauseGate
from ._shared import SharedState, call_retrying

__all__ = ["SharedBudget", "SharedPauseGate"]

log = logging.getLogger("bmad_trio.worker")

_WAIT_S = 1.0
"""How often a session waiting for budget held elsewhere asks again (sessions on other machines
settle by writing their SessionFinished: there is no wake-up to wait on across machines)."""


class SharedBudget(Budget):
    """The run's budget across workers. ``settle`` stays local bookkeeping: the shared release
    happens with the session's SessionFinished event (see :meth:`SharedState.add_event`)."""

    def __init__(
        self, shared: SharedState, run_id: str, story_id: str, worker: str, cap_usd: float | None
    ) -> None:
        super().__init__(cap_usd)
        self._shared = shared
        self._key = (run_id, story_id, worker)

    async def reserve(self) -> BudgetReservation:
        """Reserve this story's next session's share; waits while other sessions hold the rest.
        Raises BudgetSpent when nothing is left and no session anywhere is in flight."""
        if self.cap_usd is None:
            await anyio.lowlevel.checkpoint()
            return BudgetReservation(None)
        while True:
            decided = await anyio.to_thread.run_sync(
                self._shared.reserve, *self._key, self._floor()
            )
            self.spent_usd = decided.spent_usd
            if decided.share_usd is not None:
                self.reserved_usd = decided.share_usd
                return BudgetReservation(decided.share_usd)
            if decided.spent:
                raise BudgetSpent(f"the run's budget of ${self.cap_usd:.2f} is spent")
            await anyio.sleep(_WAIT_S)


class SharedPauseGate(PauseGate):
    """The run's rate-limit pause across workers: a pause one worker meets holds every worker's
    next session back too. ``pause`` (synchronous, as the caller needs) takes effect here at
    once, and in the database at the next :meth:`wait`, which every session passes first."""

    def __init__(
        self, shared: SharedState, run_id: str, emit: Callable[[Event], Awaitable[None]]
    ) -> None:
        super().__init__(emit)
        self._shared = shared
        self._run_id = run_id
        self._wall_until = 0.0
        self._local_reason = ""

    def pause(self, seconds: float, reason: str) -> None:
        super().pause(seconds, reason)
        until = time.time() + max(0.0, seconds)
        if until > self._wall_until:
            self._wall_until, self._local_reason = until, reason

    async def wait(self) -> None:
        publish = functools.partial(
            self._shared.pause, self._run_id, self._wall_until, self._local_reason
        )
        until, reason = await call_retrying(publish, log, "the run's pause")
        left = until - time.time()
        if left > 0:
            super().pause(left, reason)  # another worker's pause (or ours) holds us too
        await super().wait()
