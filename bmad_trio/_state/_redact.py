"""Secret redaction for everything bmad-trio writes or hands out: state, events (the file and the
live stream alike), transcripts and logs.

A :class:`Redactor` is an immutable value built from known secret values (usually the environment's,
see :meth:`Redactor.from_environ`) plus built-in patterns for credential shapes (Anthropic and other
``sk-`` keys, ``Bearer`` tokens, Slack/Discord webhook URLs, basic auth in URLs, secret query
parameters, ``NAME_TOKEN=value`` assignments, ``Authorization:``/``x-api-key:`` headers, GitHub, Slack
and AWS key shapes). There is no global state: pass the redactor to whatever writes. Pure
computation; no I/O, nothing to cancel.

Speed, measured: 4 us for a short string, 3 ms for 120 KB of ordinary text, 22 ms for 120 KB dense
with trigger words. Known values are removed with ``str.replace`` (faster than a compiled alternation
of escaped values, and simpler); each pattern is its own compiled regex starting with a literal (so
``re`` uses its fast literal search) that only runs when one of its literal triggers occurs in the
lower-cased text. One big alternation of everything measured ~190 ms for 120 KB: ``re`` cannot skip
ahead through an alternation whose branches start with groups, ``\\b`` or case-insensitive words.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar, cast

import attrs
from attrs import AttrsInstance

__all__ = ["REDACTED", "Redactor", "is_secret_env_name", "is_secret_key"]

REDACTED: Final = "[REDACTED]"
MIN_ENV_SECRET_LEN: Final = 8
"""Environment values shorter than this are not treated as secrets (``1``, ``true``, ``false``...)."""
MIN_SECRET_LEN: Final = 4
"""Explicit secret values shorter than this are ignored: redacting ``ab`` everywhere helps nobody."""

_KNOWN_SECRET_ENV: Final = frozenset(
    {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"}
)
_SECRET_ENV_PARTS: Final = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")

_SECRET_KEYS: Final = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "token",
        "secret",
        "password",
        "passwd",
        "cookie",
        "set_cookie",
        "private_key",
        "secret_key",
        "credentials",
    }
)
_SECRET_KEY_SUFFIXES: Final = ("_token", "_secret", "_password", "_api_key", "_apikey")


def _ci(word: str) -> str:
    """A case-insensitive regex for ``word`` as character classes: much faster than ``(?i)`` in re."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _any_ci(*words: str) -> str:
    return "(?:" + "|".join(_ci(word) for word in words) + ")"


@attrs.frozen
class _Rule:
    """One credential shape. ``triggers``: lower-case literals, at least one of which must occur in
    the lower-cased text for the (slower) regex to run at all. The regex may have a ``keep`` group
    (text kept before the redaction marker); ``tail`` is appended after it. ``word_start``: only
    redact a match that does not continue a word (checked in Python: a leading lookbehind or ``\\b``
    would disable re's fast literal-prefix search)."""

    name: str
    triggers: tuple[str, ...]
    pattern: re.Pattern[str]
    tail: str = ""
    word_start: bool = False

    def replace(self, match: re.Match[str]) -> str:
        start = match.start()
        if self.word_start and start > 0:
            before = match.string[start - 1]
            if before.isalnum() or before in "_-":
                return match.group(0)
        keep = match.groupdict().get("keep") or ""
        return keep + REDACTED + self.tail


_SECRET_WORDS: Final = ("key", "token", "secret", "password", "passwd")

_RULES: Final = (
    # https://user:password@host -> https://user:[REDACTED]@host
    _Rule(
        "url_auth",
        ("://",),
        re.compile(r"(?P<keep>://[^\s/:@\"'<>]+:)[^\s/@\"'<>]+@"),
        tail="@",
    ),
    # Slack / Discord webhooks: keep the host, redact the credential path.
    _Rule(
        "webhook",
        ("hooks.slack.com", "discord"),
        re.compile(
            r"(?P<keep>hooks\.slack\.com/(?:services|workflows|triggers)/"
            r"|discord(?:app)?\.com/api/webhooks/)[A-Za-z0-9_/+=-]+"
        ),
    ),
    # ?token=... &api_key=... &sig=...
    _Rule(
        "query",
        tuple(f"{word}=" for word in (*_SECRET_WORDS, "sig", "signature", "auth")),
        re.compile(
            r"(?P<keep>[?&;](?:[A-Za-z0-9-]*_)?"
            + _any_ci(*_SECRET_WORDS, "apikey", "signature", "sig", "auth")
            + r"=)[^&#\s\"'<>]+"
        ),
    ),
    # Authorization: Bearer x / x-api-key: x / "api_key": "x" (headers, JSON-ish text)
    _Rule(
        "header",
        ("x-api-key", "api_key", "api-key", "apikey", "authorization"),
        re.compile(
            r"(?P<keep>(?:"
            + _ci("x-api-key")
            + "|"
            + _ci("api")
            + "[_-]?"
            + _ci("key")
            + "|"
            + _ci("authorization")
            + r")[\"']?\s*[:=]\s*[\"']?(?:"
            + _any_ci("bearer", "basic", "token")
            + r"\s+)?)[^\s\"',;}&]+"
        ),
    ),
    # Bearer tokens anywhere.
    _Rule(
        "bearer",
        ("bearer",),
        re.compile(r"(?P<keep>" + _ci("bearer") + r"\s+)[A-Za-z0-9._~+/=-]{8,}"),
        word_start=True,
    ),
    # FOO_API_KEY=value / password = "value" (environment dumps, shell traces, config text).
    # The name must end with the word, so ``input_tokens=5`` is left alone; ``token = f(x)`` too.
    _Rule(
        "assign",
        ("key", "token", "secret", "passw"),
        re.compile(
            r"(?P<keep>"
            + _any_ci(*_SECRET_WORDS)
            + r"\s*=\s*[\"']?)[A-Za-z0-9_\-.+/=:~]{8,}+(?!\()"
        ),
    ),
    # Key shapes: Anthropic and OpenAI-style sk- keys, GitHub, Slack tokens, AWS access key ids.
    _Rule(
        "sk",
        ("sk-",),
        re.compile(r"sk-(?:ant-[A-Za-z0-9_-]+|[A-Za-z0-9_-]{16,})"),
        word_start=True,
    ),
    _Rule(
        "github",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"),
        word_start=True,
    ),
    _Rule(
        "slack_token",
        ("xox",),
        re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"),
        word_start=True,
    ),
    _Rule(
        "aws",
        ("akia", "asia"),
        re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"),
        word_start=True,
    ),
)
_TRIGGERS: Final = tuple(
    (trigger, index) for index, rule in enumerate(_RULES) for trigger in rule.triggers
)
"""Every (literal trigger, rule index): one flat loop of substring tests (C speed) per text."""

T = TypeVar("T")
A = TypeVar("A", bound=AttrsInstance)


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    upper = name.upper()
    return upper in _KNOWN_SECRET_ENV or any(part in upper for part in _SECRET_ENV_PARTS)


def is_secret_key(key: str) -> bool:
    """Whether a JSON/dict key names a secret (``api_key``, ``Authorization``, ``x-api-key``...).

    Token *counts* (``input_tokens``, ``max_tokens``) are not secrets.
    """
    norm = key.strip().lower().replace("-", "_").replace(".", "_")
    return norm in _SECRET_KEYS or norm.endswith(_SECRET_KEY_SUFFIXES)


class Redactor:
    """Replaces secrets in text and JSON-like data with ``[REDACTED]``. Immutable; thread-safe."""

    __slots__ = ("_ordered", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Redact these exact values (each at least :data:`MIN_SECRET_LEN` long) and the patterns."""
        values = {
            value for value in secrets if len(value) >= MIN_SECRET_LEN and value not in REDACTED
        }
        self._secrets: frozenset[str] = frozenset(values)
        # Longest first, so a secret that contains another is removed whole.
        self._ordered: tuple[str, ...] = tuple(
            sorted(values, key=lambda value: (-len(value), value))
        )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()
    ) -> Redactor:
        """A redactor for the secrets in ``environ`` (default ``os.environ``) plus ``extra`` values.

        Secrets are the values of ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``,
        ``CLAUDE_CODE_OAUTH_TOKEN`` and of every variable whose name contains KEY, TOKEN, SECRET,
        PASSWORD or CREDENTIAL, when at least :data:`MIN_ENV_SECRET_LEN` characters long.
        """
        env = os.environ if environ is None else environ
        found = [
            value
            for name, value in env.items()
            if is_secret_env_name(name) and len(value) >= MIN_ENV_SECRET_LEN
        ]
        return cls([*found, *extra])

    def with_secrets(self, extra: Iterable[str]) -> Redactor:
        """A new redactor that also redacts ``extra``."""
        return Redactor([*self._secrets, *extra])

    @property
    def secret_count(self) -> int:
        """How many exact values this redactor knows (not the values themselves)."""
        return len(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with every known secret value and secret-shaped token replaced.

        Known values go first (plain substring replacement, longest first), so no text kept by a
        pattern (a URL's user name, a header name) can still hold one. Each pattern's regex only runs
        when one of its literal triggers occurs in the text.
        """
        for value in self._ordered:
            if value in text:
                text = text.replace(value, REDACTED)
        lowered = text.lower()
        hit = {index for trigger, index in _TRIGGERS if trigger in lowered}
        for index in sorted(hit):
            rule = _RULES[index]
            text = rule.pattern.sub(rule.replace, text)
        return text

    def redact_json(self, obj: T) -> T:
        """A copy of ``obj`` with every string redacted and values under secret keys replaced.

        Walks dicts (any mapping becomes a dict), lists and tuples; other values are returned as is.
        Under a key such as ``api_key``, ``authorization`` or ``x-api-key`` any non-empty string or
        number becomes ``"[REDACTED]"``; nested containers under such keys are redacted whole.
        """
        return cast(T, self._redact_any(obj))

    def redact_attrs(self, obj: A) -> A:
        """A copy of the attrs instance ``obj`` (an event, say) with every field redacted as by
        :meth:`redact_json`; ``obj`` itself when nothing needed redacting (the common case, and safe
        to share for frozen classes). A string under a secret-named field becomes ``[REDACTED]``."""
        changes: dict[str, object] = {}
        for field in attrs.fields(type(obj)):
            value: object = getattr(obj, field.name)
            if isinstance(value, str) and value and is_secret_key(field.name):
                redacted: object = REDACTED
            else:
                redacted = self._redact_any(value)
            if redacted != value:
                changes[field.alias] = redacted
        return attrs.evolve(obj, **changes) if changes else obj

    def _redact_any(self, obj: object) -> object:
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, Mapping):
            out: dict[Any, object] = {}
            for key, value in cast(Mapping[Any, object], obj).items():
                if isinstance(key, str):
                    if is_secret_key(key) and _has_content(value):
                        out[self.redact(key)] = REDACTED
                        continue
                    key = self.redact(key)
                out[key] = self._redact_any(value)
            return out
        if isinstance(obj, list):
            return [self._redact_any(item) for item in cast(list[object], obj)]
        if isinstance(obj, tuple):
            return tuple(self._redact_any(item) for item in cast(tuple[object, ...], obj))
        return obj

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secret values>)"


def _has_content(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str | bytes):
        return len(value) > 0
    return True
