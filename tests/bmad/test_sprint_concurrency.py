"""Issue 13 item 10: two stories updating sprint-status.yaml at once must both land.

The writes run in worker threads (as the story cycle runs them). The deterministic test holds the
first writer inside its atomic replace, after it read the file, and lets the second writer go: with
no lock the second writer reads the old file, writes, and the first one's replace then drops its
change. With the run's :class:`SprintStatusFile` the second writer waits on the lock instead; the
test notices that wait through an instrumented lock, so it waits on events, never on time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from bmad_trio._bmad import _sprint_status
from bmad_trio._bmad._sprint_status import SprintStatusFile, read_sprint_status
from bmad_trio._bmad._status import StoryStatus

pytestmark = pytest.mark.anyio

SPRINT = """\
# generated: 2026-01-01
development_status:
  epic-1: in-progress
  1-1-first-story: review   # Dev done
  1-2-second-story: review
  epic-1-retrospective: optional
"""


class _SignallingLock:
    """A threading.Lock that sets ``contended`` when a thread has to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()
        self.on_contention: list[threading.Event] = []

    def __enter__(self) -> object:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            for event in self.on_contention:
                event.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _sprint_file(tmp_path: Path) -> Path:
    path = tmp_path / "sprint-status.yaml"
    path.write_text(SPRINT, encoding="utf-8")
    return path


async def test_second_writer_waits_for_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sprint_file(tmp_path)
    lock = _SignallingLock()
    sprint = SprintStatusFile(path, lock=lock)
    first_writing = threading.Event()
    release_first = threading.Event()
    second_progressed = threading.Event()  # the second writer finished, or waits on the lock
    lock.on_contention.append(second_progressed)
    real_write = _sprint_status.write_text_atomic
    first_thread: list[int] = []

    def write(target: Path, text: str, **kwargs: Any) -> None:
        if threading.get_ident() == first_thread[0]:
            first_writing.set()
            release_first.wait()
        real_write(target, text, **kwargs)

    monkeypatch.setattr(_sprint_status, "write_text_atomic", write)

    def first() -> bool:
        first_thread.append(threading.get_ident())
        return sprint.advance("1.1", StoryStatus.DONE)

    def second() -> bool:
        try:
            return sprint.advance("1.2", StoryStatus.DONE)
        finally:
            second_progressed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, first)
        await anyio.to_thread.run_sync(first_writing.wait)
        tg.start_soon(anyio.to_thread.run_sync, second)
        await anyio.to_thread.run_sync(second_progressed.wait)
        release_first.set()

    statuses = read_sprint_status(path)
    assert statuses["1-1-first-story"] == "done"
    assert statuses["1-2-second-story"] == "done"
    assert lock.contended.is_set()
    assert "review   # Dev done" not in path.read_text()
    assert "# Dev done" in path.read_text()


async def test_many_simultaneous_two_story_updates_all_land(tmp_path: Path) -> None:
    """The issue's measurement: 100 rounds of two stories finishing together (100/100 lost one)."""
    for round_ in range(100):
        path = tmp_path / f"sprint-{round_}.yaml"
        path.write_text(SPRINT, encoding="utf-8")
        sprint = SprintStatusFile(path)
        start = threading.Event()

        def update(
            story_id: str, sprint: SprintStatusFile = sprint, start: threading.Event = start
        ) -> None:
            start.wait()
            sprint.advance(story_id, StoryStatus.DONE)

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, update, "1.1")
            tg.start_soon(anyio.to_thread.run_sync, update, "1.2")
            start.set()
        statuses = read_sprint_status(path)
        assert (statuses["1-1-first-story"], statuses["1-2-second-story"]) == ("done", "done"), (
            f"round {round_}"
        )
