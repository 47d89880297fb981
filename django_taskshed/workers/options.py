"""How a worker runs: its options, each defaulting to the TASKSHED setting of the same meaning."""

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..conf import taskshed_settings
from ..models import QUEUE_MAX_LENGTH

if TYPE_CHECKING:
    from .metrics import WorkerMetrics


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
        queues: The queues it claims from (names, or comma-separated names); None: every queue.
        max_memory: Megabytes of resident memory past which it stops claiming, drains (as on
            SIGTERM) and stops, for a supervisor to start a fresh one.
        metrics: Where it records its Prometheus metrics (one ``WorkerMetrics`` per worker);
            None: none, at no cost.
    """

    concurrency: int
    poll_interval: float
    batch_size: int
    lease: float
    worker_id: str | None = None
    max_tasks: int | None = None
    burst: bool = False
    shutdown_timeout: float = 30.0
    queues: tuple[str, ...] | None = None
    max_memory: float | None = None
    metrics: "WorkerMetrics | None" = None

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
        if values.get("queues") is not None:
            values["queues"] = queue_names(values["queues"])
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


def queue_names(values: str | Iterable[str]) -> tuple[str, ...]:
    """Queue names from names or comma-separated names (``--queue a --queue b,c``), each
    once, in order; ValueError for an empty or too long name, or for none at all."""
    parts = [values] if isinstance(values, str) else list(values)
    names: dict[str, None] = {}
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"a queue name must be a string, not {type(part).__name__}")
        for name in (name.strip() for name in part.split(",")):
            if not name or len(name) > QUEUE_MAX_LENGTH:
                raise ValueError(f"queue names are 1 to {QUEUE_MAX_LENGTH} characters: {part!r}")
            names[name] = None
    if not names:
        raise ValueError("queues: name at least one queue, or pass None for every queue")
    return tuple(names)


def describe_queues(queues: tuple[str, ...] | None) -> str:
    """The queues a worker claims from, for its start-up line."""
    return "every queue" if queues is None else f"queues [{', '.join(queues)}]"


def default_worker_id() -> str:
    """Unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
