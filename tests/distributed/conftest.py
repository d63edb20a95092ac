"""Fixtures giving tests a real PostgreSQL server on loopback (see _postgres.py).

``postgres``: one server for the whole session, started on first use and stopped at the end (also
after failures); tests may stop and restart it (same port) but must leave it running.
``pg_database``: a fresh, empty database per test; yields its URL.
Both skip the test when the PostgreSQL binaries or the ``dbos`` extra are missing.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _postgres import (
    PostgresError,
    PostgresServer,
    find_postgres,
    running_as_root,
    unprivileged_user,
)

_MAX_DATABASE_NAME = 60  # PostgreSQL truncates identifiers at 63 bytes


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    pytest.importorskip("dbos", reason="the distributed tests need the 'dbos' extra")
    bin_dir = find_postgres()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl, postgres) not found: "
            "set BMAD_TRIO_PG_BIN or put pg_ctl on PATH"
        )
    run_as = unprivileged_user()
    if running_as_root() and run_as is None:
        pytest.skip("running as root, and PostgreSQL refuses root: no 'postgres'/'nobody' account")
    if run_as is None:
        base_dir = tmp_path_factory.mktemp("pg")
        owned_dir = None
    else:
        # pytest's temp root is private to root (mode 0700), so the unprivileged server could not
        # reach a directory below it: use a fresh directory directly in the system temp dir.
        owned_dir = Path(tempfile.mkdtemp(prefix="bmad-trio-pg-"))
        base_dir = owned_dir
    server = PostgresServer(bin_dir, base_dir, run_as=run_as)
    try:
        server.start()
        yield server
    finally:
        try:
            if server.running:
                try:
                    server.stop("fast")
                except PostgresError:
                    server.stop("immediate")
        finally:
            if owned_dir is not None:
                shutil.rmtree(owned_dir, ignore_errors=True)


def _database_name(node_name: str) -> str:
    """A unique, valid database name derived from a test's node name."""
    suffix = uuid.uuid4().hex[:8]
    stem = re.sub(r"[^a-z0-9_]+", "_", node_name.lower()).strip("_") or "test"
    return f"{stem[: _MAX_DATABASE_NAME - len(suffix) - 1]}_{suffix}"


@pytest.fixture
def pg_database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database for this test (left in place; the server is throwaway)."""
    return postgres.create_database(_database_name(request.node.name))
