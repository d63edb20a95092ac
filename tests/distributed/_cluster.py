"""A small cluster for the distributed tests: a project repository whose ``origin`` is a bare
repository (the shared remote), and ``bmad-trio worker`` processes with their own clones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bmad_trio import RunConfig

IDENTITY = ("-c", "user.name=test", "-c", "user.email=test@example.invalid")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def project_with_remote(root: Path, stories: int) -> tuple[Path, Path, Path]:
    """A repository with an epic of ``stories`` independent stories and a bare ``origin``;
    returns (project, epic, remote)."""
    project = root / "project"
    body = "\n".join(
        f"### Story 1.{n}: Feature number {n}\nAs a user, I want feature {n}.\n\n"
        f"#### Acceptance Criteria\n1. feature {n} returns its message.\n"
        for n in range(1, stories + 1)
    )
    epic = project / "docs" / "prd" / "epic-1.md"
    epic.parent.mkdir(parents=True)
    epic.write_text(f"# PRD\n\n## Epic 1: Many features\n\n{body}")
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "start")):
        git(project, *IDENTITY, *args)
    remote = root / "remote.git"
    git(root, "clone", "-q", "--bare", str(project), str(remote))
    git(project, "remote", "add", "origin", str(remote))
    return project, epic, remote


def engine_config(project: Path, epic: Path, database: str, **changes: object) -> RunConfig:
    """A run on the DBOS engine in ``database``: no gates, its branch left as it is, generous
    session deadlines (a loaded machine); ``changes`` on top."""
    settings: dict[str, object] = {
        "skip_gates": True,
        "finish": "branch",
        "session_timeout": 180.0,
        "idle_timeout": 120.0,
        **changes,
    }
    return RunConfig(
        epic=epic,
        project=project,
        engine="dbos",
        database=database,
        **settings,  # pyright: ignore[reportArgumentType]
    )


class Worker:
    """One ``bmad-trio worker`` process (its output in ``<dir>/worker.log``).

    ``dead_after_s`` is long by default: on a loaded machine a live worker's heartbeat can be
    late by seconds, and a worker declared dead while alive runs its stories twice (which the
    product survives, see LeaseLost, but which a test of something else should not meet). The
    tests of a dead worker shorten it; they never have two workers alive at once."""

    def __init__(
        self,
        name: str,
        root: Path,
        database: str,
        remote: Path,
        env: Mapping[str, str],
        *,
        jobs: int = 2,
        dead_after_s: float = 60.0,
        backend: str = "trio",
    ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "worker.log"
        self._log = self.log_path.open("wb")
        argv = [
            sys.executable, "-m", "bmad_trio", "worker",
            "--database", database, "--repo", str(remote), "--dir", str(self.dir),
            "--jobs", str(jobs), "--name", name, "--dead-after", str(dead_after_s),
            "--backend", backend,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )

    def interrupt(self, timeout: float = 60.0) -> int:
        """SIGINT, as Ctrl-C; wait for it to end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(60)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.interrupt()
        except subprocess.TimeoutExpired:
            self.kill()
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


async def fail_if_a_worker_dies(pool: list[Worker], spare: frozenset[str] = frozenset()) -> None:
    """Watch the workers (not those named in ``spare``, which a test kills on purpose): one that
    exits on its own fails the test with its log, instead of leaving the run waiting."""
    import anyio

    while True:
        for worker in pool:
            if worker.name not in spare and worker.process.poll() is not None:
                raise AssertionError(f"worker {worker.name} exited:\n{worker.output()[-4000:]}")
        await anyio.sleep(0.5)


async def wait_until_serving(worker: Worker) -> None:
    """Until the worker says it is serving (it has cloned the remote and joined the queue)."""
    import anyio

    while "serving" not in worker.output():
        if worker.process.poll() is not None:
            raise AssertionError(f"worker {worker.name} exited:\n{worker.output()[-4000:]}")
        await anyio.sleep(0.2)


def events_of(project: Path, run_id: str) -> list[dict[str, object]]:
    """The run's events.jsonl, parsed."""
    import json

    path = project / ".bmad-trio" / "runs" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
