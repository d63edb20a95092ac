"""The one platform layer for process containment: start, find and kill every Claude Code CLI
process and everything it starts, and make them die with the orchestrator.

Two paths, chosen once when a :class:`CLIProcesses` is created (``BMAD_TRIO_CONTAINMENT``:
``auto``, the default, ``linux-native`` or ``portable``; see :func:`containment_mode`):
**linux-native** where Linux offers strictly better mechanisms, **portable** everywhere else
(macOS), and on Linux when asked for, so that the path macOS uses is tested here too. Processes
are enumerated with psutil on both paths; nothing here parses ``/proc`` by hand.

- **A supervisor per session.** The SDK starts the CLI through ``cli_path``; that is a two-line
  shell script which execs *this file* as a supervisor (``python -I -S _cli_processes.py``; standard
  library only until its CLI runs). The supervisor starts the real CLI as its child, forwards
  SIGTERM, SIGINT and SIGHUP to it, and when the CLI exits, kills whatever the CLI left running
  before it exits itself (so a session that ends normally leaves nothing).
- **Who belongs to a session.** linux-native: the supervisor is a child subreaper
  (``PR_SET_CHILD_SUBREAPER``), so a tool that orphans itself (``setsid``, ``nohup … &``, a double
  fork, ``env -i``) is re-parented to it, and "the supervisor's descendants" is every process of
  the session. portable: the supervisor's descendants, plus every process in the supervisor's own
  POSIX session (it calls ``setsid``; an orphan keeps its session id), plus every process whose
  environment carries the session's tag ``BMAD_TRIO_SESSION=<tag>`` (readable on Linux; on macOS
  only for processes that are not hardened, so there it is a best effort).
- **Stopping a session** (:meth:`CLIProcesses.kill_session`, from a worker thread): SIGKILL the
  session's processes and ask the supervisor (SIGUSR1) to do the same and exit; "gone" is when the
  supervisor has exited, which it does only once its session is empty. A ``<tag>.killed`` marker
  stops a supervisor that has not started its CLI yet.
- **Dying with the orchestrator.** linux-native: the supervisor blocks on a *lifeline*, a pipe
  whose only write end the orchestrator holds (opened through ``/proc/<pid>/fd``); when the
  orchestrator dies, even by SIGKILL, or closes the runner, the pipe reaches EOF at once.
  portable: the supervisor polls (0.2 s) for a new parent or a removed session directory.
  (``PR_SET_PDEATHSIG`` is tied to the thread that forked, and trio forks from worker threads that
  come and go, so it is not used.)
- **Temp dirs.** Each runner's files (wrapper, session records, the CLI's config and transcripts)
  live in a 0700 directory whose name records the owner's pid and start time; a new runner removes
  the directories of owners that are gone (a reused pid has another start time).

Everything here except :meth:`CLIProcesses.kill_session` is cheap; module-level imports are standard
library only because this file is also the supervisor's script.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import sys
import time

# Run as the supervisor, this file starts once per session: it imports only what the supervisor
# needs (halving its start-up); the orchestrator's side imports the rest where it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from pathlib import Path

    import psutil

__all__ = [
    "CONTAINMENT_ENV",
    "LINUX_NATIVE",
    "PORTABLE",
    "CLIProcesses",
    "bundled_cli_path",
    "containment_mode",
    "group_has_live_members",
    "orchestrator_pids",
    "pids_with_env",
    "private_dir_prefix",
    "remove_stale_dirs",
    "tagged_pids",
]

SESSION_TAG = "BMAD_TRIO_SESSION"
ORCHESTRATOR_PID = "BMAD_TRIO_ORCHESTRATOR_PID"
CONTAINMENT_ENV = "BMAD_TRIO_CONTAINMENT"
"""``auto`` (default), ``linux-native`` or ``portable``; read once per :class:`CLIProcesses`. The
session's environment carries the path in use under the same name, so the supervisor (and a
bmad-trio started by a tool) follows it."""
LINUX_NATIVE = "linux-native"
PORTABLE = "portable"
_CLI = "BMAD_TRIO_CLI"
_LIFELINE_FD = "BMAD_TRIO_LIFELINE_FD"
_SESSIONS = "BMAD_TRIO_SESSIONS_DIR"
_PSUTIL_HOME = "BMAD_TRIO_PSUTIL_HOME"
"""The directory psutil is imported from: the supervisor runs with ``-I -S`` (no site-packages)."""

_DIR_PREFIX = "bmad-trio-cli-"
_LEGACY_DIR_AGE_S = 24 * 3600.0
"""A temp dir without an owner in its name (older versions) is removed once this old."""

_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.2
_KILLED_EXIT = 128 + signal.SIGKILL


def linux_native_available() -> bool:
    """Linux with a ``/proc`` to open the lifeline through (WSL 2 included)."""
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


def containment_mode(environ: Mapping[str, str] | None = None) -> str:
    """The containment path ``BMAD_TRIO_CONTAINMENT`` in ``environ`` (default ``os.environ``) asks
    for: ``linux-native`` or ``portable``. Unset or ``auto``: linux-native where it is available.

    Raises :class:`~bmad_trio.ConfigValueError` for an unknown value, or for ``linux-native``
    where it is not available.
    """
    wanted = (os.environ if environ is None else environ).get(CONTAINMENT_ENV, "").strip()
    if wanted in ("", "auto"):
        return LINUX_NATIVE if linux_native_available() else PORTABLE
    if wanted == PORTABLE or (wanted == LINUX_NATIVE and linux_native_available()):
        return wanted
    from .._errors import ConfigValueError

    if wanted == LINUX_NATIVE:
        raise ConfigValueError(
            f"{CONTAINMENT_ENV}={LINUX_NATIVE}: needs Linux with /proc (use auto or portable)"
        )
    raise ConfigValueError(
        f"{CONTAINMENT_ENV}={wanted!r}: expected auto, {LINUX_NATIVE} or {PORTABLE}"
    )


def bundled_cli_path() -> Path | None:
    """The Claude Code CLI bundled in the claude-agent-sdk wheel, found without importing the SDK."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "_bundled" / "claude"
    return candidate if candidate.is_file() else None


# --- finding processes (orchestrator side) ---------------------------------------------------


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment has ``BMAD_TRIO_SESSION=<tag>`` (zombies have none)."""
    return pids_with_env(SESSION_TAG, tag)


def orchestrator_pids(pid: int) -> list[int]:
    """Live processes started for orchestrator ``pid`` that kept its tag: supervisors, CLIs, tools."""
    return pids_with_env(ORCHESTRATOR_PID, str(pid))


def pids_with_env(name: str, value: str) -> list[int]:
    """Live processes (not this one) whose environment has ``name=value``. A full scan: call it
    from a worker thread in async code.

    Environments this user may read: every one of its processes on Linux; on macOS (Big Sur and
    later) only processes that are not hardened, so there this finds some processes, not all.
    """
    import psutil

    own = os.getpid()
    found: list[int] = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != own and proc.environ().get(name) == value:
                found.append(proc.pid)
    return found


def group_has_live_members(pgid: int) -> bool:
    """Whether a process of process group ``pgid`` is running (zombies do not count). A full
    scan (~1 ms per hundred processes)."""
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and not _gone(proc):
                return True
    return False


# --- temp dirs ---------------------------------------------------------------------------------


def private_dir_prefix(pid: int, create_time: float) -> str:
    """Name prefix of a runner's temp dir: its owner's pid and start time (centiseconds)."""
    return f"{_DIR_PREFIX}{pid}-{round(create_time * 100)}-"


def _owner_alive(pid: int, start_cs: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(round(proc.create_time() * 100) - start_cs) <= 2
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: keep it


def remove_stale_dirs(parent: Path) -> list[Path]:
    """Remove this user's runner temp dirs in ``parent`` whose owner is gone; returns them.

    Blocking (a directory listing and the removals); runs once per runner.
    """
    import re
    import shutil
    from pathlib import Path

    owned_dir = re.compile(re.escape(_DIR_PREFIX) + r"(\d+)-(\d+)-")
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(_DIR_PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or info.st_uid != os.getuid():
                continue
        except OSError:
            continue
        owner = owned_dir.match(entry.name)
        if owner is not None:
            if _owner_alive(int(owner.group(1)), int(owner.group(2))):
                continue
        elif now - info.st_mtime < _LEGACY_DIR_AGE_S:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


# --- the runner's side -------------------------------------------------------------------------

_WRAPPER = """\
#!/bin/sh
# bmad-trio: run the Claude Code CLI under a supervisor that contains it and everything it starts.
exec {python} -I -S {supervisor} "$@"
"""


class CLIProcesses:
    """Owns one runner's temp dir, the lifeline pipe and the wrapper every CLI is started through.

    Creating it reads ``BMAD_TRIO_CONTAINMENT`` once (unless ``containment`` is given) and records
    the path in :attr:`containment`, and removes stale temp dirs of dead owners (blocking, once per
    runner). Close it when no session runs any more: every CLI still running then dies (through
    its supervisor).
    """

    def __init__(self, cli_path: Path | None = None, *, containment: str | None = None) -> None:
        import shlex
        import tempfile
        from pathlib import Path

        import psutil

        self.containment = containment_mode(
            None if containment is None else {CONTAINMENT_ENV: containment}
        )
        """``linux-native`` or ``portable``: fixed for this object's life."""
        real = cli_path or bundled_cli_path() or _which_claude()
        if real is None:
            raise FileNotFoundError("Claude Code CLI not found (is claude-agent-sdk installed?)")
        self.real_cli = Path(real)
        parent = Path(tempfile.gettempdir())
        remove_stale_dirs(parent)
        me = psutil.Process()
        prefix = private_dir_prefix(me.pid, me.create_time())
        self.directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700
        self.sessions = self.directory / "sessions"
        self.sessions.mkdir(mode=0o700)
        self.wrapper = self.directory / "claude-wrapper"
        self.wrapper.write_text(
            _WRAPPER.format(
                python=shlex.quote(sys.executable), supervisor=shlex.quote(str(Path(__file__)))
            )
        )
        self.wrapper.chmod(0o700)
        self._psutil_home = str(Path(psutil.__file__).parent.parent)
        read_end, self._lifeline = os.pipe()
        os.close(read_end)  # only the write end lives here; supervisors open their own read ends
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self):x}"
        self.closed = False

    @property
    def native(self) -> bool:
        """The linux-native path: subreaper and lifeline."""
        return self.containment == LINUX_NATIVE

    def session_env(self) -> tuple[dict[str, str], str]:
        """Environment for one CLI session, and the session's tag."""
        tag = f"{self._prefix}-{next(self._ids)}"
        env = {
            SESSION_TAG: tag,
            ORCHESTRATOR_PID: str(os.getpid()),
            _CLI: str(self.real_cli),
            _LIFELINE_FD: str(self._lifeline),
            _SESSIONS: str(self.sessions),
            _PSUTIL_HOME: self._psutil_home,
            CONTAINMENT_ENV: self.containment,
        }
        return env, tag

    async def kill_session(self, tag: str, timeout_s: float = 5.0) -> None:
        """Kill every process of the session; return once none is left (or ``timeout_s`` passed).

        Runs in a worker thread (the process scans never block the event loop). Not cancellable:
        a kill that has started finishes, and it is bounded by ``timeout_s`` (plus one scan).
        """
        import anyio

        await anyio.to_thread.run_sync(self.kill_session_sync, tag, timeout_s)

    def kill_session_sync(self, tag: str, timeout_s: float = 5.0) -> int:
        """Blocking :meth:`kill_session`; returns how many processes it signalled."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(OSError):  # a supervisor not started yet exits on seeing this
            (self.sessions / f"{tag}.killed").touch()
        supervisor = self._supervisor(tag)
        doomed: list[psutil.Process] = []
        if supervisor is not None:
            doomed += _live_descendants(supervisor)
            if not self.native:
                # No subreaper: the orphans of a Bash command (the CLI starts each in a session
                # of its own) left the tree but kept their session. These sessions are taken
                # now, so their ids are not reused; the supervisor adds those it saw earlier.
                sessions = _sessions_of([supervisor, *doomed]) - {0, 1, os.getsid(0)}
                seen = {supervisor.pid, *(proc.pid for proc in doomed)}
                doomed += _in_sessions(sessions, skip=seen)
            _signal(supervisor, signal.SIGUSR1)  # "kill your session and exit"
        if not self.native or not (supervisor is not None or self._reported_empty(tag)):
            # No subreaper, or no supervisor to ask and none reported its session empty: orphans
            # that left the session too are found by their tag (where environments are readable).
            # (Not the supervisor, which carries the tag too: it still has its part to do.)
            spared = supervisor.pid if supervisor is not None else None
            doomed += _processes(pid for pid in tagged_pids(tag) if pid != spared)
        for proc in doomed:
            _signal(proc, signal.SIGKILL)
        watched = [*doomed, *([supervisor] if supervisor is not None else [])]
        if not _wait_gone(watched, deadline) and supervisor is not None:
            # The supervisor did not finish: do its work here, then kill it too.
            stragglers = _live_descendants(supervisor)
            for proc in [*stragglers, supervisor]:
                _signal(proc, signal.SIGKILL)
            _wait_gone([*stragglers, supervisor], time.monotonic() + 1.0)
        return len(watched)

    def _reported_empty(self, tag: str) -> bool:
        return (self.sessions / f"{tag}.done").exists()

    def _supervisor(self, tag: str) -> psutil.Process | None:
        """The session's supervisor if it is still our (unreaped, so not reused) child."""
        import psutil

        try:
            pid = int((self.sessions / f"{tag}.pid").read_text())
            proc = psutil.Process(pid)
            if proc.ppid() != os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return proc

    def close(self) -> None:
        """Drop the lifeline and the temp dir: every supervisor still running kills its session."""
        if self.closed:
            return
        import shutil

        self.closed = True
        os.close(self._lifeline)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> CLIProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sessions_of(procs: Iterable[psutil.Process]) -> set[int]:
    """The POSIX session ids of ``procs`` (those still there)."""
    found: set[int] = set()
    for proc in procs:
        with contextlib.suppress(OSError):
            found.add(os.getsid(proc.pid))
    return found


def _in_sessions(sessions: set[int], skip: set[int]) -> list[psutil.Process]:
    """Live processes (not zombies, not in ``skip``) in one of ``sessions``: one full scan."""
    import psutil

    found: list[psutil.Process] = []
    if not sessions:
        return found
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) in sessions and not _gone(proc):
                found.append(proc)
    return found


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    import psutil

    found: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def _live_descendants(proc: psutil.Process) -> list[psutil.Process]:
    """Descendants of ``proc`` that have not exited, from one snapshot of parent links."""
    import psutil

    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        return []
    return [child for child in children if not _gone(child)]


def _gone(proc: psutil.Process) -> bool:
    """Exited: no such process any more, or a zombie (dead, waiting for its parent to reap it)."""
    import psutil

    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, signum: int) -> None:
    import psutil

    with contextlib.suppress(psutil.Error):
        proc.send_signal(signum)  # checks the process's identity first: no pid-reuse accidents


def _wait_gone(procs: list[psutil.Process], deadline: float) -> bool:
    """Poll (these are not our children: there is no exit event to wait on) until all are gone."""
    pending = list(procs)
    while pending:
        pending = [proc for proc in pending if not _gone(proc)]
        if not pending:
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _which_claude() -> Path | None:
    import shutil
    from pathlib import Path

    found = shutil.which("claude")
    return Path(found) if found else None


# --- the supervisor (this file run as a script; standard library only) -----------------------


def _become_subreaper() -> bool:
    """Linux: orphans among our descendants are re-parented to us, not to init."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _import_psutil() -> None:
    """Make psutil importable: the supervisor runs with ``-I -S``, without site-packages."""
    home = os.environ.get(_PSUTIL_HOME)
    if home and home not in sys.path:
        sys.path.append(home)
    import psutil  # noqa: F401  # pyright: ignore[reportUnusedImport]


class _Members:
    """Who belongs to this supervisor's session (the supervisor's side; see the module docstring).

    linux-native: our descendants (we are their subreaper). portable: our descendants, every
    process in a POSIX session one of them was seen in (the CLI starts each Bash command in a
    session of its own; an orphan keeps its session id), and every process carrying our tag.
    """

    def __init__(self, native: bool, tag: str, orchestrator: int) -> None:
        self.native = native
        self._tag = tag
        self._me = os.getpid()
        self._outside = {0, 1}
        """Sessions that are not ours: none, init's, and the orchestrator's (the user's shell)."""
        with contextlib.suppress(OSError):
            self._outside.add(os.getsid(orchestrator))
        self._sessions: dict[int, float | None] = {}
        """Session id -> its leader's start time when first seen (None: the leader had gone)."""

    def note_sessions(self) -> None:
        """portable: remember the sessions our descendants are in now (called every poll)."""
        if not self.native:
            self._note(self._tree())

    def current(self) -> list[int]:
        """Every live member now (one scan)."""
        found = set(self._tree())
        if self.native:
            return sorted(found)
        import psutil

        self._note(found)
        found.update(p.pid for p in _in_sessions(self._live_sessions(), skip={self._me, *found}))
        for proc in psutil.process_iter():
            if proc.pid in found or proc.pid == self._me:
                continue
            with contextlib.suppress(psutil.Error):
                # macOS shows only some environments (not hardened processes'): a best effort
                if proc.environ().get(SESSION_TAG) == self._tag:
                    found.add(proc.pid)
        return sorted(found)

    def _tree(self) -> list[int]:
        import psutil

        try:
            children = psutil.Process(self._me).children(recursive=True)
        except psutil.Error:
            return []
        return [child.pid for child in children if not _gone(child)]

    def _note(self, pids: Iterable[int]) -> None:
        import psutil

        for pid in [self._me, *pids]:
            try:
                sid = os.getsid(pid)
            except OSError:
                continue
            if sid in self._outside or sid in self._sessions:
                continue
            try:
                self._sessions[sid] = psutil.Process(sid).create_time()
            except psutil.Error:
                self._sessions[sid] = None

    def _live_sessions(self) -> set[int]:
        """Our sessions whose id was not reused: an id stays taken while any member of the
        session lives, so a leader with another start time means every member had gone."""
        import psutil

        live: set[int] = set()
        for sid, started in self._sessions.items():
            try:
                if started is not None and abs(psutil.Process(sid).create_time() - started) > 0.05:
                    continue
            except psutil.NoSuchProcess:
                pass
            except psutil.Error:
                continue
            live.add(sid)
        return live


def _reap() -> Iterator[tuple[int, int]]:
    """Reap every exited child (orphans re-parented to us included): (pid, exit code)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _kill_tree(members: _Members, keep: int | None = None) -> int | None:
    """SIGKILL every member until none is left; the exit code of ``keep`` if it was reaped."""
    code: int | None = None
    for _ in range(200):  # bounded: a fork bomb cannot keep us here
        pids = members.current()
        for pid, exit_code in _reap():
            if pid == keep:
                code = exit_code
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
    for pid, exit_code in _reap():
        if pid == keep:
            code = exit_code
    return code


def _write_atomic(path: str, text: str) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


def _supervise(argv: list[str]) -> int:
    """Run the CLI as our child until it exits, or we are told to stop, or the orchestrator goes;
    then kill every descendant. Returns the CLI's exit status the way a shell reports it."""
    env = os.environ
    tag, sessions = env[SESSION_TAG], env[_SESSIONS]
    orchestrator = int(env[ORCHESTRATOR_PID])
    native = env.get(CONTAINMENT_ENV) == LINUX_NATIVE
    if native:
        _become_subreaper()  # best effort: without it, orphans are found by their tag only
    else:
        # A session of our own: an orphan keeps its session id, so it is still found as ours.
        # (We are not a process group leader, the SDK starts us in the orchestrator's group.)
        with contextlib.suppress(OSError):
            os.setsid()
    _write_atomic(os.path.join(sessions, f"{tag}.pid"), str(os.getpid()))
    # The pid file is written before the marker is read, and the orchestrator writes the marker
    # before it reads the pid file: either we see the marker, or it sees us (and signals us).
    if os.path.exists(os.path.join(sessions, f"{tag}.killed")) or os.getppid() != orchestrator:
        return _KILLED_EXIT

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    pending: list[int] = []
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, lambda received, _frame: pending.append(received))
    selector = selectors.DefaultSelector()
    selector.register(wake_read, selectors.EVENT_READ)
    lifeline: int | None = None
    if native:
        try:
            lifeline = os.open(f"/proc/{orchestrator}/fd/{env[_LIFELINE_FD]}", os.O_RDONLY)
        except OSError:
            return _KILLED_EXIT  # the orchestrator, or its runner, is gone already
        os.set_blocking(lifeline, False)
        selector.register(lifeline, selectors.EVENT_READ)

    real = env[_CLI]
    cli = os.posix_spawn(real, [real, *argv[1:]], dict(env))
    _import_psutil()  # now, while the CLI starts (~1 s), not when the session ends and time counts
    members = _Members(native, tag, orchestrator)
    code: int | None = None
    stop = False
    while code is None and not stop:
        for key, _ in selector.select(None if lifeline is not None else _POLL_S):
            if key.fd == wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
            else:
                with contextlib.suppress(BlockingIOError):
                    stop = not os.read(key.fd, 4096)  # EOF: the orchestrator or its runner closed
        while pending:
            received = pending.pop()
            if received == signal.SIGUSR1:
                stop = True
            elif received != signal.SIGCHLD:
                with contextlib.suppress(OSError):
                    os.kill(cli, signal.SIGTERM)  # the SDK's graceful stop: the CLI's own cleanup
        for pid, exit_code in _reap():
            if pid == cli:
                code = exit_code
        if lifeline is None and (os.getppid() != orchestrator or not os.path.isdir(sessions)):
            stop = True
        members.note_sessions()
    reaped = _kill_tree(members, keep=cli)
    if code is None:
        code = reaped if reaped is not None else -signal.SIGKILL
    with contextlib.suppress(OSError):
        _write_atomic(os.path.join(sessions, f"{tag}.done"), str(code))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if SESSION_TAG not in os.environ:
        sys.exit(
            "bmad-trio: this is the CLI supervisor of ClaudeAgentRunner; it is not run by hand"
        )
    sys.exit(_supervise(sys.argv))
