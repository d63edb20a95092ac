"""Trio-only tests run with pytest-trio (its own nox session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bmad_trio import Outcome, Role, SessionResult, SessionSpec
from bmad_trio.testing import MockAgentRunner


@pytest.mark.trio
async def test_mock_runner_session_in_a_trio_nursery(tmp_path: Path) -> None:
    runner = MockAgentRunner()
    results: list[SessionResult] = []

    async def one() -> None:
        spec = SessionSpec(role=Role.DEV, prompt="do it", cwd=tmp_path)
        results.append(await runner.run_session(spec))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK]
    assert len(runner.calls) == 2
