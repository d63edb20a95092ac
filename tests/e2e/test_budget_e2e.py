"""The spending cap through the real Claude Code CLI: a session killed mid-way is charged for the
usage it streamed (issue 13, 4)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bmad_trio import AgentActivity, ClaudeAgentRunner, open_run
from bmad_trio._agents._pricing import price_for
from bmad_trio._commandline._demo import scaffold_demo
from bmad_trio._config import load_config
from bmad_trio._state._store import open_store
from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.usefixtures("no_leftover_cli")]


async def test_a_session_cancelled_mid_way_is_charged_for_what_it_streamed(tmp_path: Path) -> None:
    demo = scaffold_demo(tmp_path / "demo")
    config = load_config(
        demo.root,
        overrides={
            "epic": demo.epic_path,
            "session_timeout": 120.0,
            "idle_timeout": 60.0,
            "jobs": 1,  # the first session alone is cancelled
        },
    )
    async with (
        FakeAnthropicAPI(bmad_actor_scenario()) as api,
        ClaudeAgentRunner(env=api.env()) as runner,
    ):
        with anyio.CancelScope() as scope:
            async with open_run(config, runner=runner) as run:
                async for event in run.events:
                    if isinstance(event, AgentActivity):  # the first session called a tool
                        scope.cancel(reason="test: interrupt the first session mid-way")
        assert scope.cancelled_caught
        model = api.message_requests[0].model
    async with open_store(demo.root) as store:
        run_id = await store.latest_run_id()
        assert run_id is not None
        (session,) = await store.sessions(run_id)
        cost = await store.run_cost(run_id)
    assert session.outcome == "cancelled"
    assert session.input_tokens > 0
    assert session.cost_usd > 0
    assert cost == pytest.approx(session.cost_usd)
    # priced as the model the CLI asked for, from the usage the server reported (no cache tokens)
    price = price_for(model)
    expected = (session.input_tokens * price.input + session.output_tokens * price.output) / 1e6
    assert session.cost_usd == pytest.approx(expected)
