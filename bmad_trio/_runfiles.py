"""The per-run files under ``<project>/.bmad-trio/runs/<run_id>/``.

- ``events.jsonl``: every event, one JSON object a line with ``type`` and ``ts``
  (:meth:`RunFiles.write_event`).
- ``transcripts/<story>-<cycle>-<role>.jsonl``: each agent session's messages
  (:meth:`RunFiles.transcript` gives a :class:`TranscriptWriter`).
- ``run.log``: the ``bmad_trio`` logger's records while attached (:func:`attach_run_log`).

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
import re
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import cattrs

from ._agent import AgentMessage
from ._converter import event_from_json, event_to_json, make_converter
from ._errors import StateError
from ._events import Event
from ._redact import Redactor

__all__ = [
    "LOGGER_NAME",
    "RedactingFilter",
    "RunFiles",
    "RunLogHandle",
    "TranscriptWriter",
    "attach_run_log",
    "read_events",
    "run_dir",
]

STATE_DIR_NAME: Final = ".bmad-trio"
LOGGER_NAME: Final = "bmad_trio"
LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")


def run_dir(project: Path, run_id: str) -> Path:
    """``<project>/.bmad-trio/runs/<run_id>``."""
    return Path(project) / STATE_DIR_NAME / "runs" / _safe_name(run_id)


def _safe_name(part: str) -> str:
    """A file-name-safe version of a story id, role or run id (no separators, no ``..``)."""
    cleaned = _UNSAFE_NAME_CHARS.sub("_", part).strip(".")
    return cleaned or "_"


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


class RunLogHandle:
    """An attached ``run.log`` handler; :meth:`detach` removes and closes it (idempotent)."""

    def __init__(
        self, logger: logging.Logger, handler: logging.Handler, restore_level: int | None
    ) -> None:
        self._logger = logger
        self._handler: logging.Handler | None = handler
        self._restore_level = restore_level

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
        self._logger.removeHandler(handler)
        handler.close()
        if self._restore_level is not None:
            self._logger.setLevel(self._restore_level)

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
    level: int = logging.INFO,
    logger_name: str = LOGGER_NAME,
) -> RunLogHandle:
    """Append the ``bmad_trio`` logger's records at ``level`` and above to ``path``, redacted.

    If the logger would drop such records (its effective level is higher), its level is lowered to
    ``level`` until the handle is detached. Returns the handle; detach it when the run ends.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger(logger_name)
    restore: int | None = None
    if logger.getEffectiveLevel() > level:
        restore = logger.level
        logger.setLevel(level)
    logger.addHandler(handler)
    return RunLogHandle(logger, handler, restore)


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
        name = f"{_safe_name(story_id)}-{int(cycle)}-{_safe_name(str(role))}.jsonl"
        return self.transcripts_dir / name

    def write_event(self, event: Event) -> None:
        """Append the event as one redacted JSON line (with ``type`` and ``ts``) and flush it."""
        if self._events is None:
            raise ValueError(f"{self.events_path} is closed")
        data = self.redactor.redact_json(event_to_json(self._converter, event))
        self._events.write(_dumps(data) + "\n")
        self._events.flush()

    def transcript(self, story_id: str, cycle: int, role: str) -> TranscriptWriter:
        """A writer appending to this session's transcript (a re-run after a resume appends)."""
        writer = TranscriptWriter(self.transcript_path(story_id, cycle, role), self.redactor)
        self._transcripts = [w for w in self._transcripts if not w.closed]
        self._transcripts.append(writer)
        return writer

    def attach_log(self, *, level: int = logging.INFO) -> RunLogHandle:
        """Attach ``run.log`` to the ``bmad_trio`` logger (see :func:`attach_run_log`) until
        :meth:`close`; calling it again returns the handle already attached."""
        if self._log is None or not self._log.attached:
            self._log = attach_run_log(self.log_path, self.redactor, level=level)
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
