"""The quality gates after the stories: run each command; on failure a fixer session, then again."""

from __future__ import annotations

import logging

from .._agents._runner import Role
from .._config import GateCommand
from .._errors import GateError
from .._events import GateFinished, GateStarted
from ._prompts import fixer_plan
from ._quality_gates import QualityGateResult, format_quality_gate_failure, run_quality_gate
from ._run_services import GateReport, PhaseVerdict, RunServices

__all__ = ["run_quality_gates"]

log = logging.getLogger("bmad_trio.gates")


async def run_quality_gates(
    services: RunServices, gates: tuple[GateCommand, ...]
) -> list[GateReport]:
    """Run each gate; on failure a fixer session gets its output, then the gate runs again.

    A missing tool is a failed gate with a clear reason, not a crash; for a detected gate it is a
    skipped gate and a warning. Raises RunAbort/BudgetSpent.
    Holds ``services.gate_lock`` throughout (gates and fixers never run two at once in the tree);
    cancelling the caller while it waits for the lock runs nothing.
    """
    async with services.gate_lock:
        return await _run_gates(services, gates)


async def _run_gates(services: RunServices, gates: tuple[GateCommand, ...]) -> list[GateReport]:
    reports: list[GateReport] = []
    for gate in gates:
        attempt = 0
        while True:
            attempt += 1
            await services.emit(GateStarted(name=gate.name, attempt=attempt))
            phase_id = await services.store.start_phase(
                services.run_id, None, f"gate:{gate.name}", "code", attempt
            )
            try:
                result = await run_quality_gate(
                    gate, services.layout.project, redactor=services.files.redactor
                )
            except GateError as exc:
                # A detected gate whose tool is missing is skipped (the project may not use it
                # here); a configured one fails the run.
                skipped = gate.detected
                detail = f"skipped (detected from {gate.source}): {exc}" if skipped else str(exc)
                if skipped:
                    log.warning("quality gate %s %s", gate.name, detail)
                await services.store.finish_phase(phase_id, False, detail)
                await services.emit(
                    GateFinished(
                        name=gate.name,
                        attempt=attempt,
                        passed=False,
                        detail=detail,
                        skipped=skipped,
                    )
                )
                reports.append(
                    GateReport(
                        name=gate.name,
                        passed=False,
                        attempts=attempt,
                        skipped=skipped,
                        detail=detail,
                    )
                )
                break
            detail = "passed" if result.passed else _gate_detail(result)
            await services.store.finish_phase(phase_id, result.passed, detail)
            await services.emit(
                GateFinished(name=gate.name, attempt=attempt, passed=result.passed, detail=detail)
            )
            if result.passed or attempt > services.config.gate_fix_attempts:
                reports.append(
                    GateReport(
                        name=gate.name, passed=result.passed, attempts=attempt, detail=detail
                    )
                )
                break
            plan = fixer_plan(services.layout, gate.name, format_quality_gate_failure(result))
            fix_id = await services.store.start_phase(
                services.run_id, None, f"gate-fix:{gate.name}", Role.FIXER.value, attempt
            )
            fixed = await services.run_session(
                plan, story_id=f"gate-{gate.name}", cycle=attempt, phase_id=fix_id, run_level=True
            )
            verdict = services.handle_outcome(fixed)
            await services.store.finish_phase(
                fix_id, verdict is PhaseVerdict.CHECK_DISK, fixed.outcome.value
            )
    return reports


def _gate_detail(result: QualityGateResult) -> str:
    return "timed out" if result.timed_out else f"exit code {result.exit_code}"
