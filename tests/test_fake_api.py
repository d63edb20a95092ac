"""FakeAnthropicAPI against httpx: wire format, faults, recording, scenarios and their loading."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bmad_trio import ConfigError
from bmad_trio.testing import (
    ApiRequest,
    BmadActor,
    FakeAnthropicAPI,
    Fault,
    Reply,
    Rule,
    Scenario,
    bmad_actor_scenario,
    load_scenario,
    parse_context,
    serve_fake_api,
)

pytestmark = pytest.mark.anyio

URL = "/v1/messages?beta=true"


def _body(prompt: str = "hello", *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "stream": stream,
        "system": [{"type": "text", "text": "You are a test."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "unknown_field": {"tolerated": True},
        **extra,
    }


def _sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for frame in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        assert set(lines) == {"event", "data"}, frame
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append((lines["event"], data))
    return events


async def test_sse_stream_text_and_tools() -> None:
    reply = Reply.tools(
        Reply.write("a.py", "x = 1\n" * 20), Reply.read("b.py"), text="Working on it now."
    )
    async with (
        FakeAnthropicAPI(Scenario(responders=[Rule(reply=reply)])) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        response = await client.post(URL, json=_body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert {"id", "type", "role", "content", "model", "usage"} <= set(start)
    assert start["content"] == []
    assert start["model"] == "claude-sonnet-4-5"
    assert start["usage"]["input_tokens"] > 0
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] > 0
    blocks: dict[int, dict[str, Any]] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = {"start": data["content_block"], "deltas": [], "stopped": False}
        elif name == "content_block_delta":
            blocks[data["index"]]["deltas"].append(data["delta"])
        elif name == "content_block_stop":
            blocks[data["index"]]["stopped"] = True
    assert sorted(blocks) == [0, 1, 2]
    assert all(b["stopped"] for b in blocks.values())
    assert blocks[0]["start"]["type"] == "text"
    assert "".join(d["text"] for d in blocks[0]["deltas"]) == "Working on it now."
    for index, name, tool_input in (
        (1, "Write", {"file_path": "a.py", "content": "x = 1\n" * 20}),
        (2, "Read", {"file_path": "b.py"}),
    ):
        block = blocks[index]
        assert block["start"]["name"] == name
        assert block["start"]["input"] == {}
        assert block["start"]["id"].startswith("toolu_")
        assert {d["type"] for d in block["deltas"]} == {"input_json_delta"}
        assert json.loads("".join(d["partial_json"] for d in block["deltas"])) == tool_input
    assert len(blocks[1]["deltas"]) > 1


async def test_non_streaming_json_and_text_stop_reason() -> None:
    async with FakeAnthropicAPI() as api, httpx.AsyncClient(base_url=api.url) as client:
        response = await client.post(URL, json=_body(stream=False))
    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "OK"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] >= 1


async def test_model_defaults_and_override() -> None:
    async with (
        FakeAnthropicAPI(Scenario(model="claude-opus-4-1")) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        fixed = (await client.post(URL, json=_body(stream=False))).json()
    async with FakeAnthropicAPI() as api, httpx.AsyncClient(base_url=api.url) as client:
        body = _body(stream=False)
        del body["model"]
        default = (await client.post(URL, json=body)).json()
    assert fixed["model"] == "claude-opus-4-1"
    assert default["model"] == "claude-sonnet-4-5"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_http_faults(status: int, error_type: str) -> None:
    fault = Fault.http(status, "scripted failure", retry_after_s=2)
    async with (
        FakeAnthropicAPI(Scenario(responders=[Rule(fault=fault)])) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        response = await client.post(URL, json=_body())
    assert response.status_code == status
    assert response.headers["retry-after"] == "2"
    assert response.json() == {
        "type": "error",
        "error": {"type": error_type, "message": "scripted failure"},
    }


async def test_usage_limit_fault_has_unified_headers() -> None:
    scenario = Scenario(responders=[Rule(fault=Fault.usage_limit(reset_in_s=120))])
    async with FakeAnthropicAPI(scenario) as api, httpx.AsyncClient(base_url=api.url) as client:
        before = anyio.current_time()
        response = await client.post(URL, json=_body())
    del before
    assert response.status_code == 429
    assert response.headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert int(response.headers["anthropic-ratelimit-unified-reset"]) > 1_000_000_000
    assert response.headers["retry-after"] == "120"
    assert "usage limit" in response.json()["error"]["message"]


async def test_stream_error_event_mid_stream_then_fallback() -> None:
    scenario = Scenario(
        responders=[
            Rule(stream=True, fault=Fault(kind="stream_error")),
            Rule(reply=Reply.text("ok")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api, httpx.AsyncClient(base_url=api.url) as client:
        streamed = await client.post(URL, json=_body())
        fallback = await client.post(URL, json=_body(stream=False))
    events = _sse(streamed.text)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "overloaded_error"
    assert fallback.json()["content"] == [{"type": "text", "text": "ok"}]


async def test_dropped_connection_mid_stream() -> None:
    scenario = Scenario(responders=[Rule(fault=Fault(kind="drop"), times=2)])
    async with FakeAnthropicAPI(scenario) as api, httpx.AsyncClient(base_url=api.url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(URL, json=_body())
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(URL, json=_body(stream=False))
        # the server still answers on a new connection
        assert (await client.post(URL, json=_body(stream=False))).status_code == 200


async def test_stalled_stream_is_closed_when_the_server_exits() -> None:
    scenario = Scenario(responders=[Rule(fault=Fault(kind="stall"))])
    errors: list[BaseException] = []
    started = anyio.Event()
    failed = anyio.Event()
    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
        async with FakeAnthropicAPI(scenario) as api:

            async def reader() -> None:
                try:
                    async with client.stream("POST", api.url + URL, json=_body()) as response:
                        async for line in response.aiter_lines():
                            if "message_start" in line:
                                started.set()
                except httpx.HTTPError as exc:
                    errors.append(exc)
                    failed.set()

            tg.start_soon(reader)
            with anyio.fail_after(5):
                await started.wait()
            closing = anyio.current_time()
        closed = anyio.current_time() - closing
        with anyio.fail_after(5):
            await failed.wait()
    assert closed < 1.0
    assert isinstance(errors[0], httpx.RemoteProtocolError)


async def test_latency_and_slow_streaming() -> None:
    scenario = Scenario(latency_s=0.2, delta_delay_s=0.05)
    async with FakeAnthropicAPI(scenario) as api, httpx.AsyncClient(base_url=api.url) as client:
        start = anyio.current_time()
        await client.post(URL, json=_body(stream=False))
        latency = anyio.current_time() - start
        start = anyio.current_time()
        slow = Reply(blocks=Reply.text("x" * 100).blocks, delta_delay_s=0.05)
        api.scenario = Scenario(responders=[Rule(reply=slow)])
        response = await client.post(URL, json=_body())
        streamed = anyio.current_time() - start
    assert latency >= 0.2
    deltas = [n for n, _ in _sse(response.text) if n == "content_block_delta"]
    assert len(deltas) >= 4
    assert streamed >= 0.05 * len(deltas)


async def test_recording_redacts_secrets_and_keeps_the_body() -> None:
    headers = {
        "x-api-key": "sk-ant-secret",
        "authorization": "Bearer secret",
        "x-session-token": "tok",
        "anthropic-beta": "claude-code-20250219",
    }
    async with FakeAnthropicAPI() as api, httpx.AsyncClient(base_url=api.url) as client:
        sent = await client.post(URL, json=_body(), headers=headers)
        await client.post("/v1/messages/count_tokens?beta=true", json=_body(), headers=headers)
    first, second = api.requests
    assert first.body_bytes == len(sent.request.content) > 0
    assert first.method == "POST"
    assert first.path == "/v1/messages"
    assert first.query == {"beta": "true"}
    assert first.number == 1
    assert second.number == 0
    assert api.message_requests == [first]
    for request in api.requests:
        assert request.headers["x-api-key"] == "<redacted>"
        assert request.headers["authorization"] == "<redacted>"
        assert request.headers["x-session-token"] == "<redacted>"
        assert request.headers["anthropic-beta"] == "claude-code-20250219"
        assert "secret" not in json.dumps(dict(request.headers))
    assert first.json["unknown_field"] == {"tolerated": True}


async def test_count_tokens_other_paths_and_unknown_paths(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeAnthropicAPI() as api, httpx.AsyncClient(base_url=api.url) as client:
        counted = await client.post("/v1/messages/count_tokens", json=_body())
        hello = await client.head("/api/hello")
        models = await client.get("/v1/models")
        with caplog.at_level(logging.WARNING, logger="bmad_trio.testing.fake_api"):
            unknown = await client.post("/v1/nothing", json={})
    assert counted.json()["input_tokens"] > 0
    assert hello.status_code == 200
    assert models.json()["data"][0]["id"] == "claude-sonnet-4-5"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found_error"
    assert "/v1/nothing" in caplog.text


async def test_models_list_in_anthropics_format() -> None:
    async with (
        FakeAnthropicAPI(Scenario(model="claude-opus-4-1")) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        listed = await client.get("/v1/models", params={"limit": 1})
        one = await client.get("/v1/models/claude-opus-4-1")
        missing = await client.get("/v1/models/claude-nope")
        head = await client.head("/v1/models")
    assert listed.status_code == 200
    assert listed.headers["content-type"] == "application/json"
    assert listed.json() == {
        "data": [
            {
                "type": "model",
                "id": "claude-opus-4-1",
                "display_name": "Claude Opus 4.1",
                "created_at": "2025-09-29T00:00:00Z",
            }
        ],
        "has_more": False,
        "first_id": "claude-opus-4-1",
        "last_id": "claude-opus-4-1",
    }
    assert one.json() == listed.json()["data"][0]
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert (head.status_code, head.content) == (200, b"")
    assert [r.path for r in api.requests][:1] == ["/v1/models"]
    assert api.requests[0].query == {"limit": "1"}
    assert api.message_requests == []


async def test_models_default_display_name() -> None:
    async with FakeAnthropicAPI() as api, httpx.AsyncClient(base_url=api.url) as client:
        (info,) = (await client.get("/v1/models")).json()["data"]
    assert (info["id"], info["display_name"]) == ("claude-sonnet-4-5", "Claude Sonnet 4.5")


async def test_api_key_check_refuses_other_keys_with_authentication_error() -> None:
    key = "sk-ant-right-key-0123"
    async with (
        FakeAnthropicAPI(Scenario(responders=[Rule(reply=Reply.text("hi"))]), api_key=key) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        assert api.env()["ANTHROPIC_API_KEY"] == key
        wrong = await client.post(URL, json=_body(stream=False), headers={"x-api-key": "wrong"})
        bearer_wrong = await client.get("/v1/models", headers={"authorization": "Bearer nope"})
        none = await client.get("/v1/models")
        head = await client.head("/api/hello", headers={"x-api-key": "wrong"})
        right = await client.post(URL, json=_body(stream=False), headers={"x-api-key": key})
        bearer = await client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
        counted = await client.post(
            "/v1/messages/count_tokens", json=_body(), headers={"x-api-key": key}
        )
    for refused in (wrong, bearer_wrong, none):
        assert refused.status_code == 401
        assert refused.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }
        assert key not in refused.text
    assert (head.status_code, head.content) == (401, b"")
    assert right.status_code == 200
    assert right.json()["content"] == [{"type": "text", "text": "hi"}]
    assert bearer.status_code == 200
    assert counted.status_code == 200
    # refused requests are recorded (redacted) but are not message requests and used no rule
    assert len(api.requests) == 7
    assert [r.number for r in api.message_requests] == [1]
    assert api.requests[0].headers["x-api-key"] == "<redacted>"
    assert all(key not in json.dumps(dict(r.headers)) for r in api.requests)


async def test_without_api_key_any_key_or_none_is_accepted() -> None:
    async with FakeAnthropicAPI() as api, httpx.AsyncClient(base_url=api.url) as client:
        assert api.api_key is None
        plain = await client.get("/v1/models")
        keyed = await client.get("/v1/models", headers={"x-api-key": "anything"})
    assert (plain.status_code, keyed.status_code) == (200, 200)


async def test_keep_alive_and_concurrent_connections() -> None:
    scenario = Scenario(latency_s=0.2)
    async with FakeAnthropicAPI(scenario) as api, httpx.AsyncClient(base_url=api.url) as client:
        for _ in range(3):  # one connection, reused
            assert (await client.post(URL, json=_body(stream=False))).status_code == 200
        assert api.connections_accepted == 1

        async def one() -> None:
            assert (await client.post(URL, json=_body())).status_code == 200

        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        elapsed = anyio.current_time() - start
    assert len(api.message_requests) == 8
    assert api.connections_accepted == 5
    assert elapsed < 0.2 * 4  # served concurrently


async def test_errors_in_the_block_propagate_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with FakeAnthropicAPI():
            raise KeyError("mine")


async def test_serve_fake_api_with_task_group_start() -> None:
    async with anyio.create_task_group() as tg:
        api = await tg.start(serve_fake_api, "127.0.0.1", 0, None)
        assert isinstance(api, FakeAnthropicAPI)
        assert api.port > 0
        async with httpx.AsyncClient(base_url=api.url) as client:
            assert (await client.post(URL, json=_body(stream=False))).status_code == 200
        tg.cancel_scope.cancel()


async def test_env_keeps_the_cli_offline() -> None:
    async with FakeAnthropicAPI() as api:
        env = api.env()
    assert env["ANTHROPIC_BASE_URL"] == api.url
    assert api.url.startswith("http://127.0.0.1:")
    assert env["ANTHROPIC_API_KEY"]
    for name in (
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
    ):
        assert env[name] == "1"


# -- matching --------------------------------------------------------------------------------


def _request(messages: list[dict[str, Any]], *, number: int = 1, **body: Any) -> ApiRequest:
    return ApiRequest(
        method="POST",
        path="/v1/messages",
        body={"model": "m", "stream": True, "messages": messages, **body},
        number=number,
    )


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _tool_turn(
    name: str, tool_input: Mapping[str, Any], result: str, n: int
) -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": f"t{n}", "name": name, "input": tool_input}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": result}],
        },
    ]


def test_rule_matchers() -> None:
    messages = [
        {"role": "system", "content": "system entry"},
        _user("please do MARKER work"),
        *_tool_turn("Read", {"file_path": "a"}, "     1\tcontent here", 1),
    ]
    request = _request(messages, system="the SYS prompt", number=3)
    assert request.turn == 2
    assert request.prompt == "please do MARKER work"
    assert "system entry" in request.system_text
    assert Rule(prompt_contains="MARKER", turn=2).matches(request)
    assert Rule(system_contains="SYS", request_number=3, stream=True).matches(request)
    assert Rule(tool_result_contains="content here").matches(request)
    assert not Rule(prompt_contains="nope").matches(request)
    assert not Rule(turn=1).matches(request)
    assert not Rule(stream=False).matches(request)
    assert not Rule(tool_result_contains="missing").matches(request)


async def test_rule_times_and_order() -> None:
    scenario = Scenario(
        responders=[
            Rule(fault=Fault.http(500), times=2),
            Rule(prompt_contains="x", reply=Reply.text("matched")),
        ],
        default=Reply.text("default"),
    )
    async with FakeAnthropicAPI(scenario) as api, httpx.AsyncClient(base_url=api.url) as client:
        codes = [
            (await client.post(URL, json=_body("x", stream=False))).status_code for _ in range(3)
        ]
        other = (await client.post(URL, json=_body("y", stream=False))).json()
    assert codes == [500, 500, 200]
    assert other["content"][0]["text"] == "default"


async def test_callable_responder_and_failing_responder() -> None:
    def echo(request: ApiRequest) -> Reply | None:
        if "boom" in request.prompt:
            raise RuntimeError("responder bug")
        return Reply.text(f"turn {request.turn}: {request.prompt}")

    async with (
        FakeAnthropicAPI(Scenario(responders=[echo])) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        echoed = (await client.post(URL, json=_body("hi", stream=False))).json()
        failed = (await client.post(URL, json=_body("boom", stream=False))).json()
    assert echoed["content"][0]["text"] == "turn 1: hi"
    assert "failed" in failed["content"][0]["text"]


# -- loading ---------------------------------------------------------------------------------

TOML = """
model = "claude-sonnet-4-5"
latency_s = 0.1
delta_delay_s = 0.01
default_text = "fallback"

[[responders]]
request_number = 1
fault = { kind = "http", status = 429, retry_after_s = 1 }
times = 1

[[responders]]
prompt_contains = "write"
turn = 1
text = "Writing."
[[responders.tools]]
name = "Write"
input = { file_path = "a.txt", content = "hi" }

[[responders]]
builtin = "bmad_actor"
fail_first_review = ["1.2"]
"""


def test_load_toml_scenario(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(TOML)
    scenario = load_scenario(path)
    assert scenario.model == "claude-sonnet-4-5"
    assert scenario.latency_s == 0.1
    assert scenario.default == Reply.text("fallback")
    first, second, third = scenario.responders
    assert first == Rule(fault=Fault.http(429, retry_after_s=1), request_number=1, times=1)
    assert isinstance(second, Rule)
    assert second.reply == Reply.tools(Reply.write("a.txt", "hi"), text="Writing.")
    assert third == BmadActor(fail_first_review=frozenset({"1.2"}))


def test_load_json_scenario(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"responders": [{"text": "hi", "stream": False}]}))
    scenario = load_scenario(path)
    assert scenario.responders == (Rule(reply=Reply.text("hi"), stream=False),)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("latency = 1", "latency: unknown key"),
        ("[[responders]]\nturn = 1", "responders[0]: a responder needs"),
        ('[[responders]]\ntext = "a"\nturn = "one"', "responders[0].turn: expected an integer"),
        ('[[responders]]\nfault = "explode"', "responders[0].fault.kind: expected one of"),
        ("[[responders]]\nfault = { status = 200 }", "responders[0].fault.status"),
        ("[[responders]]\ntools = [{ input = {} }]", "responders[0].tools[0].name"),
        ('[[responders]]\nbuiltin = "nope"', "responders[0].builtin: unknown builtin"),
        ('[[responders]]\ntext = "a"\nfault = "drop"', "responders[0].fault: a responder has"),
        ("responders = 3", "responders: expected a list"),
        ("latency_s = -1", "latency_s: expected a number"),
        ("not toml at all [", "not valid toml"),
    ],
)
def test_load_scenario_errors_name_file_and_key(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)
    assert where in str(info.value)


def test_load_scenario_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")


# -- the BMAD actor ----------------------------------------------------------------------------


def test_parse_context_is_tolerant() -> None:
    text = (
        "Do the job.\n\n##  Context  \n\n- role: QA\n-   story:   1.2  \n* story title: Add greeting\n"
        "- story file: docs/stories/1.2.add-greeting.md\n- some unknown key: x\n"
        "- findings: first line\n  second line\n- review: again\n"
    )
    ctx = parse_context(text)
    assert ctx is not None
    assert ctx.role == "qa"
    assert ctx.story == "1.2"
    assert ctx.story_title == "Add greeting"
    assert ctx.story_file == "docs/stories/1.2.add-greeting.md"
    assert ctx.findings == "first line\nsecond line"
    assert ctx.review == "again"
    assert ctx.package == ""
    assert parse_context("no context here") is None
    assert parse_context("## Context\n- story: 1.2\n") is None


def _ctx_prompt(role: str) -> str:
    return (
        f"## Context\n- role: {role}\n- story: 1.2\n- story title: Add greeting\n"
        "- story file: docs/stories/1.2.add-greeting.md\n- epic file: docs/prd/epic-1.md\n"
        "- gate file: docs/qa/gates/1.2-add-greeting.yml\n"
    )


def test_bmad_actor_steps_without_server() -> None:
    actor = BmadActor()
    system = "# Environment\n - Primary working directory: /proj\n"
    sm0 = actor(_request([_user(_ctx_prompt("sm"))], system=system))
    assert isinstance(sm0, Reply)
    assert [b.input["file_path"] for b in sm0.blocks if hasattr(b, "input")] == [
        "/proj/docs/prd/epic-1.md",
        "/proj/docs/stories/1.2.add-greeting.md",
    ]
    epic = "### Story 1.2: Add greeting\n\nAs a user, I want hi, so that hello.\n\n#### Acceptance Criteria\n\n1. Says hi.\n"
    numbered = "".join(f"{i:6}\t{line}\n" for i, line in enumerate(epic.splitlines(), 1))
    messages = [
        _user(_ctx_prompt("sm")),
        *_tool_turn("Read", {"file_path": "/proj/docs/prd/epic-1.md"}, numbered, 1),
    ]
    sm1 = actor(_request(messages, system=system))
    assert isinstance(sm1, Reply)
    write = sm1.blocks[-1]
    assert write.input["file_path"] == "/proj/docs/stories/1.2.add-greeting.md"  # type: ignore[union-attr]
    content = write.input["content"]  # type: ignore[union-attr]
    assert "As a user, I want hi, so that hello." in content
    assert "1. Says hi." in content
    assert "- [ ] Task 1: Implement `add_greeting` (AC: 1)" in content
    assert actor(_request([_user("no context")])) is None
    unknown = actor(_request([_user("## Context\n- role: poet")]))
    assert isinstance(unknown, Reply)
    assert unknown.stop_reason == "end_turn"


def test_bmad_actor_scenario_options() -> None:
    scenario = bmad_actor_scenario({"1.2"}, latency_s=0.5)
    assert scenario.latency_s == 0.5
    assert scenario.responders == (BmadActor(fail_first_review=frozenset({"1.2"})),)
