"""``bmad-trio`` on a real pseudo-terminal, as a person runs it: ``run`` on the demo project with
``--progress auto`` (which must pick the Rich live display on a TTY), Ctrl-C typed while a session
runs (``\\x03`` written to the PTY master: the line discipline sends SIGINT to the foreground process
group, the Claude Code CLI children included) → exit 130; then ``resume`` → exit 0 and a summary
table with every story done.

Stdlib only (``pty.openpty``): the child gets the PTY as its controlling terminal through a tiny
``TIOCSCTTY`` wrapper (no ``preexec_fn``: this process has threads). The scripted model server
runs in this process (a blocking portal's thread); the PTY master is read in a background thread.
Every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from _cli_helpers import WAIT_S, api_env, bmad_trio_argv, server_sessions, status_json
from anyio.from_thread import start_blocking_portal

from bmad_trio._commandline._demo import (
    DEMO_EPIC,
    DEMO_FAIL_FIRST_REVIEW,
    DEMO_STORY_IDS,
    scaffold_demo,
)
from bmad_trio.testing import FakeAnthropicAPI, bmad_actor_scenario

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals"),
]

ROWS, COLS = 40, 200
"""Wide: the header shows the epic's absolute path (a pytest tmp path is long)."""
SDK_RACE = "Unhandled exception in detached trio task"
_CTTY_WRAPPER = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"  # after setsid (start_new_session): our terminal
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
_HEADER = re.compile(r"bmad-trio \d\d:\d\d .*epic \S+\.md")  # the live display's header line
_SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours and styles: dropped
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # any other CSI: cursor moves, erase (a frame boundary)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC (titles, links)
    r"|\x1b[()][0-9A-Za-z]"  # charset selection
    r"|\x1b[=>78]"  # keypad modes, save/restore cursor
    r"|\r"
)


def screen_text(raw: bytes) -> str:
    """What was written to the terminal as lines: styles removed, cursor moves and carriage
    returns turned into line breaks (so redrawn frames never run into each other)."""
    text = _SGR.sub("", raw.decode("utf-8", "replace"))
    return _CONTROL.sub("\n", text)


class PtyProcess:
    """``bmad-trio ARGS`` with stdin, stdout and stderr on a fresh PTY (its controlling terminal)."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.master = master
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CTTY_WRAPPER, *bmad_trio_argv(), *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # only the child holds the slave now
        self._raw = bytearray()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the slave closed it
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._raw += data
                self._cond.notify_all()

    @property
    def raw(self) -> bytes:
        with self._cond:
            return bytes(self._raw)

    def text(self) -> str:
        return screen_text(self.raw)

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        """Wait (bounded) until ``predicate(screen text so far)``; that text."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while True:
                text = screen_text(bytes(self._raw))
                if predicate(text):
                    return text
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(
                        f"never saw {what}; exit {self.proc.poll()}; screen tail {text[-3000:]!r}"
                    )
                self._cond.wait(min(left, 0.5))

    def type(self, data: bytes) -> None:
        """Keys typed at the terminal."""
        os.write(self.master, data)

    def wait(self) -> int:
        """The exit code, once the output written before the exit has been read (bounded)."""
        code = self.proc.wait(WAIT_S)
        # the slave may stay open in a straggler; read until EOF or a quiet moment
        deadline = time.monotonic() + 10
        with self._cond:
            seen = len(self._raw)
            while not self._eof and time.monotonic() < deadline:
                self._cond.wait(0.5)
                if len(self._raw) == seen:
                    break
                seen = len(self._raw)
        return code

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(WAIT_S)
        finally:
            self._stop.set()
            self._reader.join(WAIT_S)
            os.close(self.master)

    def __enter__(self) -> PtyProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def terminal_env(api: FakeAnthropicAPI) -> dict[str, str]:
    """The scripted server's env, as on a colour terminal whose size comes from the PTY."""
    env = api_env(api)
    for name in (
        "COLUMNS",
        "LINES",
        "NO_COLOR",
        "FORCE_COLOR",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
    ):
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    return env


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return scaffold_demo(tmp_path / "demo").root


@pytest.fixture
def api() -> Iterator[FakeAnthropicAPI]:
    """The demo's scripted model, served from a thread of this process."""
    with start_blocking_portal("trio") as portal:
        server = FakeAnthropicAPI(bmad_actor_scenario(set(DEMO_FAIL_FIRST_REVIEW)))
        with portal.wrap_async_context_manager(server) as running:
            yield running


def _live_frame_with_a_dev_session(text: str) -> bool:
    return bool(_HEADER.search(text)) and "develop (dev)" in text and "1/10" in text


def _summary_rows(text: str) -> dict[str, str]:
    """The rows of the last summary table on the screen, by story id."""
    start = text.rindex("bmad-trio: epic")
    rows: dict[str, str] = {}
    for line in text[start:].splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 3 and cells[1] in DEMO_STORY_IDS:
            rows[cells[1]] = line
    return rows


def test_ctrl_c_on_a_terminal_then_resume(
    tmp_path: Path, demo: Path, api: FakeAnthropicAPI
) -> None:
    env = terminal_env(api)
    with PtyProcess(["run", DEMO_EPIC, "--project", str(demo)], env=env, cwd=demo) as run:
        run.wait_for(_live_frame_with_a_dev_session, "a live frame with a Dev session")
        deadline = time.monotonic() + WAIT_S
        while not server_sessions(api)[("1.1", "dev")] and time.monotonic() < deadline:
            time.sleep(0.05)  # the Dev session's first request reached the model
        assert server_sessions(api)[("1.1", "dev")] >= 1, run.text()[-3000:]
        mark = len(run.raw)
        live = screen_text(run.raw[:mark])
        run.type(b"\x03")  # Ctrl-C, as typed: SIGINT to the terminal's foreground group
        code = run.wait()
        screen = run.text()
        after = screen_text(run.raw[mark:])
    assert code == 130, screen[-4000:]

    # --progress auto picked the Rich live display: header, story rows, bars, cycles
    header = [line for line in live.splitlines() if _HEADER.search(line)][-1]
    assert f"epic {Path(DEMO_EPIC).name}" in header
    assert re.search(r"\d\d:\d\d", header), header
    assert "$" in header
    assert "/3 done" in header
    assert "phase / status" in live
    for story_id in DEMO_STORY_IDS:
        assert re.search(rf"^{re.escape(story_id)} +[━─]{{12}} ", live, re.MULTILINE), story_id
    assert "━" in live  # a story's bar has filled a little
    assert re.search(r"^1\.1 .*develop \(dev\) +1/10 ", live, re.MULTILINE), live[-3000:]
    assert "\x1b[" in run.raw.decode("utf-8", "replace")  # really drawn with terminal control
    assert not re.search(r"^\[\d\d:\d\d\] ", live, re.MULTILINE)  # not the plain progress lines

    # the interruption: one line on the terminal, then the display's end (the summary)
    assert "bmad-trio: interrupting (state is saved; Ctrl-C again to quit now)" in after
    sdk_race = SDK_RACE in screen
    if not sdk_race:
        assert "Traceback" not in screen, screen[-4000:]
    assert "bmad-trio: epic" in after  # the summary table was printed
    assert "interrupted" in after[after.rindex("bmad-trio: epic") :]
    status = status_json(demo, env)
    assert status["status"] == "interrupted", status

    with PtyProcess(["resume", "--project", str(demo)], env=env, cwd=demo) as resume:
        resume.wait_for(lambda text: bool(_HEADER.search(text)), "the resumed run's live display")
        code = resume.wait()
        screen = resume.text()
    assert code == 0, screen[-4000:]
    assert "Traceback" not in screen, screen[-4000:]
    rows = _summary_rows(screen)
    assert set(rows) == set(DEMO_STORY_IDS), screen[-4000:]
    for story_id, row in rows.items():
        cells = [cell.strip() for cell in row.split("│")]
        assert "done" in cells, (story_id, row)
    summary = screen[screen.rindex("bmad-trio: epic") :]
    total = next(line for line in summary.splitlines() if "total" in line)
    assert "done" in total, summary
    assert status_json(demo, env)["status"] == "done"
    if sdk_race:
        pytest.xfail(
            "bmad-trio printed the SDK's 'Unhandled exception in detached trio task' traceback "
            "on Ctrl-C (see tests/e2e/test_cli_e2e.py)"
        )
