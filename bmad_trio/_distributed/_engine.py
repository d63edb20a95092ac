"""DBOS, as bmad-trio uses it: one queue of story cycles, one workflow, and a client.

The names below are the contract between the coordinator, which enqueues through
:class:`EngineClient` (no DBOS runtime in its process), and the workers, which run the workflow.
Blocking (DBOS's API is synchronous): call from a worker thread.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from dbos import DBOS, DBOSClient, EnqueueOptions

__all__ = [
    "APP_VERSION",
    "QUEUE_NAME",
    "WORKFLOW_NAME",
    "CycleOutcome",
    "EngineClient",
]

QUEUE_NAME = "bmad-trio-stories"
WORKFLOW_NAME = "bmad_trio.story_cycle"
APP_VERSION = "bmad-trio-story-cycle-1"
"""The workflow's shape. DBOS recovers a workflow only on an executor of the same application
version, so the coordinator's enqueues and every worker name the same one; change it when the
workflow's steps change."""

_ENDED = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


@attrs.frozen
class CycleOutcome:
    """Where a story cycle's workflow stands."""

    state: Literal["queued", "running", "succeeded", "failed"]
    output: dict[str, Any] | None = None
    error: str | None = None


class EngineClient:
    """The coordinator's handle on the engine: enqueue story cycles, read how they stand."""

    def __init__(self, url: str) -> None:
        # lazy: connecting waits for the first call, which runs in a worker thread.
        self._url = url
        self._client = DBOSClient(system_database_url=url, lazy=True)

    def migrate(self) -> None:
        """Create or bring up to date DBOS's tables (the client alone never does; workers do on
        launch): a run may start before any worker has. Concurrent migrations are serialised by
        DBOS with an advisory lock."""
        DBOS.migrate(self._url)

    def enqueue(self, workflow_id: str, job: dict[str, Any]) -> None:
        """Enqueue a story cycle; one already enqueued under ``workflow_id`` (a resumed run) is
        kept as it is, whatever its state: the same id always means the same story of the run."""
        options: EnqueueOptions = {
            "workflow_name": WORKFLOW_NAME,
            "queue_name": QUEUE_NAME,
            "workflow_id": workflow_id,
            "app_version": APP_VERSION,
        }
        self._client.enqueue(options, job)

    def outcome(self, workflow_id: str) -> CycleOutcome:
        status = self._client.retrieve_workflow(workflow_id).get_status()
        if status.status in ("ENQUEUED", "DELAYED"):
            return CycleOutcome("queued")
        if status.status not in _ENDED:
            return CycleOutcome("running")
        if status.status == "SUCCESS":
            return CycleOutcome("succeeded", output=status.output)
        detail = f"{status.status}: {status.error!r}" if status.error else status.status
        return CycleOutcome("failed", error=detail)

    def close(self) -> None:
        self._client.destroy()
