"""The webhook notifier against a real HTTP receiver on loopback (anyio TCP listener + h11).

The receiver runs in the test's own event loop and records every request it reads; how it answers
is up to each test: at once, with scripted statuses, or never (slower than the notifier's timeout).
The Slack payload is chosen by the webhook's *host* (``hooks.slack.com``), so that test reaches the
receiver as an HTTP forward proxy: the request line still names hooks.slack.com. Every wait is
bounded by ``fail_after``; nothing is timed.
"""

from __future__ import annotations

import json
import logging
import socket
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import h11
import httpx
import pytest

from bmad_trio._commandline._notify import Notifier
from bmad_trio._events import (
    AgentActivity,
    Event,
    PhaseStarted,
    RunFinished,
    RunPaused,
    RunStarted,
    StoryFinished,
)

pytestmark = pytest.mark.anyio

SECRET = "T000/B000/s3cr3t-token"
GUARD_S = 30.0
"""Generous bound on any wait in these tests (a guard, never a measurement)."""


class Received:
    """One request as the receiver read it."""

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A tiny HTTP/1.1 server: records requests, answers with ``statuses`` in turn (the last one
    repeats), or holds every request unanswered while ``hold`` is set (until the server stops)."""

    def __init__(self, statuses: tuple[int, ...] = (200,), *, hold: bool = False) -> None:
        self.statuses = statuses
        self.hold = hold
        self.requests: list[Received] = []
        self.answered = 0
        self.connections = 0
        self.port = 0
        self.got_request = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Receiver:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._serve, listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def _serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    request = await self._read(conn, stream)
                    if request is None:
                        return
                    self.requests.append(request)
                    self.got_request.set()
                    if self.hold:
                        await anyio.sleep_forever()
                    status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
                    body = b'{"ok":true}' if status < 300 else b'{"error":"scripted"}'
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                    ]
                    if status == 503:
                        headers.append(("retry-after", "0"))
                    data = conn.send(h11.Response(status_code=status, headers=headers))
                    data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
                    data += conn.send(h11.EndOfMessage()) or b""
                    await stream.send(data)
                    self.answered += 1
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError):
                return

    @staticmethod
    async def _read(conn: h11.Connection, stream: anyio.abc.SocketStream) -> Received | None:
        start: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive(65536))
                except anyio.EndOfStream:
                    conn.receive_data(b"")
                continue
            if isinstance(event, h11.Request):
                start = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and start is not None:
                headers = {k.decode(): v.decode() for k, v in start.headers}
                return Received(start.method.decode(), start.target.decode(), headers, bytes(body))
            else:  # ConnectionClosed, PAUSED
                return None


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The notifier's own client trusts proxy variables; loopback must be reached directly."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_events() -> list[Event]:
    return [
        RunStarted(run_id="r-7", epic="epic-1", project="/p", stories=("1.1", "1.2")),
        PhaseStarted(story_id="1.1", phase="develop", role="dev", cycle=1),
        AgentActivity(story_id="1.1", role="dev", tool="Edit", target="a.py"),
        StoryFinished(story_id="1.1", status="done", cycles=2, cost_usd=0.12, duration_s=38.1),
        RunPaused(reason="usage limit", until_ts=1_767_225_600.0),  # 2026-01-01 00:00 UTC
        RunFinished(status="done", cost_usd=0.2, duration_s=61),
    ]


def story_finished(index: int) -> StoryFinished:
    return StoryFinished(story_id=f"s{index}", status="done", cycles=1, cost_usd=0, duration_s=1)


async def notify(notifier: Notifier, events: list[Event]) -> None:
    """Feed ``events`` through an unbuffered stream, then wait (bounded) for the notifier to end."""
    send, receive = anyio.create_memory_object_stream[Event](0)
    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run, receive)
            async with send:
                for event in events:
                    await send.send(event)


async def test_delivers_json_payloads_to_a_real_receiver() -> None:
    async with Receiver() as receiver:
        notifier = Notifier(f"{receiver.url}/hooks/{SECRET}", timeout=5, retries=0)
        await notify(notifier, run_events())
    assert (notifier.sent, notifier.failed, notifier.dropped) == (3, 0, 0)
    assert len(receiver.requests) == 3
    assert receiver.connections == 1  # one kept-alive connection for the whole run
    for request in receiver.requests:
        assert request.method == "POST"
        assert request.target == f"/hooks/{SECRET}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    bodies = [request.json() for request in receiver.requests]
    assert [body["event"]["type"] for body in bodies] == [
        "story_finished",
        "run_paused",
        "run_finished",
    ]
    assert bodies[0]["event"]["story_id"] == "1.1"
    assert bodies[0]["event"]["cost_usd"] == 0.12
    assert isinstance(bodies[0]["event"]["ts"], float)
    assert (
        bodies[0]["text"] == "bmad-trio [epic-1 run r-7]: story 1.1 done after 2 cycles, $0.12, 38s"
    )
    assert bodies[1]["text"] == (
        "bmad-trio [epic-1 run r-7]: paused: usage limit; resumes at 2026-01-01 00:00 UTC"
    )
    assert bodies[2]["text"] == "bmad-trio [epic-1 run r-7]: run finished, $0.20, 1m01s"


async def test_slack_hooks_get_a_text_only_payload_over_http() -> None:
    """Slack is recognised by host; the receiver, acting as a forward proxy, gets the request for
    hooks.slack.com."""
    url = f"http://hooks.slack.com/services/{SECRET}"
    async with Receiver() as receiver, httpx.AsyncClient(proxy=receiver.url) as client:
        notifier = Notifier(url, client=client, timeout=5, retries=0)
        assert notifier.slack
        await notify(notifier, run_events()[:4])
    assert (notifier.sent, notifier.failed) == (1, 0)
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.target == url  # absolute form: the proxy is asked for hooks.slack.com
    assert request.headers["host"] == "hooks.slack.com"
    assert request.json() == {
        "text": "bmad-trio [epic-1 run r-7]: story 1.1 done after 2 cycles, $0.12, 38s"
    }


async def test_retries_server_errors_then_delivers(caplog: pytest.LogCaptureFixture) -> None:
    async with Receiver(statuses=(500, 503, 200)) as receiver:
        notifier = Notifier(f"{receiver.url}/hooks/{SECRET}", retries=3, backoff_s=0.01)
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            await notify(notifier, run_events()[:4])
    assert [r.json()["event"]["story_id"] for r in receiver.requests] == ["1.1"] * 3
    assert (notifier.sent, notifier.failed) == (1, 0)
    messages = [r.getMessage() for r in caplog.records if r.name == "bmad_trio.notify"]
    assert len(messages) == 2
    assert "attempt 1/4 failed (HTTP 500)" in messages[0]
    assert "attempt 2/4 failed (HTTP 503)" in messages[1]
    assert SECRET not in caplog.text


async def test_client_error_from_the_receiver_is_not_retried() -> None:
    async with Receiver(statuses=(404,)) as receiver:
        notifier = Notifier(f"{receiver.url}/hooks/{SECRET}", retries=3, backoff_s=0.01)
        await notify(notifier, run_events()[:4])
    assert len(receiver.requests) == 1
    assert (notifier.sent, notifier.failed) == (0, 1)


async def test_receiver_down_retries_then_gives_up_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    notifier = Notifier(f"http://127.0.0.1:{port}/hooks/{SECRET}", retries=2, backoff_s=0.01)
    events = run_events()
    with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
        await notify(notifier, events)  # returns normally: nothing raised
    assert (notifier.sent, notifier.failed, notifier.dropped) == (0, 3, 0)
    records = [r for r in caplog.records if r.name == "bmad_trio.notify"]
    retries = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(retries) == 3 * 2
    assert all("ConnectError" in message for message in retries)
    assert len(errors) == 3  # one per notification
    assert all(
        m.startswith("notify http://127.0.0.1: giving up after 3 attempts: ConnectError")
        for m in errors
    )
    assert SECRET not in caplog.text
    assert "/hooks/" not in caplog.text


async def test_slow_receiver_times_out_each_attempt_then_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Receiver(hold=True) as receiver:
        notifier = Notifier(
            f"{receiver.url}/hooks/{SECRET}", timeout=0.2, retries=2, backoff_s=0.01
        )
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            await notify(notifier, run_events()[:4])  # bounded: fail_after(GUARD_S) inside
        assert receiver.answered == 0
        assert [r.json()["event"]["story_id"] for r in receiver.requests] == ["1.1"] * 3
    assert (notifier.sent, notifier.failed) == (0, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("notify http://127.0.0.1: giving up after 3 attempts: ")
    assert errors[0].endswith(("timed out", "no answer within 0.2s"))


async def test_slow_receiver_never_blocks_the_producer(caplog: pytest.LogCaptureFixture) -> None:
    async with Receiver(hold=True) as receiver:
        notifier = Notifier(
            f"{receiver.url}/hooks/{SECRET}",
            timeout=GUARD_S,  # the first post hangs for the whole test
            retries=0,
            max_pending=4,
            drain_timeout=0.2,
        )
        send, receive = anyio.create_memory_object_stream[Event](0)
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(notifier.run, receive)
                with anyio.fail_after(GUARD_S):
                    async with send:
                        await send.send(run_events()[0])
                        await send.send(story_finished(0))
                        await receiver.got_request.wait()  # the webhook now holds a post
                        for index in range(1, 501):
                            await send.send(story_finished(index))
                        # all 500 went in while the receiver had not answered anything
                        assert receiver.answered == 0
                        assert len(receiver.requests) == 1
            # leaving the task group: the stream ended, the drain gave up after drain_timeout
    assert notifier.sent == 0
    assert notifier.dropped == 500 - 4
    assert "dropped the oldest pending notification" in caplog.text
    assert "gave up on pending notifications" in caplog.text
