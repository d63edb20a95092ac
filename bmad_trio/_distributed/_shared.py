"""The tables bmad-trio keeps next to DBOS's own in the engine's database.

- ``bmad_trio_events``: the events workers' sessions emit, which the coordinator relays into the
  run's own event stream and store (so the live display, ``status`` and costs show remote
  stories as if local);
- ``bmad_trio_workers``: one row per worker process, its heartbeat; a worker whose heartbeat is
  older than the limit is dead, and exactly one live worker claims it and has DBOS re-enqueue its
  story cycles;
- ``bmad_trio_runs`` and ``bmad_trio_reservations``: what every worker of a run shares: its budget
  (each session reserves a share in a transaction, released when its SessionFinished event is
  written, which also counts its cost) and its rate-limit pause.

Blocking (SQLAlchemy, psycopg): call from a worker thread. Every call is one short transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

__all__ = ["Reservation", "SharedState", "call_retrying"]

T = TypeVar("T")

DATABASE_ERRORS = (OperationalError, InterfaceError, DisconnectionError, OSError)
"""What the database being away (restarting, unreachable) raises; any other error is a bug."""
_RETRY_S = 2.0


async def call_retrying(call: Callable[[], T], log: logging.Logger, what: str) -> T:
    """Run a blocking database call in a worker thread, again while the database is away (a
    restart): the caller waits, and the log says so once. Cancellation abandons the wait between
    tries (a try in flight runs to its end in its thread, bounded by the pool's timeouts)."""
    warned = False
    while True:
        try:
            return await anyio.to_thread.run_sync(call)
        except DATABASE_ERRORS as exc:
            if not warned:
                log.warning("%s: the engine's database is not answering (%s); retrying", what, exc)
                warned = True
        await anyio.sleep(_RETRY_S)


_METADATA = sa.MetaData()
_EVENTS = sa.Table(
    "bmad_trio_events",
    _METADATA,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False, index=True),
    sa.Column("story_id", sa.Text, nullable=False),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
_WORKERS = sa.Table(
    "bmad_trio_workers",
    _METADATA,
    sa.Column("executor_id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("jobs", sa.Integer, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    # The live worker that recovered this one's story cycles (None: alive, or not yet claimed).
    sa.Column("claimed_by", sa.Text, nullable=True),
    # Why it left, when it said so (stopped, handed its stories over); None: it fell silent.
    sa.Column("left_reason", sa.Text, nullable=True),
)


_RUNS = sa.Table(
    "bmad_trio_runs",
    _METADATA,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("cap_usd", sa.Float, nullable=True),
    sa.Column("spent_before_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("jobs", sa.Integer, nullable=False),
    sa.Column("paused_until", sa.Float, nullable=False, default=0.0),
    sa.Column("pause_reason", sa.Text, nullable=False, default=""),
)
_RESERVATIONS = sa.Table(
    "bmad_trio_reservations",
    _METADATA,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("story_id", sa.Text, primary_key=True),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("share_usd", sa.Float, nullable=False),
)
_TRANSCRIPTS = sa.Table(
    "bmad_trio_transcripts",
    _METADATA,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("story_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)
_SESSION_FINISHED = "session_finished"
_SCHEMA_LOCK = 0x626D61645F747269  # "bmad_tri": the advisory lock that serialises create()


@attrs.frozen
class Reservation:
    """What :meth:`SharedState.reserve` decided: a share (``share_usd``), or wait (neither), or
    the run's budget is spent (``spent``). ``spent_usd``: the run's spending so far."""

    share_usd: float | None
    spent: bool
    spent_usd: float


def engine_url(url: str) -> str:
    """SQLAlchemy's spelling of a ``postgresql://`` URL for psycopg 3 (what DBOS uses too)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


class SharedState:
    """bmad-trio's own tables in the engine's database (see the module docstring)."""

    def __init__(self, url: str) -> None:
        # pre_ping: a connection the server dropped (it restarted) is replaced, not used.
        self._engine = sa.create_engine(engine_url(url), pool_pre_ping=True, pool_size=2)

    def create(self) -> None:
        """Create our tables where missing. Workers and the coordinator all do at start, maybe at
        the same moment: ``checkfirst`` alone is a race (both see no table, the second CREATE
        fails), so on PostgreSQL they take turns under a transaction-scoped advisory lock."""
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            _METADATA.create_all(conn, checkfirst=True)

    def dispose(self) -> None:
        self._engine.dispose()

    # -- events ---------------------------------------------------------------------------------

    def add_event(self, run_id: str, story_id: str, worker: str, body: dict[str, Any]) -> None:
        """Record an event; a SessionFinished releases the story's budget reservation in the
        same transaction (its cost, in the event, now counts as spent instead)."""
        with self._engine.begin() as conn:
            conn.execute(
                _EVENTS.insert().values(
                    run_id=run_id, story_id=story_id, worker=worker, body=json.dumps(body)
                )
            )
            if body.get("type") == _SESSION_FINISHED:
                conn.execute(
                    _RESERVATIONS.delete().where(
                        _RESERVATIONS.c.run_id == run_id, _RESERVATIONS.c.story_id == story_id
                    )
                )

    # -- transcripts ----------------------------------------------------------------------------

    def put_transcript(self, run_id: str, story_id: str, name: str, worker: str, text: str) -> None:
        """Keep a session's transcript (redacted, as written) for the coordinator; a newer copy
        of the same file (a phase run again appends to it) replaces the older."""
        key = (_TRANSCRIPTS.c.run_id == run_id, _TRANSCRIPTS.c.story_id == story_id)
        with self._engine.begin() as conn:
            conn.execute(_TRANSCRIPTS.delete().where(*key, _TRANSCRIPTS.c.name == name))
            conn.execute(
                _TRANSCRIPTS.insert().values(
                    run_id=run_id, story_id=story_id, name=name, worker=worker, text=text
                )
            )

    def transcripts(self, run_id: str, story_id: str) -> list[tuple[str, str]]:
        """The story's transcripts: (file name, text)."""
        query = sa.select(_TRANSCRIPTS.c.name, _TRANSCRIPTS.c.text).where(
            _TRANSCRIPTS.c.run_id == run_id, _TRANSCRIPTS.c.story_id == story_id
        )
        with self._engine.connect() as conn:
            return [(row.name, row.text) for row in conn.execute(query)]

    # -- the run's budget and pause -------------------------------------------------------------

    def open_run(self, run_id: str, cap_usd: float | None, spent_usd: float, jobs: int) -> None:
        """The coordinator (re)starts a run: its cap, jobs, and what it spent outside the events
        (before this start, and its own sessions)."""
        with self._engine.begin() as conn:
            updated = conn.execute(
                _RUNS.update()
                .where(_RUNS.c.run_id == run_id)
                .values(
                    cap_usd=cap_usd,
                    jobs=jobs,
                    spent_before_usd=spent_usd - self._spent(conn, run_id),
                )
            )
            if updated.rowcount == 0:
                conn.execute(
                    _RUNS.insert().values(
                        run_id=run_id,
                        cap_usd=cap_usd,
                        jobs=jobs,
                        spent_before_usd=spent_usd,
                        paused_until=0.0,
                        pause_reason="",
                    )
                )

    @staticmethod
    def _spent(conn: sa.Connection, run_id: str) -> float:
        """What the run's workers spent: the cost of every SessionFinished they recorded."""
        cost = sa.cast(sa.cast(_EVENTS.c.body, sa.JSON)["cost_usd"].as_string(), sa.Float)
        query = sa.select(sa.func.coalesce(sa.func.sum(cost), 0.0)).where(
            _EVENTS.c.run_id == run_id,
            sa.cast(_EVENTS.c.body, sa.JSON)["type"].as_string() == _SESSION_FINISHED,
        )
        return float(conn.execute(query).scalar_one())

    def reserve(self, run_id: str, story_id: str, worker: str, floor_share: float) -> Reservation:
        """Reserve the story's next session's share of the run's budget, as one machine's Budget
        does (the unreserved money divided among the lanes not busy), under a row lock on the
        run so that two workers never both take the last share."""
        with self._engine.begin() as conn:
            run = conn.execute(
                sa.select(_RUNS).where(_RUNS.c.run_id == run_id).with_for_update()
            ).one()
            # A reservation this story left (a session cut short with its worker) is void now.
            conn.execute(
                _RESERVATIONS.delete().where(
                    _RESERVATIONS.c.run_id == run_id, _RESERVATIONS.c.story_id == story_id
                )
            )
            spent = run.spent_before_usd + self._spent(conn, run_id)
            if run.cap_usd is None:
                return Reservation(None, spent=False, spent_usd=spent)
            held = conn.execute(
                sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(_RESERVATIONS.c.share_usd), 0.0)
                ).where(_RESERVATIONS.c.run_id == run_id)
            ).one()
            in_flight, reserved = int(held[0]), float(held[1])
            available = run.cap_usd - spent - reserved
            if available < floor_share:
                return Reservation(None, spent=in_flight == 0, spent_usd=spent)
            share = max(available / max(1, run.jobs - in_flight), floor_share)
            conn.execute(
                _RESERVATIONS.insert().values(
                    run_id=run_id, story_id=story_id, worker=worker, share_usd=share
                )
            )
            return Reservation(share, spent=False, spent_usd=spent)

    def pause(self, run_id: str, until: float, reason: str) -> tuple[float, str]:
        """Make the run's pause last at least until ``until`` (wall clock); the pause in force."""
        with self._engine.begin() as conn:
            conn.execute(
                _RUNS.update()
                .where(_RUNS.c.run_id == run_id, _RUNS.c.paused_until < until)
                .values(paused_until=until, pause_reason=reason)
            )
            row = conn.execute(
                sa.select(_RUNS.c.paused_until, _RUNS.c.pause_reason).where(
                    _RUNS.c.run_id == run_id
                )
            ).one()
            return float(row.paused_until), str(row.pause_reason)

    def events_after(
        self, run_id: str, story_id: str, after: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """The story's events with an id above ``after``, oldest first: (id, worker, body)."""
        query = (
            sa.select(_EVENTS.c.id, _EVENTS.c.worker, _EVENTS.c.body)
            .where(
                _EVENTS.c.run_id == run_id,
                _EVENTS.c.story_id == story_id,
                _EVENTS.c.id > after,
            )
            .order_by(_EVENTS.c.id)
        )
        with self._engine.connect() as conn:
            return [(row.id, row.worker, json.loads(row.body)) for row in conn.execute(query)]

    # -- workers --------------------------------------------------------------------------------

    def beat(
        self, executor_id: str, host: str, pid: int, jobs: int, *, starting: bool = False
    ) -> None:
        """This worker is alive now (inserts its row the first time). ``starting``: a worker
        (re)started under this name is a live one again, whoever claimed it before."""
        now = time.time()
        values: dict[str, Any] = {"seen_at": now, "jobs": jobs, "host": host, "pid": pid}
        if starting:
            values["claimed_by"] = None
            values["left_reason"] = None
        with self._engine.begin() as conn:
            updated = conn.execute(
                _WORKERS.update().where(_WORKERS.c.executor_id == executor_id).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(
                    _WORKERS.insert().values(
                        executor_id=executor_id, host=host, pid=pid, jobs=jobs, seen_at=now
                    )
                )

    def claim_dead(self, claimer: str, older_than_s: float) -> list[tuple[str, str | None]]:
        """Claim every worker silent for ``older_than_s`` that nobody claimed yet, atomically:
        two live workers never both claim one (the UPDATE's row lock decides). Each with the
        reason it gave when it left (None: it fell silent)."""
        limit = time.time() - older_than_s
        with self._engine.begin() as conn:
            rows = conn.execute(
                _WORKERS.update()
                .where(
                    _WORKERS.c.seen_at < limit,
                    _WORKERS.c.claimed_by.is_(None),
                    _WORKERS.c.executor_id != claimer,
                )
                .values(claimed_by=claimer)
                .returning(_WORKERS.c.executor_id, _WORKERS.c.left_reason)
            )
            return [(row.executor_id, row.left_reason) for row in rows]

    def expire(self, executor_id: str, reason: str) -> None:
        """A worker that stops: silent from now on, so that a live one claims it at its next
        heartbeat and re-enqueues the story cycles it leaves unfinished."""
        with self._engine.begin() as conn:
            conn.execute(
                _WORKERS.update()
                .where(_WORKERS.c.executor_id == executor_id)
                .values(seen_at=0.0, left_reason=reason)
            )

    def live_workers(self, seen_within_s: float) -> list[str]:
        """The workers that have beaten within ``seen_within_s`` seconds."""
        query = sa.select(_WORKERS.c.executor_id).where(
            _WORKERS.c.seen_at >= time.time() - seen_within_s
        )
        with self._engine.connect() as conn:
            return [row.executor_id for row in conn.execute(query)]
