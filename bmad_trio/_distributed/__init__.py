"""Many machines: story cycles run by ``bmad-trio worker`` processes through DBOS.

Optional (the ``distributed`` extra): nothing outside this sub-package imports ``dbos`` or
``sqlalchemy``, and the single-machine path never imports this package. The coordinator (``run
--engine dbos``) keeps the scheduler and the merge lane; each story cycle is a DBOS workflow whose
steps are phases, each pushing its phase commit to the story's branch on the shared remote. See
docs/distributed.md.
"""

from __future__ import annotations

from ._coordinator import open_remote_cycles
from ._worker import WorkerSettings, serve_worker

__all__ = ["WorkerSettings", "open_remote_cycles", "serve_worker"]
