"""A ``claude login`` user's credentials, exposed to the isolated CLI config dir and nothing else.

Every runner gives the CLI a fresh ``CLAUDE_CONFIG_DIR`` (no user settings, hooks or plugins leak
into the agents), which also hides the login that ``claude login`` stored in the user's own config
dir. When the environment names no credential (no ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``
or ``CLAUDE_CODE_OAUTH_TOKEN``), the runner copies only the credentials file into its config dir:

- Linux (and macOS when the file exists): ``~/.claude/.credentials.json`` (``~`` is the CLI's
  HOME), copied with mode 0600 into a 0700 directory that the agents' shell cannot read (the
  sandbox denies it) and that is removed with the runner.
- macOS keeps the login in the Keychain (service ``Claude Code-credentials``); it is read with
  ``security find-generic-password`` into the same file (best effort: not tested on macOS here).

The CLI refreshes an expired OAuth token in the copy; :meth:`LoginCopy.write_back` then puts the
refreshed copy back (only if the user's file did not change meanwhile), so a rotated refresh token
does not log the user out.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs

__all__ = ["AUTH_VARIABLES", "CREDENTIALS_FILE", "LoginCopy", "expose_login", "login_source"]

AUTH_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
CREDENTIALS_FILE = ".credentials.json"
_KEYCHAIN_SERVICE = "Claude Code-credentials"


def _home(env: Mapping[str, str]) -> Path | None:
    home = env.get("HOME") or os.environ.get("HOME")
    return Path(home) if home else None


def login_source(env: Mapping[str, str]) -> Path | None:
    """The user's ``claude login`` credentials file, if there is one (``env``: the CLI's)."""
    config = env.get("CLAUDE_CONFIG_DIR")
    home = _home(env)
    base = Path(config) if config else (home / ".claude" if home else None)
    if base is None:
        return None
    path = base / CREDENTIALS_FILE
    return path if path.is_file() else None


def _keychain_secret() -> bytes | None:
    if sys.platform != "darwin":
        return None
    try:
        done = subprocess.run(
            ["/usr/bin/security", "find-generic-password", "-s", _KEYCHAIN_SERVICE, "-w"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    secret = done.stdout.strip()
    return secret if done.returncode == 0 and secret.startswith(b"{") else None


def _write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (mode 0600) through a temp file and ``os.replace``."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".cred-")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@attrs.define
class LoginCopy:
    """The credentials copied into a runner's config dir, and where they came from."""

    copy: Path
    source: Path | None
    """The user's file (None: from the macOS Keychain, never written back)."""
    original: bytes

    def write_back(self) -> None:
        """Put a copy the CLI refreshed back into the user's file, unless that file changed."""
        if self.source is None:
            return
        try:
            current = self.copy.read_bytes()
            if current == self.original or self.source.read_bytes() != self.original:
                return
            _write_private(self.source, current)
        except OSError:
            return


def expose_login(config_dir: Path, env: Mapping[str, str]) -> LoginCopy | None:
    """Copy the user's login into ``config_dir`` when ``env`` and ours name no credential.

    Returns what was copied, or None (a credential variable is set, or there is no login).
    """
    if any((env.get(name) or os.environ.get(name, "")).strip() for name in AUTH_VARIABLES):
        return None
    source = login_source({k: v for k, v in env.items() if k != "CLAUDE_CONFIG_DIR"})
    data: bytes | None
    if source is not None:
        try:
            data = source.read_bytes()
        except OSError:
            return None
    else:
        data = _keychain_secret()
    if not data:
        return None
    copy = config_dir / CREDENTIALS_FILE
    _write_private(copy, data)
    return LoginCopy(copy=copy, source=source, original=data)
