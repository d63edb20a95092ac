"""The scripted model: requests as the fake server sees them, replies, faults, rules and scenarios.

A :class:`Scenario` is an ordered list of responders. For each ``POST /v1/messages`` the server asks
them in turn; the first that answers (a :class:`Reply` or a :class:`Fault`) wins, and the scenario's
``default`` reply answers when none does. A responder is a declarative :class:`Rule` or any callable
``(ApiRequest) -> Reply | Fault | None`` (such as the built-in BMAD actor).

Scenarios load from TOML or JSON with :func:`load_scenario`. Nothing here does I/O except that loader,
and nothing here is stateful: per-server counters (a rule's ``times``) live in the server.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, cast

import attrs

from .._errors import ConfigError

__all__ = [
    "ApiRequest",
    "Fault",
    "Reply",
    "Responder",
    "Rule",
    "Scenario",
    "TextBlock",
    "ToolUseBlock",
    "load_scenario",
    "scenario_from_mapping",
]

_SECRET_WORDS = ("key", "token", "secret", "authorization", "cookie", "password")
REDACTED = "<redacted>"


def _as_dict(value: object) -> dict[str, object]:
    return cast("dict[str, object]", value) if isinstance(value, dict) else {}


def _as_list(value: object) -> list[object]:
    return cast("list[object]", value) if isinstance(value, list) else []


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with the value of anything secret-looking replaced by ``<redacted>``."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        out[low] = REDACTED if any(word in low for word in _SECRET_WORDS) else value
    return out


@attrs.frozen(kw_only=True)
class ToolResult:
    """One ``tool_result`` block of a request, with its text flattened."""

    tool_use_id: str
    text: str
    is_error: bool = False


@attrs.frozen(kw_only=True)
class ToolUseRecord:
    """One ``tool_use`` block the model sent earlier in the conversation."""

    id: str
    name: str
    input: Mapping[str, object]


def _block_text(block: object) -> str:
    """Text of a content value: a string, a text block, or a list of either."""
    if isinstance(block, str):
        return block
    if isinstance(block, list):
        return "".join(_block_text(item) for item in cast("list[object]", block))
    data = _as_dict(block)
    if data.get("type") == "text":
        text = data.get("text")
        return text if isinstance(text, str) else ""
    if data.get("type") == "tool_result":
        return _block_text(data.get("content"))
    return ""


@attrs.frozen(kw_only=True)
class ApiRequest:
    """One HTTP request the fake server received, as recorded in ``api.requests``.

    ``headers`` are lower-cased with secrets redacted; ``body`` is the parsed JSON (or ``None``).
    ``number`` counts ``POST /v1/messages`` requests on this server from 1 (0 for other paths);
    ``body_bytes`` is the body's size as received.
    """

    method: str
    path: str
    query: Mapping[str, str] = attrs.field(factory=dict[str, str])
    headers: Mapping[str, str] = attrs.field(factory=dict[str, str])
    body: object = None
    number: int = 0
    body_bytes: int = 0

    @property
    def json(self) -> dict[str, object]:
        """The body as a JSON object (empty if it was not one)."""
        return _as_dict(self.body)

    @property
    def model(self) -> str:
        model = self.json.get("model")
        return model if isinstance(model, str) else ""

    @property
    def stream(self) -> bool:
        return self.json.get("stream") is True

    @property
    def messages(self) -> list[dict[str, object]]:
        return [_as_dict(m) for m in _as_list(self.json.get("messages"))]

    @property
    def system_text(self) -> str:
        """The system prompt (and any ``role: system`` messages) as one string."""
        parts = [_block_text(self.json.get("system"))]
        parts += [_block_text(m.get("content")) for m in self.messages if m.get("role") == "system"]
        return "\n".join(p for p in parts if p)

    def user_texts(self) -> list[str]:
        """The text (not tool results) of every user message, oldest first."""
        texts: list[str] = []
        for message in self.messages:
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            blocks = [_as_dict(b) for b in _as_list(content)]
            text = "\n".join(_block_text(b) for b in blocks if b.get("type") == "text")
            if text:
                texts.append(text)
        return texts

    @property
    def prompt(self) -> str:
        """The latest user prompt: the newest user message that has text (tool results skipped)."""
        texts = self.user_texts()
        return texts[-1] if texts else ""

    @property
    def assistant_turns(self) -> int:
        """How many model turns the conversation already has (consecutive assistant messages = 1)."""
        turns = 0
        previous = ""
        for message in self.messages:
            role = message.get("role")
            if role == "assistant" and previous != "assistant":
                turns += 1
            if role in ("user", "assistant"):
                previous = str(role)
        return turns

    @property
    def turn(self) -> int:
        """The 1-based number of the turn this request asks for."""
        return self.assistant_turns + 1

    def tool_uses(self) -> Iterator[ToolUseRecord]:
        """Every ``tool_use`` block of the conversation, oldest first."""
        for message in self.messages:
            if message.get("role") != "assistant":
                continue
            for block in (_as_dict(b) for b in _as_list(message.get("content"))):
                if block.get("type") == "tool_use":
                    yield ToolUseRecord(
                        id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        input=_as_dict(block.get("input")),
                    )

    def all_tool_results(self) -> dict[str, ToolResult]:
        """Every ``tool_result`` of the conversation, by ``tool_use_id``."""
        results: dict[str, ToolResult] = {}
        for message in self.messages:
            if message.get("role") != "user":
                continue
            for block in (_as_dict(b) for b in _as_list(message.get("content"))):
                if block.get("type") == "tool_result":
                    tool_use_id = str(block.get("tool_use_id", ""))
                    results[tool_use_id] = ToolResult(
                        tool_use_id=tool_use_id,
                        text=_block_text(block.get("content")),
                        is_error=block.get("is_error") is True,
                    )
        return results

    @property
    def tool_results(self) -> list[ToolResult]:
        """The ``tool_result`` blocks of the latest user message."""
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            content = _as_list(message.get("content"))
            ids = [
                str(_as_dict(b).get("tool_use_id", ""))
                for b in content
                if _as_dict(b).get("type") == "tool_result"
            ]
            every = self.all_tool_results()
            return [every[i] for i in ids if i in every]
        return []


@attrs.frozen
class TextBlock:
    """A text content block of a reply."""

    text: str


@attrs.frozen
class ToolUseBlock:
    """A ``tool_use`` content block; the server assigns the id when ``id`` is empty."""

    name: str
    input: Mapping[str, object] = attrs.field(factory=dict[str, object])
    id: str = ""


Block = TextBlock | ToolUseBlock


@attrs.frozen(kw_only=True)
class Reply:
    """One model message. ``stop_reason`` is ``tool_use`` if it has a tool block, else ``end_turn``.

    Token counts default to an estimate from the request and reply sizes; ``delta_delay_s``
    overrides the scenario's delay between streamed deltas, ``delta_chars`` the number of characters
    per delta (a few dozen by default; raise it to stream a reply of many megabytes quickly).
    """

    blocks: tuple[Block, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    delta_delay_s: float | None = None
    delta_chars: int | None = None

    @property
    def stop_reason(self) -> Literal["end_turn", "tool_use"]:
        return "tool_use" if any(isinstance(b, ToolUseBlock) for b in self.blocks) else "end_turn"

    @classmethod
    def text(cls, text: str) -> Reply:
        """A plain text reply that ends the turn."""
        return cls(blocks=(TextBlock(text),))

    @classmethod
    def tools(cls, *tools: ToolUseBlock, text: str = "") -> Reply:
        """A reply asking for one or more tool calls, optionally preceded by text."""
        head: tuple[Block, ...] = (TextBlock(text),) if text else ()
        return cls(blocks=head + tools)

    @staticmethod
    def write(file_path: str, content: str) -> ToolUseBlock:
        return ToolUseBlock("Write", {"file_path": file_path, "content": content})

    @staticmethod
    def read(file_path: str) -> ToolUseBlock:
        return ToolUseBlock("Read", {"file_path": file_path})

    @staticmethod
    def edit(
        file_path: str, old_string: str, new_string: str, *, replace_all: bool = False
    ) -> ToolUseBlock:
        data: dict[str, object] = {
            "file_path": file_path,
            "old_string": old_string,
            "new_string": new_string,
        }
        if replace_all:
            data["replace_all"] = True
        return ToolUseBlock("Edit", data)

    @staticmethod
    def bash(command: str, description: str = "", *, background: bool = False) -> ToolUseBlock:
        """A Bash call; ``background`` asks the CLI to run it with ``run_in_background``."""
        data: dict[str, object] = {"command": command}
        if description:
            data["description"] = description
        if background:
            data["run_in_background"] = True
        return ToolUseBlock("Bash", data)


FaultKind = Literal["http", "stream_error", "drop", "stall", "usage_limit"]

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "api_error")


@attrs.frozen(kw_only=True)
class Fault:
    """A failure to inject instead of a reply.

    - ``http``: an HTTP error ``status`` with an Anthropic JSON error body (and ``retry-after``).
    - ``usage_limit``: HTTP 429 with the CLI's unified rate-limit headers (``rejected``, reset time
      ``reset_in_s`` from now) and a usage-limit message.
    - ``stream_error``: a 200 stream that sends ``message_start`` then an ``event: error``.
    - ``drop``: a 200 stream whose connection is closed after ``message_start`` and part of a block.
    - ``stall``: a 200 stream that sends ``message_start`` then nothing until the server closes.
    """

    kind: FaultKind = "http"
    status: int = 500
    message: str = ""
    retry_after_s: float | None = None
    reset_in_s: float = 3600.0
    headers: Mapping[str, str] = attrs.field(factory=dict[str, str])

    @property
    def error_type(self) -> str:
        if self.kind == "stream_error":
            return "overloaded_error"
        if self.kind == "usage_limit":
            return "rate_limit_error"
        return error_type_for(self.status)

    @property
    def error_message(self) -> str:
        if self.message:
            return self.message
        if self.kind == "usage_limit":
            return "Claude AI usage limit reached"
        if self.kind == "stream_error":
            return "Overloaded"
        return f"fake API error {self.status}"

    @classmethod
    def http(cls, status: int, message: str = "", *, retry_after_s: float | None = None) -> Fault:
        return cls(kind="http", status=status, message=message, retry_after_s=retry_after_s)

    @classmethod
    def usage_limit(cls, reset_in_s: float = 3600.0, message: str = "") -> Fault:
        return cls(kind="usage_limit", status=429, message=message, reset_in_s=reset_in_s)


ResponderFn = Callable[[ApiRequest], "Reply | Fault | None"]


@attrs.frozen(kw_only=True)
class Rule:
    """A declarative responder: answers with ``reply`` or ``fault`` when every given matcher holds.

    Matchers (all optional, all must hold): ``prompt_contains`` (latest user prompt text),
    ``system_contains`` (system prompt), ``turn`` (1-based turn in the conversation),
    ``tool_result_contains`` (any tool result of the latest user message), ``request_number``
    (the server's n-th messages request, from 1), ``stream`` (streaming or not). ``times`` limits
    how often the rule fires on one server (``None``: unlimited).
    """

    reply: Reply | None = None
    fault: Fault | None = None
    prompt_contains: str | None = None
    system_contains: str | None = None
    turn: int | None = None
    tool_result_contains: str | None = None
    request_number: int | None = None
    stream: bool | None = None
    times: int | None = None

    def matches(self, request: ApiRequest) -> bool:
        """Whether every matcher holds for ``request``."""
        if self.prompt_contains is not None and self.prompt_contains not in request.prompt:
            return False
        if self.system_contains is not None and self.system_contains not in request.system_text:
            return False
        if self.turn is not None and self.turn != request.turn:
            return False
        if self.tool_result_contains is not None and not any(
            self.tool_result_contains in r.text for r in request.tool_results
        ):
            return False
        if self.request_number is not None and self.request_number != request.number:
            return False
        return self.stream is None or self.stream == request.stream

    def __call__(self, request: ApiRequest) -> Reply | Fault | None:
        if not self.matches(request):
            return None
        return self.fault if self.fault is not None else (self.reply or Reply.text(""))


Responder = Rule | ResponderFn


@attrs.frozen(kw_only=True)
class Scenario:
    """What the fake model does: responders tried in order, then ``default``.

    ``model`` is reported in replies (``None``: echo the request's model, or ``claude-sonnet-4-5``).
    ``latency_s`` is a fixed delay before the first byte of every messages response;
    ``delta_delay_s`` a delay between streamed deltas (slow token streaming).
    """

    responders: Sequence[Responder] = ()
    default: Reply = attrs.field(factory=lambda: Reply.text("OK"))
    model: str | None = None
    latency_s: float = 0.0
    delta_delay_s: float = 0.0


# ---------------------------------------------------------------------------------------------
# Loading from TOML / JSON


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")

    def table(self, value: object, key: str) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table/object")
        return cast("dict[str, object]", value)

    def check_keys(self, data: Mapping[str, object], key: str, allowed: set[str]) -> None:
        for name in data:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def opt_str(self, data: Mapping[str, object], name: str, key: str) -> str | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{key}.{name}" if key else name, "expected a string")
        return value

    def opt_int(self, data: Mapping[str, object], name: str, key: str) -> int | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key}.{name}" if key else name, "expected an integer")
        return value

    def opt_float(self, data: Mapping[str, object], name: str, key: str) -> float | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(f"{key}.{name}" if key else name, "expected a number >= 0")
        return float(value)

    def opt_bool(self, data: Mapping[str, object], name: str, key: str) -> bool | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}" if key else name, "expected true or false")
        return value

    def tool(self, value: object, key: str) -> ToolUseBlock:
        data = self.table(value, key)
        self.check_keys(data, key, {"name", "input"})
        name = self.opt_str(data, "name", key)
        if not name:
            raise self.fail(f"{key}.name", "missing tool name")
        tool_input = self.table(data.get("input", {}), f"{key}.input")
        return ToolUseBlock(name, tool_input)

    def fault(self, value: object, key: str) -> Fault:
        if isinstance(value, str):
            value = {"kind": value}
        data = self.table(value, key)
        self.check_keys(
            data, key, {"kind", "status", "message", "retry_after_s", "reset_in_s", "headers"}
        )
        kind = self.opt_str(data, "kind", key) or "http"
        kinds = ("http", "stream_error", "drop", "stall", "usage_limit")
        if kind not in kinds:
            raise self.fail(f"{key}.kind", f"expected one of {', '.join(kinds)}")
        status = self.opt_int(data, "status", key)
        if status is not None and not 400 <= status <= 599:
            raise self.fail(f"{key}.status", "expected an HTTP error status (400-599)")
        headers = self.table(data.get("headers", {}), f"{key}.headers")
        for name, header in headers.items():
            if not isinstance(header, str):
                raise self.fail(f"{key}.headers.{name}", "expected a string")
        return Fault(
            kind=kind,
            status=status if status is not None else (429 if kind == "usage_limit" else 500),
            message=self.opt_str(data, "message", key) or "",
            retry_after_s=self.opt_float(data, "retry_after_s", key),
            reset_in_s=self.opt_float(data, "reset_in_s", key) or 3600.0,
            headers=cast("dict[str, str]", headers),
        )

    def reply(self, data: Mapping[str, object], key: str) -> Reply | None:
        text = self.opt_str(data, "text", key)
        tools_value = data.get("tools", [])
        if not isinstance(tools_value, list):
            raise self.fail(f"{key}.tools", "expected a list of tool tables")
        items = cast("list[object]", tools_value)
        tools = [self.tool(t, f"{key}.tools[{i}]") for i, t in enumerate(items)]
        if text is None and not tools:
            return None
        blocks: tuple[Block, ...] = ((TextBlock(text),) if text else ()) + tuple(tools)
        return Reply(
            blocks=blocks,
            input_tokens=self.opt_int(data, "input_tokens", key),
            output_tokens=self.opt_int(data, "output_tokens", key),
            delta_delay_s=self.opt_float(data, "delta_delay_s", key),
        )

    def rule(self, value: object, key: str) -> Responder:
        data = self.table(value, key)
        if "builtin" in data:
            return self.builtin(data, key)
        self.check_keys(
            data,
            key,
            {
                "text",
                "tools",
                "fault",
                "prompt_contains",
                "system_contains",
                "turn",
                "tool_result_contains",
                "request_number",
                "stream",
                "times",
                "input_tokens",
                "output_tokens",
                "delta_delay_s",
            },
        )
        reply = self.reply(data, key)
        fault = self.fault(data["fault"], f"{key}.fault") if "fault" in data else None
        if reply is None and fault is None:
            raise self.fail(key, "a responder needs text, tools or fault")
        if reply is not None and fault is not None:
            raise self.fail(f"{key}.fault", "a responder has either a reply or a fault, not both")
        return Rule(
            reply=reply,
            fault=fault,
            prompt_contains=self.opt_str(data, "prompt_contains", key),
            system_contains=self.opt_str(data, "system_contains", key),
            turn=self.opt_int(data, "turn", key),
            tool_result_contains=self.opt_str(data, "tool_result_contains", key),
            request_number=self.opt_int(data, "request_number", key),
            stream=self.opt_bool(data, "stream", key),
            times=self.opt_int(data, "times", key),
        )

    def builtin(self, data: Mapping[str, object], key: str) -> Responder:
        from ._bmad_actor import BmadActor

        self.check_keys(data, key, {"builtin", "fail_first_review"})
        name = data.get("builtin")
        if name != "bmad_actor":
            raise self.fail(f"{key}.builtin", "unknown builtin (known: bmad_actor)")
        stories = data.get("fail_first_review", [])
        if not isinstance(stories, list) or not all(
            isinstance(s, str) for s in cast("list[object]", stories)
        ):
            raise self.fail(f"{key}.fail_first_review", "expected a list of story ids (strings)")
        return BmadActor(fail_first_review=frozenset(cast("list[str]", stories)))


def scenario_from_mapping(data: Mapping[str, object], *, source: str = "<scenario>") -> Scenario:
    """Build a :class:`Scenario` from parsed TOML/JSON; raises ``ConfigError`` naming the key."""
    loader = _Loader(source)
    loader.check_keys(
        data, "", {"model", "latency_s", "delta_delay_s", "default_text", "responders"}
    )
    responders_value = data.get("responders", [])
    if not isinstance(responders_value, list):
        raise loader.fail("responders", "expected a list of responder tables")
    responders = [
        loader.rule(item, f"responders[{i}]")
        for i, item in enumerate(cast("list[object]", responders_value))
    ]
    default_text = loader.opt_str(data, "default_text", "")
    return Scenario(
        responders=tuple(responders),
        default=Reply.text(default_text if default_text is not None else "OK"),
        model=loader.opt_str(data, "model", ""),
        latency_s=loader.opt_float(data, "latency_s", "") or 0.0,
        delta_delay_s=loader.opt_float(data, "delta_delay_s", "") or 0.0,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario from a ``.toml`` or ``.json`` file (blocking file read).

    Raises :class:`~bmad_trio.ConfigError` naming the file and the offending key.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read scenario file: {exc.strerror or exc}") from None
    try:
        if file.suffix.lower() == ".json":
            data: object = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid {file.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: (top level): expected a table/object")
    return scenario_from_mapping(cast("dict[str, object]", data), source=str(file))
