from __future__ import annotations

from pathlib import Path

import pytest

from bmad_trio._agents._tool_policy import tool_denial

ALL = ("Read", "Write", "Edit", "Bash", "Glob")


def deny(tmp_path: Path, tool: str, target: str, *, globs: tuple[str, ...] = ("**",)) -> str | None:
    return tool_denial(
        tool,
        {"file_path": target},
        root=tmp_path.resolve(),
        allowed_tools=ALL,
        writable_paths=globs,
    )


def test_writes_inside_the_project_are_allowed(tmp_path: Path) -> None:
    assert deny(tmp_path, "Write", "src/app.py") is None
    assert deny(tmp_path, "Edit", str(tmp_path / "docs" / "x.md")) is None


@pytest.mark.parametrize("target", ["../evil.py", "/etc/passwd", "src/../../out.txt"])
def test_writes_outside_the_project_are_refused(tmp_path: Path, target: str) -> None:
    reason = deny(tmp_path, "Write", target)
    assert reason is not None
    assert "outside the project" in reason


def test_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    assert "outside the project" in str(deny(tmp_path, "Write", "link/file.py"))


def test_role_globs_confine_writes(tmp_path: Path) -> None:
    globs = ("docs/stories/*.md",)
    assert deny(tmp_path, "Write", "docs/stories/1.1.story.md", globs=globs) is None
    assert "may not write src/app.py" in str(deny(tmp_path, "Write", "src/app.py", globs=globs))


def test_tools_outside_the_allowlist_are_refused(tmp_path: Path) -> None:
    reason = tool_denial(
        "WebFetch", {"url": "x"}, root=tmp_path, allowed_tools=ALL, writable_paths=("**",)
    )
    assert reason == "tool WebFetch is not allowed for this role"


def test_reads_outside_the_project_are_refused_and_inside_allowed(tmp_path: Path) -> None:
    assert deny(tmp_path, "Read", "README.md") is None
    assert "outside" in str(deny(tmp_path, "Read", "/root/.ssh/id_rsa"))
