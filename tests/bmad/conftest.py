"""Fixtures: copies of the sample BMAD projects, so tests may write into them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


Snapshot = Callable[[Path], dict[str, bytes]]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def snapshot() -> Snapshot:
    """Every file under a directory and its bytes (to assert nothing was written)."""
    return _snapshot


@pytest.fixture
def v4_project(tmp_path: Path) -> Path:
    target = tmp_path / "v4"
    shutil.copytree(FIXTURES / "v4", target)
    return target


@pytest.fixture
def v6_project(tmp_path: Path) -> Path:
    target = tmp_path / "v6"
    shutil.copytree(FIXTURES / "v6", target)
    return target
