"""Git's own cost per story in a repository of 5,000 small files: worktree add, phase commits, the
squash landing, the worktree's removal. ``python -m bench.git_cost [--files 5000] [--stories 5]``.

Prints one JSON object (milliseconds; the median and the maximum over the stories). It never asserts
a time: it records figures and the git version they were measured with.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

from bmad_trio._git import (
    commit_phase,
    create_integration,
    create_story_worktree,
    git,
    land_story,
    remove_worktree_if_merged,
    story_branch_name,
)
from bmad_trio._git._command import git_env

INTEGRATION = "bmad/epic-1"


def _make_repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    for index in range(files):
        path = repo / f"pkg{index // 100:03}" / f"module_{index:05}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Module {index}."""\n\nVALUE = {index}\n', encoding="utf-8")

    def run(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=git_env(), check=True, capture_output=True)

    run("init", "-q", "-b", "main")
    run("config", "user.name", "Bench")
    run("config", "user.email", "bench@example.com")
    run("add", "-A")
    run("commit", "-q", "-m", "initial commit")
    return repo


def _copy_files(repo: Path) -> None:
    shutil.copytree(repo, repo.parent / "copy", ignore=shutil.ignore_patterns(".git", ".bmad-trio"))


async def _measure(repo: Path, stories: int) -> dict[str, object]:
    start = (await git("rev-parse", "HEAD", cwd=repo)).stdout.strip()
    t0 = time.perf_counter()
    integration = await create_integration(
        repo, run_id="bench", branch=INTEGRATION, start_commit=start
    )
    integration_ms = (time.perf_counter() - t0) * 1000
    steps: dict[str, list[float]] = {
        "worktree_add": [],
        "phase_commits_x3": [],
        "land": [],
        "remove": [],
        "total": [],
    }
    for number in range(1, stories + 1):
        key = f"1.{number}"
        tip = (await git("rev-parse", "HEAD", cwd=integration.path)).stdout.strip()
        t_start = time.perf_counter()
        story = await create_story_worktree(
            repo,
            run_id="bench",
            story_key=key,
            branch=story_branch_name(INTEGRATION, key),
            base_commit=tip,
        )
        t_added = time.perf_counter()
        for role in ("sm", "dev", "qa"):
            target = story.path / f"pkg{number:03}" / f"story_{number}_{role}.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"ROLE = {role!r}\n", encoding="utf-8")
            await commit_phase(
                story.path,
                message=f"{key} {role}",
                trailers={"Bmad-Story": key, "Bmad-Run": "bench"},
            )
        t_committed = time.perf_counter()
        result = await land_story(
            integration.path,
            story_branch=story.branch,
            message=f"Story {key}",
            trailers={"Bmad-Run": "bench"},
        )
        assert result.status == "landed", result
        t_landed = time.perf_counter()
        removed = await remove_worktree_if_merged(repo, story, INTEGRATION)
        assert removed.removed, removed
        t_removed = time.perf_counter()
        steps["worktree_add"].append((t_added - t_start) * 1000)
        steps["phase_commits_x3"].append((t_committed - t_added) * 1000)
        steps["land"].append((t_landed - t_committed) * 1000)
        steps["remove"].append((t_removed - t_landed) * 1000)
        steps["total"].append((t_removed - t_start) * 1000)
    version = (await git("version", cwd=repo)).stdout.strip()
    # For scale: copying the same files with Python, no git (the file system's own cost).
    t0 = time.perf_counter()
    await anyio.to_thread.run_sync(_copy_files, repo)
    copy_ms = (time.perf_counter() - t0) * 1000
    return {
        "git": version,
        "copy_of_the_files_ms": round(copy_ms, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "stories": stories,
        "integration_worktree_ms": round(integration_ms, 1),
        **{
            name: {
                "median_ms": round(statistics.median(values), 1),
                "max_ms": round(max(values), 1),
            }
            for name, values in steps.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--stories", type=int, default=5)
    parser.add_argument("--backend", default="trio", choices=("trio", "asyncio"))
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bmad-git-cost-") as tmp:
        t0 = time.perf_counter()
        repo = _make_repo(Path(tmp), options.files)
        setup_s = time.perf_counter() - t0
        figures = anyio.run(_measure, repo, options.stories, backend=options.backend)
    print(
        json.dumps({"files": options.files, "repo_setup_s": round(setup_s, 1), **figures}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
