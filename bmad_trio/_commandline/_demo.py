"""The offline demo's sample project: a small real Python package with a three-story BMAD epic.

:func:`scaffold_demo` writes it (synchronous file code; the command line calls it via ``anyio.to_thread``);
the returned :class:`DemoProject` says what to run next (:meth:`DemoProject.instructions`) and, after
a run, where its results are (:func:`where_to_look`).

The scaffold is a plain BMAD layout (no ``.bmad-core`` or ``_bmad`` install): the epic is the sharded
v4-style file ``docs/prd/epic-1-greetings.md``, stories go to ``docs/stories/``, QA gates to
``docs/qa/gates/``. Its quality gates need nothing beyond the Python that runs bmad-trio.

Safety: a directory that exists and is not empty is refused (:class:`~bmad_trio.ConfigError`, nothing
written) unless it is an untouched earlier scaffold. The marker file ``.bmad-trio-demo`` records the
SHA-256 of every file the scaffold wrote; a directory is "untouched" when every file in it (outside
``__pycache__``) is the marker or a recorded file with a recorded hash, so re-scaffolding never
overwrites anything a user or a run wrote. Every file is written atomically (temp file + os.replace),
and the marker is written first, so an interrupted scaffold can simply be run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, cast

import attrs

from .._bmad._textio import write_text_atomic
from .._errors import ConfigError
from .._state._paths import STATE_DIR_NAME, run_dir, state_dir

__all__ = [
    "DEMO_EPIC",
    "DEMO_FAIL_FIRST_REVIEW",
    "DEMO_MARKER",
    "DEMO_PACKAGE",
    "DEMO_SCENARIO",
    "DEMO_STORY_IDS",
    "DemoProject",
    "demo_files",
    "gate_python",
    "scaffold_demo",
    "where_to_look",
]

DEMO_MARKER: Final = ".bmad-trio-demo"
"""Marker file in a scaffolded demo project: JSON, ``files`` maps each written path to its hashes."""
DEMO_EPIC: Final = "docs/prd/epic-1-greetings.md"
DEMO_PACKAGE: Final = "src/sample_app"
DEMO_SCENARIO: Final = "demo-scenario.toml"
DEMO_STORY_IDS: Final = ("1.1", "1.2", "1.3")
DEMO_FAIL_FIRST_REVIEW: Final = ("1.2",)
"""Stories whose first QA review the scripted model fails, to show a Dev → QA fix cycle."""
FAKE_API_PORT: Final = 8765
_MARKER_SCHEMA: Final = 1
_DERIVED_DIRS: Final = frozenset({"__pycache__", ".git"})
"""Skipped when checking an earlier scaffold: caches, and the repository the demo made."""
"""Directories a demo may gain without being "touched" (the compile gate writes ``__pycache__``)."""


def gate_python() -> str:
    """The interpreter the sample's gates run: the one running bmad-trio, by absolute path.

    ``python`` is missing on stock Debian/Ubuntu/macOS, ``python3`` on Windows, and whichever is on
    ``PATH`` may not be the interpreter bmad-trio is installed in (or may be too old). The running
    interpreter is always there and is Python >= 3.11. Falls back to ``python3`` only when
    ``sys.executable`` is unknown or cannot be written as UTF-8.
    """
    exe = sys.executable
    try:
        exe.encode("utf-8")
    except UnicodeEncodeError:
        exe = ""
    return exe or ("python" if os.name == "nt" else "python3")


def _toml_str(value: str) -> str:
    """A TOML basic string (escapes backslash, quote and control characters)."""
    out: list[str] = []
    for char in value:
        if char in {"\\", '"'}:
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_argv(argv: tuple[str, ...]) -> str:
    return "[" + ", ".join(_toml_str(arg) for arg in argv) + "]"


def _gates(python: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        ("compile", (python, "-m", "compileall", "-q", "src", "tests")),
        ("unittest", (python, "-m", "unittest", "discover", "-s", "tests")),
    )


def _pyproject(python: str) -> str:
    gates = "".join(
        f"\n[[tool.bmad-trio.gates]]\nname = {_toml_str(name)}\ncommand = {_toml_argv(argv)}\n"
        for name, argv in _gates(python)
    )
    return (
        "[build-system]\n"
        'requires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "\n"
        "[project]\n"
        'name = "sample-app"\n'
        'version = "0.1.0"\n'
        'description = "The bmad-trio demo project: a tiny package grown one BMAD story at a time"\n'
        'readme = "README.md"\n'
        'requires-python = ">=3.11"\n'
        "\n"
        "# bmad-trio reads this table. The quality gates use only the Python standard library, run\n"
        "# by the interpreter that scaffolded this project (an absolute path: plain `python` or\n"
        "# `python3` is not on every PATH). Edit the command if you move the project elsewhere.\n"
        "[tool.bmad-trio]\n" + gates
    )


_INIT = '''"""sample-app: a tiny package that the bmad-trio demo grows, one BMAD story at a time."""

from __future__ import annotations

__all__ = ["__version__", "clean_name"]

__version__ = "0.1.0"


def clean_name(name: str) -> str:
    """Return ``name`` without surrounding whitespace, or ``"world"`` when it is blank."""
    return name.strip() or "world"
'''

_START_TEST = '''"""Tests for the starting package; each story of the demo adds its own test module here."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import sample_app  # noqa: E402


class CleanNameTest(unittest.TestCase):
    def test_strips_whitespace(self) -> None:
        self.assertEqual(sample_app.clean_name("  Ada "), "Ada")

    def test_blank_is_world(self) -> None:
        self.assertEqual(sample_app.clean_name("   "), "world")

    def test_version(self) -> None:
        self.assertEqual(sample_app.__version__, "0.1.0")


if __name__ == "__main__":
    unittest.main()
'''

_EPIC = """## Epic 1: Greeting toolkit

sample-app should be able to greet people, say goodbye and shout. Each story adds one module under
`src/sample_app/` and its unit tests under `tests/`; the whole suite runs with
`python -m unittest discover -s tests`.

### Story 1.1: Add greeting

As a developer using sample-app, I want a function that greets someone by name, so that the app
can say hello.

#### Acceptance Criteria

1. `add_greeting("Ada")` returns a greeting that contains "Ada".
2. Called without a name, it greets "world".
3. Unit tests cover both cases and pass.

### Story 1.2: Add farewell

As a developer using sample-app, I want a function that says goodbye to someone by name, so that
the app can end a conversation politely.

#### Acceptance Criteria

1. `add_farewell("Ada")` returns a farewell that contains "Ada".
2. Called without a name, it says goodbye to "world".
3. Unit tests cover both cases and pass.

### Story 1.3: Add shout

As a developer using sample-app, I want a loud variant of the greeting, so that the app can get
attention.

Depends on: 1.1

#### Acceptance Criteria

1. `add_shout("Ada")` returns a message that contains "Ada".
2. Called without a name, it shouts at "world".
3. Unit tests cover both cases and pass.
"""

_SCENARIO = f"""# The scripted model for the offline demo:
#   bmad-trio fake-api --port {FAKE_API_PORT} --scenario {DEMO_SCENARIO}
# The built-in BMAD actor plays SM, Dev, QA and the gate fixer through real tool calls.
# Its QA fails the first review of story 1.2, so the run shows one Dev -> QA fix cycle.

[[responders]]
builtin = "bmad_actor"
fail_first_review = {json.dumps(list(DEMO_FAIL_FIRST_REVIEW))}
"""

_README = f"""# sample-app

A tiny Python package scaffolded by `bmad-trio demo`. It starts almost empty; the BMAD epic in
`{DEMO_EPIC}` asks for three stories, and bmad-trio drives each one through the Scrum Master
(drafts the story file), the Developer (writes the code and its tests) and QA (reviews and writes
a gate file), then runs the quality gates.

## Layout

- `{DEMO_EPIC}`: Epic 1, stories 1.1 Add greeting, 1.2 Add farewell, 1.3 Add shout
  (1.3 depends on 1.1)
- `docs/stories/`: the story files the Scrum Master writes (`1.1.add-greeting.md`, ...)
- `docs/qa/gates/`: the QA gate files (`1.1-add-greeting.yml`, ...)
- `src/sample_app/`: the package; each story adds a module (`add_greeting.py`, ...)
- `tests/`: unittest tests, one module per story
- `pyproject.toml`: `[tool.bmad-trio]` holds the quality gates: `compile`
  (`python -m compileall -q src tests`) and `unittest` (`python -m unittest discover -s tests`),
  both run with the interpreter that scaffolded the project
- `{DEMO_SCENARIO}`: the scripted model for offline runs
- `.bmad-trio/`: created by a run: state, events, logs and every agent transcript

## Run it

Offline, everything in one command, in this directory (while it is still an untouched scaffold):

    bmad-trio demo .

Offline, step by step (two terminals, in this directory):

    bmad-trio fake-api --port {FAKE_API_PORT} --scenario {DEMO_SCENARIO}

    export ANTHROPIC_BASE_URL=http://127.0.0.1:{FAKE_API_PORT} ANTHROPIC_API_KEY=offline
    bmad-trio run {DEMO_EPIC} --project .

Against the real Anthropic API (this spends money; set your own `ANTHROPIC_API_KEY`):

    bmad-trio run {DEMO_EPIC} --project . --budget-usd 2

Then `bmad-trio status --project .` shows each story's status, cycles and cost, and
`python -m unittest discover -s tests` runs the code the agents wrote.
"""

_GITIGNORE = "__pycache__/\n.bmad-trio/\n"


def demo_files(python: str | None = None) -> dict[str, str]:
    """Every file of the scaffold: POSIX path relative to the project root → text.

    ``python`` is the gates' interpreter (default: :func:`gate_python`).
    """
    return {
        "pyproject.toml": _pyproject(python or gate_python()),
        "README.md": _README,
        ".gitignore": _GITIGNORE,
        DEMO_SCENARIO: _SCENARIO,
        f"{DEMO_PACKAGE}/__init__.py": _INIT,
        "tests/test_sample_app.py": _START_TEST,
        DEMO_EPIC: _EPIC,
        "docs/stories/.gitkeep": "",
        "docs/qa/gates/.gitkeep": "",
    }


@attrs.frozen(kw_only=True)
class DemoProject:
    """A scaffolded demo project (paths absolute)."""

    root: Path
    epic_path: Path
    story_ids: tuple[str, ...] = DEMO_STORY_IDS
    package: str = DEMO_PACKAGE
    """The package the stories add modules to, relative to ``root`` (the prompts' ``package``)."""
    scenario_path: Path
    """The scripted model's scenario file (the built-in BMAD actor)."""
    fail_first_review: tuple[str, ...] = DEMO_FAIL_FIRST_REVIEW
    """Stories whose first QA review the scripted model fails (matches ``scenario_path``)."""

    def instructions(self) -> str:
        """What to run next, as text for the terminal (paths shell-quoted)."""
        root = shlex.quote(str(self.root))
        epic = shlex.quote(str(self.epic_path))
        scenario = shlex.quote(str(self.scenario_path))
        stories = ", ".join(self.story_ids)
        return "\n".join(
            [
                f"Sample project ready in {self.root}",
                f"  epic: {self.epic_path.relative_to(self.root).as_posix()} (stories {stories})",
                "",
                "Run it offline (scripted model, real Claude Code CLI, no API key):",
                f"  bmad-trio demo {root}",
                "",
                "Or step by step, in two terminals:",
                f"  bmad-trio fake-api --port {FAKE_API_PORT} --scenario {scenario}",
                f"  ANTHROPIC_BASE_URL=http://127.0.0.1:{FAKE_API_PORT} ANTHROPIC_API_KEY=offline \\",
                f"    bmad-trio run {epic} --project {root}",
                "",
                "Against the real Anthropic API (spends money; uses your ANTHROPIC_API_KEY):",
                f"  bmad-trio run {epic} --project {root} --budget-usd 2",
                "",
                f"Then: bmad-trio status --project {root}",
            ]
        )

    def summary(self, run_id: str | None = None) -> str:
        """:func:`where_to_look` as one block of text."""
        return "\n".join(where_to_look(self, run_id))


def _relative_files(root: Path, directory: str, pattern: str) -> list[str]:
    base = root / directory
    if not base.is_dir():
        return []
    return sorted(
        p.relative_to(root).as_posix()
        for p in base.glob(pattern)
        if p.is_file() and not p.is_symlink()
    )


def _latest_run(root: Path) -> str | None:
    runs = state_dir(root) / "runs"
    try:
        candidates = [p for p in runs.iterdir() if p.is_dir()]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name)).name


def where_to_look(project: DemoProject, run_id: str | None = None) -> list[str]:
    """Lines telling where a demo run left its results, paths relative to ``project.root``.

    Stories written, code and tests the agents wrote (files not in the scaffold, or changed since),
    QA gate files, the quality gates, and the run's transcripts (``run_id``, default: the latest run).
    """
    root = project.root
    scaffold = _read_marker(root) or {}

    def written(path: str) -> bool:
        return _sha256(root / path) not in scaffold.get(path, ())

    stories = _relative_files(root, "docs/stories", "*.md")
    code = [p for p in _relative_files(root, project.package, "*.py") if written(p)]
    tests = [p for p in _relative_files(root, "tests", "*.py") if written(p)]
    gates = _relative_files(root, "docs/qa/gates", "*.y*ml")
    quality = ", ".join(f"{name} ({shlex.join(argv)})" for name, argv in _gates("python"))
    run = run_id if run_id is not None else _latest_run(root)
    if run is not None:
        transcripts = run_dir(root, run).relative_to(root) / "transcripts"
        where = f"{transcripts.as_posix()}/"
    else:
        where = f"{STATE_DIR_NAME}/runs/<run_id>/transcripts/ (no run yet)"

    def listing(paths: list[str]) -> str:
        return ", ".join(paths) if paths else "(none yet)"

    return [
        f"In {root}:",
        f"  stories (SM drafts, Dev and QA update): {listing(stories)}",
        f"  code (Dev): {listing(code)}",
        f"  tests (Dev): {listing(tests)}",
        f"  QA gate files: {listing(gates)}",
        f"  quality gates (pyproject.toml [tool.bmad-trio]): {quality}",
        f"  agent transcripts: {where}",
    ]


# --- scaffolding ----------------------------------------------------------------------------------


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    try:
        return _sha256_bytes(path.read_bytes())
    except OSError:
        return ""


def _read_marker(root: Path) -> dict[str, tuple[str, ...]] | None:
    """The marker's ``files`` (path → accepted hashes); None if absent or not a valid marker."""
    try:
        data: object = json.loads((root / DEMO_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    table = cast(dict[str, object], data)
    files = table.get("files")
    if table.get("bmad_trio_demo") != _MARKER_SCHEMA or not isinstance(files, dict):
        return None
    result: dict[str, tuple[str, ...]] = {}
    for path, hashes in cast(dict[str, object], files).items():
        if not isinstance(hashes, list):
            return None
        items = cast(list[object], hashes)
        result[path] = tuple(h for h in items if isinstance(h, str))
    return result


def _marker_text(files: Mapping[str, tuple[str, ...]]) -> str:
    data = {
        "bmad_trio_demo": _MARKER_SCHEMA,
        "about": "written by `bmad-trio demo`; lists the files it wrote and their SHA-256",
        "files": {path: list(hashes) for path, hashes in sorted(files.items())},
    }
    return json.dumps(data, indent=2) + "\n"


def _entries(root: Path) -> Iterator[tuple[str, Path, bool]]:
    """(relative POSIX path, path, is a plain file) of everything under ``root``, skipping
    ``__pycache__``; symlinks and special files come out with ``False``."""
    for current, dirs, files in os.walk(root):
        here = Path(current)
        kept: list[str] = []
        for name in sorted(dirs):
            path = here / name
            if path.is_symlink():
                yield path.relative_to(root).as_posix(), path, False
            elif name not in _DERIVED_DIRS:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path = here / name
            plain = path.is_file() and not path.is_symlink()
            yield path.relative_to(root).as_posix(), path, plain


def _previous_scaffold(root: Path) -> dict[str, tuple[str, ...]]:
    """The recorded files of an untouched earlier scaffold in ``root`` ({} if ``root`` is empty).

    Raises ConfigError (naming the directory and the first foreign entry) for anything else.
    """
    if not any(root.iterdir()):
        return {}
    marker = _read_marker(root)
    if marker is None:
        raise ConfigError(
            f"{root}: directory is not empty and is not a bmad-trio demo; "
            "choose a new or empty directory"
        )
    found: dict[str, tuple[str, ...]] = {}
    for relative, path, plain in _entries(root):
        if relative == DEMO_MARKER:
            continue
        accepted = marker.get(relative)
        if not plain or accepted is None:
            raise ConfigError(
                f"{root}: directory holds {relative}, which the demo did not write; "
                "choose a new or empty directory"
            )
        digest = _sha256(path)
        if digest not in accepted:
            raise ConfigError(
                f"{root}: {relative} was changed since the demo wrote it; "
                "choose a new or empty directory"
            )
        found[relative] = (digest,)
    return found


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def _commit_scaffold(root: Path) -> None:
    """Make the sample project a git repository whose first commit holds it (``run`` needs one),
    or commit a rewritten scaffold in the repository an earlier scaffold made."""
    import subprocess

    identity = ("-c", "user.name=bmad-trio demo", "-c", "user.email=demo@bmad-trio.invalid")

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        return subprocess.run(
            ["git", *identity, *args], cwd=root, capture_output=True, text=True, env=env
        )

    try:
        if not (root / ".git").exists():
            done = git("init", "-q")
            if done.returncode != 0:
                raise ConfigError(f"{root}: git init failed: {done.stderr.strip()}")
        git("add", "-A")
        staged = git("diff", "--cached", "--quiet")
        if staged.returncode != 0:
            done = git("commit", "-q", "--no-verify", "-m", "bmad-trio demo: the sample project")
            if done.returncode != 0:
                raise ConfigError(f"{root}: git commit failed: {done.stderr.strip()}")
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed: the demo's sample project is a git repository (install git)"
        ) from None


def scaffold_demo(directory: Path) -> DemoProject:
    """Write the demo's sample project into ``directory`` (created if missing) and describe it.

    Refuses (ConfigError, nothing written) a directory that exists and is not empty, unless it is
    an untouched earlier scaffold, which is then written again. Every file is written atomically.
    """
    root = Path(directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: exists and is not a directory; choose a new or empty directory")
    try:
        previous = _previous_scaffold(root) if root.is_dir() else {}
        files = demo_files()
        digests = {path: _sha256_bytes(text.encode("utf-8")) for path, text in files.items()}
        final = dict(previous) | {path: (digest,) for path, digest in digests.items()}
        # While writing, the marker accepts both the old and the new content of every file, so an
        # interrupted scaffold is still "untouched" and can be run again.
        during = {
            path: tuple(dict.fromkeys((*previous.get(path, ()), *final[path]))) for path in final
        }
        root.mkdir(parents=True, exist_ok=True)
        _write(root / DEMO_MARKER, _marker_text(during))
        for path, text in files.items():
            _write(root / path, text)
        _write(root / DEMO_MARKER, _marker_text(final))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{root}: cannot write the demo project: {reason}") from None
    _commit_scaffold(root)
    return DemoProject(
        root=root,
        epic_path=root / DEMO_EPIC,
        scenario_path=root / DEMO_SCENARIO,
    )
