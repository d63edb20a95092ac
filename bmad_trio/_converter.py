"""The project's cattrs converter (made by a factory; never the global one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cattrs

from ._events import EVENT_TYPES, TYPE_NAMES, Event

__all__ = ["event_from_json", "event_to_json", "make_converter"]


def make_converter() -> cattrs.Converter:
    """A converter that knows paths and the event union (tagged by ``type``)."""
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_unstructure_hook(Path, str)
    converter.register_structure_hook(Path, lambda value, _: Path(value))
    return converter


def event_to_json(converter: cattrs.Converter, event: Event) -> dict[str, Any]:
    """Unstructure an event to a JSON-able dict with ``type`` first."""
    body = cast(dict[str, Any], converter.unstructure(event))
    return {"type": TYPE_NAMES[type(event)], **body}


def event_from_json(converter: cattrs.Converter, data: dict[str, Any]) -> Event:
    """Structure an event dict made by :func:`event_to_json`; raises KeyError on an unknown type."""
    body = dict(data)
    cls = EVENT_TYPES[body.pop("type")]
    return cast(Event, converter.structure(body, cls))
