"""Safe YAML/TOML reading with errors that name the file and line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, cast

import yaml

from .._errors import ProjectError
from ._textio import read_text_doc

__all__ = ["load_toml_file", "load_yaml_file", "load_yaml_text", "yaml_key_lines"]


def load_yaml_text(text: str, path: Path) -> object:
    """``yaml.safe_load`` of ``text``; a YAML error becomes ProjectError with file and line."""
    try:
        return cast(object, yaml.safe_load(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = cast(int, mark.line) + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProjectError(f"malformed YAML: {problem}", path=str(path), line=line) from None


def yaml_key_lines(text: str, path: Path, *section: str) -> dict[str, int]:
    """1-based line of every key of the mapping at ``section`` (e.g. ``"development_status"``).

    For messages that must name the line of one entry. Parses like :func:`load_yaml_text` (same
    errors); a missing section, or one that is not a mapping, gives an empty dict.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        load_yaml_text(text, path)  # raises the ProjectError with file and line
        raise  # pragma: no cover - load_yaml_text raised already
    for name in section:
        if not isinstance(node, yaml.MappingNode):
            return {}
        node = next(
            (v for k, v in cast(list[tuple[yaml.Node, yaml.Node]], node.value) if k.value == name),
            None,
        )
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        str(key.value): cast(int, key.start_mark.line) + 1
        for key, _ in cast(list[tuple[yaml.Node, yaml.Node]], node.value)
    }


def load_yaml_file(path: Path) -> object:
    """Read and parse a YAML file (UTF-8, size-capped)."""
    return load_yaml_text(read_text_doc(path).text, path)


def load_toml_file(path: Path) -> dict[str, Any]:
    """Read and parse a TOML file; a syntax error becomes ProjectError with file and line."""
    text = read_text_doc(path).text
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found is not None else None
        raise ProjectError(f"malformed TOML: {exc}", path=str(path), line=line) from None
