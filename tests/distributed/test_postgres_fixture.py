"""The PostgreSQL test fixtures work: a per-test database answers, and a restart keeps data and port."""

from __future__ import annotations

import psycopg
import pytest
from _postgres import PostgresServer


def test_per_test_database_answers(pg_database: str) -> None:
    with psycopg.connect(pg_database, connect_timeout=30) as conn:
        row = conn.execute("select 1, current_database()").fetchone()
    assert row is not None
    assert row[0] == 1
    assert pg_database.endswith("/" + row[1])


def test_stop_and_start_keep_port_and_data(postgres: PostgresServer, pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True, connect_timeout=30) as conn:
        conn.execute("create table kept (value text)")
        conn.execute("insert into kept values ('before restart')")
    port = postgres.port

    postgres.stop()
    assert not postgres.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_database, connect_timeout=5).close()
    postgres.start()

    assert postgres.port == port
    with psycopg.connect(pg_database, connect_timeout=30) as conn:
        rows = conn.execute("select value from kept").fetchall()
    assert rows == [("before restart",)]
