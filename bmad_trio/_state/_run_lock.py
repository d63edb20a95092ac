"""The per-project run lock: one ``run``/``resume`` at a time on a project.

:class:`RunLock` takes an exclusive, non-blocking ``flock`` on ``<project>/.bmad-trio/run.lock`` and
writes the holder's pid into it. A second holder (another process, or another open in this process)
gets :class:`StateError` naming the file and the holder's pid. The kernel drops the lock when the file
is closed or the holding process dies, even by SIGKILL, so a stale lock never needs cleaning up; the
file itself is left in place on purpose (deleting a flock'ed file races with the next locker).

Taking and releasing the lock never blocks, so the same object works as a sync and an async context
manager, and neither is a cancellation point. POSIX only (``fcntl``): ``flock`` behaves the same on
Linux and macOS (whole-file locks tied to the open file, dropped when the holder dies); native Windows
never gets here (the command refuses it first). A project on NFS may not support ``flock`` on Linux;
the error then names the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from .._errors import StateError
from ._paths import lock_path

__all__ = ["RunLock"]


class RunLock:
    """An exclusive lock on one project's state; see the module docstring.

    ``with RunLock.for_project(project):`` or ``async with RunLock.for_project(project):``.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @classmethod
    def for_project(cls, project: Path) -> RunLock:
        """The lock for ``<project>/.bmad-trio/run.lock`` (not yet taken)."""
        return cls(lock_path(project))

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`StateError` (another holder; or the file can't be opened)."""
        if self._fd is not None:
            raise StateError(f"{self.path} is already held by this RunLock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(
                f"cannot open the run lock {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateError(
                    f"another bmad-trio run holds {self.path} (pid {holder or 'unknown'})"
                ) from None
            raise StateError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            # The pid is informational only; the lock itself is held.
            pass
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent). The pid is cleared so a reader never sees a stale holder."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> RunLock:
        """Same as ``__enter__``: the lock is non-blocking, so this never waits and is not a checkpoint."""
        self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, held={self.held})"


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0)
    except OSError:
        return None
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
