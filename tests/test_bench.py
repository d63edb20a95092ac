"""The bench scripts run: a tiny ``python -m bench --quick`` writes a result with the expected keys.

A benchmark never asserts a time; this only checks that the measurement code works end to end
(the real Claude Code CLI against the scripted model server) on a one-story epic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_quick_bench_writes_a_result_with_every_figure(tmp_path: Path) -> None:
    if not (ROOT / "bench" / "__main__.py").is_file():
        pytest.skip("bench/ is not part of this checkout")
    out = tmp_path / "results"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "1", "--quick", "--no-plots", "--out", str(out)],
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
    data = json.loads(results[0].read_text())
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
    assert (out / f"{data['timestamp']}.md").is_file()
