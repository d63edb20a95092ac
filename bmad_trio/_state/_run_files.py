"""The per-run files under ``<project>/.bmad-trio/runs/<run_id>/``.

- ``events.jsonl``: every event, one JSON object a line with ``type`` and ``ts``
  (:meth:`RunFiles.write_event`).
- ``transcripts/<story>-<cycle>-<role>.jsonl``: each agent session's messages
  (:meth:`RunFiles.transcript` gives a :class:`TranscriptWriter`).
- ``run.log``: the run's own log lines, and the ``bmad_trio`` loggers' records logged by the run's
  tasks, never another run's (:func:`attach_run_log`, :func:`run_log_context`).

Everything is redacted by the given :class:`Redactor` before it reaches the disk.

Writes are synchronous, on purpose: appending one line to a local file and flushing it to the kernel
(no fsync) costs microseconds, less than a round trip to a worker thread, and keeps every line in
event order with no locking. Nothing here calls fsync: these files are logs, ``state.db`` is the
durable record. None of these calls is a checkpoint, so none is interrupted by cancellation; a
resumed run appends to the same files. Use a :class:`RunFiles` from one thread (the event loop).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Generator, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import cattrs

from .._agents._runner import AgentMessage
from .._converter import event_from_json, event_to_json, make_converter
from .._errors import StateError
from .._events import Event
from ._paths import run_dir, safe_name
from ._redact import Redactor

__all__ = [
    "LOGGER_NAME",
    "RedactingFilter",
    "RunFiles",
    "RunLogHandle",
    "TranscriptWriter",
    "attach_run_log",
    "mark_task_as_run",
    "read_events",
    "run_log_context",
]

LOGGER_NAME: Final = "bmad_trio"
LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


class TranscriptWriter:
    """Appends one session's messages to its transcript file, one redacted JSON object a line.

    Each line is the message's ``data`` if it has any, else ``{"kind", "text", "tool"}`` built from
    the message. Synchronous and not a checkpoint (see the module docstring).
    """

    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = path
        self._redactor = redactor
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self.count = 0

    def write(self, message: AgentMessage) -> None:
        """Append one message (redacted) and flush it."""
        if self._file is None:
            raise ValueError(f"transcript {self.path} is closed")
        data: dict[str, Any] = dict(message.data)
        if not data:
            data = {"kind": message.kind, "text": message.text}
            if message.tool is not None:
                data["tool"] = {"name": message.tool.name, "target": message.tool.target}
        self._file.write(_dumps(self._redactor.redact_json(data)) + "\n")
        self._file.flush()
        self.count += 1

    def write_all(self, messages: Iterable[AgentMessage]) -> Path:
        """Append every message; returns the transcript's path."""
        for message in messages:
            self.write(message)
        return self.path

    async def drain(self, messages: AsyncIterable[AgentMessage]) -> Path:
        """Append every message from ``messages`` (e.g. a memory receive stream) until it ends;
        returns the path. Cancellable between messages; what was written stays written."""
        async for message in messages:
            self.write(message)
        return self.path

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        """Close the file (idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message, exception text and stack in place.

    The record is rewritten (``msg`` becomes the formatted, redacted message, ``args`` empty), so
    handlers after this one see the redacted text too. Never drops a record.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw pieces, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_RUN_OF_TASK: Final[ContextVar[str | None]] = ContextVar("bmad_trio_run_id", default=None)
"""The id of the run whose task tree the current task belongs to (see :func:`run_log_context`)."""
_OWN_RUN_ATTR: Final = "bmad_trio_run_id"
"""Set on the records of a run's own logger (:attr:`RunLogHandle.logger`): the run they belong to."""
_WRITTEN_ATTR: Final = "bmad_trio_run_log_written"
"""Set on a record that a run's own logger already wrote to its run.log (so it is not written twice)."""


def mark_task_as_run(run_id: str) -> None:
    """Mark the current task, and every task or worker thread it starts from now on, as part of run
    ``run_id`` (for the run's own task, which lives exactly as long as the run: no reset needed).
    See :func:`run_log_context`."""
    _RUN_OF_TASK.set(run_id)


@contextmanager
def run_log_context(run_id: str) -> Generator[None]:
    """Mark the current task, and every task or worker thread it starts from now on, as part of
    run ``run_id``: the ``bmad_trio`` records they log go to that run's ``run.log`` only.

    Context variables are copied into child tasks when they are spawned (trio and asyncio alike)
    and into ``anyio.to_thread`` workers, so setting it once in the run's task, before it starts
    any child, covers the whole run. Two runs in one process never see each other's records.
    """
    token = _RUN_OF_TASK.set(run_id)
    try:
        yield
    finally:
        _RUN_OF_TASK.reset(token)


class _ThisRunOnly(logging.Filter):
    """Passes run ``run_id``'s records: those of its own logger, and the shared loggers' records
    logged by its tasks (per :func:`run_log_context`), except those already written."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _WRITTEN_ATTR, False):
            return False
        own: str | None = getattr(record, _OWN_RUN_ATTR, None)
        return (own if own is not None else _RUN_OF_TASK.get()) == self.run_id


class _RunLoggerHandler(logging.Handler):
    """The run's own logger's one handler: every record goes to ``run.log``; it then goes on to the
    application's handlers only if the shared ``bmad_trio.run`` logger lets that level through,
    exactly as if it had been logged there (so a run never makes an application print INFO lines
    it did not ask for)."""

    def __init__(self, file_handler: logging.Handler, shared: logging.Logger, run_id: str) -> None:
        super().__init__()
        self._file_handler = file_handler
        self._shared = shared
        self._run_id = run_id

    def emit(self, record: logging.LogRecord) -> None:
        setattr(record, _OWN_RUN_ATTR, self._run_id)
        if record.levelno >= self._file_handler.level:
            self._file_handler.handle(record)  # redacts the record in place
        if self._shared.isEnabledFor(record.levelno):
            setattr(record, _WRITTEN_ATTR, True)
            self._shared.handle(record)


class RunLogHandle:
    """An attached ``run.log``; :meth:`detach` removes and closes it (idempotent).

    :attr:`logger` is the run's own logger: its records (at the handle's level and above) always
    reach ``run.log``, whatever levels the application set. Records of the shared ``bmad_trio``
    loggers reach ``run.log`` when their logger's level lets them through and they were logged
    inside the run's :func:`run_log_context`. No logger's level is ever changed.
    """

    def __init__(self, shared: logging.Logger, handler: logging.Handler, run_id: str) -> None:
        self._shared = shared
        self._handler: logging.Handler | None = handler
        # Made directly, not by logging.getLogger: it is not registered anywhere (no global state)
        # and has no parent, so its records go only where _RunLoggerHandler sends them.
        self.logger: logging.Logger = logging.Logger(f"{shared.name}.run", level=handler.level)
        self.logger.propagate = False
        self._forward = _RunLoggerHandler(handler, logging.getLogger(f"{shared.name}.run"), run_id)
        self.logger.addHandler(self._forward)
        self.run_id = run_id

    @property
    def path(self) -> Path:
        handler = self._handler
        if not isinstance(handler, logging.FileHandler):
            raise ValueError("run log handle is detached")
        return Path(handler.baseFilename)

    @property
    def attached(self) -> bool:
        return self._handler is not None

    def detach(self) -> None:
        handler, self._handler = self._handler, None
        if handler is None:
            return
        self.logger.removeHandler(self._forward)
        self._shared.removeHandler(handler)
        handler.close()

    def __enter__(self) -> RunLogHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()


def attach_run_log(
    path: Path,
    redactor: Redactor,
    *,
    run_id: str,
    level: int = logging.INFO,
    logger_name: str = LOGGER_NAME,
) -> RunLogHandle:
    """Append run ``run_id``'s log records at ``level`` and above to ``path``, redacted.

    That is: everything logged through the handle's :attr:`~RunLogHandle.logger`, and the records
    of the shared ``logger_name`` logger tree that its levels let through and that were logged
    inside ``run_log_context(run_id)``. Levels are never changed, so another run, or the
    application, sees no difference. Returns the handle; detach it when the run ends.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_ThisRunOnly(run_id))  # first: other runs' records are never even redacted
    handler.addFilter(RedactingFilter(redactor))
    shared = logging.getLogger(logger_name)
    shared.addHandler(handler)
    return RunLogHandle(shared, handler, run_id)


class RunFiles:
    """The files of one run; see the module docstring. ``with RunFiles(project, run_id, r) as f:``.

    Opening creates the run directory and opens ``events.jsonl`` for appending; :meth:`close` closes
    it, every transcript writer still open, and detaches the run log.
    """

    def __init__(
        self,
        project: Path,
        run_id: str,
        redactor: Redactor,
        *,
        converter: cattrs.Converter | None = None,
    ) -> None:
        self.run_id = run_id
        self.root = run_dir(project, run_id)
        self.redactor = redactor
        self._converter = converter if converter is not None else make_converter()
        self.root.mkdir(parents=True, exist_ok=True)
        self._events: IO[str] | None = self.events_path.open("a", encoding="utf-8")
        self._transcripts: list[TranscriptWriter] = []
        self._log: RunLogHandle | None = None

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def transcripts_dir(self) -> Path:
        return self.root / "transcripts"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    def transcript_path(self, story_id: str, cycle: int, role: str) -> Path:
        """``transcripts/<story>-<cycle>-<role>.jsonl`` (story id and role made file-name safe)."""
        name = f"{safe_name(story_id)}-{int(cycle)}-{safe_name(str(role))}.jsonl"
        return self.transcripts_dir / name

    def write_event(self, event: Event) -> Event:
        """Redact the event, append it as one JSON line (with ``type`` and ``ts``) and flush it.

        Returns the redacted event: hand that object, not the original, to anyone else (the run's
        event stream does), so every consumer sees what the file has and redaction runs once.
        """
        if self._events is None:
            raise ValueError(f"{self.events_path} is closed")
        redacted = self.redactor.redact_attrs(event)
        self._events.write(_dumps(event_to_json(self._converter, redacted)) + "\n")
        self._events.flush()
        return redacted

    def transcript(self, story_id: str, cycle: int, role: str) -> TranscriptWriter:
        """A writer appending to this session's transcript (a re-run after a resume appends)."""
        writer = TranscriptWriter(self.transcript_path(story_id, cycle, role), self.redactor)
        self._transcripts = [w for w in self._transcripts if not w.closed]
        self._transcripts.append(writer)
        return writer

    def attach_log(self, *, level: int = logging.INFO) -> RunLogHandle:
        """Attach ``run.log`` for this run (see :func:`attach_run_log`) until :meth:`close`;
        calling it again returns the handle already attached. Log inside
        ``run_log_context(run_id)`` for the shared loggers' records to reach it."""
        if self._log is None or not self._log.attached:
            self._log = attach_run_log(
                self.log_path, self.redactor, run_id=self.run_id, level=level
            )
        return self._log

    def read_events(self) -> list[Event]:
        """Every event written to ``events.jsonl`` so far (see :func:`read_events`)."""
        return read_events(self.events_path, self._converter)

    def close(self) -> None:
        """Close everything this object opened (idempotent)."""
        events, self._events = self._events, None
        try:
            for writer in self._transcripts:
                writer.close()
            self._transcripts.clear()
            if self._log is not None:
                self._log.detach()
        finally:
            if events is not None:
                events.close()

    def __enter__(self) -> RunFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_events(path: Path, converter: cattrs.Converter | None = None) -> list[Event]:
    """Parse an ``events.jsonl``; a torn last line (a crash mid-write) is skipped."""
    conv = converter if converter is not None else make_converter()
    events: list[Event] = []
    with path.open(encoding="utf-8") as file:
        lines = file.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise StateError(f"{path}:{number}: not a JSON line") from None
        events.append(event_from_json(conv, data))
    return events
