"""A throwaway PostgreSQL server on loopback, for tests: initdb into a directory, start, stop, restart.

Everything is synchronous and blocking (plain subprocesses); readiness is awaited by ``pg_ctl -w``,
never by sleeping. The server listens on 127.0.0.1 only, on a TCP port picked once and kept across
restarts, with trust authentication for the ``postgres`` role and no Unix socket (socket paths are
capped at ~104 bytes on macOS, and a test temp dir there is often longer).

PostgreSQL refuses to run as root. When the tests run as root (containers), the server's files and
processes belong to an unprivileged account (``postgres`` if it exists, else ``nobody``); see
:func:`unprivileged_user`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import pwd

_BINARIES = ("initdb", "pg_ctl", "postgres")
_PG_CTL_WAIT_S = 60
# pg_ctl's own wait is bounded by -t; the subprocess timeout only catches a pg_ctl that hangs anyway.
_SUBPROCESS_TIMEOUT_S = _PG_CTL_WAIT_S + 30
_INITDB_TIMEOUT_S = 180
_LOG_TAIL_LINES = 40


class PostgresError(RuntimeError):
    """A PostgreSQL command failed; the message holds its output and the server log's tail."""


def _has_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _BINARIES)


def _version_key(folder: Path) -> tuple[int, ...]:
    """Sort key for a folder whose path names a version (``.../postgresql/15/bin``, ``postgresql@16``)."""
    return tuple(int(part) for part in re.findall(r"\d+", str(folder)))


def find_postgres() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None if there is none.

    Looks at ``$BMAD_TRIO_PG_BIN`` (used alone when set), then ``pg_ctl`` on PATH, then the usual
    install places of Debian/Ubuntu, source builds and Homebrew (highest version first).
    """
    configured = os.environ.get("BMAD_TRIO_PG_BIN")
    if configured:
        folder = Path(configured).expanduser()
        return folder if _has_binaries(folder) else None
    on_path = shutil.which("pg_ctl")
    if on_path is not None and _has_binaries(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    candidates: list[Path] = []
    for pattern_root, pattern in (
        (Path("/usr/lib/postgresql"), "*/bin"),
        (Path("/opt/homebrew/opt"), "postgresql@*/bin"),
        (Path("/usr/local/opt"), "postgresql@*/bin"),
    ):
        if pattern_root.is_dir():
            candidates.extend(sorted(pattern_root.glob(pattern), key=_version_key, reverse=True))
    candidates.append(Path("/usr/local/bin"))
    candidates.append(Path("/opt/homebrew/bin"))
    return next((folder for folder in candidates if _has_binaries(folder)), None)


def running_as_root() -> bool:
    """True on POSIX when the effective user is root (PostgreSQL refuses to start then)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def unprivileged_user() -> str | None:
    """When running as root, the account to run PostgreSQL as (``postgres``, else ``nobody``).

    None when not root (no switch needed) — and also when root but neither account exists;
    tell the two apart with :func:`running_as_root`.
    """
    if not running_as_root():
        return None
    import pwd  # POSIX only; running_as_root() is False elsewhere

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def _free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it; another process could take it
    before the server binds it, which start() then reports with the server log)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _child_env() -> dict[str, str]:
    """The environment for the PostgreSQL tools: without PG* variables that could point them
    at another server or data dir, with C-locale messages so errors read the same everywhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    return env


@attrs.define
class PostgresServer:
    """One PostgreSQL cluster in ``base_dir`` (data in ``base_dir/data``, log in
    ``base_dir/postgres.log``). ``run_as`` names the account to run the tools as (needed as root).

    Not thread-safe; every method blocks until the server is in the asked state or raises
    :class:`PostgresError`.
    """

    bin_dir: Path
    base_dir: Path
    run_as: str | None = None
    _port: int | None = attrs.field(default=None, init=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def port(self) -> int:
        """The server's TCP port, picked on the first start() and kept across restarts."""
        if self._port is None:
            raise PostgresError("the server has no port yet: call start() first")
        return self._port

    @property
    def running(self) -> bool:
        """True while a postmaster owns the data dir (its pid file exists)."""
        return (self.data_dir / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster on the first call, then start the server and wait until it accepts
        connections (``pg_ctl -w``, at most 60 s)."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._init_cluster()
        elif self._port is None:
            raise PostgresError(f"{self.data_dir} holds a cluster this server did not create")
        self._pg_ctl("start", "-l", str(self.log_file))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and wait until it has exited. ``mode`` is pg_ctl's: ``smart``, ``fast``
        (disconnect clients, checkpoint) or ``immediate`` (like a crash: recovery on next start)."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop, then start again on the same port."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL. Needs psycopg (the ``dbos`` extra)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=30) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no server log yet)"
        return "\n".join(text.splitlines()[-lines:])

    def _init_cluster(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            shutil.chown(self.base_dir, user=self.run_as)
        self._run(
            [
                *("initdb", "-D", str(self.data_dir)),
                *("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--no-locale"),
            ],
            timeout=_INITDB_TIMEOUT_S,
        )
        self._port = _free_tcp_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self._port),
            "unix_socket_directories": "''",
            # A test server: durability against power loss is not wanted, speed is.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# bmad-trio test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _pg_ctl(self, *action: str) -> None:
        self._run(
            ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(_PG_CTL_WAIT_S), *action],
            timeout=_SUBPROCESS_TIMEOUT_S,
        )

    def _run(self, argv: Sequence[str], *, timeout: float) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        try:
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=_child_env(),
                # pg_ctl resolves relative paths against the cwd; give it one the user can enter.
                cwd=self.base_dir,
                user=self._account.pw_uid if self._account else None,
                group=self._account.pw_gid if self._account else None,
                extra_groups=[] if self._account else None,
            )
        except subprocess.CalledProcessError as exc:
            raise PostgresError(
                self._failure(command, f"exit status {exc.returncode}", exc.stdout, exc.stderr)
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(
                self._failure(command, f"no answer within {timeout:g} s", exc.stdout, exc.stderr)
            ) from exc

    @property
    def _account(self) -> pwd.struct_passwd | None:
        """The account to run the tools as, with only its own groups (root's are dropped)."""
        if self.run_as is None:
            return None
        import pwd  # POSIX only; run_as is only set there

        return pwd.getpwnam(self.run_as)

    def _failure(
        self, command: Sequence[str], what: str, stdout: bytes | None, stderr: bytes | None
    ) -> str:
        def text(data: bytes | None) -> str:
            return (data or b"").decode("utf-8", errors="replace").strip() or "(empty)"

        return (
            f"{' '.join(command)}: {what}\n"
            f"stdout: {text(stdout)}\nstderr: {text(stderr)}\n"
            f"server log ({self.log_file}), last lines:\n{self.log_tail()}"
        )
