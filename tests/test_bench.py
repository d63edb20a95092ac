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


def _distributed_bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    if not (ROOT / "bench" / "distributed.py").is_file():
        pytest.skip("bench/ is not part of this checkout")
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("bench.distributed")


def test_distributed_bench_cuts_a_story_at_its_session_phases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _distributed_bench(monkeypatch)

    def ev(kind: str, ts: float, story: str = "1.1", **fields: Any) -> dict[str, Any]:
        return {"type": kind, "ts": ts, "story_id": story, **fields}

    events = [
        {"type": "run_started", "ts": 0.0},
        ev("story_started", 10.0),
        ev("phase_started", 11.0, role="sm", cycle=1),
        ev("session_finished", 14.5, role="sm", cycle=1, duration_s=3.0),
        ev("phase_started", 15.0, role="dev", cycle=1),
        ev("session_finished", 17.0, role="dev", cycle=1, duration_s=1.5),
        ev("session_finished", 18.0, role="dev", cycle=1, duration_s=0.5),  # a retried session
        ev("phase_started", 18.5, role="code", cycle=0),  # no session: folds into dev's
        ev("story_finished", 19.0),
        ev("story_started", 10.0, story="1.2"),  # never finished: no unit has an end
        ev("phase_started", 11.0, story="1.2", role="sm", cycle=1),
        ev("session_finished", 12.0, story="1.2", role="sm", cycle=1, duration_s=1.0),
    ]
    units = bench.session_units(events)
    assert [(u["role"], u["sessions"]) for u in units] == [("sm", 1), ("dev", 2)]
    assert [u["wall_s"] for u in units] == [5.0, 4.0]  # 10 -> 15, 15 -> 19
    assert [u["overhead_s"] for u in units] == [2.0, 2.0]
    figures = bench.per_phase(units)
    assert figures["overhead_s"]["mean"] == 2.0
    assert figures["wall_s"]["p90"] == pytest.approx(4.9)


def test_distributed_bench_rows_get_speedup_ideal_and_overhead_over_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _distributed_bench(monkeypatch)

    def phase(wall: float, overhead: float) -> dict[str, Any]:
        return {
            "units": 3,
            "wall_s": bench.stats([wall] * 3),
            "session_s": bench.stats([wall - overhead] * 3),
            "overhead_s": bench.stats([overhead] * 3),
        }

    result = {
        "stories": 3,
        "latency_s": 1.5,
        "machine": {"nproc": 2, "loadavg_at_start": [1.0, 1.0, 1.0]},
        "rows": [
            {"engine": "dbos", "workers": 1, "stories": 3, "wall_s": 90.0, "per_phase": phase(10, 1)},
            {"engine": "dbos", "workers": 4, "stories": 3, "wall_s": 45.0, "per_phase": phase(11, 1.5)},
            {"engine": "local", "workers": 0, "jobs": 1, "stories": 3, "wall_s": 80.0, "per_phase": phase(9, 0.25)},
            {"engine": "local", "workers": 0, "jobs": 2, "stories": 3, "wall_s": 50.0, "per_phase": phase(9, 0.5)},
        ],
    }  # fmt: skip
    rows = bench.finish_rows(json.loads(json.dumps(result)))["rows"]
    one, four, local, local_two = rows
    assert (one["speedup"], one["ideal"], one["of_ideal"]) == (1.0, 1, 1.0)
    assert (four["speedup"], four["ideal"]) == (2.0, 3)  # 4 workers, 3 stories: ideal 3
    assert four["of_ideal"] == pytest.approx(2 / 3)
    assert one["engine_overhead_per_phase_s"] == 0.75
    assert four["engine_overhead_per_phase_s"] == 1.25  # no local run at jobs 4: over jobs 1
    assert four["overhead_reference_local_jobs"] == 1
    assert "speedup" not in local
    assert (local_two["speedup"], local_two["ideal"], local_two["of_ideal"]) == (1.6, 2, 0.8)
    assert "engine_overhead_per_phase_s" not in local_two
    text = bench.table({**result, "rows": rows})
    assert "| dbos | 4 | 45 s |" in text
    assert "| 2.00x | 3 | 0.67 |" in text
    assert "+1.25 (jobs 1)" in text
    assert "| local (jobs 2) | - | 50 s |" in text
