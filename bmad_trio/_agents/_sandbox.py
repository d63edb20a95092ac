"""The agents' OS sandbox: Claude Code's own sandbox for shell commands, set per session.

Claude Code runs every Bash command of a session inside an OS sandbox when its settings say so
(bubblewrap + socat on Linux, Seatbelt on macOS; claude-agent-sdk passes our settings through
``ClaudeAgentOptions.sandbox``). This module decides those settings, and probes once per run
whether the platform's sandbox works. What the CLI's sandbox can express, measured with CLI 2.1.332
(docs/architecture.md, "The agents' sandbox"):

- **Writes**: a list of writable directories (the session's cwd and a private temp dir always,
  plus ``filesystem.allowWrite``) and a list of denied paths (``filesystem.denyWrite``) that wins
  over it; a denied path may not exist yet (its creation is refused). No globs on Linux, and an
  allowed path inside a denied one stays denied. So a per-file area *inside* the project cannot be
  expressed: a role whose shell may not write the project (QA) gets the whole project read-only
  for its shell, and writes its gate/story files with file tools, which the file-tool policy
  (:mod:`._tool_policy`) confines to exactly those files. The file tools are not sandboxed (they
  run in the CLI's own process): the policy is their only fence, the OS sandbox the shell's.
- **Reads**: everything is readable except ``filesystem.denyRead`` (hidden: "No such file").
- **Network**: none for the shell (its own network namespace on Linux) except through the CLI's
  proxy, which lets through only ``network.allowedDomains`` (``strictAllowlist``: never a prompt).
  The CLI's own traffic (the model API) is not sandboxed.
- **Environment**: ``credentials.envVars`` entries with mode ``deny`` are unset for shell
  commands; the CLI itself keeps them.

Pure functions except :func:`probe_sandbox` (runs one sandboxed command, blocking: call it from a
worker thread).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import attrs

from .._state._paths import STATE_DIR_NAME

if TYPE_CHECKING:
    from claude_agent_sdk.types import SandboxSettings

__all__ = [
    "DEFAULT_DENY_READ",
    "SECRET_ENV_NAMES",
    "Sandbox",
    "SandboxMode",
    "SandboxProbe",
    "install_hint",
    "probe_sandbox",
    "run_sandbox",
    "sandbox_settings",
    "secret_env_names",
]

SandboxMode = Literal["auto", "required", "off"]

DEFAULT_DENY_READ: tuple[str, ...] = (
    "~/.ssh",
    "~/.aws",
    "~/.config/gcloud",
    "~/.azure",
    "~/.kube",
    "~/.docker/config.json",
    "~/.netrc",
    "~/.git-credentials",
    "~/.config/gh",
    "~/.gnupg",
    "~/.npmrc",
    "~/.pypirc",
    "~/.claude/.credentials.json",
    "~/.claude.json",
    "~/.env",
)
"""Where credentials usually live; the agents' shell cannot read them (config: sandbox_deny_read)."""

SECRET_ENV_NAMES: tuple[str, ...] = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
)
"""Variables always unset for the agents' shell (with every other variable that looks secret)."""

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_PROBE_TIMEOUT_S = 15.0


@attrs.frozen(kw_only=True)
class Sandbox:
    """A run's sandbox policy for agents' shell commands; the role's area comes with each session
    (:attr:`~bmad_trio.SessionSpec.writable_roots`)."""

    allowed_domains: tuple[str, ...] = ()
    """Hosts the shell may reach (through the CLI's proxy); wildcards like ``*.example.com``."""
    deny_read: tuple[str, ...] = DEFAULT_DENY_READ
    """Paths the shell may not read (``~`` is the CLI's HOME)."""


@attrs.frozen(kw_only=True)
class SandboxProbe:
    """Whether the platform's sandbox works here: ``detail`` says what was found or what failed;
    ``install`` is the command that installs what is missing (empty when nothing is)."""

    available: bool
    detail: str
    install: str = ""


def secret_env_names(env: Mapping[str, str]) -> list[str]:
    """The variables to unset for the shell: :data:`SECRET_ENV_NAMES` and every name in ``env``
    that looks like a secret (KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL, AUTH)."""
    names = dict.fromkeys(SECRET_ENV_NAMES)
    names.update(dict.fromkeys(name for name in env if _SECRET_NAME.search(name)))
    return list(names)


def _env_files_above(cwd: Path) -> list[str]:
    """``.env`` files in the directories above the project (the project's own stay readable)."""
    found: list[str] = []
    for parent in cwd.parents:
        candidate = parent / ".env"
        if candidate.is_file():
            found.append(str(candidate))
    return found


def sandbox_settings(
    sandbox: Sandbox,
    *,
    cwd: Path,
    writable_roots: Sequence[Path] | None,
    env: Mapping[str, str],
    deny_read_extra: Sequence[str] = (),
) -> SandboxSettings:
    """The ``ClaudeAgentOptions.sandbox`` value for one session.

    ``writable_roots``: the directories the shell may write besides its temp space; ``None`` means
    the session's ``cwd`` (Dev, fixer). When ``cwd`` is not inside one of them it is made read-only
    for the shell (QA, SM); a root inside a read-only ``cwd`` cannot be granted (the CLI's deny
    wins) and raises ``ValueError``. The run store and the repository (``.bmad-trio``, ``.git``)
    are never writable by the shell. ``env`` is the session's environment (secret-looking names
    are unset for the shell); ``deny_read_extra`` adds paths (the runner's own config dir).
    """
    cwd = Path(os.path.realpath(cwd))
    roots = [cwd] if writable_roots is None else [Path(os.path.realpath(r)) for r in writable_roots]
    cwd_writable = any(cwd == root or root in cwd.parents for root in roots)
    deny_write = [str(cwd / STATE_DIR_NAME), str(cwd / ".git")]
    allow_write: list[str] = []
    for root in roots:
        if root == cwd or root in cwd.parents:
            continue
        if not cwd_writable and cwd in root.parents:
            raise ValueError(f"cannot grant {root} inside the read-only {cwd} (deny wins)")
        if cwd not in root.parents:
            allow_write.append(str(root))
    if not cwd_writable:
        deny_write = [str(cwd)]
    deny_read = list(dict.fromkeys([*sandbox.deny_read, *deny_read_extra, *_env_files_above(cwd)]))
    settings: dict[str, object] = {
        "enabled": True,
        "failIfUnavailable": True,  # never run a command unsandboxed because the sandbox broke
        "autoAllowBashIfSandboxed": True,
        "allowUnsandboxedCommands": False,  # the model cannot ask to leave the sandbox
        "excludedCommands": [],
        "network": {"allowedDomains": list(sandbox.allowed_domains), "strictAllowlist": True},
        "filesystem": {"allowWrite": allow_write, "denyWrite": deny_write, "denyRead": deny_read},
        "credentials": {
            "envVars": [{"name": name, "mode": "deny"} for name in secret_env_names(env)]
        },
    }
    return cast("SandboxSettings", settings)


def install_hint() -> str:
    """The command that installs the platform's sandbox (empty where it is built in)."""
    if sys.platform == "darwin":
        return ""
    for manager, command in (
        ("apt-get", "sudo apt-get install bubblewrap socat"),
        ("dnf", "sudo dnf install bubblewrap socat"),
        ("pacman", "sudo pacman -S bubblewrap socat"),
        ("zypper", "sudo zypper install bubblewrap socat"),
        ("apk", "sudo apk add bubblewrap socat"),
    ):
        if shutil.which(manager):
            return command
    return "install bubblewrap and socat with your package manager"


def _run_probe(argv: Sequence[str], timeout_s: float) -> str | None:
    """None when ``argv`` ran and exited 0, else why not (one line)."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]} did not run: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"{Path(argv[0]).name} failed (exit {done.returncode}): {lines[-1] if lines else ''}"
    return None


def probe_sandbox(timeout_s: float = _PROBE_TIMEOUT_S) -> SandboxProbe:
    """Run one command in the platform's sandbox, as the CLI would (blocking, a few ms).

    Linux: ``bwrap`` and ``socat`` on PATH and a ``bwrap`` with a read-only root, its own network
    and pid namespaces that writes nothing. macOS: ``sandbox-exec`` with a deny-writes profile.
    Elsewhere: no sandbox.
    """
    if sys.platform == "darwin":
        profile = '(version 1)(allow default)(deny file-write* (subpath "/Users"))'
        failure = _run_probe(["/usr/bin/sandbox-exec", "-p", profile, "/usr/bin/true"], timeout_s)
        if failure is None:
            return SandboxProbe(available=True, detail="Seatbelt (sandbox-exec) works")
        return SandboxProbe(available=False, detail=failure)
    if not sys.platform.startswith("linux"):
        return SandboxProbe(available=False, detail=f"no OS sandbox on {sys.platform}")
    hint = install_hint()
    missing = [name for name in ("bwrap", "socat") if shutil.which(name) is None]
    if missing:
        names = " and ".join("bubblewrap (bwrap)" if m == "bwrap" else m for m in missing)
        return SandboxProbe(available=False, detail=f"{names} not found", install=hint)
    bwrap = cast(str, shutil.which("bwrap"))
    argv = [
        bwrap,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--unshare-net",
        "--unshare-pid",
        "--die-with-parent",
        "--",
        "/bin/sh",
        "-c",
        "touch /.bmad-trio-probe 2>/dev/null && exit 9; exit 0",
    ]
    failure = _run_probe(argv, timeout_s)
    if failure is not None:
        return SandboxProbe(available=False, detail=failure, install=hint)
    return SandboxProbe(available=True, detail="bubblewrap and socat work")


def run_sandbox(
    mode: SandboxMode,
    probe: SandboxProbe | None,
    *,
    allowed_domains: Sequence[str] = (),
    deny_read: Sequence[str] = (),
) -> tuple[Sandbox | None, str | None]:
    """A run's sandbox from its ``sandbox`` setting and the platform probe (None for ``off``).

    Returns the policy (None: no sandbox) and the one-line warning to show at the start of the
    run (``auto`` without a working sandbox). ``required`` without one raises PreflightError.
    """
    from .._errors import PreflightError

    if mode == "off":
        return None, None
    if probe is None or not probe.available:
        detail = probe.detail if probe is not None else "not checked"
        install = f"; install it: {probe.install}" if probe is not None and probe.install else ""
        if mode == "required":
            raise PreflightError(
                f"sandbox = required, but the OS sandbox is missing: {detail}{install}"
            )
        return None, f"agents' shell commands run without the OS sandbox ({detail}){install}"
    policy = Sandbox(
        allowed_domains=tuple(allowed_domains),
        deny_read=tuple(dict.fromkeys([*DEFAULT_DENY_READ, *deny_read])),
    )
    return policy, None


_MOUNT_POINT_NAMES = (
    ".gitconfig", ".gitmodules", ".bashrc", ".bash_profile", ".zshrc", ".zprofile", ".profile",
    ".zshenv", ".zlogin", ".zlogout", ".bash_login", ".bash_aliases", ".bash_logout", ".envrc",
    ".ripgreprc", ".mcp.json", ".claude.json", ".npmrc", ".yarnrc", ".yarnrc.yml", ".pnp.cjs",
    ".pnp.loader.mjs", ".pnp.js", ".pnp.data.json", ".pnpmfile.cjs", "bunfig.toml",
    ".bunfig.toml", ".bazelrc", ".bazelversion", ".bazeliskrc", ".pre-commit-config.yaml",
    "lefthook.yml", ".lefthook.yml", "lefthook.yaml", ".lefthook.yaml",
)  # fmt: skip
"""Files the CLI's sandbox always write-protects (its mandatory list, CLI 2.1.332). Where one does
not exist, the sandbox binds over an empty file it creates as a mount point, and a CLI stopped
before its own clean-up (we kill it at the ResultMessage) can leave that empty file behind."""
_CLI_SCRATCH = (".claude/.cc-writes", ".claude")
"""What the sandboxed CLI writes into the project for itself (a write log), oldest last."""


def _leftover_candidates(cwd: Path, home: str | None) -> list[Path]:
    places = [cwd, *([Path(home)] if home else [])]
    paths = [place / name for place in places for name in _MOUNT_POINT_NAMES]
    return paths + [cwd / name for name in _CLI_SCRATCH]


def existing_leftovers(cwd: Path, home: str | None) -> frozenset[Path]:
    """Which of the paths a sandboxed session may leave behind exist before it (cheap stats)."""
    return frozenset(path for path in _leftover_candidates(cwd, home) if os.path.lexists(path))


def remove_leftovers(cwd: Path, home: str | None, before: frozenset[Path]) -> list[Path]:
    """Remove what the sandbox left that was not there ``before``: empty mount-point files, the
    CLI's write log (a file, or an empty folder) and its then-empty ``.claude`` folder. Returns
    what was removed."""
    removed: list[Path] = []
    for path in _leftover_candidates(cwd, home):
        if path in before:
            continue
        try:
            if path.is_symlink():
                continue
            if path.is_file() and (path.name == ".cc-writes" or path.stat().st_size == 0):
                path.unlink()
                removed.append(path)
            elif (
                path.is_dir() and path.name in (".claude", ".cc-writes") and not any(path.iterdir())
            ):
                path.rmdir()
                removed.append(path)
        except OSError:
            continue
    return removed
