"""The durable run state: :class:`Store` over SQLite at ``<project>/.bmad-trio/state.db``.

Threading: the sqlite3 connection is created with ``check_same_thread=False`` and is only ever used
inside ``anyio.to_thread.run_sync`` under the store's own ``CapacityLimiter(1)``: every query runs off
the event loop, one at a time ("one writer"), so the store works the same from trio and asyncio.

Durability: WAL mode with ``synchronous=FULL``; every write method is one transaction that commits
before it returns, so a crash (or power loss) loses at most the write in flight, and a half-done write
is never visible.

Cancellation: write methods run inside ``anyio.CancelScope(shield=True)``: once called, a write
completes (or fails with :class:`StateError`) even if the caller's scope is cancelled, and the
cancellation is delivered at the caller's next checkpoint. They may therefore be awaited from cleanup
code in an already-cancelled scope (e.g. to mark a run ``interrupted``). Reads are not shielded: a
cancelled read raises the cancellation once the query in flight has finished.

Errors: every sqlite3 error is translated to :class:`StateError` naming the database path: a file
that is not a database, a database of another application, one made by a newer bmad-trio, an unknown
run id, or a failed write. Every string written goes through the store's :class:`Redactor`.

Schema (see :data:`MIGRATIONS`): ``meta`` (key/value: ``app`` = ``bmad-trio``, ``schema_version``),
``runs``, ``stories``, ``phases`` and ``sessions``. Phases and sessions that belong to no story (the
quality gates and their fixer sessions) have ``story_id`` NULL.
"""

from __future__ import annotations

import enum
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Generic, Literal, TypeVar, cast, get_args

import anyio
import anyio.to_thread
import attrs

from .._agents._runner import SessionResult
from .._errors import StateError
from ._paths import state_db_path
from ._redact import Redactor

__all__ = [
    "APP_MARKER",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PhaseRow",
    "RunRow",
    "RunStatus",
    "SessionRow",
    "Store",
    "StoryRow",
    "new_run_id",
    "open_store",
]

APP_MARKER: Final = "bmad-trio"
BUSY_TIMEOUT_S: Final = 5.0
"""How long a write waits for another connection's lock (``status`` reading in WAL never blocks)."""

RunStatus = Literal["running", "done", "failed", "interrupted"]
RUN_STATUSES: Final[tuple[str, ...]] = get_args(RunStatus)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the initial schema.
    (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            epic TEXT NOT NULL,
            project TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
            config_json TEXT NOT NULL DEFAULT '{}',
            started_at REAL NOT NULL,
            finished_at REAL,
            cost_usd REAL NOT NULL DEFAULT 0,
            failure_reason TEXT
        )""",
        """CREATE TABLE stories (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            story_id TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            position INTEGER NOT NULL,
            status TEXT NOT NULL,
            phase TEXT,
            cycles INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            duration_s REAL NOT NULL DEFAULT 0,
            failure_reason TEXT,
            story_file TEXT,
            PRIMARY KEY (run_id, story_id)
        )""",
        """CREATE TABLE phases (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            story_id TEXT,
            phase TEXT NOT NULL,
            role TEXT NOT NULL,
            cycle INTEGER NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            ok INTEGER CHECK (ok IN (0, 1)),
            detail TEXT NOT NULL DEFAULT '',
            FOREIGN KEY (run_id, story_id) REFERENCES stories (run_id, story_id) ON DELETE CASCADE
        )""",
        "CREATE INDEX phases_by_story ON phases (run_id, story_id)",
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            story_id TEXT,
            phase_id INTEGER REFERENCES phases (id) ON DELETE SET NULL,
            role TEXT NOT NULL,
            cycle INTEGER NOT NULL,
            label TEXT NOT NULL,
            outcome TEXT NOT NULL,
            cost_usd REAL NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            turns INTEGER NOT NULL DEFAULT 0,
            duration_s REAL NOT NULL DEFAULT 0,
            error TEXT,
            started_at REAL NOT NULL,
            finished_at REAL NOT NULL,
            transcript TEXT,
            FOREIGN KEY (run_id, story_id) REFERENCES stories (run_id, story_id) ON DELETE CASCADE
        )""",
        "CREATE INDEX sessions_by_story ON sessions (run_id, story_id)",
    ),
)
"""Ordered migrations; ``MIGRATIONS[n]`` takes the schema from version ``n`` to ``n + 1``. Append only."""

SCHEMA_VERSION: Final = len(MIGRATIONS)

T = TypeVar("T")


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET: Final = _Unset.UNSET
"""Marks an :meth:`Store.update_story` field that is left alone (``None`` means "set to NULL")."""


def new_run_id(now: float | None = None) -> str:
    """A fresh run id: UTC ``YYYYMMDD-HHMMSS-xxxx`` (4 random hex digits), sortable by start time."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


@attrs.frozen(kw_only=True)
class RunRow:
    run_id: str
    epic: str
    project: str
    status: RunStatus
    config_json: str
    started_at: float
    finished_at: float | None
    cost_usd: float
    failure_reason: str | None

    def config(self) -> dict[str, Any]:
        """``config_json`` parsed (an empty dict if it is not a JSON object)."""
        try:
            value = json.loads(self.config_json)
        except ValueError:
            return {}
        return cast(dict[str, Any], value) if isinstance(value, dict) else {}


@attrs.frozen(kw_only=True)
class StoryRow:
    run_id: str
    story_id: str
    title: str
    position: int
    status: str
    """Canonical BMAD status (``draft`` ... ``blocked``)."""
    phase: str | None
    cycles: int
    cost_usd: float
    duration_s: float
    failure_reason: str | None
    story_file: str | None


@attrs.frozen(kw_only=True)
class PhaseRow:
    id: int
    run_id: str
    story_id: str | None
    phase: str
    role: str
    cycle: int
    started_at: float
    finished_at: float | None
    ok: bool | None
    """None while unfinished (or interrupted), else whether the phase succeeded."""
    detail: str

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@attrs.frozen(kw_only=True)
class SessionRow:
    id: int
    run_id: str
    story_id: str | None
    phase_id: int | None
    role: str
    cycle: int
    label: str
    outcome: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    turns: int
    duration_s: float
    error: str | None
    started_at: float
    finished_at: float
    transcript: str | None


R = TypeVar("R", bound=attrs.AttrsInstance)


class _RowMapper(Generic[R]):
    """One table's SELECT column list and its row → object function, both from the row class's
    attrs fields (a field's name is its column's name), so the two cannot drift apart.
    ``convert`` adapts a column whose SQLite value differs from the field's type."""

    def __init__(self, cls: type[R], **convert: Callable[[Any], Any]) -> None:
        self._cls = cls
        self._names: tuple[str, ...] = tuple(field.name for field in attrs.fields(cls))
        self._convert = convert
        self.columns: str = ", ".join(self._names)
        """The SELECT column list, in the order :meth:`__call__` reads a row."""

    def __call__(self, row: Sequence[Any]) -> R:
        values = dict(zip(self._names, row, strict=True))
        for name, convert in self._convert.items():
            values[name] = convert(values[name])
        return self._cls(**values)


def _optional_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


_run_row: Final = _RowMapper(RunRow)
_story_row: Final = _RowMapper(StoryRow)
_phase_row: Final = _RowMapper(PhaseRow, ok=_optional_bool)  # SQLite stores the bool as 0/1
_session_row: Final = _RowMapper(SessionRow)
_RUN_COLUMNS: Final = _run_row.columns
_STORY_COLUMNS: Final = _story_row.columns
_PHASE_COLUMNS: Final = _phase_row.columns
_SESSION_COLUMNS: Final = _session_row.columns


class Store:
    """The run state of one project; see the module docstring for threading and cancellation.

    Open with ``async with await Store.open(project) as store:`` or ``async with open_store(project)``.
    """

    def __init__(
        self, path: Path, connection: sqlite3.Connection, redactor: Redactor, project: Path
    ) -> None:
        """Internal: use :meth:`open`."""
        self.path = path
        self.project = project
        self.redactor = redactor
        self._conn: sqlite3.Connection | None = connection
        self._limiter = anyio.CapacityLimiter(1)

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        project: Path,
        *,
        redactor: Redactor | None = None,
        path: Path | None = None,
    ) -> Store:
        """Open (creating and migrating if needed) ``<project>/.bmad-trio/state.db``, or ``path``.

        Raises :class:`StateError` if the file is not a database, belongs to another application, or
        has a newer schema than this version knows. Shielded like a write, so a cancellation never
        leaks a half-opened connection; it is delivered at the caller's next checkpoint.
        """
        project = Path(project)
        db_path = Path(path) if path is not None else state_db_path(project)
        # Cannot hang: connecting and migrating are a few SQLite statements in a worker thread,
        # each bounded by the database's busy timeout (BUSY_TIMEOUT_S).
        with anyio.CancelScope(shield=True):
            conn = await anyio.to_thread.run_sync(_connect_and_migrate, db_path)
            return cls(db_path, conn, redactor if redactor is not None else Redactor(), project)
        raise AssertionError("unreachable: a shielded scope is never cancelled")

    async def aclose(self) -> None:
        """Close the connection after any query in flight (idempotent; shielded)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Cannot hang: it waits only for the statement in flight (bounded by the busy timeout),
        # then closing the connection is local work.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    @property
    def closed(self) -> bool:
        return self._conn is None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        return await anyio.to_thread.run_sync(self._in_thread, query, conn, limiter=self._limiter)

    async def _write(self, change: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        # Cannot hang: one transaction in a worker thread, behind at most the one statement in
        # flight; SQLite gives up on a lock after the busy timeout (BUSY_TIMEOUT_S) and we raise.
        with anyio.CancelScope(shield=True):
            return await anyio.to_thread.run_sync(
                self._in_thread, _transaction(change), conn, limiter=self._limiter
            )
        raise AssertionError("unreachable: a shielded scope is never cancelled")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"the store {self.path} is closed")
        return self._conn

    def _in_thread(self, call: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
        try:
            return call(conn)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    def _clean(self, text: str) -> str:
        return self.redactor.redact(text)

    def _clean_opt(self, text: str | None) -> str | None:
        return None if text is None else self.redactor.redact(text)

    def _clean_config(self, config_json: str) -> str:
        try:
            parsed = json.loads(config_json)
        except ValueError:
            return self._clean(config_json)
        return json.dumps(self.redactor.redact_json(parsed), sort_keys=True)

    # -- runs ----------------------------------------------------------------------------------

    async def create_run(
        self, epic: str, config_json: str = "{}", *, run_id: str | None = None
    ) -> str:
        """Insert a ``running`` run and return its id (fresh from :func:`new_run_id` unless given).

        ``config_json`` is redacted (keys such as ``api_key`` too when it parses as JSON).
        """
        epic_text = self._clean(str(epic))
        config_text = self._clean_config(config_json)
        project = self._clean(str(self.project))
        started = time.time()

        def change(conn: sqlite3.Connection) -> str:
            candidates = (
                [run_id] if run_id is not None else [new_run_id(started) for _ in range(20)]
            )
            for candidate in candidates:
                exists = conn.execute(
                    "SELECT 1 FROM runs WHERE run_id = ?", (candidate,)
                ).fetchone()
                if exists is None:
                    conn.execute(
                        "INSERT INTO runs (run_id, epic, project, status, config_json, started_at)"
                        " VALUES (?, ?, ?, 'running', ?, ?)",
                        (candidate, epic_text, project, config_text, started),
                    )
                    return candidate
            raise StateError(f"{self.path}: run id {candidates[-1]!r} already exists")

        return await self._write(change)

    async def latest_run_id(self) -> str | None:
        """The most recently started run's id, or None if there is none."""

        def query(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
            return None if row is None else cast(str, row[0])

        return await self._read(query)

    async def get_run(self, run_id: str) -> RunRow:
        """The run, or :class:`StateError` naming the unknown id."""

        def query(conn: sqlite3.Connection) -> RunRow:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise StateError(f"no run {run_id!r} in {self.path}")
            return _run_row(row)

        return await self._read(query)

    async def runs(self) -> list[RunRow]:
        """Every run, oldest first."""

        def query(conn: sqlite3.Connection) -> list[RunRow]:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at, rowid"
            ).fetchall()
            return [_run_row(row) for row in rows]

        return await self._read(query)

    async def set_run_status(
        self, run_id: str, status: RunStatus, reason: str | None = None
    ) -> None:
        """Set a run's status. ``done``/``failed``/``interrupted`` stamp ``finished_at`` and store
        ``reason``; ``running`` (a resume) clears both. Shielded write."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        clean_reason = self._clean_opt(reason)
        finished = None if status == "running" else time.time()

        def change(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, failure_reason = ? WHERE run_id = ?",
                (status, finished, clean_reason, run_id),
            )
            if cursor.rowcount == 0:
                raise StateError(f"no run {run_id!r} in {self.path}")

        await self._write(change)

    async def run_cost(self, run_id: str) -> float:
        """Total cost of every session recorded for the run, across all resumes."""

        def query(conn: sqlite3.Connection) -> float:
            row = conn.execute(
                "SELECT COALESCE(SUM(cost_usd), 0.0) FROM sessions WHERE run_id = ?", (run_id,)
            ).fetchone()
            return float(row[0])

        return await self._read(query)

    # -- stories -------------------------------------------------------------------------------

    async def upsert_story(
        self,
        run_id: str,
        story_id: str,
        *,
        title: str,
        position: int,
        status: str,
        story_file: str | None = None,
    ) -> None:
        """Insert a story, or update its title, position, status and story file (a resume re-reads
        them from disk); its phase, cycles, cost, duration and failure reason are kept. Shielded."""
        values = (
            run_id,
            story_id,
            self._clean(title),
            position,
            status,
            self._clean_opt(story_file),
        )

        def change(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO stories (run_id, story_id, title, position, status, story_file)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, story_id) DO UPDATE SET title = excluded.title,"
                " position = excluded.position, status = excluded.status,"
                " story_file = COALESCE(excluded.story_file, stories.story_file)",
                values,
            )

        await self._write(change)

    async def update_story(
        self,
        run_id: str,
        story_id: str,
        *,
        status: str | _Unset = UNSET,
        phase: str | _Unset | None = UNSET,
        cycles: int | _Unset = UNSET,
        failure_reason: str | _Unset | None = UNSET,
        story_file: str | _Unset | None = UNSET,
        add_cost: float = 0.0,
        add_duration: float = 0.0,
    ) -> StoryRow:
        """Change the given fields of a story (others untouched) and return the updated row.

        ``add_cost`` / ``add_duration`` add to the running totals (:meth:`record_session` already
        adds each session's cost: use ``add_cost`` only for costs that are not sessions). Shielded.
        """
        sets: list[str] = []
        params: list[object] = []
        fields: dict[str, object | _Unset] = {
            "status": status,
            "phase": phase,
            "cycles": cycles,
            "failure_reason": self._clean_opt(failure_reason)
            if isinstance(failure_reason, str | None)
            else failure_reason,
            "story_file": self._clean_opt(story_file)
            if isinstance(story_file, str | None)
            else story_file,
        }
        for column, value in fields.items():
            if value is not UNSET:
                sets.append(f"{column} = ?")
                params.append(value)
        if add_cost:
            sets.append("cost_usd = cost_usd + ?")
            params.append(add_cost)
        if add_duration:
            sets.append("duration_s = duration_s + ?")
            params.append(add_duration)

        def change(conn: sqlite3.Connection) -> StoryRow:
            if sets:
                conn.execute(
                    f"UPDATE stories SET {', '.join(sets)} WHERE run_id = ? AND story_id = ?",
                    (*params, run_id, story_id),
                )
            if add_cost:
                conn.execute(
                    "UPDATE runs SET cost_usd = cost_usd + ? WHERE run_id = ?", (add_cost, run_id)
                )
            return self._story_in(conn, run_id, story_id)

        return await self._write(change)

    def _story_in(self, conn: sqlite3.Connection, run_id: str, story_id: str) -> StoryRow:
        """One story, read on ``conn`` (in a worker thread), or :class:`StateError` if unknown."""
        row = conn.execute(
            f"SELECT {_STORY_COLUMNS} FROM stories WHERE run_id = ? AND story_id = ?",
            (run_id, story_id),
        ).fetchone()
        if row is None:
            raise StateError(f"no story {story_id!r} in run {run_id!r} in {self.path}")
        return _story_row(row)

    async def get_story(self, run_id: str, story_id: str) -> StoryRow:
        """One story, or :class:`StateError` if unknown."""

        def query(conn: sqlite3.Connection) -> StoryRow:
            return self._story_in(conn, run_id, story_id)

        return await self._read(query)

    async def stories(self, run_id: str) -> list[StoryRow]:
        """The run's stories in epic order (``position``)."""

        def query(conn: sqlite3.Connection) -> list[StoryRow]:
            rows = conn.execute(
                f"SELECT {_STORY_COLUMNS} FROM stories WHERE run_id = ? ORDER BY position, story_id",
                (run_id,),
            ).fetchall()
            return [_story_row(row) for row in rows]

        return await self._read(query)

    # -- phases --------------------------------------------------------------------------------

    async def start_phase(
        self, run_id: str, story_id: str | None, phase: str, role: str, cycle: int
    ) -> int:
        """Record a phase as started and return its id; also sets the story's ``phase``.

        ``story_id`` None is a run-level phase (e.g. ``gate:pytest``). Shielded write.
        """
        started = time.time()

        def change(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO phases (run_id, story_id, phase, role, cycle, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, story_id, phase, str(role), cycle, started),
            )
            if story_id is not None:
                conn.execute(
                    "UPDATE stories SET phase = ? WHERE run_id = ? AND story_id = ?",
                    (phase, run_id, story_id),
                )
            return cast(int, cursor.lastrowid)

        return await self._write(change)

    async def finish_phase(self, phase_id: int, ok: bool, detail: str = "") -> None:
        """Mark a phase finished (``ok`` or failed) with a redacted ``detail``. Shielded write."""
        clean_detail = self._clean(detail)
        finished = time.time()

        def change(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE phases SET finished_at = ?, ok = ?, detail = ? WHERE id = ?",
                (finished, int(ok), clean_detail, phase_id),
            )
            if cursor.rowcount == 0:
                raise StateError(f"no phase {phase_id} in {self.path}")

        await self._write(change)

    async def phases(self, run_id: str, story_id: str | None = None) -> list[PhaseRow]:
        """The run's phases (only ``story_id``'s if given), in the order they started."""

        def query(conn: sqlite3.Connection) -> list[PhaseRow]:
            if story_id is None:
                rows = conn.execute(
                    f"SELECT {_PHASE_COLUMNS} FROM phases WHERE run_id = ? ORDER BY id", (run_id,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_PHASE_COLUMNS} FROM phases WHERE run_id = ? AND story_id = ?"
                    " ORDER BY id",
                    (run_id, story_id),
                ).fetchall()
            return [_phase_row(row) for row in rows]

        return await self._read(query)

    async def finished_phases(self, run_id: str, story_id: str) -> list[PhaseRow]:
        """The story's finished phases (ok or not), in order: what a resume must not run again.

        A phase that was started but never finished (interrupted) is not included.
        """
        return [row for row in await self.phases(run_id, story_id) if row.finished]

    # -- sessions ------------------------------------------------------------------------------

    async def record_session(
        self,
        run_id: str,
        story_id: str | None,
        phase_id: int | None,
        role: str,
        cycle: int,
        label: str,
        result: SessionResult,
        transcript: Path | str | None = None,
        *,
        started_at: float | None = None,
    ) -> int:
        """Record a finished session and add its cost to the story (if any) and the run, in one
        transaction; returns the session id. ``started_at`` defaults to now minus its duration.
        Shielded write: call it even when the session was cancelled, so its cost is never lost."""
        finished = time.time()
        started = started_at if started_at is not None else finished - result.duration_s
        values = (
            run_id,
            story_id,
            phase_id,
            str(role),
            cycle,
            self._clean(label),
            str(result.outcome),
            result.cost_usd,
            result.input_tokens,
            result.output_tokens,
            result.turns,
            result.duration_s,
            self._clean_opt(result.error),
            started,
            finished,
            None if transcript is None else self._clean(str(transcript)),
        )

        def change(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO sessions (run_id, story_id, phase_id, role, cycle, label, outcome,"
                " cost_usd, input_tokens, output_tokens, turns, duration_s, error, started_at,"
                " finished_at, transcript) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            if story_id is not None:
                conn.execute(
                    "UPDATE stories SET cost_usd = cost_usd + ? WHERE run_id = ? AND story_id = ?",
                    (result.cost_usd, run_id, story_id),
                )
            conn.execute(
                "UPDATE runs SET cost_usd = cost_usd + ? WHERE run_id = ?",
                (result.cost_usd, run_id),
            )
            return cast(int, cursor.lastrowid)

        return await self._write(change)

    async def sessions(self, run_id: str) -> list[SessionRow]:
        """The run's sessions in the order they were recorded."""

        def query(conn: sqlite3.Connection) -> list[SessionRow]:
            rows = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
            return [_session_row(row) for row in rows]

        return await self._read(query)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, closed={self.closed})"


@asynccontextmanager
async def open_store(
    project: Path, *, redactor: Redactor | None = None, path: Path | None = None
) -> AsyncGenerator[Store]:
    """``async with open_store(project) as store:`` — :meth:`Store.open`, closed on exit (shielded)."""
    store = await Store.open(project, redactor=redactor, path=path)
    async with store:
        yield store


# -- in the worker thread ------------------------------------------------------------------------


def _transaction(change: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """Wrap ``change`` in ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception)."""

    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = change(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    return run


def _connect_and_migrate(path: Path) -> sqlite3.Connection:
    """Open ``path``, check it is ours, migrate it to :data:`SCHEMA_VERSION`, switch on WAL."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the state database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        _transaction(lambda c: _migrate(c, path))(conn)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateError(f"{path}: cannot switch the state database to WAL (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StateError(
            f"{path} is not a usable bmad-trio state database ({exc}); move it aside to start afresh"
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Inside a write transaction: refuse foreign or newer databases, apply missing migrations."""
    tables = {
        cast(str, row[0])
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not tables:
        version = 0
    else:
        if "meta" not in tables:
            raise _foreign(path, "it has no meta table")
        meta = {
            cast(str, row[0]): cast(str, row[1])
            for row in conn.execute("SELECT key, value FROM meta")
        }
        if meta.get("app") != APP_MARKER:
            raise _foreign(path, f"its app marker is {meta.get('app')!r}")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise _foreign(path, f"bad schema_version {meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{path} has schema version {version}, newer than this bmad-trio knows "
                f"({SCHEMA_VERSION}); upgrade bmad-trio to use it"
            )
    for migration in MIGRATIONS[version:]:
        for statement in migration:
            conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('app', ?), ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (APP_MARKER, str(SCHEMA_VERSION)),
        )


def _foreign(path: Path, why: str) -> StateError:
    return StateError(
        f"{path} is not a bmad-trio state database ({why}); refusing to touch it — "
        "move it aside or point bmad-trio at another project"
    )
