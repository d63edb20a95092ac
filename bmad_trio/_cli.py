"""The ``bmad-trio`` command line. The only module that touches signals, stdout and ``anyio.run``.

Heavy imports (the SDK, Rich, httpx, trio) happen inside the command functions, so ``--help`` and
``--version`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PREFLIGHT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_DESCRIPTION = """\
Drive a BMAD epic through Claude Code: SM drafts each story, Dev implements it, QA reviews it,
code decides every transition from what is on disk, then quality gates run.

Exit codes: 0 all done, 1 a story or gate failed, 2 bad usage/input/config,
3 preflight failed, 130 interrupted (resume continues)."""


def _add_project(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project", type=Path, default=None, metavar="DIR", help="project root (default: .)"
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run options (also settable in config)")
    group.add_argument("--max-cycles", type=int, metavar="N", help="Dev/QA cycles per story (10)")
    group.add_argument("--model", metavar="M", help="model for every session")
    group.add_argument("--budget-usd", type=float, metavar="X", help="cap on the whole run's cost")
    group.add_argument(
        "--story",
        action="append",
        dest="stories",
        metavar="ID",
        help="only this story (repeatable)",
    )
    group.add_argument(
        "--skip-gates", action="store_true", default=None, help="do not run quality gates"
    )
    group.add_argument(
        "--session-timeout", type=float, metavar="SECONDS", help="limit per agent session (2700)"
    )
    group.add_argument("--jobs", type=int, metavar="N", help="stories run at once (1)")
    group.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "jsonl"),
        help="auto: rich on a terminal, plain otherwise",
    )
    group.add_argument("--backend", choices=("trio", "asyncio"), help="event loop (trio)")
    group.add_argument("--notify", metavar="URL", help="POST run events to this webhook")
    group.add_argument("--config", type=Path, metavar="FILE", help="extra config file (TOML)")
    group.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (cheap to build; imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="bmad-trio",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bmad-trio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run every story of an epic until done, then the gates")
    run.add_argument("epic", type=Path, metavar="EPIC", help="the epic file (or a PRD with epics)")
    _add_project(run)
    _add_run_options(run)

    resume = commands.add_parser("resume", help="continue an interrupted or failed run")
    resume.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the latest run")
    _add_project(resume)
    _add_run_options(resume)

    status = commands.add_parser("status", help="per-story status, phase, cycles, cost, duration")
    status.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the latest run")
    _add_project(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    plan = commands.add_parser("plan", help="dry run: what would run next; no model calls")
    plan.add_argument("epic", type=Path, metavar="EPIC")
    _add_project(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--config", type=Path, metavar="FILE", help="extra config file (TOML)")

    demo = commands.add_parser(
        "demo", help="offline demo: sample project, scripted model, real CLI"
    )
    demo.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="default: a temp dir")
    demo.add_argument("--no-run", action="store_true", help="only scaffold the sample project")
    _add_run_options(demo)

    doctor = commands.add_parser("doctor", help="preflight checks with fix hints")
    _add_project(doctor)

    fake = commands.add_parser("fake-api", help="run the scripted model server standalone")
    fake.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    fake.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    fake.add_argument("--scenario", type=Path, metavar="FILE", help="TOML or JSON scenario")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    print(f"bmad-trio: '{args.command}' is not available yet", file=sys.stderr)
    return EXIT_USAGE
