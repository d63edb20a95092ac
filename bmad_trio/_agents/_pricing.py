"""What a session spent when the CLI never said: its token usage, priced with a table.

The Claude Code CLI reports a session's cost only in its final result message. A session stopped
mid-way (cancelled, or past its deadline) never sends one, yet it spent money: every assistant
message it streamed carries the API's ``usage``. :class:`UsageMeter` adds that usage up (once per
API message: the CLI repeats a message's usage on each of its content blocks) and prices it with
:data:`PRICES`.

How good the estimate is: input tokens (cache writes and reads included) are exact; output tokens
are a lower bound (the stream reports a message's usage as the message starts, before its last
output tokens are counted); a model the table does not know is priced as the most expensive one,
so a spending cap errs on the safe side. It is used only when the session reported no cost.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._runner import AgentMessage

__all__ = ["FALLBACK_PRICE", "PRICES", "ModelPrice", "UsageMeter", "price_for"]


@attrs.frozen
class ModelPrice:
    """USD per million tokens. Cache writes cost 1.25 times input, cache reads 0.1 times."""

    input: float
    output: float

    def cost(self, usage: Mapping[str, int]) -> float:
        base = self.input / 1e6
        return (
            usage.get("input_tokens", 0) * base
            + usage.get("cache_creation_input_tokens", 0) * base * 1.25
            + usage.get("cache_read_input_tokens", 0) * base * 0.1
            + usage.get("output_tokens", 0) * self.output / 1e6
        )


PRICES: tuple[tuple[str, ModelPrice], ...] = (
    ("opus-5", ModelPrice(4.0, 20.0)),  # as the bundled CLI 2.1.330 prices claude-opus-5-5
    ("opus-4-5", ModelPrice(5.0, 25.0)),
    ("opus", ModelPrice(15.0, 75.0)),
    ("sonnet", ModelPrice(3.0, 15.0)),
    ("haiku-4", ModelPrice(1.0, 5.0)),
    ("3-5-haiku", ModelPrice(0.8, 4.0)),
    ("3-haiku", ModelPrice(0.25, 1.25)),
)
"""Anthropic's list prices (standard context), first match of a part of the model's name wins."""

FALLBACK_PRICE = ModelPrice(15.0, 75.0)
"""For a model not in :data:`PRICES`: the most expensive known price (a cap errs safe)."""

_USAGE_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def price_for(model: str | None) -> ModelPrice:
    """The price of ``model`` (:data:`FALLBACK_PRICE` when unknown or not given)."""
    name = (model or "").lower()
    for part, price in PRICES:
        if part in name:
            return price
    return FALLBACK_PRICE


class UsageMeter:
    """Adds up the usage one session's messages reported. Lives in one task; no locking."""

    def __init__(self) -> None:
        self._usage: dict[str, tuple[str | None, dict[str, int]]] = {}
        self._anonymous = 0

    def observe(self, message: AgentMessage) -> None:
        """Note the usage an assistant message carries (``data["usage"]``, ``data["model"]``)."""
        usage = message.data.get("usage")
        if not isinstance(usage, Mapping):
            return
        counts: dict[str, int] = {}
        for key in _USAGE_KEYS:
            value = usage.get(key)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                counts[key] = value
        model = message.data.get("model")
        message_id = message.data.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            self._anonymous += 1
            message_id = f"#{self._anonymous}"  # no id: count it (errs high)
        _, seen = self._usage.get(message_id, (None, {}))
        merged = {key: max(seen.get(key, 0), counts.get(key, 0)) for key in _USAGE_KEYS}
        self._usage[message_id] = (model if isinstance(model, str) else None, merged)

    @property
    def input_tokens(self) -> int:
        return sum(
            usage[key]
            for _, usage in self._usage.values()
            for key in _USAGE_KEYS
            if key != "output_tokens"
        )

    @property
    def output_tokens(self) -> int:
        return sum(usage["output_tokens"] for _, usage in self._usage.values())

    def cost_usd(self) -> float:
        """The estimated cost of every API message seen so far."""
        return sum(price_for(model).cost(usage) for model, usage in self._usage.values())
