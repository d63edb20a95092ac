from __future__ import annotations

import pytest

from bmad_trio import (
    AgentAPIError,
    AgentCLIError,
    AgentError,
    AgentTimeout,
    BmadError,
    Outcome,
    SessionResult,
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
