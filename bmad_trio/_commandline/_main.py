"""The ``bmad-trio`` command line. The only module that touches signals, stdout and ``anyio.run``.

Heavy imports (the SDK, Rich, httpx, trio) happen inside the command functions, so ``--help`` and
``--version`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import AsyncIterable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PREFLIGHT, EXIT_USAGE
from .._version import __version__

if TYPE_CHECKING:
    import anyio
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from rich.console import Console

    from .._agents._runner import AgentRunner
    from .._config import RunConfig
    from .._events import Event
    from .._workflow._run import Run, RunReport
    from ..testing import FakeAnthropicAPI

__all__ = ["build_parser", "main"]


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
    group.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="stories run at once (default: up to 4 that can run at once)",
    )
    group.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "jsonl"),
        help="auto: rich on a terminal, plain otherwise",
    )
    group.add_argument("--backend", choices=("trio", "asyncio"), help="event loop (trio)")
    group.add_argument("--notify", metavar="URL", help="POST run events to this webhook")
    group.add_argument(
        "--allow-dirty",
        action="store_true",
        default=None,
        help="start although the checkout has uncommitted changes (they are not part of the run)",
    )
    group.add_argument(
        "--finish",
        choices=("merge", "branch", "push"),
        help="at the end: merge (fast-forward your branch), branch (leave it), push (to remote)",
    )
    group.add_argument(
        "--sandbox",
        choices=("auto", "required", "off"),
        help="agents' OS sandbox for shell commands (auto: where the platform has it)",
    )
    group.add_argument(
        "--engine",
        choices=("local", "dbos"),
        help="where story cycles run: local (here) or dbos (on `bmad-trio worker`s)",
    )
    group.add_argument("--database", metavar="URL", help="the engine's database (postgresql://…)")
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
    run.add_argument(
        "epic", type=Path, metavar="EPIC", help="the epic file (or a PRD with epics), or its number"
    )
    _add_project(run)
    _add_run_options(run)

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted or failed run",
        description="Continue an interrupted or failed run with the settings it was started with; "
        "only the options given here (and a --config file given here) override them.",
    )
    resume.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the latest run")
    _add_project(resume)
    _add_run_options(resume)

    status = commands.add_parser("status", help="per-story status, phase, cycles, cost, duration")
    status.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the latest run")
    _add_project(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    plan = commands.add_parser("plan", help="dry run: what would run next; no model calls")
    plan.add_argument(
        "epic", type=Path, metavar="EPIC", help="the epic file (or a PRD with epics), or its number"
    )
    _add_project(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--config", type=Path, metavar="FILE", help="extra config file (TOML)")

    demo = commands.add_parser(
        "demo", help="offline demo: sample project, scripted model, real CLI"
    )
    demo.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="default: a temp dir")
    demo.add_argument("--no-run", action="store_true", help="only scaffold the sample project")
    _add_run_options(demo)

    clean = commands.add_parser(
        "clean",
        help="remove the worktrees and branches of merged stories; say what is kept and why",
    )
    _add_project(clean)

    doctor = commands.add_parser("doctor", help="preflight checks with fix hints")
    _add_project(doctor)

    worker = commands.add_parser(
        "worker",
        help="take story cycles from the engine's queue and run them (engine = dbos)",
        description="Serve story cycles of `run --engine dbos` runs until Ctrl-C: each in this "
        "worker's own clone of --repo, each phase pushed to the story's branch there.",
    )
    worker.add_argument("--database", required=True, metavar="URL", help="the engine's database")
    worker.add_argument("--repo", required=True, metavar="URL", help="the shared repository")
    worker.add_argument("--jobs", type=int, default=2, metavar="N", help="cycles at once (2)")
    worker.add_argument(
        "--dir", type=Path, metavar="DIR", help="the worker's folder (./bmad-trio-worker)"
    )
    worker.add_argument("--name", metavar="NAME", help="this worker's id (host-pid-random)")
    worker.add_argument(
        "--dead-after",
        type=float,
        default=10.0,
        metavar="S",
        help="a worker silent this long is dead; its stories go to the others (10)",
    )
    worker.add_argument("--backend", choices=("trio", "asyncio"), help="event loop (trio)")
    worker.add_argument("--debug", action="store_true", help="show tracebacks")

    fake = commands.add_parser("fake-api", help="run the scripted model server standalone")
    fake.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    fake.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    fake.add_argument("--scenario", type=Path, metavar="FILE", help="TOML or JSON scenario")
    return parser


_WINDOWS_MESSAGE = (
    "bmad-trio: native Windows is not supported (it runs on Linux and macOS); run it in WSL"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    if sys.platform == "win32":  # process containment needs POSIX sessions and signals
        print(_WINDOWS_MESSAGE, file=sys.stderr)
        return EXIT_PREFLIGHT
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    import logging

    from .._errors import collapse, exit_code_for

    if not debug:  # the SDK logs warnings about tasks we cancel on purpose; they belong in run.log
        logging.getLogger("claude_agent_sdk").addHandler(logging.NullHandler())
        logging.getLogger("claude_agent_sdk").propagate = False
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `bmad-trio status --json | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        return EXIT_OK
    except BaseException as exc:
        error = collapse(exc)  # a group of BmadErrors: the most severe one
        code = exit_code_for(error)  # the error tree's one table of exit codes
        if isinstance(error, KeyboardInterrupt):
            print("bmad-trio: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED if code is None else code
        if code is None or debug:  # not one of ours: a bug, shown with its traceback
            raise
        print(f"bmad-trio: error: {error}", file=sys.stderr)
        return code


# -- shared helpers ------------------------------------------------------------------------------


def _project(args: argparse.Namespace) -> Path:
    project: Path | None = getattr(args, "project", None)
    return (project or Path.cwd()).resolve()


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """Command-line run options that were given (flags win over config files)."""
    names = (
        "max_cycles",
        "model",
        "budget_usd",
        "skip_gates",
        "session_timeout",
        "jobs",
        "progress",
        "backend",
        "notify",
        "allow_dirty",
        "finish",
        "sandbox",
        "engine",
        "database",
    )
    values: dict[str, object] = {n: getattr(args, n, None) for n in names}
    stories = getattr(args, "stories", None)
    if stories:
        values["stories"] = tuple(stories)
    return values


def _load(args: argparse.Namespace, **extra: object) -> RunConfig:
    from .._config import load_config

    return load_config(
        _project(args),
        config_file=getattr(args, "config", None),
        overrides={**_overrides(args), **extra},
    )


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _preflight(config: RunConfig, env: dict[str, str]) -> None:
    """The cheap part of ``doctor`` (containment path known, CLI present, auth configured) before
    anything is spent. A bad ``BMAD_TRIO_CONTAINMENT`` is a ConfigError (exit 2)."""
    from .._agents._cli_processes import containment_mode
    from .._errors import PreflightError
    from ._doctor import check_auth, find_cli

    containment_mode(env)
    cli, detail = find_cli(env, config.cli_path)
    if cli is None:
        raise PreflightError(f"Claude Code CLI not found: {detail} (run `bmad-trio doctor`)")
    auth = check_auth(env)
    if not auth.ok and auth.fatal:
        raise PreflightError(f"{auth.detail} ({auth.hint})")
    if config.sandbox == "required":
        from .._agents._sandbox import probe_sandbox, run_sandbox

        run_sandbox("required", probe_sandbox())  # PreflightError, naming what to install


# -- run / resume / demo -------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from .._workflow._prepare import prepare_run

    config = _load(args, epic=args.epic)
    prepare_run(config)  # bad input is exit 2 before the preflight's exit 3
    if config.workspace == "worktrees":  # so is a repository run cannot start from
        import functools

        import anyio

        from .._git import check_repository

        anyio.run(
            functools.partial(check_repository, config.project, allow_dirty=config.allow_dirty)
        )
    env = dict(os.environ)
    _preflight(config, env)
    return _run_with_progress(config, resume=False, debug=args.debug)


def _cmd_resume(args: argparse.Namespace) -> int:
    config, overrides = resume_settings(args)
    _preflight(config, dict(os.environ))
    return _run_with_progress(
        config, resume=args.run_id or True, debug=args.debug, resume_overrides=overrides
    )


def resume_settings(args: argparse.Namespace) -> tuple[RunConfig, frozenset[str]]:
    """What ``resume`` runs with: the stored run's settings, overridden by the flags given (and
    the keys of a ``--config`` file given to ``resume``), never by the project's config files.

    Returns that config and the overridden keys (for :func:`open_run`'s ``resume_overrides``).
    With no run stored, the config is the flags alone (the run then reports "no run to resume").
    """
    import attrs

    from .._config import RunConfig, load_explicit, resumed_config
    from .._errors import ConfigError

    project = _project(args)
    given = load_explicit(
        project, config_file=getattr(args, "config", None), overrides=_overrides(args)
    )
    try:
        explicit = RunConfig(project=project, **given)  # pyright: ignore[reportArgumentType]
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    overrides = frozenset(given)
    stored = _stored_config(project, args.run_id)
    if stored is None:
        return explicit, overrides
    config, _ = resumed_config(attrs.evolve(stored, project=project), explicit, overrides)
    return config, overrides


def _stored_config(project: Path, run_id: str | None) -> RunConfig | None:
    """The settings run ``run_id`` (default: the latest) was started with; None if none is stored.

    Reads the store without creating it (a project with no runs gets no ``.bmad-trio``)."""
    import anyio

    from .._state._paths import state_db_path
    from .._state._store import open_store
    from .._workflow._prepare import config_from_json

    if not state_db_path(project).is_file():
        return None

    async def read() -> str | None:
        async with open_store(project) as store:
            wanted = run_id or await store.latest_run_id()
            return None if wanted is None else (await store.get_run(wanted)).config_json

    text = anyio.run(read)
    return None if text is None else config_from_json(text)


def _run_with_progress(
    config: RunConfig,
    *,
    resume: str | bool,
    debug: bool,
    before: Callable[[], AbstractAsyncContextManager[dict[str, str]]] | None = None,
    after: Callable[[RunReport, str], None] | None = None,
    resume_overrides: frozenset[str] | None = None,
) -> int:
    """Run (or resume) with live progress; Ctrl-C once cancels cleanly (130), twice exits at once.

    ``before`` makes a context manager whose value is extra runner environment (the demo's
    scripted server); ``after`` gets the report and the progress mode.
    """
    import anyio

    mode = config.progress
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"

    async def main() -> int:
        from .._agents._claude_runner import ClaudeAgentRunner

        run_scope = anyio.CancelScope()
        reports: list[RunReport] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, run_scope)
            async with (
                _maybe(before() if before else None) as env,
                ClaudeAgentRunner(cli_path=config.cli_path, env=env) as runner,
            ):
                reports.append(
                    await _drive(config, runner, resume, mode, run_scope, resume_overrides)
                )
            tg.cancel_scope.cancel(reason="the run has ended: stop watching signals")
        if after is not None:
            after(reports[0], mode)
        return reports[0].exit_code

    try:
        return anyio.run(main, backend=config.backend)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


class _maybe:
    """``async with`` an optional context manager that yields extra environment variables."""

    def __init__(self, inner: AbstractAsyncContextManager[dict[str, str]] | None) -> None:
        self._inner = inner

    async def __aenter__(self) -> dict[str, str]:
        return await self._inner.__aenter__() if self._inner is not None else {}

    async def __aexit__(self, *exc_info: object) -> bool | None:
        if self._inner is not None:
            return await self._inner.__aexit__(*exc_info)  # pyright: ignore[reportArgumentType]
        return None


async def _watch_signals(run_scope: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: cancel the run (state is saved). Second: exit at once."""
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            if count == 1:
                print(
                    "bmad-trio: interrupting (state is saved; Ctrl-C again to quit now)",
                    file=sys.stderr,
                )
                run_scope.cancel(reason="SIGINT or SIGTERM: interrupting the run")
            else:
                os._exit(EXIT_INTERRUPTED)


async def _drive(
    config: RunConfig,
    runner: AgentRunner,
    resume: str | bool,
    mode: str,
    run_scope: anyio.CancelScope,
    resume_overrides: frozenset[str] | None = None,
) -> RunReport:
    """Run inside ``run_scope`` while sibling tasks show progress and notify.

    Cancelling ``run_scope`` stops only the run: its final events (RunFinished "interrupted") still
    reach the display, which then prints its summary.
    """
    import anyio

    from .._events import Event
    from .._workflow._run import open_run

    run: Run | None = None
    async with anyio.create_task_group() as tg:
        sinks: list[MemoryObjectSendStream[Event]] = []
        progress_send, progress_receive = anyio.create_memory_object_stream[Event](512)
        sinks.append(progress_send)
        tg.start_soon(_show_progress, mode, config, progress_receive)
        if config.notify:
            from ._notify import Notifier

            notifier = Notifier(config.notify)
            notify_send, notify_receive = anyio.create_memory_object_stream[Event](64)
            sinks.append(notify_send)
            tg.start_soon(notifier.run, notify_receive)
        try:
            with run_scope:
                async with open_run(
                    config, runner=runner, resume=resume, resume_overrides=resume_overrides
                ) as run:
                    tg.start_soon(_forward, run.events, sinks)
                    await run.wait()
        finally:
            if run is None:  # the run never started: nothing will close the sinks
                for sink in sinks:
                    sink.close()
    report = run.report() if run is not None else None
    if report is None:
        raise RuntimeError("the run ended without a report")
    return report


async def _forward(
    events: AsyncIterable[Event], sinks: list[MemoryObjectSendStream[Event]]
) -> None:
    """Copy every event to each sink until the run's stream ends, then close the sinks."""
    try:
        async for event in events:
            for sink in sinks:
                await sink.send(event)
    finally:
        for sink in sinks:
            sink.close()


async def _show_progress(
    mode: str, config: RunConfig, events: MemoryObjectReceiveStream[Event]
) -> None:
    from ._progress import JsonlProgress, PlainProgress, RichProgress

    if mode == "rich":
        await RichProgress(_console(), max_cycles=config.max_cycles).run(events)
    elif mode == "jsonl":
        await JsonlProgress(sys.stdout.write, flush=sys.stdout.flush).run(events)
    else:
        await PlainProgress(
            sys.stdout.write, flush=sys.stdout.flush, max_cycles=config.max_cycles
        ).run(events)


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from ._demo import scaffold_demo, where_to_look

    directory = args.dir.resolve() if args.dir else Path(tempfile.mkdtemp(prefix="bmad-trio-demo-"))
    demo = scaffold_demo(directory)
    out = sys.stdout
    if args.no_run:
        print(f"Scaffolded the demo project in {demo.root}\n", file=out)
        print(demo.instructions(), file=out)
        return EXIT_OK
    extra = {"epic": demo.epic_path}
    project_args = argparse.Namespace(**{**vars(args), "project": demo.root})
    config = _load(project_args, **extra)
    banner_out = sys.stderr if config.progress == "jsonl" else sys.stdout
    print(
        f"bmad-trio demo: sample project in {demo.root} (scripted model, real Claude Code CLI)",
        file=banner_out,
    )

    def start_server() -> AbstractAsyncContextManager[dict[str, str]]:
        from ..testing import FakeAnthropicAPI, bmad_actor_scenario

        return _ServerEnv(FakeAnthropicAPI(bmad_actor_scenario(set(demo.fail_first_review))))

    def show(report: RunReport, mode: str) -> None:
        out = sys.stderr if mode == "jsonl" else sys.stdout  # keep jsonl output pure JSON
        print(
            f"\nDemo run {report.run_id}: {report.status}, ${report.cost_usd:.4f} (scripted)",
            file=out,
        )
        print("Where to look:", file=out)
        for line in where_to_look(demo, report.run_id):
            print(f"  {line}", file=out)

    return _run_with_progress(
        config, resume=False, debug=args.debug, before=start_server, after=show
    )


class _ServerEnv:
    """Runs the scripted model server for the demo; yields the env that points the CLI at it."""

    def __init__(self, api: FakeAnthropicAPI) -> None:
        self._api = api

    async def __aenter__(self) -> dict[str, str]:
        await self._api.__aenter__()
        return self._api.env()

    async def __aexit__(self, *exc_info: object) -> bool | None:
        return await self._api.__aexit__(*exc_info)  # pyright: ignore[reportArgumentType]


# -- status / plan -------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    import anyio

    project = _project(args)

    async def collect() -> dict[str, Any]:
        from .._errors import StateError
        from .._state._paths import state_db_path
        from .._state._store import open_store

        if not state_db_path(project).is_file():
            raise StateError(f"{project}: no bmad-trio runs here yet")
        async with open_store(project) as store:
            run_id = args.run_id or await store.latest_run_id()
            if run_id is None:
                raise StateError(f"{project}: no bmad-trio runs here yet")
            run = await store.get_run(run_id)
            stories = await store.stories(run_id)
            sessions = await store.sessions(run_id)
        git = git_record(project, run.run_id)
        per_story = git.get("stories", {})
        return {
            "run_id": run.run_id,
            "epic": run.epic,
            "status": run.status,
            "failure_reason": run.failure_reason,
            "branch": git.get("branch"),
            "start_commit": git.get("start_commit"),
            "cost_usd": round(sum(s.cost_usd for s in sessions), 6),
            "sessions": len(sessions),
            "duration_s": round(sum(s.duration_s for s in stories), 3),
            "stories": [
                {
                    "story_id": s.story_id,
                    "title": s.title,
                    "status": s.status,
                    "phase": s.phase,
                    "cycles": s.cycles,
                    "cost_usd": round(s.cost_usd, 6),
                    "duration_s": round(s.duration_s, 3),
                    "failure_reason": s.failure_reason,
                    "branch": per_story.get(s.story_id, {}).get("branch"),
                    "worktree": per_story.get(s.story_id, {}).get("worktree"),
                    "merged_commit": per_story.get(s.story_id, {}).get("merged_commit") or None,
                }
                for s in stories
            ],
        }

    data = anyio.run(collect)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"run {data['run_id']}: {data['status']}", title_justify="left")
    for column in ("story", "status", "phase", "cycles", "cost", "time", "reason"):
        table.add_column(
            column, justify="right" if column in ("cycles", "cost", "time") else "left"
        )
    for story in data["stories"]:
        table.add_row(
            story["story_id"],
            story["status"],
            story["phase"] or "",
            str(story["cycles"]),
            f"${story['cost_usd']:.4f}",
            f"{story['duration_s']:.1f}s",
            story["failure_reason"] or "",
        )
    console = _console()
    console.print(table)
    console.print(
        f"total ${data['cost_usd']:.4f} over {data['sessions']} sessions"
        + (f"; {data['failure_reason']}" if data["failure_reason"] else "")
    )
    if data["branch"]:
        console.print(f"run branch: {data['branch']}", markup=False, highlight=False)
    for story in data["stories"]:
        if story["worktree"] and Path(story["worktree"]).exists():
            state = "merged" if story["merged_commit"] else "not merged"
            console.print(
                f"kept: {story['worktree']} (branch {story['branch']}, {state})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return EXIT_OK


def git_record(project: Path, run_id: str) -> dict[str, Any]:
    """A run's git record (branches, worktrees, merged commits) as JSON data; {} for a checkout run."""
    import attrs

    from .._state._paths import run_dir
    from .._workflow._workspace import read_record

    record = read_record(run_dir(project, run_id))
    return {} if record is None else attrs.asdict(record)


def _cmd_plan(args: argparse.Namespace) -> int:
    from ._plan import make_plan

    config = _load(args, epic=args.epic)
    plan = make_plan(config)
    if args.json:
        print(json.dumps(plan, indent=2))
        return EXIT_OK
    from rich.table import Table

    several = len(plan["epics"]) > 1
    title = f"plan for {plan['epic']} ({plan['layout']} layout)"
    if several:
        title += f": epics {', '.join(str(n) for n in plan['epics'])} (run takes one number)"
    table = Table(title=title, title_justify="left")
    for column in ("story", "title", "file", "status", "depends on", "next"):
        table.add_column(column, overflow="fold")
    for story in plan["stories"]:
        file = story["file"] or "-"
        if story["file_reason"]:
            file += f" ({story['file_reason']})"
        table.add_row(
            story["story_id"],
            story["title"],
            file,
            story["status"] or ("?" if story["problem"] else "-"),
            ", ".join(story["dependencies"]) or "-",
            story["next"] + (f"\n{story['problem']}" if story["problem"] else ""),
        )
    console = _console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # A pipe or CI log has no width: print every path whole rather than fold it at 80.
        console.width = 100_000
        console.width = max(80, console.measure(table).maximum)
    console.print(table)
    if plan["gates"]:
        console.print("quality gates:", markup=False)
        for gate in plan["gates"]:
            line = f"  {gate['name']}: {shlex.join(gate['command'])}  ({gate['source']})"
            console.print(line, markup=False, highlight=False)
    else:
        skipped = " (--skip-gates)" if config.skip_gates else " configured or detected"
        console.print("quality gates: none" + skipped, markup=False)
    for note in plan["notes"]:
        console.print(f"note: {note}", soft_wrap=True)
    return EXIT_OK


def _cmd_clean(args: argparse.Namespace) -> int:
    import anyio

    from .._workflow._workspace import clean_worktrees

    project = _project(args)
    lines = anyio.run(clean_worktrees, project)
    for line in lines or ["nothing to clean: no worktrees of bmad-trio runs here"]:
        print(line)
    return EXIT_OK


# -- doctor / fake-api ---------------------------------------------------------------------------


def _cmd_doctor(args: argparse.Namespace) -> int:
    import anyio

    from .._config import load_config
    from .._workflow._quality_gate_detection import effective_quality_gates
    from ._doctor import checks_table, preflight_failed, run_checks

    project = _project(args)
    config = load_config(project)
    gates = effective_quality_gates(config)

    async def check() -> list[Any]:
        return await run_checks(
            project,
            env=dict(os.environ),
            cli_path=config.cli_path,
            gates=gates,
            sandbox=config.sandbox,
        )

    results = anyio.run(check)
    _console().print(checks_table(results))
    return EXIT_PREFLIGHT if preflight_failed(results) else EXIT_OK


def _cmd_worker(args: argparse.Namespace) -> int:
    import functools
    import importlib.util
    import logging

    import anyio

    from .._errors import ConfigError

    if importlib.util.find_spec("dbos") is None:
        raise ConfigError(
            "`worker` needs the distributed extra: pip install 'bmad-trio[distributed]'"
        )
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be > 0, got {args.jobs}")
    if args.dead_after <= 0:
        raise ConfigError(f"--dead-after must be > 0, got {args.dead_after}")
    from .._distributed import WorkerSettings, serve_worker

    settings = WorkerSettings(
        database=args.database,
        repo=args.repo,
        workdir=(args.dir or Path.cwd() / "bmad-trio-worker").resolve(),
        jobs=args.jobs,
        name=args.name,
        dead_after_s=args.dead_after,
        heartbeat_s=min(2.0, args.dead_after / 4),
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("bmad_trio")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, tg.cancel_scope)
            name = await tg.start(functools.partial(serve_worker, settings))
            print(f"bmad-trio worker {name}: serving (Ctrl-C stops it)", file=sys.stderr)
            sys.stderr.flush()

    try:
        anyio.run(serve, backend=args.backend or "trio")
    finally:
        logger.removeHandler(handler)
    return EXIT_INTERRUPTED


def _cmd_fake_api(args: argparse.Namespace) -> int:
    import anyio

    from ..testing import bmad_actor_scenario, load_scenario, serve_fake_api

    scenario = load_scenario(args.scenario) if args.scenario else bmad_actor_scenario()

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, tg.cancel_scope)
            api = await tg.start(serve_fake_api, args.host, args.port, scenario)
            print(f"scripted Anthropic API on {api.url} (Ctrl-C stops it)")
            for key, value in api.env().items():
                print(f"export {key}={value}")
            sys.stdout.flush()

    with suppress(KeyboardInterrupt):
        anyio.run(serve)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "resume": _cmd_resume,
    "status": _cmd_status,
    "clean": _cmd_clean,
    "plan": _cmd_plan,
    "demo": _cmd_demo,
    "doctor": _cmd_doctor,
    "worker": _cmd_worker,
    "fake-api": _cmd_fake_api,
}
