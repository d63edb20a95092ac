from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest

from bmad_trio import (
    AgentAPIError,
    AgentCLIError,
    AgentError,
    AgentTimeout,
    BmadError,
    ConfigError,
    Outcome,
    Role,
    SessionResult,
    SessionSpec,
)


def test_ok_raises_nothing() -> None:
    SessionResult(outcome=Outcome.OK).raise_for_outcome()


def test_api_error_carries_category_and_status() -> None:
    result = SessionResult(
        outcome=Outcome.API_ERROR,
        error="slow down",
        api_error_category="rate_limit",
        api_status=429,
    )
    with pytest.raises(AgentAPIError) as info:
        result.raise_for_outcome()
    assert (info.value.category, info.value.status, str(info.value)) == (
        "rate_limit",
        429,
        "slow down",
    )


@pytest.mark.parametrize(
    ("outcome", "error_type", "text"),
    [
        (Outcome.TIMEOUT, AgentTimeout, "no message for 5 s"),
        (Outcome.CLI_ERROR, AgentCLIError, "fatal: broken"),
        (Outcome.MAX_TURNS, AgentError, "max_turns: no message for 5 s"),
        (Outcome.BUDGET_EXHAUSTED, AgentError, "budget_exhausted: no message for 5 s"),
    ],
)
def test_every_failure_is_a_bmad_error(
    outcome: Outcome, error_type: type[AgentError], text: str
) -> None:
    error = "fatal: broken" if outcome is Outcome.CLI_ERROR else "no message for 5 s"
    with pytest.raises(error_type) as info:
        SessionResult(outcome=outcome, error=error).raise_for_outcome()
    assert isinstance(info.value, BmadError)
    assert str(info.value) == text
    if isinstance(info.value, AgentCLIError):
        assert info.value.stderr == "fatal: broken"


# --- SessionSpec validation (issue 13, item 20): bad limits fail at construction, naming the field


def _spec_fields(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {"role": Role.DEV, "prompt": "go", "cwd": Path(".")}
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    ("field", "value", "error_type"),
    [
        ("timeout_s", math.nan, ValueError),
        ("timeout_s", 0, ValueError),
        ("timeout_s", -1.0, ValueError),
        ("timeout_s", "5", TypeError),
        ("timeout_s", True, TypeError),
        ("idle_timeout_s", math.nan, ValueError),
        ("idle_timeout_s", -0.5, ValueError),
        ("idle_timeout_s", None, TypeError),
        ("max_turns", 0, ValueError),
        ("max_turns", -3, ValueError),
        ("max_turns", 2.5, TypeError),
        ("max_turns", True, TypeError),
        ("max_budget_usd", math.nan, ValueError),
        ("max_budget_usd", 0.0, ValueError),
        ("max_budget_usd", math.inf, ValueError),
        ("max_budget_usd", "1", TypeError),
        ("allowed_tools", "Bash", TypeError),
        ("allowed_tools", ("Bash", 3), TypeError),
        ("allowed_tools", ("",), ValueError),
        ("writable_paths", "**", TypeError),
        ("permission_mode", "yolo", ValueError),
        ("role", "dev", TypeError),
        ("prompt", None, TypeError),
        ("cwd", 7, TypeError),
        ("model", 3, TypeError),
        ("env", {"A": 1}, TypeError),
        ("env", "A=1", TypeError),
    ],
)
def test_session_spec_rejects_bad_fields_naming_them(
    field: str, value: object, error_type: type[Exception]
) -> None:
    with pytest.raises(error_type) as info:
        SessionSpec(**_spec_fields(**{field: value}))  # pyright: ignore[reportArgumentType]
    assert isinstance(info.value, ConfigError), type(info.value).mro()
    assert f"SessionSpec.{field}" in str(info.value)
    assert "\n" not in str(info.value)


def test_session_spec_accepts_good_fields_and_normalises_sequences() -> None:
    spec = SessionSpec(
        **_spec_fields(  # pyright: ignore[reportArgumentType]
            cwd="proj",
            allowed_tools=["Read", "Bash"],
            writable_paths=["src/**"],
            timeout_s=5,
            idle_timeout_s=math.inf,
            max_turns=1,
            max_budget_usd=0.5,
        )
    )
    assert spec.cwd == Path("proj")
    assert spec.allowed_tools == ("Read", "Bash")
    assert spec.writable_paths == ("src/**",)
    assert spec.timeout_s == 5.0
    assert spec.idle_timeout_s == math.inf
    assert attrs.evolve(spec, timeout_s=7).timeout_s == 7.0  # evolve validates too
    with pytest.raises(ValueError, match=r"SessionSpec\.timeout_s"):
        attrs.evolve(spec, timeout_s=math.nan)


@pytest.mark.anyio
async def test_runners_implement_the_protocols_aclose() -> None:
    """``aclose`` is part of the AgentRunner protocol (a run closes the runner it made without
    looking the method up), and both runners implement it; closing twice is fine."""
    from bmad_trio import AgentRunner, ClaudeAgentRunner
    from bmad_trio.testing import MockAgentRunner

    assert "aclose" in AgentRunner.__dict__
    for runner in (MockAgentRunner(), ClaudeAgentRunner()):
        typed: AgentRunner = runner
        await typed.aclose()
        await typed.aclose()
