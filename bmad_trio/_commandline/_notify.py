"""Webhook notifications (``--notify URL``): story finished, run finished or failed, run paused.

A :class:`Notifier` never blocks or fails the run. Its ``run(receive_stream)`` task takes every event
off the stream at once, keeps only the ones worth a notification in a small bounded queue and posts
them from a second task, with a per-attempt deadline and retries with exponential backoff (through
stamina). When the queue is full the *oldest* pending notification is dropped (the newest — e.g.
"run finished" — is the one a reader cares about). Failures are logged on ``bmad_trio.notify`` and never raised. Logs name
only the webhook's scheme and host: the rest of a webhook URL is usually a secret.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AsyncExitStack
from typing import Any, Final

import anyio
import cattrs
import httpx
import stamina
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._converter import event_to_json, make_converter
from .._errors import ConfigError
from .._events import Event, RunFinished, RunPaused, RunStarted, StoryFinished, StoryMoved

__all__ = ["Notifier", "notification_text"]

_MAX_BACKOFF_S: Final = 30.0


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


def notification_text(
    event: Event, *, epic: str | None = None, run_id: str | None = None
) -> str | None:
    """The one-line human summary of an event, or ``None`` if it is not worth a notification."""
    context = " ".join(part for part in (epic, f"run {run_id}" if run_id else None) if part)
    prefix = f"bmad-trio [{context}]" if context else "bmad-trio"
    match event:
        case StoryFinished():
            cycles = f"{event.cycles} cycle{'s' if event.cycles != 1 else ''}"
            text = (
                f"{prefix}: story {event.story_id} {event.status} after {cycles}, "
                f"${event.cost_usd:.2f}, {_duration(event.duration_s)}"
            )
            return f"{text}: {event.failure_reason}" if event.failure_reason else text
        case RunFinished():
            verb = "finished" if event.status == "done" else event.status
            text = f"{prefix}: run {verb}, ${event.cost_usd:.2f}, {_duration(event.duration_s)}"
            return f"{text}: {event.reason}" if event.reason else text
        case StoryMoved():
            return (
                f"{prefix}: story {event.story_id} moved off worker {event.worker}: {event.reason}"
            )
        case RunPaused():
            text = f"{prefix}: paused: {event.reason}"
            if event.until_ts is not None:
                until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(event.until_ts))
                text += f"; resumes at {until}"
            return text
        case _:
            return None


class Notifier:
    """Posts notifications for a run's events to one webhook.

    ``retries`` is the number of further attempts after a failed first one (timeouts, transport
    errors, 429 and 5xx answers are retried; other 4xx are not). ``timeout`` bounds each attempt.
    ``client`` is used as given and not closed; without one, ``run`` opens and closes its own.
    After the input stream ends, pending notifications get ``drain_timeout`` seconds to go out.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_pending: int = 32,
        drain_timeout: float = 15.0,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ConfigError("notify: not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError("notify: expected an http:// or https:// URL with a host")
        if retries < 0 or timeout <= 0 or max_pending < 1:
            raise ValueError("retries >= 0, timeout > 0 and max_pending >= 1 are required")
        self.where = f"{parsed.scheme}://{parsed.host}"
        """Scheme and host: the only part of the URL that is ever logged."""
        self.slack = parsed.host == "hooks.slack.com"
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._url = url
        self._secret_parts = tuple(
            part for part in (url, str(parsed.raw_path, "ascii", "replace")) if len(part) > 1
        )
        self._client = client
        self._timeout = timeout
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_pending = max_pending
        self._drain_timeout = drain_timeout
        self._converter: cattrs.Converter = make_converter()
        self._epic: str | None = None
        self._run_id: str | None = None
        self._log = logging.getLogger("bmad_trio.notify")

    def payload(self, event: Event) -> dict[str, Any] | None:
        """The JSON body for an event (``None``: not notified). Slack gets ``{"text": ...}`` only."""
        if isinstance(event, RunStarted):
            self._epic, self._run_id = event.epic, event.run_id
            return None
        text = notification_text(event, epic=self._epic, run_id=self._run_id)
        if text is None:
            return None
        if self.slack:
            return {"text": text}
        return {"event": event_to_json(self._converter, event), "text": text}

    async def run(self, receive_stream: MemoryObjectReceiveStream[Event]) -> None:
        """Notify for events until the stream ends and the queue is drained (bounded in time).

        Never raises for delivery problems. Cancellation stops at once; pending notifications are
        dropped and the streams and any client this notifier opened are closed.
        """
        send_pending, receive_pending = anyio.create_memory_object_stream[dict[str, Any]](
            self._max_pending
        )
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(receive_stream)
            stack.enter_context(receive_pending)
            client = self._client
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient(timeout=self._timeout))
            async with anyio.create_task_group() as group:
                group.start_soon(self._deliver_all, client, receive_pending)
                with send_pending:
                    async for event in receive_stream:
                        payload = self.payload(event)
                        if payload is not None:
                            self._enqueue(send_pending, receive_pending, payload)
                group.cancel_scope.deadline = anyio.current_time() + self._drain_timeout
            if group.cancel_scope.cancelled_caught:
                self._log.warning(
                    "notify %s: gave up on pending notifications after %.0fs",
                    self.where,
                    self._drain_timeout,
                )

    def _enqueue(
        self,
        send_pending: MemoryObjectSendStream[dict[str, Any]],
        receive_pending: MemoryObjectReceiveStream[dict[str, Any]],
        payload: dict[str, Any],
    ) -> None:
        try:
            send_pending.send_nowait(payload)
        except anyio.WouldBlock:
            receive_pending.receive_nowait()  # drop the oldest; the queue is full, so one is there
            self.dropped += 1
            self._log.warning(
                "notify %s: webhook is slow, dropped the oldest pending notification (%d so far)",
                self.where,
                self.dropped,
            )
            send_pending.send_nowait(payload)

    async def _deliver_all(
        self, client: httpx.AsyncClient, receive_pending: MemoryObjectReceiveStream[dict[str, Any]]
    ) -> None:
        async for payload in receive_pending:
            try:
                delivered = await self._deliver(client, payload)
            except Exception as exc:  # a bug here must not take the run down with it
                self._log.error(
                    "notify %s: unexpected %s: %s",
                    self.where,
                    type(exc).__name__,
                    self._redact(exc),
                )
                delivered = False
            if delivered:
                self.sent += 1
            else:
                self.failed += 1

    async def _deliver(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> bool:
        """Post one payload with retries; True once the webhook accepted it.

        stamina owns the retry loop (attempt count, exponential backoff with jitter, a server's
        ``Retry-After`` as the next wait); cancellation interrupts its sleep like any other.
        """
        attempts = self._retries + 1
        retrying = stamina.retry_context(
            on=_next_wait,
            attempts=attempts,
            timeout=None,  # each attempt has its own deadline; the run's scope bounds the rest
            wait_initial=self._backoff_s,
            wait_max=_MAX_BACKOFF_S,
            wait_jitter=self._backoff_s,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        await self._post(client, payload)
                    except _TransientFailure as failure:
                        if attempt.num < attempts:
                            self._log.warning(
                                "notify %s: attempt %d/%d failed (%s); retrying in %.1fs",
                                self.where,
                                attempt.num,
                                attempts,
                                failure.problem,
                                _wait_before_next(failure, attempt.next_wait),
                            )
                        raise
        except _TransientFailure as failure:
            self._log.error(
                "notify %s: giving up after %d attempts: %s", self.where, attempts, failure.problem
            )
            return False
        except _Refused as refused:
            self._log.error("notify %s: refused with %s; not retrying", self.where, refused.problem)
            return False
        return True

    async def _post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> None:
        """One attempt, bounded by ``timeout``; raises _TransientFailure or _Refused."""
        with anyio.move_on_after(self._timeout):
            try:
                response = await client.post(self._url, json=payload, timeout=self._timeout)
            except httpx.TimeoutException:
                raise _TransientFailure("timed out") from None
            except httpx.TransportError as exc:
                raise _TransientFailure(f"{type(exc).__name__}: {self._redact(exc)}") from None
            if response.is_success:
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                raise _Refused(problem)
            raise _TransientFailure(problem, _retry_after(response))
        raise _TransientFailure(f"no answer within {self._timeout:g}s")

    def _redact(self, exc: BaseException) -> str:
        text = str(exc)
        for part in self._secret_parts:
            text = text.replace(part, "…")
        return text


class _TransientFailure(Exception):
    """An attempt that may succeed when tried again (timeout, transport error, 429, 5xx).

    Carries only redacted text: stamina's own retry log shows it.
    """

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


class _Refused(Exception):
    """The webhook answered with a client error other than 429: retrying cannot help."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _next_wait(exc: Exception) -> bool | float:
    """stamina's hook: retry transient failures, after the server's ``Retry-After`` if it sent one."""
    if not isinstance(exc, _TransientFailure):
        return False
    if exc.retry_after is None:
        return True
    return min(_MAX_BACKOFF_S, exc.retry_after)


def _wait_before_next(failure: _TransientFailure, backoff: float) -> float:
    """The wait the log line announces (the server's ``Retry-After`` wins; jitter not shown)."""
    return backoff if failure.retry_after is None else min(_MAX_BACKOFF_S, failure.retry_after)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
