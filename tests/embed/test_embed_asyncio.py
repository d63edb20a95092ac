"""An asyncio application embeds a run: plain ``asyncio.run``, native task cancellation, resume.

No plugin needed: these are sync tests that start their own asyncio loop.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from _embed_helpers import HangingAgent, config_for, make_project, signal_handlers

from bmad_trio import ConfigError, RunFinished, RunReport, RunStarted, open_run, run_epic
from bmad_trio._state._store import open_store


def test_run_epic_in_an_asyncio_app_cancel_then_resume(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path)
    config = config_for(project)
    handlers = signal_handlers()

    async def main() -> tuple[str, RunReport]:
        task: asyncio.Task[RunReport] | None = None

        def cancel() -> None:
            assert task is not None
            task.cancel()  # plain asyncio cancellation, from the application

        agent = HangingAgent(hang_at=("1.2", "dev"), on_hang=cancel)
        task = asyncio.create_task(run_epic(config, runner=agent.runner()))
        with pytest.raises(asyncio.CancelledError):
            await task
        async with open_store(project) as store:
            run_id = await store.latest_run_id()
            assert run_id is not None
            status = (await store.get_run(run_id)).status
        report = await run_epic(config, runner=agent.runner(), resume=True)
        assert report.run_id == run_id
        for story in ("1.1", "1.2", "1.3"):
            assert [agent.disk.sessions[(story, r)] for r in ("sm", "dev", "qa")] == [1, 1, 1]
        return status, report

    status, report = asyncio.run(main())
    assert status == "interrupted"
    assert report.status == "done", report.failure_reason
    assert capfd.readouterr() == ("", "")
    assert signal_handlers() == handlers
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_open_run_and_events_in_an_asyncio_app(tmp_path: Path) -> None:
    project = make_project(tmp_path)

    async def main() -> tuple[list[str], RunReport]:
        agent = HangingAgent(hang_at=("-", "-"))
        async with open_run(config_for(project), runner=agent.runner()) as run:
            kinds: list[str] = []
            async for event in run.events:
                kinds.append(type(event).__name__)
                if isinstance(event, RunStarted):
                    assert event.run_id == run.run_id
            report = await run.wait()
        return kinds, report

    kinds, report = asyncio.run(main())
    assert report.ok
    assert kinds[0] == "RunStarted"
    assert kinds[-1] == RunFinished.__name__
    assert kinds.count("StoryFinished") == 3


def test_bad_input_in_an_asyncio_app_is_a_config_error(tmp_path: Path) -> None:
    project = make_project(tmp_path)

    async def main() -> None:
        await run_epic(config_for(project, stories=("7.7",)))

    with pytest.raises(ConfigError, match=r"--story 7\.7"):
        asyncio.run(main())
    assert not (project / ".bmad-trio").exists()
