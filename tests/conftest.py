"""Shared fixtures. Async tests run on every backend named by ``--backends`` (default: trio,asyncio)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

KNOWN_BACKENDS = ("trio", "asyncio")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default="trio,asyncio",
        help="comma-separated anyio backends to run async tests on (trio, asyncio)",
    )


def _selected_backends(config: pytest.Config) -> list[str]:
    raw = str(config.getoption("--backends"))
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN_BACKENDS]
    if unknown or not names:
        raise pytest.UsageError(f"--backends: unknown backend(s) {unknown or raw!r}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" in metafunc.fixturenames:
        metafunc.parametrize("anyio_backend", _selected_backends(metafunc.config), indirect=True)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Our own backend fixture: a backend that is asked for but missing fails loudly."""
    name = str(request.param)
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"backend {name!r} was requested but is not installed")
    return name


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the tests with an empty HOME, so the CLI's Bash tool never sources the machine's shell
    startup files (on this kind of machine ~/.bashrc runs ``pyenv rehash``, whose lock file, left
    behind by a tool killed mid-rehash, would stall every later shell for a minute)."""
    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
