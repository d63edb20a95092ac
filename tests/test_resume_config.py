"""``resume`` runs with the stored run's settings; only what the caller gives explicitly overrides
them, and the run log says which (issue 13, 5)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _disk_agent import DiskAgent, make_project, run_config

from bmad_trio import ConfigError, RunConfig, open_run, run_epic
from bmad_trio._commandline._main import build_parser, resume_settings
from bmad_trio._config import resumed_config

pytestmark = pytest.mark.anyio


async def _interrupted_run(project: Path, agent: DiskAgent, config: RunConfig) -> None:
    """Run until the second session starts, then cancel (the run is left ``interrupted``)."""
    calls = 0

    def stop_at_second(_spec: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            scope.cancel(reason="test: interrupt the first run")

    agent.on_session = stop_at_second
    agent.delay_s = 0.01
    with anyio.CancelScope() as scope:
        await run_epic(config, runner=agent.runner())
    assert scope.cancelled_caught
    agent.on_session = None
    agent.delay_s = 0.0


def _run_log(project: Path, run_id: str) -> str:
    return (project / ".bmad-trio" / "runs" / run_id / "run.log").read_text()


async def test_a_resumed_run_keeps_its_spending_cap(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent(cost_usd=0.01)
    await _interrupted_run(project, agent, run_config(project, budget_usd=0.035))
    limits: list[float | None] = []
    agent.on_session = lambda spec: limits.append(spec.max_budget_usd)
    # the caller's config names no budget: the stored one still holds
    report = await run_epic(RunConfig(project=project), runner=agent.runner(), resume=True)
    assert report.failure_reason == "the run's budget of $0.04 is spent"
    assert report.cost_usd == pytest.approx(0.04)
    assert limits[0] == pytest.approx(0.025)
    assert "overridden: nothing" in _run_log(project, report.run_id)


async def test_stored_settings_win_over_defaults_given_values_win_over_stored(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent()
    first = run_config(project, max_cycles=2, budget_usd=5.0, model="stored-model", jobs=2)
    await _interrupted_run(project, agent, first)
    given = RunConfig(project=project, max_cycles=7)  # the rest are RunConfig's defaults
    async with open_run(given, runner=agent.runner(), resume=True) as run:
        assert run.config.max_cycles == 7
        assert run.config.budget_usd == 5.0
        assert run.config.model == "stored-model"
        assert run.config.jobs == 2
        assert run.config.skip_gates is True
        assert run.config.epic == first.epic
        run.events.close()
        report = await run.wait()
    assert report.status == "done", report.failure_reason
    assert "resumed with the stored settings; overridden: max_cycles" in _run_log(
        project, report.run_id
    )


async def test_resume_overrides_name_exactly_what_wins(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent()
    await _interrupted_run(project, agent, run_config(project, max_cycles=2, model="stored-model"))
    # max_cycles is named (its default value wins); model is set but not named (the stored wins)
    given = RunConfig(project=project, max_cycles=10, model="other-model")
    async with open_run(
        given, runner=agent.runner(), resume=True, resume_overrides={"max_cycles"}
    ) as run:
        assert run.config.max_cycles == 10
        assert run.config.model == "stored-model"
        run.events.close()
        await run.wait()
    with pytest.raises(ConfigError, match="no_such_key"):
        await run_epic(given, runner=agent.runner(), resume=True, resume_overrides={"no_such_key"})


def test_resumed_config_lists_only_the_keys_that_change() -> None:
    stored = RunConfig(project=Path("/p"), max_cycles=2, budget_usd=1.0)
    given = RunConfig(project=Path("/q"), max_cycles=2, budget_usd=3.0)
    config, changed = resumed_config(stored, given, {"max_cycles", "budget_usd"})
    assert config.project == Path("/q")  # always where the run is now
    assert config.budget_usd == 3.0
    assert changed == ("budget_usd",)


async def test_the_command_line_overrides_only_the_flags_given(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    agent = DiskAgent()
    await _interrupted_run(project, agent, run_config(project, budget_usd=0.5, max_cycles=2))
    # config files changed since the run started are not applied...
    (project / "bmad-trio.toml").write_text("budget_usd = 99.0\nmodel = 'from-file'\n")
    extra = project / "extra.toml"
    extra.write_text("jobs = 3\n")
    args = build_parser().parse_args(
        ["resume", "--project", str(project), "--max-cycles", "7", "--config", str(extra)]
    )
    config, overrides = await anyio.to_thread.run_sync(resume_settings, args)
    assert config.max_cycles == 7  # ...flags are
    assert config.jobs == 3  # ...and so is a config file given to `resume` with --config
    assert config.budget_usd == 0.5
    assert config.model is None
    assert config.skip_gates is True
    assert overrides == frozenset({"max_cycles", "jobs"})


async def test_the_command_line_without_a_stored_run_uses_the_flags(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    args = build_parser().parse_args(["resume", "--project", str(project), "--jobs", "2"])
    config, overrides = await anyio.to_thread.run_sync(resume_settings, args)
    assert config.jobs == 2  # nothing stored: the library reports "no run to resume" later
    assert overrides == frozenset({"jobs"})
    assert not (project / ".bmad-trio").exists()
