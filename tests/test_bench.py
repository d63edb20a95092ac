"""The bench scripts run: a tiny ``python -m bench --quick`` writes a result with the expected keys.

A benchmark never asserts a time; this only checks that the measurement code works end to end
(the real Claude Code CLI against the scripted model server) on a one-story epic, and that the
server / floor / agent-boundary parts run on a tiny case.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(out: Path, *args: str) -> dict[str, Any]:
    if not (ROOT / "bench" / "__main__.py").is_file():
        pytest.skip("bench/ is not part of this checkout")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = list(out.glob("*.json"))
    assert len(results) == 1, list(out.iterdir())
    data: dict[str, Any] = json.loads(results[0].read_text())
    assert (out / f"{data['timestamp']}.md").is_file()
    return data


@pytest.mark.e2e
def test_quick_bench_writes_a_result_with_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    data = _bench(
        out, "--only", "startup,epics,original,cancel", "--sizes", "1", "--quick", "--no-plots"
    )
    assert {
        "timestamp",
        "params",
        "machine",
        "new",
        "original",
        "cancel",
        "startup",
        "growth",
    } <= set(data)
    assert {"nproc", "cpu_model", "python", "claude_agent_sdk", "claude_cli"} <= set(
        data["machine"]
    )

    (new,) = data["new"]
    assert "error" not in new, new
    assert new["stories"] == 1
    assert new["status"] == "done"
    assert new["sessions_by_role"] == {"sm": 1, "dev": 1, "qa": 1}
    for key in (
        "wall_s",
        "sessions_sum_s",
        "overhead_ratio",
        "model_calls",
        "ru_maxrss_kb",
        "vmrss_max_kb",
        "first_request_after_run_start_s",
    ):
        assert isinstance(new[key], int | float), key
    assert new["leftover_processes"] == 0

    (original,) = data["original"]
    assert "error" not in original, original
    assert original["status"] == "done"
    assert original["sessions_by_role"]["status"] >= 1  # the model was asked for the status
    assert original["status_calls"] == original["sessions_by_role"]["status"]

    (cancel,) = data["cancel"]
    assert "error" not in cancel, cancel
    assert cancel["in_flight"] == 1
    assert cancel["returncode"] == 130
    assert isinstance(cancel["all_gone_s"], float)
    assert cancel["cli_rss_per_session_kb"] > 0

    assert data["startup"]["runs"] == 3
    assert data["startup"]["help_median_s"] > 0
    assert "wall_s" in data["growth"]
    assert data["server"] == []  # not selected
    assert data["boundary"] is None


def _stats(value: dict[str, Any]) -> None:
    assert {"median", "p90", "mean", "min", "max"} <= set(value), value
    assert isinstance(value["median"], float), value


@pytest.mark.e2e
def test_server_and_boundary_parts_run_on_a_tiny_case(tmp_path: Path) -> None:
    out = tmp_path / "results"
    data = _bench(
        out,
        "--only",
        "server,floor,boundary,session-cancel",
        "--quick",
        "--server-requests",
        "30",
        "--server-concurrency",
        "1,2",
        "--images",
        str(tmp_path / "images"),
    )
    assert data["new"] == []  # not selected
    assert data["startup"] is None
    assert {"loadavg_at_start", "loadavg_at_end", "nproc"} <= set(data["machine"])

    rows = data["server"]
    cells = {(r["where"], r["stream"], r["concurrency"]) for r in rows}
    assert cells == {
        (where, stream, c)
        for where in ("in-process", "subprocess")
        for stream in (False, True)
        for c in (1, 2)
    }
    for row in rows:
        assert row["errors"] == 0, row
        assert row["requests"] == 30
        assert row["rps"] > 0
        _stats(row["latency_ms"])
        assert row["cpu_ms_per_request"] >= 0

    floor = data["floor"]
    assert floor["errors"] == []
    assert floor["sessions"] == 2
    _stats(floor["to_result_s"])
    _stats(floor["to_end_s"])

    ab = data["boundary"]
    assert ab["failures"] == {"runner": 0, "plain": 0}
    assert sorted(ab["order"]) == sorted("RPPR")  # interleaved, warm-up pair dropped
    assert len(ab["runner_samples_s"]) == len(ab["plain_samples_s"]) == 2
    assert ab["ratio_of_medians"] > 0
    _stats(ab["difference_ms"])

    cancel = data["session_cancel"]
    for key in ("runner", "sdk_cancel", "sdk_break"):
        part = cancel[key]
        assert part["trials"] == 1, (key, part)
        assert part["errors"] == [], (key, part)
        if not part["capped"]:  # plain query() may exceed the cap on a very busy machine
            _stats(part["returned_s"])
    runner = cancel["runner"]
    assert runner["capped"] == 0
    _stats(runner["gone_s"])
    assert runner["left_0_5s_after_runner_close"] == 0

    if importlib.util.find_spec("matplotlib") is not None:  # plots are optional (`bench` group)
        names = sorted(Path(p).name for p in data["plots"])
        assert names == ["perf-boundary.png", "perf-server.png"]
    table = (out / f"{data['timestamp']}.md").read_text()
    for heading in ("scripted server alone", "session floor", "Agent boundary", "Cancel-to-gone"):
        assert heading in table


def test_reading_bench_measures_a_tiny_project() -> None:
    if not (ROOT / "bench" / "reading.py").is_file():
        pytest.skip("bench/ is not part of this checkout")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.reading", "--stories", "5", "--rounds", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout)
    assert figures["stories"] == 5
    assert {"epic_parse_ms", "story_files_find_and_parse_ms", "plan_ms"} <= set(figures)
    assert all(figures[key] > 0 for key in figures)
