"""The redactor: known values, credential shapes, JSON walking, speed."""

from __future__ import annotations

import time

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmad_trio._state._redact import REDACTED, Redactor, is_secret_env_name, is_secret_key

API_KEY = "sk-ant-api03-Zx9_fake-KEY-value-0123456789"
OAUTH = "oauth-token-value-abcdef123456"
SLACK_URL = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/xxxxxxxxxxxxxxxxxxxxxxxx"

ENV = {
    "ANTHROPIC_API_KEY": API_KEY,
    "CLAUDE_CODE_OAUTH_TOKEN": OAUTH,
    "DB_PASSWORD": "correct-horse-battery",
    "MY_SECRET_THING": "s3cr3t-value-xyz",
    "TOKENIZERS_PARALLELISM": "false",
    "GITHUB_TOKEN": "short",
    "HOME": "/home/someone-with-a-long-name",
    "PATH": "/usr/bin:/bin",
}


@pytest.fixture
def redactor() -> Redactor:
    return Redactor.from_environ(ENV, extra=["extra-secret-42"])


def test_env_names() -> None:
    assert is_secret_env_name("ANTHROPIC_API_KEY")
    assert is_secret_env_name("anthropic_auth_token")
    assert is_secret_env_name("DB_PASSWORD")
    assert not is_secret_env_name("HOME")


def test_from_environ_takes_long_secret_values_only(redactor: Redactor) -> None:
    # API key, oauth token, password, secret, extra; not "false", not "short", not HOME/PATH.
    assert redactor.secret_count == 5
    assert redactor.redact("/home/someone-with-a-long-name") == "/home/someone-with-a-long-name"
    assert redactor.redact("x false short y") == "x false short y"
    assert API_KEY not in repr(redactor)


@pytest.mark.parametrize(
    "secret", [API_KEY, OAUTH, "correct-horse-battery", "s3cr3t-value-xyz", "extra-secret-42"]
)
def test_known_values_are_redacted_anywhere(redactor: Redactor, secret: str) -> None:
    out = redactor.redact(f"before{secret}after and again: {secret}.")
    assert secret not in out
    assert out.count(REDACTED) == 2


def test_longest_value_wins() -> None:
    redactor = Redactor(["abcdefgh", "abcdefgh-and-more"])
    assert redactor.redact("x abcdefgh-and-more y") == f"x {REDACTED} y"


def test_short_explicit_values_are_ignored() -> None:
    assert Redactor(["ab", ""]).secret_count == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Anthropic keys, even ones we were not told about
        ("key sk-ant-api03-AbC_d-e123 end", f"key {REDACTED} end"),
        ("sk-proj-abcdefghijklmnopqrstuvwx", REDACTED),
        # ...but not words that merely contain sk-
        ("task-abcdefghijklmnopqrstuvwxyz", "task-abcdefghijklmnopqrstuvwxyz"),
        ("sk-short", "sk-short"),
        # Bearer tokens and auth headers
        ("Authorization: Bearer abc.DEF-ghi_123456", f"Authorization: Bearer {REDACTED}"),
        ("header bearer eyJhbGciOiJIUzI1NiJ9.x.y", f"header bearer {REDACTED}"),
        ("curl -H 'x-api-key: abc123xyz'", f"curl -H 'x-api-key: {REDACTED}'"),
        ('{"api_key": "abcd1234"}', f'{{"api_key": "{REDACTED}"}}'),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {REDACTED}"),
        # Slack webhooks keep the host
        (f"notify {SLACK_URL} now", f"notify https://hooks.slack.com/services/{REDACTED} now"),
        (
            "https://discord.com/api/webhooks/123/abcDEF",
            f"https://discord.com/api/webhooks/{REDACTED}",
        ),
        # basic auth in URLs keeps user and host
        (
            "git clone https://bob:pa55w0rd@github.com/x/y.git",
            f"git clone https://bob:{REDACTED}@github.com/x/y.git",
        ),
        ("https://github.com/x/y@v1", "https://github.com/x/y@v1"),
        # secret query parameters
        (
            "https://x.io/cb?token=abc123&page=2&sig=deadbeef#top",
            f"https://x.io/cb?token={REDACTED}&page=2&sig={REDACTED}#top",
        ),
        (
            "GET /v1?api_key=zzz&access_token=yyy",
            f"GET /v1?api_key={REDACTED}&access_token={REDACTED}",
        ),
        ("GET /v1?q=token&keyboard=1", "GET /v1?q=token&keyboard=1"),
        # NAME=value assignments
        ("export FOO_API_KEY=abcdefgh1234", f"export FOO_API_KEY={REDACTED}"),
        ("password = 'hunter2hunter2'", f"password = '{REDACTED}'"),
        ("input_tokens=123456789 max_tokens=5", "input_tokens=123456789 max_tokens=5"),
        ("token = tokenizer_function(x)", "token = tokenizer_function(x)"),
        # other key shapes
        ("ghp_" + "a" * 36, REDACTED),
        ("xoxb-1234567890-abcdefghij", REDACTED),
        ("AKIAABCDEFGHIJKLMNOP", REDACTED),
        # ordinary text is left alone
        ("design=1, monkey business, /a/b:c@d", "design=1, monkey business, /a/b:c@d"),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    redactor = Redactor()
    assert redactor.redact(text) == expected
    assert redactor.redact(expected) == expected  # idempotent


def test_known_value_inside_a_kept_part_is_redacted(redactor: Redactor) -> None:
    out = redactor.redact(f"https://{OAUTH}:x@example.com/")
    assert OAUTH not in out


def test_secret_keys() -> None:
    for key in ("api_key", "X-Api-Key", "Authorization", "token", "refresh_token", "client_secret"):
        assert is_secret_key(key), key
    for key in ("input_tokens", "output_tokens", "max_tokens", "keyboard", "title"):
        assert not is_secret_key(key), key


def test_redact_json(redactor: Redactor) -> None:
    data = {
        "headers": {"Authorization": "Bearer x", "x-api-key": "k", "accept": "json"},
        "usage": {"input_tokens": 3, "output_tokens": 4},
        "env": {"ANTHROPIC_API_KEY": API_KEY, "EMPTY_TOKEN": ""},
        "list": [f"text {OAUTH}", ("tuple", API_KEY), 5, None, True],
        "token": None,
        f"key-{OAUTH}": 1,
    }
    out = redactor.redact_json(data)
    assert out["headers"] == {"Authorization": REDACTED, "x-api-key": REDACTED, "accept": "json"}
    assert out["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert out["env"] == {"ANTHROPIC_API_KEY": REDACTED, "EMPTY_TOKEN": ""}
    assert out["list"] == [f"text {REDACTED}", ("tuple", REDACTED), 5, None, True]
    assert out["token"] is None
    assert f"key-{REDACTED}" in out
    assert data["env"]["ANTHROPIC_API_KEY"] == API_KEY  # input untouched


def test_redact_attrs(redactor: Redactor) -> None:
    @attrs.frozen
    class Sample:
        text: str
        names: tuple[str, ...]
        password: str = ""
        count: int = 3

    clean = Sample(text="nothing here", names=("a",))
    assert redactor.redact_attrs(clean) is clean
    dirty = Sample(text=f"key {API_KEY}", names=(f"x {API_KEY}",), password="hunter2")
    assert redactor.redact_attrs(dirty) == Sample(
        text=f"key {REDACTED}", names=(f"x {REDACTED}",), password=REDACTED
    )


def test_with_secrets_adds_values(redactor: Redactor) -> None:
    more = redactor.with_secrets(["brand-new-secret"])
    assert more.redact("brand-new-secret") == REDACTED
    assert redactor.redact("brand-new-secret") == "brand-new-secret"


@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    secret=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=40
    ),
)
def test_a_known_secret_never_survives(before: str, after: str, secret: str) -> None:
    if secret in REDACTED:
        return
    out = Redactor([secret]).redact(before + secret + after)
    assert secret not in out


def test_speed() -> None:
    redactor = Redactor.from_environ(ENV)
    plain = "ordinary log text with /some/path.py and numbers 12345, nothing to hide. " * 1600
    dense = "code: key = d[token] if secret else password; task-x Bearer ?sig " * 1900
    for text in (plain, dense):
        start = time.perf_counter()
        for _ in range(5):
            redactor.redact(text)
        per_call = (time.perf_counter() - start) / 5
        # ~120 KB: measured 5 ms (plain) / 20 ms (dense) on the dev box; leave room for slow CI.
        assert per_call < 0.25, per_call
