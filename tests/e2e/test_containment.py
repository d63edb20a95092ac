"""Process containment with the real CLI: prompt kills however a session ends, tools that escape
the session's tag and process group, stale temp dirs, and no /proc scan on the event loop.

Times are measured from the stop (cancel, signal) until no process of the session is left. The
SDK's graceful close waits 5 s for a CLI that is still running before it sends SIGTERM; a stop that
waits for it is the defect these tests catch, so they allow ``_PROMPT_S`` (well under 5 s, far above
the ~0.05 s a kill takes) and otherwise wait on state with generous bounds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from bmad_trio import Outcome, Role, SessionSpec
from bmad_trio._agents import _cli_processes as layer
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio._agents._cli_processes import CLIProcesses, orchestrator_pids
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_leftover_cli")]

PY = sys.executable
_PROMPT_S = 4.0
"""Below the SDK's 5 s graceful close: a stop that waits for it fails."""


# Tools are found by their command line, machine-wide: this run's own digits keep two test runs
# at once (two `nox` on one machine) from seeing, or reaping, each other's tools.
_RUN = f"{os.getpid() % 10**6:06d}"


def _long_tool(marker: Path, seconds: str) -> str:
    """A Bash command that creates ``marker`` and then sleeps (its cmdline names ``seconds``)."""
    return f'{PY} -c \'import time; open("{marker}", "w").close(); time.sleep({seconds})\''


def _escaping_tool(seconds: str) -> str:
    """Starts a process without our environment (no tag), in a session of its own, orphaned.

    On the portable path it keeps its environment (its tag): there a tool that drops its tag,
    leaves its session and orphans itself at once is out of reach (docs/architecture.md).
    """
    drop_tag = "" if layer.containment_mode() == layer.PORTABLE else "env -i "
    return f"{drop_tag}setsid {PY} -c 'import time; time.sleep({seconds})' </dev/null >/dev/null 2>&1 &"


def _orphan_tool(seconds: str) -> str:
    """Starts a process without our environment (no tag) and orphans it at once; it stays in the
    POSIX session it was started in."""
    return f"env -i sh -c '{PY} -c \"import time; time.sleep({seconds})\" </dev/null >/dev/null 2>&1 &'"


def _with_cmdline(needle: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line contains ``needle``."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if needle in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def reap_stragglers() -> Iterator[list[str]]:
    """Markers (cmdline snippets) of test tools; any still running afterwards is killed."""
    markers: list[str] = []
    yield markers
    for marker in markers:
        for proc in _with_cmdline(marker):
            proc.kill()


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _spec(project: Path, prompt: str, **overrides: object) -> SessionSpec:
    fields: dict[str, object] = {
        "role": Role.DEV,
        "prompt": prompt,
        "cwd": project,
        "allowed_tools": ("Bash",),
        "timeout_s": 60.0,
        "idle_timeout_s": 30.0,
    }
    fields.update(overrides)
    return SessionSpec(**fields)  # pyright: ignore[reportArgumentType]


def _runner(api: FakeAnthropicAPI) -> ClaudeAgentRunner:
    return ClaudeAgentRunner(env={**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0"})


def _nothing_left(pid: int, *markers: str) -> Callable[[], bool]:
    """No process tagged for orchestrator ``pid``, and none running a marked tool (the
    orchestrator's own command line may name the tool: it does not count)."""

    def check() -> bool:
        if orchestrator_pids(pid):
            return False
        return not any(p.pid != pid for m in markers for p in _with_cmdline(m))

    return check


# --- issue 13.24: tools that drop the tag and leave the process group -----------------------


@pytest.mark.anyio
async def test_a_tool_that_drops_its_tag_and_session_dies_with_the_session(
    tmp_path: Path, reap_stragglers: list[str]
) -> None:
    if layer.containment_mode() == layer.PORTABLE:
        pytest.skip(
            "the portable path's known limit: a tool that drops its tag, leaves its session and "
            "orphans itself before the session is stopped is out of reach (docs/architecture.md)"
        )
    escapee = f"time.sleep(60.24{_RUN})"
    reap_stragglers.append(escapee)
    scenario = Scenario(
        responders=[
            Rule(turn=1, reply=Reply.tools(Reply.bash(_escaping_tool(f"60.24{_RUN}")))),
            Rule(turn=2, reply=Reply.text("started it")),
        ]
    )
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "escape"))
        assert result.outcome is Outcome.OK, result.error
        # the CLI's config dir (its transcripts: prompts, tool output) is private
        config = runner._ensure_processes().directory / "config"  # pyright: ignore[reportPrivateUsage]
        assert stat.S_IMODE(config.stat().st_mode) == 0o700
        # the tool ran: its result came back to the model
        assert api.message_requests[-1].tool_results, api.message_requests[-1]
        gone = await anyio.to_thread.run_sync(_wait_for, lambda: not _with_cmdline(escapee), 10.0)
    assert gone, "a process without the session's tag, in its own session, outlived the session"


@pytest.mark.anyio
async def test_cancel_kills_a_tool_that_escaped_tag_and_session(
    tmp_path: Path, reap_stragglers: list[str]
) -> None:
    marker = tmp_path / "running"
    escapee, slow = f"time.sleep(60.25{_RUN})", f"time.sleep(60.26{_RUN})"
    orphan = f"time.sleep(60.36{_RUN})"
    reap_stragglers += [escapee, slow, orphan]
    command = f"{_escaping_tool(f'60.25{_RUN}')} {_orphan_tool(f'60.36{_RUN}')}; " + _long_tool(
        marker, f"60.26{_RUN}"
    )
    scenario = Scenario(responders=[Rule(turn=1, reply=Reply.tools(Reply.bash(command)))])
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_the_tool_runs() -> None:
                    while not marker.exists():  # noqa: ASYNC110 - another process's file
                        await anyio.sleep(0.02)
                    scope.cancel(reason="the test cancels mid-tool")

                tg.start_soon(cancel_when_the_tool_runs)
                await runner.run_session(_spec(tmp_path, "escape then work"))
        assert scope.cancelled_caught
        gone = await anyio.to_thread.run_sync(
            _wait_for, _nothing_left(os.getpid(), escapee, slow, orphan), 10.0
        )
    assert gone, "a tool outlived its cancelled session"


# --- issue 13.18: native asyncio cancellation ------------------------------------------------


async def _native_cancel(
    how: str, runner: ClaudeAgentRunner, spec: SessionSpec, marker: Path
) -> float:
    """Run a session, cancel it the plain-asyncio way ``how`` once its tool runs; the cancel time."""

    async def tool_running() -> float:
        async with asyncio.timeout(60):
            while not marker.exists():  # noqa: ASYNC110, ASYNC240 - another process's file
                await asyncio.sleep(0.02)
        return time.monotonic()

    if how == "asyncio.timeout":
        running = asyncio.ensure_future(tool_running())

        async def session_until_the_tool_runs() -> None:
            async with asyncio.timeout(None) as deadline:
                running.add_done_callback(
                    lambda _: deadline.reschedule(asyncio.get_running_loop().time())
                )
                await runner.run_session(spec)

        with pytest.raises(TimeoutError):
            await session_until_the_tool_runs()
        return running.result()
    session = asyncio.ensure_future(runner.run_session(spec))
    cancelled_at = await tool_running()
    if how == "wait_for":
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session, 0)  # times out at once: cancels the session, waits
    else:
        session.cancel(msg="the test cancels natively, mid-tool")
        with pytest.raises(asyncio.CancelledError):
            await session
    return cancelled_at


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["asyncio.timeout", "wait_for", "task.cancel"])
async def test_native_asyncio_cancel_is_as_prompt_as_anyio(
    tmp_path: Path, anyio_backend: str, how: str, reap_stragglers: list[str]
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("native asyncio cancellation exists on asyncio only")
    marker = tmp_path / "running"
    reap_stragglers.append(f"time.sleep(60.27{_RUN})")
    scenario = Scenario(
        responders=[Rule(turn=1, reply=Reply.tools(Reply.bash(_long_tool(marker, f"60.27{_RUN}"))))]
    )
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        cancelled_at = await _native_cancel(how, runner, _spec(tmp_path, "slow"), marker)
        returned_at = time.monotonic()
        gone = await anyio.to_thread.run_sync(
            _wait_for, _nothing_left(os.getpid(), f"time.sleep(60.27{_RUN})"), 10.0
        )
        gone_at = time.monotonic()
    print(
        f"\n{how}: cancel->return {returned_at - cancelled_at:.3f} s, ->gone {gone_at - cancelled_at:.3f} s"
    )
    assert gone
    assert gone_at - cancelled_at < _PROMPT_S, f"{how} took {gone_at - cancelled_at:.2f} s"


# --- issue 13.19 and the SIGKILL path: signals to an orchestrator process --------------------

_ORCHESTRATOR = """
import signal, sys, anyio
# Ctrl-C raises KeyboardInterrupt here, as in a command started from a terminal, whatever this
# process inherited: a test run started in the background (`cmd &` in a script) has SIGINT
# ignored, Python keeps an inherited SIG_IGN, and the SIGINT below would then do nothing.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from bmad_trio import Role, SessionSpec
from bmad_trio._agents._claude_runner import ClaudeAgentRunner
from bmad_trio.testing import FakeAnthropicAPI, Reply, Rule, Scenario

backend, command, cwd = sys.argv[1], sys.argv[2], Path(sys.argv[3])

async def main():
    scenario = Scenario(responders=[Rule(turn=1, reply=Reply.tools(Reply.bash(command)))])
    async with FakeAnthropicAPI(scenario) as api, ClaudeAgentRunner(env=api.env()) as runner:
        print(runner._ensure_processes().directory, flush=True)
        spec = SessionSpec(role=Role.DEV, prompt="go", cwd=cwd, allowed_tools=("Bash",))
        await runner.run_session(spec)

if backend == "trio":
    import trio
    trio.run(main)
else:
    import asyncio
    asyncio.run(main())
"""


def _start_orchestrator(
    tmp_path: Path, backend: str, command: str, containment: str | None = None
) -> subprocess.Popen[str]:
    """The orchestrator script in a process of its own, with a temp dir of its own (so no other
    runner on the machine cleans up after it before the test looks). It inherits this process's
    containment path unless ``containment`` names one."""
    script = tmp_path / "orchestrator.py"
    script.write_text(textwrap.dedent(_ORCHESTRATOR))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    chosen = {layer.CONTAINMENT_ENV: containment} if containment else {}
    return subprocess.Popen(
        [PY, str(script), backend, command, str(tmp_path)],
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), **chosen},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name
)
def test_a_signalled_orchestrator_leaves_nothing_running(
    tmp_path: Path, backend: str, sig: signal.Signals, reap_stragglers: list[str]
) -> None:
    marker = tmp_path / "running"
    escapee, slow = f"time.sleep(60.28{_RUN})", f"time.sleep(60.29{_RUN})"
    orphan = f"time.sleep(60.37{_RUN})"
    reap_stragglers += [escapee, slow, orphan]
    child = _start_orchestrator(
        tmp_path,
        backend,
        f"{_escaping_tool(f'60.28{_RUN}')} {_orphan_tool(f'60.37{_RUN}')}; "
        + _long_tool(marker, f"60.29{_RUN}"),
    )
    try:
        assert child.stdout is not None
        directory = Path(child.stdout.readline().strip())
        assert _wait_for(lambda: marker.exists() or child.poll() is not None, 60)
        assert child.poll() is None, child.communicate()
        signalled_at = time.monotonic()
        os.kill(child.pid, sig)
        gone = _wait_for(_nothing_left(child.pid, escapee, slow, orphan), 20)
        gone_at = time.monotonic()
        # A hang guard, not a timing: what is measured is ``gone`` above.
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    print(f"\n{sig.name} ({backend}): signal->gone {gone_at - signalled_at:.3f} s")
    assert gone, f"a CLI or tool survived {sig.name} to the orchestrator"
    assert gone_at - signalled_at < _PROMPT_S, f"{sig.name} took {gone_at - signalled_at:.2f} s"
    assert "Event loop is closed" not in stderr, stderr
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr or child.returncode != 0, stderr
        assert not directory.exists(), "the runner's temp dir outlived a clean interrupt"
    else:
        # killed without a chance to clean up: the dir is left, and the next runner removes it
        assert directory.parent == tmp_path / "tmp"
        assert directory.exists()
        assert layer.remove_stale_dirs(directory.parent) == [directory]


# --- the portable fallback (no subreaper, no lifeline), exercised on Linux ---------------------


@pytest.fixture
def portable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runners created in the test use the portable path of the containment layer (macOS's)."""
    monkeypatch.setenv(layer.CONTAINMENT_ENV, layer.PORTABLE)


@pytest.mark.anyio
@pytest.mark.usefixtures("portable")
async def test_portable_fallback_kills_tagged_tools_on_cancel_and_at_the_end(
    tmp_path: Path, reap_stragglers: list[str]
) -> None:
    marker = tmp_path / "running"
    background, slow = f"time.sleep(60.32{_RUN})", f"time.sleep(60.33{_RUN})"
    reap_stragglers += [background, slow]
    leave_running = (
        f"setsid {PY} -c 'import time; time.sleep(60.32{_RUN})' </dev/null >/dev/null 2>&1 &"
    )
    scenario = Scenario(
        responders=[
            Rule(prompt_contains="BG", turn=1, reply=Reply.tools(Reply.bash(leave_running))),
            Rule(
                prompt_contains="SLOW",
                turn=1,
                reply=Reply.tools(Reply.bash(_long_tool(marker, f"60.33{_RUN}"))),
            ),
        ],
        default=Reply.text("done"),
    )
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        result = await runner.run_session(_spec(tmp_path, "BG"))
        assert result.outcome is Outcome.OK, result.error
        assert await anyio.to_thread.run_sync(_wait_for, _nothing_left(os.getpid(), background), 10)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_the_tool_runs() -> None:
                    while not marker.exists():  # noqa: ASYNC110 - another process's file
                        await anyio.sleep(0.02)
                    scope.cancel(reason="the test cancels mid-tool")

                tg.start_soon(cancel_when_the_tool_runs)
                await runner.run_session(_spec(tmp_path, "SLOW"))
        assert scope.cancelled_caught
        assert await anyio.to_thread.run_sync(_wait_for, _nothing_left(os.getpid(), slow), 10)


def test_portable_fallback_dies_with_a_sigkilled_orchestrator(
    tmp_path: Path, reap_stragglers: list[str]
) -> None:
    marker = tmp_path / "running"
    reap_stragglers.append(f"time.sleep(60.34{_RUN})")
    child = _start_orchestrator(
        tmp_path, "trio", _long_tool(marker, f"60.34{_RUN}"), layer.PORTABLE
    )
    try:
        assert _wait_for(lambda: marker.exists() or child.poll() is not None, 60)
        assert child.poll() is None, child.communicate()
        signalled_at = time.monotonic()
        child.kill()
        gone = _wait_for(_nothing_left(child.pid, f"time.sleep(60.34{_RUN})"), 20)
        gone_at = time.monotonic()
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    print(f"\nSIGKILL (portable): signal->gone {gone_at - signalled_at:.3f} s")
    assert gone, "a CLI or tool survived the orchestrator (portable fallback)"


# --- issue 13.21: temp dirs ------------------------------------------------------------------


def test_temp_dirs_are_private_and_stale_ones_are_removed_live_ones_kept(tmp_path: Path) -> None:
    me = psutil.Process()
    with CLIProcesses() as live:
        assert stat.S_IMODE(live.directory.stat().st_mode) == 0o700
        env, _tag = live.session_env()
        sessions = Path(env["BMAD_TRIO_SESSIONS_DIR"])
        assert sessions.is_relative_to(live.directory)
        assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
        parent = live.directory.parent
        # the same pid with another start time: the pid was reused, the owner is dead
        reused = parent / (layer.private_dir_prefix(me.pid, me.create_time() - 100) + "reused")
        reused.mkdir(mode=0o700)
        (reused / "transcript.jsonl").write_text("secret prompt")
        with CLIProcesses() as other:
            assert live.directory.exists(), "a live runner's dir was removed"
            assert not reused.exists(), "a dead owner's dir (pid reused) was kept"
            assert other.directory != live.directory


# --- issue 13.12: no /proc scan on the event loop ----------------------------------------------


@pytest.mark.anyio
async def test_no_proc_scan_runs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reap_stragglers: list[str]
) -> None:
    """Every full listing of /proc (the scans that grow with the host's process count) made while
    sessions end, by a normal end and by a cancel, runs off the event loop's thread."""
    marker = tmp_path / "running"
    reap_stragglers.append(f"time.sleep(60.3{_RUN})")
    loop_thread = threading.get_ident()
    scans: list[bool] = []  # True: on the event loop's thread
    real_scandir, real_listdir = os.scandir, os.listdir

    def is_proc(path: object) -> bool:
        return os.fsdecode(path).rstrip("/") == "/proc" if isinstance(path, str | bytes) else False  # pyright: ignore[reportUnknownArgumentType]

    def scandir(path: object = ".") -> object:
        if is_proc(path):
            scans.append(threading.get_ident() == loop_thread)
        return real_scandir(path)  # pyright: ignore[reportArgumentType, reportCallIssue]

    def listdir(path: object = ".") -> object:
        if is_proc(path):
            scans.append(threading.get_ident() == loop_thread)
        return real_listdir(path)  # pyright: ignore[reportArgumentType, reportCallIssue]

    scenario = Scenario(
        responders=[
            Rule(
                prompt_contains="SLOW",
                turn=1,
                reply=Reply.tools(Reply.bash(_long_tool(marker, f"60.3{_RUN}"))),
            ),
            Rule(prompt_contains="QUICK", turn=1, reply=Reply.tools(Reply.bash("echo hi"))),
        ],
        default=Reply.text("done"),
    )
    async with FakeAnthropicAPI(scenario) as api, _runner(api) as runner:
        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "listdir", listdir)
        result = await runner.run_session(_spec(tmp_path, "QUICK"))
        assert result.outcome is Outcome.OK, result.error
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_the_tool_runs() -> None:
                    while not marker.exists():  # noqa: ASYNC110 - another process's file
                        await anyio.sleep(0.02)
                    scope.cancel(reason="the test cancels mid-tool")

                tg.start_soon(cancel_when_the_tool_runs)
                await runner.run_session(_spec(tmp_path, "SLOW"))
        monkeypatch.undo()
    assert scans, "no /proc scan seen at all: the test would not notice one on the loop"
    assert not any(scans), f"{scans.count(True)} of {len(scans)} /proc scans ran on the event loop"
