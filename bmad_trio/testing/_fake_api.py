"""FakeAnthropicAPI: a scripted Anthropic Messages API server on loopback (anyio + h11).

The real Claude Code CLI talks to it through ``ANTHROPIC_BASE_URL``. It serves ``POST /v1/messages``
(SSE streaming and the plain-JSON ``stream=false`` fallback), ``count_tokens``, ``GET /v1/models``
(Anthropic's list format) and a few harmless paths; every request is recorded with its secrets
redacted. With ``api_key`` set, a request without that key (``x-api-key`` or ``Authorization:
Bearer``) gets Anthropic's 401 ``authentication_error``. One task per connection, all inside the
server's own task group: cancelling it (leaving ``async with``) closes the listener and every open
connection at once, stalled streams included.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import h11

from ._scenario import (
    ApiRequest,
    Fault,
    Reply,
    Responder,
    Rule,
    Scenario,
    TextBlock,
    error_type_for,
    redact_headers,
)

__all__ = ["FakeAnthropicAPI", "serve_fake_api"]

logger = logging.getLogger("bmad_trio.testing.fake_api")

DEFAULT_MODEL = "claude-sonnet-4-5"
DUMMY_API_KEY = "sk-ant-fake-offline-key"
MODEL_CREATED_AT = "2025-09-29T00:00:00Z"
"""``created_at`` of the model ``GET /v1/models`` lists (fixed, so responses are reproducible)."""
_MAX_BODY = 64 * 1024 * 1024
_CHUNK = 24


def _estimate_tokens(size: int) -> int:
    return max(1, math.ceil(size / 4))


def _sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _display_name(model: str) -> str:
    """``claude-sonnet-4-5`` -> ``Claude Sonnet 4.5`` (date suffixes dropped), like the real list."""
    words: list[str] = []
    for part in model.split("-"):
        if part.isdigit() and len(part) == 8:  # a snapshot date
            continue
        if part.isdigit() and words and words[-1][-1:].isdigit():
            words[-1] += f".{part}"
        else:
            words.append(part if part.isdigit() else part.capitalize())
    return " ".join(words) or model


def _chunks(text: str, size: int = _CHUNK) -> Iterator[str]:
    if not text:
        yield ""
        return
    for start in range(0, len(text), size):
        yield text[start : start + size]


class _ConnectionClosed(Exception):
    """The peer went away (or we dropped it on purpose)."""


class _Connection:
    """One HTTP/1.1 connection: h11 state plus its byte stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise _ConnectionClosed from exc

    async def next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = b""
            except anyio.ClosedResourceError as exc:
                raise _ConnectionClosed from exc
            self.h11.receive_data(data)


class FakeAnthropicAPI:
    """A scripted Anthropic Messages API server for the real Claude Code CLI.

    ``async with FakeAnthropicAPI(scenario=...) as api:`` binds ``host`` (default 127.0.0.1) on
    ``port`` (default 0: any free port) inside its own task group; ``api.url`` and ``api.env()``
    point the CLI at it. Leaving the block cancels the server: the listener and every connection
    close promptly. :meth:`serve` runs it in a caller's task group instead.

    ``api_key``: when set, every request must carry it (``x-api-key: KEY`` or ``Authorization:
    Bearer KEY``); any other gets HTTP 401 with Anthropic's ``authentication_error`` body (recorded,
    but neither counted as a message request nor shown to the scenario). ``env()`` then hands out
    this key. ``None`` (the default) accepts any key or none.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.scenario: Scenario = scenario if scenario is not None else Scenario()
        self.api_key: str | None = api_key
        """The key every request must carry (``None``: no check)."""
        self.host = host
        self.port: int = port
        self.requests: list[ApiRequest] = []
        """Every request received, oldest first (headers redacted)."""
        self.connections_accepted: int = 0
        """How many TCP connections the server has accepted (keep-alive reuses one)."""
        self._message_count = 0
        self._hits: dict[int, int] = {}
        self._ids = 0
        self._tg: anyio.abc.TaskGroup | None = None

    # -- public surface -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for ``ANTHROPIC_BASE_URL`` (valid once the server is bound)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that points the Claude Code CLI here and keeps it offline.

        The caller adds a fresh ``CLAUDE_CONFIG_DIR``.
        """
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": self.api_key if self.api_key is not None else DUMMY_API_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }

    @property
    def message_requests(self) -> list[ApiRequest]:
        """The recorded ``POST /v1/messages`` requests."""
        return [r for r in self.requests if r.number > 0]

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[FakeAnthropicAPI] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, call ``task_status.started(self)``, then serve until cancelled.

        Cancellation closes the listener and every connection (one task each, in this call's
        task group) before it propagates.
        """
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            self.port = int(port)
            task_status.started(self)
            await listener.serve(self._handle_connection, task_group=tg)

    async def __aenter__(self) -> FakeAnthropicAPI:
        # A plain __aenter__/__aexit__ pair owns the task group: no async generator ever holds it
        # across a yield (the failure this project exists to avoid).
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await tg.start(self.serve)
        except BaseException as exc:
            self._tg = None
            tg.cancel_scope.cancel(reason=f"the fake API failed to start: {exc!r}")
            if await tg.__aexit__(type(exc), exc, exc.__traceback__):
                raise RuntimeError("the fake API failed to start") from exc
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None, "FakeAnthropicAPI.__aexit__ without __aenter__"
        # Stop serving; the body's own exception passes through unwrapped.
        tg.cancel_scope.cancel(reason="the FakeAnthropicAPI block was left")
        await tg.__aexit__(None, None, None)
        return None

    # -- connections --------------------------------------------------------------------------

    async def _handle_connection(self, stream: anyio.abc.ByteStream) -> None:
        self.connections_accepted += 1
        async with stream:
            conn = _Connection(stream)
            try:
                while True:
                    keep = await self._handle_one(conn)
                    if not keep:
                        return
                    if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                        conn.h11.start_next_cycle()
                    else:
                        return
            except _ConnectionClosed:
                return
            except h11.RemoteProtocolError as exc:
                logger.debug("fake API: protocol error: %s", exc)
                return

    async def _handle_one(self, conn: _Connection) -> bool:
        """Read one request and answer it; ``False`` to close the connection."""
        event = await conn.next_event()
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return False
        if not isinstance(event, h11.Request):
            return False
        body = bytearray()
        while True:
            part = await conn.next_event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > _MAX_BODY:
                    await self._send_json(conn, 413, _error_body(413, "request too large"))
                    return False
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return False
        authorized = self._authorized(event)
        request = self._record(event, bytes(body), count=authorized)
        if not authorized:
            await self._send_json(
                conn,
                401,
                _error_body(401, "invalid x-api-key", error_type="authentication_error"),
                head=request.method == "HEAD",
            )
            return True
        return await self._route(conn, request)

    def _authorized(self, event: h11.Request) -> bool:
        """Whether the request carries ``api_key`` (always true without one)."""
        if self.api_key is None:
            return True
        expected = self.api_key.encode()
        for name, value in event.headers:
            if name == b"x-api-key":
                offered = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                offered = value[7:].strip()
            else:
                continue
            if hmac.compare_digest(offered, expected):
                return True
        return False

    def _record(self, event: h11.Request, body: bytes, *, count: bool = True) -> ApiRequest:
        target = event.target.decode("latin-1")
        split = urlsplit(target)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        parsed: object = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
        method = event.method.decode("ascii", "replace").upper()
        number = 0
        if count and method == "POST" and split.path.rstrip("/") == "/v1/messages":
            self._message_count += 1
            number = self._message_count
        request = ApiRequest(
            method=method,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=redact_headers(headers),
            body=parsed,
            number=number,
            body_bytes=len(body),
        )
        self.requests.append(request)
        return request

    async def _route(self, conn: _Connection, request: ApiRequest) -> bool:
        path = request.path.rstrip("/")
        if request.method == "POST" and path == "/v1/messages":
            return await self._messages(conn, request)
        if request.method == "POST" and path == "/v1/messages/count_tokens":
            size = len(json.dumps(request.body))
            await self._send_json(conn, 200, {"input_tokens": _estimate_tokens(size)})
            return True
        if request.method in ("GET", "HEAD") and path in ("", "/api/hello", "/v1", "/health"):
            await self._send_json(conn, 200, {"ok": True}, head=request.method == "HEAD")
            return True
        if request.method in ("GET", "HEAD") and (
            path == "/v1/models" or path.startswith("/v1/models/")
        ):
            return await self._models(conn, request, path)
        logger.warning("fake API: unknown path %s %s", request.method, request.path)
        await self._send_json(
            conn,
            404,
            _error_body(404, f"{request.method} {request.path} is not served by the fake API"),
            head=request.method == "HEAD",
        )
        return True

    # -- responses ----------------------------------------------------------------------------

    def _model_info(self) -> dict[str, object]:
        model = self.scenario.model or DEFAULT_MODEL
        return {
            "type": "model",
            "id": model,
            "display_name": _display_name(model),
            "created_at": MODEL_CREATED_AT,
        }

    async def _models(self, conn: _Connection, request: ApiRequest, path: str) -> bool:
        """``GET /v1/models`` (the list: one model, the scenario's) and ``GET /v1/models/{id}``."""
        head = request.method == "HEAD"
        info = self._model_info()
        if path == "/v1/models":
            model = str(info["id"])
            body: dict[str, object] = {
                "data": [info],
                "has_more": False,
                "first_id": model,
                "last_id": model,
            }
            await self._send_json(conn, 200, body, head=head)
            return True
        wanted = path.removeprefix("/v1/models/")
        if wanted == info["id"] and "/" not in wanted:
            await self._send_json(conn, 200, info, head=head)
        else:
            await self._send_json(conn, 404, _error_body(404, f"model: {wanted}"), head=head)
        return True

    def _choose(self, request: ApiRequest) -> Reply | Fault:
        for index, responder in enumerate(self.scenario.responders):
            if (
                isinstance(responder, Rule)
                and responder.times is not None
                and self._hits.get(index, 0) >= responder.times
            ):
                continue
            answer = _ask(responder, request)
            if answer is not None:
                self._hits[index] = self._hits.get(index, 0) + 1
                return answer
        return self.scenario.default

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_fake{self._ids:04d}{uuid.uuid4().hex[:16]}"

    async def _messages(self, conn: _Connection, request: ApiRequest) -> bool:
        answer = self._choose(request)
        if self.scenario.latency_s > 0:
            await anyio.sleep(self.scenario.latency_s)
        if isinstance(answer, Fault) and answer.kind in ("http", "usage_limit"):
            await self._send_fault(conn, answer)
            return True
        model = self.scenario.model or request.model or DEFAULT_MODEL
        reply = answer if isinstance(answer, Reply) else Reply.text("partial reply")
        message = self._message(reply, request, model)
        if not request.stream:
            if isinstance(answer, Fault):
                return await self._plain_fault(conn, answer)
            await self._send_json(conn, 200, message)
            return True
        fault = answer if isinstance(answer, Fault) else None
        delay = reply.delta_delay_s
        if delay is None:
            delay = self.scenario.delta_delay_s
        return await self._stream(conn, message, fault, delay, reply.delta_chars or _CHUNK)

    def _message(self, reply: Reply, request: ApiRequest, model: str) -> dict[str, object]:
        content: list[object] = []
        out_size = 0
        for block in reply.blocks:
            if isinstance(block, TextBlock):
                content.append({"type": "text", "text": block.text})
                out_size += len(block.text)
            else:
                content.append(
                    {
                        "type": "tool_use",
                        "id": block.id or self._new_id("toolu"),
                        "name": block.name,
                        "input": dict(block.input),
                    }
                )
                out_size += len(json.dumps(dict(block.input)))
        input_tokens = reply.input_tokens
        if input_tokens is None:
            input_tokens = _estimate_tokens(len(json.dumps(request.body)))
        output_tokens = reply.output_tokens
        if output_tokens is None:
            output_tokens = _estimate_tokens(out_size)
        return {
            "id": self._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    async def _stream(
        self,
        conn: _Connection,
        message: dict[str, object],
        fault: Fault | None,
        delay: float,
        chars: int = _CHUNK,
    ) -> bool:
        await conn.send(
            h11.Response(
                status_code=200,
                headers=[
                    ("content-type", "text/event-stream; charset=utf-8"),
                    ("cache-control", "no-cache"),
                    ("request-id", self._new_id("req")),
                ],
            )
        )
        usage = message["usage"]
        assert isinstance(usage, dict)
        start_message = dict(message, content=[], stop_reason=None)
        start_message["usage"] = dict(usage, output_tokens=1)  # pyright: ignore[reportUnknownArgumentType]
        await self._data(
            conn, _sse("message_start", {"type": "message_start", "message": start_message})
        )
        await self._data(conn, _sse("ping", {"type": "ping"}))
        if fault is not None:
            return await self._stream_fault(conn, fault)
        content = message["content"]
        assert isinstance(content, list)
        for index, block in enumerate(content):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            assert isinstance(block, dict)
            await self._stream_block(conn, index, block, delay, chars)  # pyright: ignore[reportUnknownArgumentType]
        await self._data(
            conn,
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            ),
        )
        await self._data(conn, _sse("message_stop", {"type": "message_stop"}))
        await conn.send(h11.EndOfMessage())
        return True

    async def _stream_block(
        self, conn: _Connection, index: int, block: dict[str, object], delay: float, chars: int
    ) -> None:
        if block["type"] == "text":
            start: dict[str, object] = {"type": "text", "text": ""}
            pieces = [
                {"type": "text_delta", "text": piece}
                for piece in _chunks(str(block["text"]), chars)
            ]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = json.dumps(block["input"])
            pieces = [
                {"type": "input_json_delta", "partial_json": piece} for piece in _chunks(raw, chars)
            ]
        await self._data(
            conn,
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            ),
        )
        for piece in pieces:
            if delay > 0:
                await anyio.sleep(delay)
            await self._data(
                conn,
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": piece},
                ),
            )
        await self._data(
            conn, _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        )

    async def _stream_fault(self, conn: _Connection, fault: Fault) -> bool:
        if fault.kind == "stall":
            await anyio.sleep_forever()
        start = {"type": "text", "text": ""}
        await self._data(
            conn,
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": start},
            ),
        )
        delta = {"type": "text_delta", "text": "Partial answ"}
        await self._data(
            conn,
            _sse(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            ),
        )
        if fault.kind == "drop":
            await conn.stream.aclose()
            return False
        body = _error_body(529, fault.error_message, error_type=fault.error_type)
        await self._data(conn, _sse("error", body))
        await conn.send(h11.EndOfMessage())
        return True

    async def _plain_fault(self, conn: _Connection, fault: Fault) -> bool:
        """A streaming-only fault met by a ``stream=false`` request."""
        if fault.kind == "stall":
            await anyio.sleep_forever()
        if fault.kind == "drop":
            await conn.stream.aclose()
            return False
        await self._send_fault(conn, Fault.http(529, fault.error_message))
        return True

    async def _data(self, conn: _Connection, data: bytes) -> None:
        await conn.send(h11.Data(data=data))

    async def _send_fault(self, conn: _Connection, fault: Fault) -> None:
        headers: dict[str, str] = {}
        if fault.retry_after_s is not None:
            headers["retry-after"] = f"{fault.retry_after_s:g}"
        if fault.kind == "usage_limit":
            reset = int(time.time() + fault.reset_in_s)
            headers.update(
                {
                    "anthropic-ratelimit-unified-status": "rejected",
                    "anthropic-ratelimit-unified-reset": str(reset),
                    "anthropic-ratelimit-unified-representative-claim": "five_hour",
                }
            )
            headers.setdefault("retry-after", str(max(1, int(fault.reset_in_s))))
        headers.update(fault.headers)
        body = _error_body(fault.status, fault.error_message, error_type=fault.error_type)
        if fault.status == 529:
            headers.setdefault("x-should-retry", "true")
        await self._send_json(conn, fault.status, body, extra=headers)

    async def _send_json(
        self,
        conn: _Connection,
        status: int,
        body: dict[str, object],
        *,
        extra: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        payload = json.dumps(body).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("request-id", self._new_id("req")),
        ]
        headers += list((extra or {}).items())
        await conn.send(h11.Response(status_code=status, headers=headers))
        if not head:
            await conn.send(h11.Data(data=payload))
        await conn.send(h11.EndOfMessage())


def _ask(responder: Responder, request: ApiRequest) -> Reply | Fault | None:
    try:
        return responder(request)
    except Exception:
        logger.exception("fake API: responder %r failed", responder)
        return Reply.text("The fake model's responder failed; see the log.")


def _error_body(status: int, message: str, *, error_type: str | None = None) -> dict[str, object]:
    return {
        "type": "error",
        "error": {"type": error_type or error_type_for(status), "message": message},
    }


async def serve_fake_api(
    host: str = "127.0.0.1",
    port: int = 0,
    scenario: Scenario | None = None,
    *,
    task_status: anyio.abc.TaskStatus[FakeAnthropicAPI] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a :class:`FakeAnthropicAPI` until cancelled (for ``await tg.start(serve_fake_api, ...)``).

    Calls ``task_status.started(api)`` once bound (``api.url`` is then valid). Cancellation closes
    the listener and every connection before it propagates.
    """
    await FakeAnthropicAPI(scenario, host=host, port=port).serve(task_status=task_status)
