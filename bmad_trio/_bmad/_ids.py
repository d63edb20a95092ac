"""Story ids (``1.2``, ``2.3a``, ``3.4A``), slugs and v6 story keys (``1-2-user-login``)."""

from __future__ import annotations

import hashlib
import re

from .._errors import ProjectError

__all__ = [
    "MAX_SLUG_LENGTH",
    "same_story_id",
    "split_story_id",
    "story_key",
    "story_slug",
    "validate_story_id",
]

MAX_SLUG_LENGTH = 60
_STORY_ID = re.compile(r"(\d+)\.(\d+[A-Za-z]?)")
_NON_WORD = re.compile(r"\W+")


def validate_story_id(story_id: str, *, path: str | None = None, line: int | None = None) -> str:
    """Return ``story_id`` if it has the form ``{epic}.{story}`` (``1.2``, ``2.3a``, ``1.12B``)."""
    if _STORY_ID.fullmatch(story_id) is None:
        raise ProjectError(
            f"invalid story id {story_id!r} (expected e.g. 1.2, 2.3a or 3.4A)", path=path, line=line
        )
    return story_id


def split_story_id(story_id: str) -> tuple[str, str]:
    """``"2.3a"`` → ``("2", "3a")`` after validation."""
    epic, _, story = validate_story_id(story_id).partition(".")
    return epic, story


def story_slug(title: str) -> str:
    """BMAD's slug: lower case, runs of non-word characters → ``-``, at most 60 characters.

    Like BMAD's own key maker it keeps Unicode letters (``与审计边界``)."""
    slug = _NON_WORD.sub("-", title.lower()).strip("-")
    return slug[:MAX_SLUG_LENGTH].rstrip("-")


def story_key(story_id: str, title: str) -> str:
    """The v6 story key ``{e}-{s}-{slug}`` exactly as BMAD's sprint planning makes it.

    The epic is written as an integer (``01`` → ``1``); a title with no word characters gets the
    first 8 hex digits of its SHA-256 instead of a slug, as BMAD does.
    """
    epic, story = split_story_id(story_id)
    title = title.strip()
    slug = story_slug(title) or hashlib.sha256(title.encode("utf-8")).hexdigest()[:8]
    return f"{int(epic)}-{story}-{slug}"


def same_story_id(left: str, right: str) -> bool:
    """``3.4A`` and ``3.4a`` name the same story (epics and file names differ in case)."""
    return left.lower() == right.lower()
