"""The scripted server alone, and the one-turn CLI session that every other figure sits on.

- :func:`server_case` — requests per second and per-request latency of
  :class:`~bmad_trio.testing.FakeAnthropicAPI` for ``POST /v1/messages`` with a small text reply
  (plain JSON and SSE streaming), driven by an ``httpx.AsyncClient`` (keep-alive, N concurrent
  workers) against the server in this process (same event loop) or against ``bmad-trio fake-api``
  in a subprocess (its own loop and CPU). Loopback only, no model latency: what is measured is the
  server's own cost per request, plus the client's.
- :func:`floor_case` — wall time of one-turn sessions driving the bundled Claude Code CLI directly
  with ``claude_agent_sdk.query()`` against the in-process server (latency 0).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

from bmad_trio.testing import FakeAnthropicAPI, Reply, Scenario

__all__ = ["MODEL", "REPLY_TEXT", "floor_case", "percentiles", "server_case"]

MODEL = "claude-sonnet-4-5"
REPLY_TEXT = "Hello from the scripted model."
"""The small text reply every request gets (one text block, one streamed delta)."""
WARMUP_REQUESTS = 20
SERVER_START_TIMEOUT_S = 60.0


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """Median, p90, p99, mean, min and max of ``values`` (nearest-rank percentiles)."""
    if not values:
        return dict.fromkeys(("median", "p90", "p99", "mean", "min", "max"))
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, round(p * len(ordered) + 0.5) - 1))
        return ordered[index]

    return {
        "median": statistics.median(ordered),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def _body(stream: bool) -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    ).encode()


def _cpu_ticks(pid: int | str = "self") -> float:
    """utime + stime of a process in seconds (``/proc/PID/stat``; 0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def _load(
    url: str, *, requests: int, concurrency: int, stream: bool, server_pid: int | None = None
) -> dict[str, Any]:
    """``requests`` POSTs from ``concurrency`` workers over keep-alive connections.

    CPU times (this process's, and ``server_pid``'s) are read around the timed requests only.
    """
    body = _body(stream)
    headers = {
        "content-type": "application/json",
        "x-api-key": "sk-ant-bench",
        "anthropic-version": "2023-06-01",
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def one() -> float:
            started = time.perf_counter()
            if stream:
                async with client.stream(
                    "POST", "/v1/messages", content=body, headers=headers
                ) as response:
                    data = b"".join([chunk async for chunk in response.aiter_raw()])
                ok = response.status_code == 200 and b"event: message_stop" in data
            else:
                response = await client.post("/v1/messages", content=body, headers=headers)
                data = response.content
                ok = response.status_code == 200 and REPLY_TEXT.encode() in data
            elapsed = time.perf_counter() - started
            if not ok:
                errors.append(f"HTTP {response.status_code}: {data[:200]!r}")
            sizes.append(len(data))
            return elapsed

        async def worker(count: int, out: list[float] | None) -> None:
            for _ in range(count):
                elapsed = await one()
                if out is not None:
                    out.append(elapsed)

        def split(total: int) -> list[int]:
            return [
                total // concurrency + (1 if i < total % concurrency else 0)
                for i in range(concurrency)
            ]

        # Warm-up: open every keep-alive connection and touch every code path once.
        async with anyio.create_task_group() as tg:
            for count in split(max(WARMUP_REQUESTS, concurrency)):
                tg.start_soon(worker, count, None)
        errors.clear()
        cpu_before = _cpu_ticks()
        server_before = _cpu_ticks(server_pid) if server_pid else 0.0
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for count in split(requests):
                tg.start_soon(worker, count, latencies)
        wall = time.perf_counter() - started
        cpu = _cpu_ticks() - cpu_before
        server_cpu = _cpu_ticks(server_pid) - server_before if server_pid else None
    stats = percentiles([x * 1000 for x in latencies])
    return {
        "requests": len(latencies),
        "wall_s": wall,
        "rps": len(latencies) / wall if wall else None,
        "latency_ms": stats,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "response_bytes": statistics.median(sizes) if sizes else None,
        "bench_process_cpu_s": cpu,
        "server_cpu_s": server_cpu,
    }


async def _in_process(
    requests: int, concurrencies: Sequence[int], modes: Sequence[bool]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for stream in modes:
        for concurrency in concurrencies:
            scenario = Scenario(default=Reply.text(REPLY_TEXT), model=MODEL)
            async with FakeAnthropicAPI(scenario) as api:
                row = await _load(
                    api.url, requests=requests, concurrency=concurrency, stream=stream
                )
                row["connections_accepted"] = api.connections_accepted
            row.update(where="in-process", stream=stream, concurrency=concurrency)
            row["cpu_ms_per_request"] = row["bench_process_cpu_s"] * 1000 / row["requests"]
            row["cpu_note"] = "client + server (one process)"
            rows.append(row)
    return rows


async def _start_fake_api(scenario_file: Path) -> tuple[anyio.abc.Process, str]:
    script = Path(sys.executable).parent / "bmad-trio"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "bmad_trio"]
    argv += ["fake-api", "--port", "0", "--scenario", str(scenario_file)]
    process = await anyio.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    buffer = b""
    with anyio.fail_after(SERVER_START_TIMEOUT_S):
        while b"\n" not in buffer or b"http://" not in buffer.split(b"\n")[0]:
            buffer += await process.stdout.receive()
    first = buffer.split(b"\n")[0].decode()
    url = next(word for word in first.split() if word.startswith("http://"))
    return process, url


async def _stop(process: anyio.abc.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
    with anyio.CancelScope(shield=True):
        await process.wait()
        await process.aclose()


async def _subprocess(
    requests: int, concurrencies: Sequence[int], modes: Sequence[bool], workdir: Path
) -> list[dict[str, Any]]:
    scenario_file = workdir / "server-scenario.json"
    scenario_file.write_text(json.dumps({"default_text": REPLY_TEXT, "model": MODEL}))
    rows: list[dict[str, Any]] = []
    for stream in modes:
        for concurrency in concurrencies:
            process, url = await _start_fake_api(scenario_file)
            try:
                row = await _load(
                    url,
                    requests=requests,
                    concurrency=concurrency,
                    stream=stream,
                    server_pid=process.pid,
                )
            finally:
                await _stop(process)
            row.update(where="subprocess", stream=stream, concurrency=concurrency)
            row["cpu_ms_per_request"] = row["server_cpu_s"] * 1000 / row["requests"]
            row["client_cpu_ms_per_request"] = row["bench_process_cpu_s"] * 1000 / row["requests"]
            row["cpu_note"] = "server process only (bmad-trio fake-api, asyncio backend)"
            rows.append(row)
    return rows


async def server_case(
    workdir: Path,
    *,
    requests: int,
    concurrencies: Sequence[int] = (1, 8),
    where: Sequence[str] = ("in-process", "subprocess"),
) -> list[dict[str, Any]]:
    """Throughput and latency rows: for each place in ``where``, plain and stream, each concurrency."""
    modes = (False, True)
    rows: list[dict[str, Any]] = []
    if "in-process" in where:
        rows += await _in_process(requests, concurrencies, modes)
    if "subprocess" in where:
        rows += await _subprocess(requests, concurrencies, modes, workdir)
    return rows


async def floor_case(workdir: Path, sessions: int) -> dict[str, Any]:
    """``sessions`` one-turn sessions with plain ``query()`` against the in-process server.

    The options are :func:`bench.boundary.plain_options` (the Claude Code system prompt, no tools,
    ``setting_sources=[]``, one config directory for all sessions); latency 0.
    """
    from claude_agent_sdk import ResultMessage, query

    from bench.boundary import plain_options

    root = Path(tempfile.mkdtemp(prefix="floor-", dir=workdir))
    project, config_dir = root / "project", root / "config"
    project.mkdir()
    config_dir.mkdir()
    to_result: list[float] = []
    to_end: list[float] = []
    requests: list[int] = []
    errors: list[str] = []
    scenario = Scenario(default=Reply.text("OK"), model=MODEL)
    async with FakeAnthropicAPI(scenario) as api:
        options = plain_options(api, project, config_dir)
        for index in range(sessions + 1):  # the first one warms the page cache and is dropped
            before = len(api.message_requests)
            result_at: float | None = None
            ok = False
            started = time.perf_counter()
            try:
                async for message in query(prompt="Reply with OK.", options=options):
                    if isinstance(message, ResultMessage):
                        result_at = time.perf_counter()
                        ok = not message.is_error
            except Exception as exc:  # a figure, not a test: record and go on
                errors.append(f"{type(exc).__name__}: {exc}")
            ended = time.perf_counter()
            if index == 0:
                continue
            if not ok or result_at is None:
                errors.append(f"session {index}: no successful ResultMessage")
                continue
            to_result.append(result_at - started)
            to_end.append(ended - started)
            requests.append(len(api.message_requests) - before)
    return {
        "sessions": len(to_result),
        "requested": sessions,
        "warmup_dropped": 1,
        "to_result_s": percentiles(to_result),
        "to_end_s": percentiles(to_end),
        "to_end_samples_s": to_end,
        "model_requests_per_session": statistics.median(requests) if requests else None,
        "errors": errors,
    }
