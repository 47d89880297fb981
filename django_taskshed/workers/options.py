"""How a worker runs: its options, each defaulting to the TASKSHED setting of the same meaning."""

import os
import socket
import uuid
from dataclasses import dataclass, fields
from typing import Any

from ..conf import taskshed_settings


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs (``runtaskworker``'s flags of the same names).

    Attributes:
        concurrency: Callbacks running at once (``TASKSHED["CONCURRENCY"]``).
        poll_interval: Seconds between safety polls (``TASKSHED["POLL_INTERVAL"]``).
        batch_size: Most tasks claimed in one statement (``TASKSHED["BATCH_SIZE"]``).
        lease: Seconds a claim lasts unless renewed (``TASKSHED["LEASE_SECONDS"]``).
        worker_id: This worker's id; default host:pid:random.
        max_tasks: Stop after claiming this many tasks.
        burst: Stop once nothing is due.
        shutdown_timeout: Seconds running callbacks get to finish at shutdown.
    """

    concurrency: int
    poll_interval: float
    batch_size: int
    lease: float
    worker_id: str | None = None
    max_tasks: int | None = None
    burst: bool = False
    shutdown_timeout: float = 30.0

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> "WorkerOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(options.keys() - known)
        if unknown:
            raise TypeError(
                f"unknown worker option(s) {', '.join(unknown)}; known: {sorted(known)}"
            )
        values = {
            "concurrency": taskshed_settings.CONCURRENCY,
            "poll_interval": taskshed_settings.POLL_INTERVAL,
            "batch_size": taskshed_settings.BATCH_SIZE,
            "lease": taskshed_settings.LEASE_SECONDS,
        }
        values.update({key: value for key, value in options.items() if value is not None})
        return cls(**values)

    def claim_limit(self, running: int, claimed: int) -> int:
        """How many tasks to claim next, with ``running`` under way and ``claimed`` so far."""
        limit = min(self.batch_size, self.concurrency - running)
        if self.max_tasks is not None:
            limit = min(limit, self.max_tasks - claimed)
        return limit

    def done_claiming(self, claimed: int) -> bool:
        """Whether ``max_tasks`` have been claimed."""
        return self.max_tasks is not None and claimed >= self.max_tasks


def default_worker_id() -> str:
    """Unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
