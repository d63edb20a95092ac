"""Webhook notifier, against httpx.MockTransport handlers standing in for the webhook."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import httpx
import pytest

from bmad_trio._commandline._notify import Notifier, notification_text
from bmad_trio._errors import ConfigError
from bmad_trio._events import (
    AgentActivity,
    Event,
    PhaseStarted,
    RunFinished,
    RunPaused,
    RunStarted,
    StoryFinished,
    StoryMoved,
)

SECRET = "T000/B000/s3cr3t-token"
HOOK = f"https://example.test/hooks/{SECRET}"

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def run_events() -> list[Event]:
    return [
        RunStarted(run_id="r-7", epic="epic-1", project="/p", stories=("1.1", "1.2")),
        PhaseStarted(story_id="1.1", phase="develop", role="dev", cycle=1),
        AgentActivity(story_id="1.1", role="dev", tool="Edit", target="a.py"),
        StoryFinished(story_id="1.1", status="done", cycles=2, cost_usd=0.12, duration_s=38.1),
        StoryFinished(
            story_id="1.2",
            status="failed",
            cycles=10,
            cost_usd=2.5,
            duration_s=725,
            failure_reason="max cycles reached",
        ),
        RunPaused(reason="usage limit", until_ts=1_767_225_600.0),  # 2026-01-01 00:00 UTC
        RunFinished(status="failed", cost_usd=2.62, duration_s=800, reason="1 story failed"),
    ]


async def notify(notifier: Notifier, events: list[Event]) -> None:
    send, receive = anyio.create_memory_object_stream[Event](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run, receive)
        async with send:
            for event in events:
                await send.send(event)


def recording(
    responses: list[int | type[httpx.TransportError]],
) -> tuple[list[httpx.Request], Handler]:
    """A webhook answering with the given statuses (or raising the given errors) in turn."""
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        answer = responses[min(len(requests), len(responses)) - 1]
        if isinstance(answer, int):
            return httpx.Response(answer)
        raise answer("simulated", request=request)

    return requests, handler


def test_notification_texts() -> None:
    events = run_events()
    texts = [notification_text(event, epic="epic-1", run_id="r-7") for event in events]
    assert texts == [
        None,
        None,
        None,
        "bmad-trio [epic-1 run r-7]: story 1.1 done after 2 cycles, $0.12, 38s",
        "bmad-trio [epic-1 run r-7]: story 1.2 failed after 10 cycles, $2.50, 12m05s: max cycles reached",
        "bmad-trio [epic-1 run r-7]: paused: usage limit; resumes at 2026-01-01 00:00 UTC",
        "bmad-trio [epic-1 run r-7]: run failed, $2.62, 13m20s: 1 story failed",
    ]
    done = RunFinished(status="done", cost_usd=1, duration_s=5)
    assert notification_text(done) == "bmad-trio: run finished, $1.00, 5s"


@pytest.mark.anyio
async def test_posts_event_and_text_for_the_notified_events_only() -> None:
    requests, handler = recording([200])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        notifier = Notifier(HOOK, client=client)
        await notify(notifier, run_events())
        assert not client.is_closed  # a client we were given is left open
    assert (notifier.sent, notifier.failed, notifier.dropped) == (4, 0, 0)
    assert [request.url for request in requests] == [httpx.URL(HOOK)] * 4
    assert all(request.method == "POST" for request in requests)
    bodies = [json.loads(request.content) for request in requests]
    assert [body["event"]["type"] for body in bodies] == [
        "story_finished",
        "story_finished",
        "run_paused",
        "run_finished",
    ]
    assert bodies[0]["event"]["story_id"] == "1.1"
    assert bodies[0]["event"]["cost_usd"] == 0.12
    assert (
        bodies[3]["text"] == "bmad-trio [epic-1 run r-7]: run failed, $2.62, 13m20s: 1 story failed"
    )


@pytest.mark.anyio
async def test_slack_hooks_get_a_text_payload() -> None:
    requests, handler = recording([200])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        notifier = Notifier(f"https://hooks.slack.com/services/{SECRET}", client=client)
        await notify(notifier, run_events()[:4])
    assert [json.loads(request.content) for request in requests] == [
        {"text": "bmad-trio [epic-1 run r-7]: story 1.1 done after 2 cycles, $0.12, 38s"}
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("failure", [500, 503, 429, httpx.ReadTimeout, httpx.ConnectError], ids=str)
async def test_retries_transient_failures(
    failure: int | type[httpx.TransportError], caplog: pytest.LogCaptureFixture
) -> None:
    requests, handler = recording([failure, failure, 200])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        notifier = Notifier(HOOK, client=client, retries=3, backoff_s=0.001)
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            await notify(notifier, run_events()[:4])
    assert len(requests) == 3
    assert (notifier.sent, notifier.failed) == (1, 0)
    warnings = [r for r in caplog.records if r.name == "bmad_trio.notify"]
    assert len(warnings) == 2
    assert "attempt 1/4 failed" in warnings[0].getMessage()
    assert all("https://example.test" in r.getMessage() for r in warnings)
    assert not any(SECRET in r.getMessage() or "/hooks/" in r.getMessage() for r in warnings)


@pytest.mark.anyio
async def test_gives_up_after_the_retries_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    requests, handler = recording([500])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        notifier = Notifier(HOOK, client=client, retries=2, backoff_s=0.001)
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            await notify(notifier, run_events()[:4])
    assert len(requests) == 3
    assert (notifier.sent, notifier.failed) == (0, 1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "notify https://example.test: giving up after 3 attempts: HTTP 500"
    ]
    assert SECRET not in caplog.text


@pytest.mark.anyio
async def test_client_errors_are_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    requests, handler = recording([404])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        notifier = Notifier(HOOK, client=client, backoff_s=0.001)
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            await notify(notifier, run_events()[:4])
    assert len(requests) == 1
    assert notifier.failed == 1
    assert "refused with HTTP 404; not retrying" in caplog.text


@pytest.mark.anyio
async def test_a_hanging_webhook_never_blocks_the_producer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = 0

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal started
        started += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    events: list[Event] = [
        StoryFinished(story_id=f"s{i}", status="done", cycles=1, cost_usd=0, duration_s=1)
        for i in range(200)
    ]
    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        notifier = Notifier(
            HOOK, client=client, timeout=60, retries=0, max_pending=4, drain_timeout=0.2
        )
        send, receive = anyio.create_memory_object_stream[Event](0)
        produced_while_hanging = -1
        with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(notifier.run, receive)
                with anyio.fail_after(10):  # a generous guard, not a measurement
                    async with send:
                        for event in events:
                            await send.send(event)
                    produced_while_hanging = started
            # the producer got through all 200 while the first post still hung (its deadline is far
            # off, so no machine load can let a second one start)
    assert produced_while_hanging == 1
    assert notifier.dropped >= 190
    assert notifier.sent == 0
    assert "dropped the oldest pending notification" in caplog.text
    assert "gave up on pending notifications" in caplog.text or notifier.failed >= 1


@pytest.mark.anyio
async def test_drops_the_oldest_when_the_queue_is_full() -> None:
    gate = anyio.Event()
    seen: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        seen.append(json.loads(request.content)["event"]["story_id"])
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        notifier = Notifier(HOOK, client=client, max_pending=2, timeout=30)
        send, receive = anyio.create_memory_object_stream[Event](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run, receive)
            async with send:
                for i in range(6):
                    await send.send(
                        StoryFinished(
                            story_id=f"s{i}", status="done", cycles=1, cost_usd=0, duration_s=1
                        )
                    )
                    await anyio.wait_all_tasks_blocked()
                gate.set()
    # s0 was in flight; of s1..s5 only the two newest survived the full queue
    assert seen == ["s0", "s4", "s5"]
    assert notifier.dropped == 3


@pytest.mark.anyio
async def test_own_client_is_opened_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    # nothing listens on port 9 of loopback: the connection is refused at once
    notifier = Notifier(f"http://127.0.0.1:9/{SECRET}", retries=1, backoff_s=0.001, timeout=2)
    with caplog.at_level(logging.WARNING, logger="bmad_trio.notify"):
        await notify(notifier, run_events()[:4])
    assert notifier.failed == 1
    assert "notify http://127.0.0.1: giving up after 2 attempts: ConnectError" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url", ["ftp://example.test/x", "not a url", f"https:///{SECRET}", "hooks.slack.com/x"]
)
def test_rejects_bad_urls_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Notifier(url)
    assert SECRET not in str(caught.value)
    assert url not in str(caught.value)


def test_a_story_moving_off_a_worker_is_notified() -> None:
    moved = StoryMoved(story_id="1.3", worker="w1", reason="it fell silent (no heartbeat for 10 s)")
    assert notification_text(moved, run_id="r-7") == (
        "bmad-trio [run r-7]: story 1.3 moved off worker w1: it fell silent (no heartbeat for 10 s)"
    )
