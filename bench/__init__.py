"""Benchmarks for bmad-trio: the real Claude Code CLI against the scripted model server.

Every figure is measured with the real CLI bundled in claude-agent-sdk, talking to
:class:`bmad_trio.testing.FakeAnthropicAPI` with a fixed model latency, so the numbers compare
orchestrator designs, not models. ``python -m bench --help`` lists the options; results go to
``bench/results/<timestamp>.json`` and plots to ``docs/images/``. See docs/performance.md.

Modules:

- :mod:`bench.workload` — the synthetic epic, the project maker and the scripted scenario.
- :mod:`bench.driver` — the orchestrator process under test (``python -m bench.driver``).
- :mod:`bench.original_design` — a small re-creation of the design bmad-trio replaces.
- :mod:`bench.procs` — /proc scans: tagged processes, RSS, the CPU model.
- :mod:`bench.cases` — one measurement each (epic run, cancellation, start-up).
- :mod:`bench.server` — the scripted server alone (req/s, latency) and the one-turn session floor.
- :mod:`bench.boundary` — ``ClaudeAgentRunner`` vs plain ``query()``: per-session overhead and
  cancel-to-gone.
- :mod:`bench.report` — fits, the Markdown table and the plots.
"""
