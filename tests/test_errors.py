"""The error tree: one table of exit codes, used by the errors themselves and the command line."""

from __future__ import annotations

import pytest

import bmad_trio
from bmad_trio import _errors
from bmad_trio._commandline import _main


def _error_classes() -> list[type[bmad_trio.BmadError]]:
    return [
        obj
        for name in _errors.__all__
        if isinstance(obj := getattr(_errors, name), type) and issubclass(obj, bmad_trio.BmadError)
    ]


def test_every_error_of_the_tree_is_public_and_has_an_exit_code() -> None:
    for cls in _error_classes():
        assert cls.__name__ in bmad_trio.__all__, cls
        assert _errors.exit_code_for(cls.__new__(cls)) is not None, cls


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (bmad_trio.ConfigValueError("x"), 2),
        (bmad_trio.ProjectError("x", path="epic.md", line=3), 2),
        (bmad_trio.StateError("x"), 2),
        (bmad_trio.PreflightError("x"), 3),
        (bmad_trio.AgentTimeout("x"), 1),
        (bmad_trio.RunAbort("x"), 1),
        (bmad_trio.BudgetSpent("x"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_codes_come_from_the_table(error: BaseException, code: int) -> None:
    assert _errors.exit_code_for(error) == code
    if isinstance(error, bmad_trio.BmadError):
        assert error.exit_code == code


def test_the_command_line_exits_with_the_tables_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_args: object) -> int:
        raise bmad_trio.PreflightError("no CLI")

    monkeypatch.setitem(_main._COMMANDS, "status", fail)  # pyright: ignore[reportPrivateUsage]
    monkeypatch.setitem(_errors.EXIT_CODES, bmad_trio.PreflightError, 42)  # pyright: ignore[reportArgumentType]
    assert _main.main(["status"]) == 42


def test_an_error_outside_the_table_propagates() -> None:
    assert _errors.exit_code_for(RuntimeError("bug")) is None
