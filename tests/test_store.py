"""The SQLite run store and the project run lock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from bmad_trio._agents._runner import Outcome, Role, SessionResult
from bmad_trio._errors import StateError
from bmad_trio._state import _store
from bmad_trio._state._redact import REDACTED, Redactor
from bmad_trio._state._run_lock import RunLock
from bmad_trio._state._store import (
    SCHEMA_VERSION,
    Store,
    new_run_id,
    open_store,
    state_db_path,
)

pytestmark = pytest.mark.anyio

API_KEY = "sk-ant-api03-store-test-KEY-0123456789"
ENV_SECRET = "plain-env-secret-value-42"
SLACK_URL = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/xxxxxxxxxxxxxxxxxxxxxxxx"


@contextlib.contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def ok_result(cost: float, **kw: object) -> SessionResult:
    return SessionResult(
        outcome=Outcome.OK,
        cost_usd=cost,
        input_tokens=100,
        output_tokens=20,
        turns=3,
        duration_s=1.5,
        **kw,  # type: ignore[arg-type]
    )


async def seed(store: Store) -> str:
    run_id = await store.create_run("docs/epic-1.md", json.dumps({"max_cycles": 3}))
    await store.upsert_story(run_id, "1.1", title="First", position=0, status="draft")
    await store.upsert_story(run_id, "1.2", title="Second", position=1, status="ready_for_dev")
    return run_id


# -- opening, schema, migrations ----------------------------------------------------------------


def test_new_run_id_shape() -> None:
    run_id = new_run_id(0.0)
    assert run_id.startswith("19700101-000000-")
    assert len(run_id) == len("19700101-000000-ab12")


async def test_migrates_an_empty_project(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        assert store.path == state_db_path(tmp_path)
        assert await store.latest_run_id() is None
        assert await store.runs() == []
    with raw_db(state_db_path(tmp_path)) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert meta == {"app": "bmad-trio", "schema_version": str(SCHEMA_VERSION)}
    assert {"meta", "runs", "stories", "phases", "sessions"} <= tables


async def test_row_classes_name_the_columns_they_read(tmp_path: Path) -> None:
    """Each row class's fields are its SELECT list (one definition): every one is a column of
    its table, and every column of the table is read."""
    async with open_store(tmp_path):
        pass
    mappers = {
        "runs": _store._run_row,  # pyright: ignore[reportPrivateUsage]
        "stories": _store._story_row,  # pyright: ignore[reportPrivateUsage]
        "phases": _store._phase_row,  # pyright: ignore[reportPrivateUsage]
        "sessions": _store._session_row,  # pyright: ignore[reportPrivateUsage]
    }
    with raw_db(state_db_path(tmp_path)) as conn:
        for table, mapper in mappers.items():
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            assert sorted(mapper.columns.split(", ")) == sorted(columns), table


async def test_wal_mode(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as store:
        await seed(store)
        with raw_db(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_reopen_keeps_data(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
    async with open_store(tmp_path) as store:
        assert await store.latest_run_id() == run_id
        run = await store.get_run(run_id)
        assert run.status == "running"
        assert run.epic == "docs/epic-1.md"
        assert run.config() == {"max_cycles": 3}
        assert [s.story_id for s in await store.stories(run_id)] == ["1.1", "1.2"]


async def test_migrates_an_older_schema_and_keeps_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
    newer = (*_store.MIGRATIONS, ("CREATE TABLE extra (x INTEGER)",))
    monkeypatch.setattr(_store, "MIGRATIONS", newer)
    monkeypatch.setattr(_store, "SCHEMA_VERSION", len(newer))
    async with open_store(tmp_path) as store:
        assert (await store.get_run(run_id)).epic == "docs/epic-1.md"
    with raw_db(state_db_path(tmp_path)) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (str(len(newer)),)
        assert conn.execute("SELECT count(*) FROM extra").fetchone() == (0,)


async def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = state_db_path(tmp_path)
    path.parent.mkdir(parents=True)
    garbage = b"this is not a database at all\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StateError, match="not a usable bmad-trio state database") as info:
        await Store.open(tmp_path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage  # untouched


async def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw_db(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.commit()
    with pytest.raises(StateError, match=r"not a bmad-trio state database.*no meta table") as info:
        await Store.open(tmp_path, path=path)
    assert str(path) in str(info.value)
    with raw_db(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL


async def test_foreign_meta_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw_db(path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('app', 'someone-else')")
        conn.commit()
    with pytest.raises(StateError, match="app marker is 'someone-else'"):
        await Store.open(tmp_path, path=path)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        pass
    with raw_db(state_db_path(tmp_path)) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.commit()
    with pytest.raises(StateError, match="schema version 99, newer than"):
        await Store.open(tmp_path)


async def test_closed_store_refuses(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    await store.aclose()
    await store.aclose()  # idempotent
    assert store.closed
    with pytest.raises(StateError, match="closed"):
        await store.latest_run_id()


# -- runs, stories, phases, sessions ------------------------------------------------------------


async def test_unknown_ids(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        with pytest.raises(StateError, match="no run 'nope'"):
            await store.get_run("nope")
        with pytest.raises(StateError, match="no run 'nope'"):
            await store.set_run_status("nope", "done")
        with pytest.raises(StateError, match=r"no story '9\.9'"):
            await store.update_story(run_id, "9.9", status="done")
        with pytest.raises(StateError, match="no phase 12345"):
            await store.finish_phase(12345, ok=True)
        with pytest.raises(ValueError, match="unknown run status"):
            await store.set_run_status(run_id, "bogus")  # type: ignore[arg-type]


async def test_run_status_lifecycle(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        await store.set_run_status(run_id, "interrupted", "Ctrl-C")
        run = await store.get_run(run_id)
        assert (run.status, run.failure_reason) == ("interrupted", "Ctrl-C")
        assert run.finished_at is not None
        await store.set_run_status(run_id, "running")
        run = await store.get_run(run_id)
        assert (run.status, run.failure_reason, run.finished_at) == ("running", None, None)


async def test_story_upsert_and_update(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        row = await store.update_story(
            run_id, "1.1", status="in_progress", phase="develop", cycles=1, add_duration=2.5
        )
        assert (row.status, row.phase, row.cycles, row.duration_s) == (
            "in_progress",
            "develop",
            1,
            2.5,
        )
        # A resume re-reads title/position/status from disk; progress is kept.
        await store.upsert_story(
            run_id, "1.1", title="First (renamed)", position=0, status="review", story_file="s.md"
        )
        row = await store.get_story(run_id, "1.1")
        assert (row.title, row.status, row.phase, row.cycles, row.story_file) == (
            "First (renamed)",
            "review",
            "develop",
            1,
            "s.md",
        )
        row = await store.update_story(run_id, "1.1", phase=None, failure_reason="boom")
        assert (row.phase, row.failure_reason) == (None, "boom")


async def test_phases_and_resume_view(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        draft = await store.start_phase(run_id, "1.1", "draft", Role.SM, 1)
        await store.finish_phase(draft, ok=True, detail="drafted")
        dev = await store.start_phase(run_id, "1.1", "develop", Role.DEV, 1)
        await store.finish_phase(dev, ok=False, detail="tests fail")
        await store.start_phase(run_id, "1.1", "develop", Role.DEV, 2)  # interrupted
        gate = await store.start_phase(run_id, None, "gate:pytest", Role.FIXER, 1)
        await store.finish_phase(gate, ok=True)
        assert (await store.get_story(run_id, "1.1")).phase == "develop"

    async with open_store(tmp_path) as store:  # resume
        done = await store.finished_phases(run_id, "1.1")
        assert [(p.phase, p.cycle, p.ok, p.detail) for p in done] == [
            ("draft", 1, True, "drafted"),
            ("develop", 1, False, "tests fail"),
        ]
        every = await store.phases(run_id)
        assert [p.phase for p in every] == ["draft", "develop", "develop", "gate:pytest"]
        assert every[2].ok is None
        assert not every[2].finished
        assert every[3].story_id is None
        assert every[0].role == "sm"


async def test_phase_for_unknown_story_is_refused_atomically(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        with pytest.raises(StateError, match="FOREIGN KEY"):
            await store.start_phase(run_id, "9.9", "draft", Role.SM, 1)
        with pytest.raises(StateError, match="FOREIGN KEY"):
            await store.record_session(run_id, "9.9", None, Role.DEV, 1, "x", ok_result(1.0))
        assert await store.phases(run_id) == []
        assert await store.sessions(run_id) == []
        assert (await store.get_run(run_id)).cost_usd == 0.0


async def test_sessions_add_cost_to_story_and_run(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        phase = await store.start_phase(run_id, "1.1", "develop", Role.DEV, 1)
        sid = await store.record_session(
            run_id,
            "1.1",
            phase,
            Role.DEV,
            1,
            "1.1-1-dev",
            ok_result(0.25),
            Path("t/1.1-1-dev.jsonl"),
        )
        await store.record_session(
            run_id,
            None,
            None,
            Role.FIXER,
            1,
            "gate-fix",
            SessionResult(outcome=Outcome.TIMEOUT, cost_usd=0.5, error="deadline"),
        )
        rows = await store.sessions(run_id)
        assert rows[0].id == sid
        assert (rows[0].outcome, rows[0].cost_usd, rows[0].input_tokens, rows[0].turns) == (
            "ok",
            0.25,
            100,
            3,
        )
        assert rows[0].transcript == "t/1.1-1-dev.jsonl"
        assert rows[0].phase_id == phase
        assert rows[0].finished_at - rows[0].started_at == pytest.approx(1.5)
        assert (rows[1].outcome, rows[1].story_id, rows[1].error) == ("timeout", None, "deadline")
        assert (await store.get_story(run_id, "1.1")).cost_usd == 0.25
        assert (await store.get_run(run_id)).cost_usd == 0.75
        assert await store.run_cost(run_id) == 0.75


async def test_costs_accumulate_across_resumes(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        await store.record_session(run_id, "1.1", None, Role.SM, 1, "a", ok_result(0.5))
        await store.set_run_status(run_id, "interrupted")
    async with open_store(tmp_path) as store:
        assert await store.latest_run_id() == run_id
        await store.set_run_status(run_id, "running")
        await store.record_session(run_id, "1.1", None, Role.DEV, 1, "b", ok_result(1.25))
        await store.record_session(run_id, "1.2", None, Role.DEV, 1, "c", ok_result(2.0))
        await store.update_story(run_id, "1.2", add_cost=0.125)  # a non-session cost
        assert await store.run_cost(run_id) == 3.75
        assert (await store.get_run(run_id)).cost_usd == 3.875
        costs = {s.story_id: s.cost_usd for s in await store.stories(run_id)}
        assert costs == {"1.1": 1.75, "1.2": 2.125}


async def test_latest_run_and_explicit_run_id(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        first = await store.create_run("e1", run_id="20260101-000000-aaaa")
        second = await store.create_run("e2")
        assert first == "20260101-000000-aaaa"
        assert await store.latest_run_id() == second
        with pytest.raises(StateError, match="already exists"):
            await store.create_run("e3", run_id=first)
        assert [r.run_id for r in await store.runs()] == [first, second]


# -- redaction ----------------------------------------------------------------------------------


async def test_everything_written_is_redacted(tmp_path: Path) -> None:
    redactor = Redactor.from_environ({"MY_API_KEY": ENV_SECRET})
    secrets = [API_KEY, ENV_SECRET, "pa55w0rd-x", "xxxxxxxxxxxxxxxxxxxxxxxx", "tok3n-value"]
    async with open_store(tmp_path, redactor=redactor) as store:
        config = {"model": "m", "api_key": "tok3n-value", "notify": SLACK_URL, "env": ENV_SECRET}
        run_id = await store.create_run(f"epic {API_KEY}", json.dumps(config))
        await store.upsert_story(
            run_id, "1.1", title=f"title {ENV_SECRET}", position=0, status="draft"
        )
        phase = await store.start_phase(run_id, "1.1", "develop", Role.DEV, 1)
        await store.finish_phase(phase, ok=False, detail=f"failed: Authorization: Bearer {API_KEY}")
        await store.record_session(
            run_id,
            "1.1",
            phase,
            Role.DEV,
            1,
            "label",
            SessionResult(outcome=Outcome.API_ERROR, error=f"401 for x-api-key: {ENV_SECRET}"),
        )
        await store.update_story(
            run_id, "1.1", failure_reason="push to https://bob:pa55w0rd-x@example.com failed"
        )
        await store.set_run_status(run_id, "failed", f"webhook {SLACK_URL}?token=tok3n-value")
        run = await store.get_run(run_id)
        assert run.config()["api_key"] == REDACTED
        assert run.config()["notify"] == f"https://hooks.slack.com/services/{REDACTED}"
        assert (await store.get_story(run_id, "1.1")).failure_reason == (
            f"push to https://bob:{REDACTED}@example.com failed"
        )
    raw = state_db_path(tmp_path).read_bytes()
    assert not state_db_path(tmp_path).with_name("state.db-wal").exists()
    for secret in secrets:
        assert secret.encode() not in raw, secret
    assert REDACTED.encode() in raw


# -- cancellation and crashes -------------------------------------------------------------------


async def test_write_in_cancelled_scope_completes(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.record_session(run_id, "1.1", None, Role.DEV, 1, "x", ok_result(1.0))
            await store.set_run_status(run_id, "interrupted", "cancelled")
            await anyio.lowlevel.checkpoint()  # the cancellation is delivered here
            pytest.fail("not cancelled")
        assert scope.cancelled_caught
        assert len(await store.sessions(run_id)) == 1
        assert (await store.get_story(run_id, "1.1")).cost_usd == 1.0
        assert (await store.get_run(run_id)).status == "interrupted"


async def test_cancel_right_after_starting_writes_leaves_a_consistent_db(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        run_id = await seed(store)
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(
                    store.record_session, run_id, "1.1", None, Role.DEV, n, f"s{n}", ok_result(1.0)
                )
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        sessions = await store.sessions(run_id)
        story = await store.get_story(run_id, "1.1")
        run = await store.get_run(run_id)
        # Every started write is complete, and the totals agree with the rows.
        assert len(sessions) == 10
        assert story.cost_usd == run.cost_usd == await store.run_cost(run_id) == 10.0
    async with open_store(tmp_path) as store:
        assert len(await store.sessions(run_id)) == 10


async def test_a_read_is_cancellable(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await seed(store)
        with anyio.move_on_after(0) as scope:
            await store.runs()
        assert scope.cancelled_caught


CRASHER = textwrap.dedent(
    """
    import json, sys, time, anyio
    from pathlib import Path
    from bmad_trio._agents._runner import Outcome, SessionResult
    from bmad_trio._state._store import open_store

    async def main():
        async with open_store(Path(sys.argv[1])) as store:
            run_id = await store.create_run("epic")
            await store.upsert_story(run_id, "1.1", title="t", position=0, status="draft")
            await store.record_session(
                run_id, "1.1", None, "dev", 1, "x", SessionResult(outcome=Outcome.OK, cost_usd=2.0)
            )
            print(run_id, flush=True)
            await anyio.sleep(60)

    anyio.run(main)
    """
)


def test_committed_writes_survive_sigkill(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert run_id

    async def check() -> None:
        async with open_store(tmp_path) as store:
            assert await store.latest_run_id() == run_id
            assert await store.run_cost(run_id) == 2.0

    anyio.run(check)


# -- the run lock -------------------------------------------------------------------------------


def test_lock_refuses_a_second_holder_in_process(tmp_path: Path) -> None:
    first = RunLock.for_project(tmp_path)
    with first:
        assert first.held
        assert first.path.read_text().strip() == str(os.getpid())
        with pytest.raises(
            StateError, match=rf"another bmad-trio run holds .*run.lock \(pid {os.getpid()}\)"
        ):
            RunLock.for_project(tmp_path).acquire()
        with pytest.raises(StateError, match="already held"):
            first.acquire()
    assert not first.held
    with RunLock.for_project(tmp_path):  # free again
        pass


async def test_lock_as_async_context_manager(tmp_path: Path) -> None:
    async with RunLock.for_project(tmp_path) as lock:
        assert lock.held
        with pytest.raises(StateError, match="another bmad-trio run holds"):
            async with RunLock.for_project(tmp_path):
                pass
    assert not lock.held


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bmad_trio._state._run_lock import RunLock

    lock = RunLock.for_project(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_lock_across_processes_and_released_on_sigkill(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StateError, match=rf"\(pid {proc.pid}\)"):
            RunLock.for_project(tmp_path).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    with RunLock.for_project(tmp_path) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())


async def test_open_and_close_in_a_cancelled_scope(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        store = await Store.open(tmp_path)  # shielded: never leaks a half-open connection
        await store.aclose()  # shielded too: the connection is closed
        assert store.closed
    assert scope.cancelled_caught is False  # no checkpoint was reached after the shielded calls
