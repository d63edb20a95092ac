"""The docs cannot drift: every ```python block in docs/*.md runs, and the config reference matches.

A block preceded by ``<!-- not-run -->`` is illustrative and skipped. Every other block must be
self-contained and offline: it runs in a fresh namespace, in a temporary working directory (also
``tempfile``'s default directory), with the output captured.

Run: ``pytest -p no:trio tests/test_docs.py --backends=trio`` (the nox ``docs`` session).
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

from bmad_trio import RunConfig
from bmad_trio._config import (
    _SCALAR_KEYS,  # pyright: ignore[reportPrivateUsage]
    CONFIG_KEYS,
    parse_config_table,
)
from bmad_trio._workflow._quality_gate_detection import detect_quality_gates

DOCS = Path(__file__).resolve().parent.parent / "docs"
NOT_RUN = "<!-- not-run -->"
_FENCE = re.compile(r"^```(\w*)\s*$")


@attrs.frozen
class Block:
    path: Path
    line: int
    lang: str
    code: str
    run: bool

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            index += 1
        if index >= len(lines):
            pytest.fail(f"{path.name}:{start + 1}: unclosed code block")
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                lang=opening.group(1),
                code="\n".join(lines[start + 1 : index]) + "\n",
                run=previous != NOT_RUN,
            )
        )
        index += 1
    return blocks


ALL_BLOCKS = [block for doc in sorted(DOCS.glob("*.md")) for block in _blocks(doc)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "python"]


def test_the_docs_have_runnable_examples() -> None:
    names = {block.path.name for block in PYTHON_BLOCKS if block.run}
    assert {"embedding.md", "configuration.md", "cancellation.md"} <= names
    skipped = [block.name for block in PYTHON_BLOCKS if not block.run]
    assert len(skipped) <= 4, f"keep illustrative-only blocks few: {skipped}"


@pytest.mark.parametrize("block", [b for b in PYTHON_BLOCKS if b.run], ids=lambda b: b.name)
def test_python_block_runs(
    block: Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = compile(block.code, str(block.path), "exec")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        exec(code, namespace)
    except BaseException as exc:
        output = capsys.readouterr()
        pytest.fail(f"{block.name} raised {exc!r}\n{output.out}{output.err}")


# -- the configuration reference ------------------------------------------------------------------


def _key_table() -> list[dict[str, str]]:
    """The rows of the ``| key | type | default | meaning |`` table in configuration.md."""
    lines = (DOCS / "configuration.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| key | type | default |"))
    rows: list[dict[str, str]] = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        rows.append(dict(zip(("key", "type", "default", "meaning"), cells, strict=True)))
    return rows


def _unquote(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match is not None, f"expected a `code` cell, got {cell!r}"
    return match.group(1)


def _doc_default(cell: str) -> object:
    if cell == "unset":
        return None
    value = tomllib.loads(f"value = {_unquote(cell)}")["value"]
    return tuple(value) if isinstance(value, list) else value  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]


_DOC_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "string": (str,),
    "path": (str,),
}


def test_the_key_table_lists_every_config_key_once() -> None:
    keys = [_unquote(row["key"]) for row in _key_table()]
    assert len(keys) == len(set(keys)), "a key is listed twice"
    assert sorted(keys) == sorted(CONFIG_KEYS)


def test_the_key_table_defaults_and_types_match_runconfig() -> None:
    defaults = {field.name: field.default for field in attrs.fields(RunConfig)}
    for row in _key_table():
        key = _unquote(row["key"])
        assert row["meaning"], key
        if key == "gates":
            assert row["default"] == "unset"
            assert defaults[key] is None
            continue
        assert _doc_default(row["default"]) == defaults[key], key
        if key in _SCALAR_KEYS:
            assert _DOC_TYPES[row["type"]] == _SCALAR_KEYS[key][0], key
        else:
            assert row["type"] == "array of strings", key


def test_the_documented_python_gates_are_what_detection_gives(tmp_path: Path) -> None:
    blocks = [b for b in ALL_BLOCKS if b.path.name == "configuration.md" and b.lang == "toml"]
    gate_blocks = [b for b in blocks if b.code.lstrip().startswith("[[tool.bmad-trio.gates]]")]
    assert len(gate_blocks) == 1
    table = tomllib.loads(gate_blocks[0].code)["tool"]["bmad-trio"]
    (tmp_path / "pyproject.toml").write_text(
        "[tool.ruff]\n[tool.basedpyright]\n[tool.pytest.ini_options]\n"
    )
    assert parse_config_table("docs", table)["gates"] == detect_quality_gates(tmp_path)


@pytest.mark.parametrize(
    "block",
    [b for b in ALL_BLOCKS if b.lang == "toml" and "bmad-trio" in b.code],
    ids=lambda b: b.name,
)
def test_toml_examples_are_valid_config(block: Block) -> None:
    data = tomllib.loads(block.code)
    table = data["tool"]["bmad-trio"] if "tool" in data else data
    parse_config_table(block.name, table)
