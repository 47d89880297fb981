"""What ``manage.py taskshedstatus`` reports: live workers, task counts per queue, the most
overdue task and each recurring task's last success, read in four queries."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db.models import Case, Count, F, OuterRef, QuerySet, Subquery, When
from django.db.models.functions import Coalesce

from .models import (
    RunOutcome,
    RunType,
    Task,
    TaskRun,
    WorkerRecord,
    due_condition,
    status_condition,
)

WORKERS_LIMIT = 1_000  # live workers listed at most
RECURRING_LIMIT = 1_000  # recurring tasks listed at most: the stalest (active ones first)
COUNTED = ("due", "overdue", "running", "retrying", "paused", "failed")
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerStatus:
    """A live worker: its row in ``WorkerRecord``. Workers do not record their queues."""

    worker_id: str
    hostname: str
    pid: int
    callbacks: list[str]
    heartbeat_at: datetime
    running: int


@dataclass(frozen=True)
class QueueCounts:
    """The tasks of one queue (or of all): ``due`` and ``overdue`` cut across the statuses."""

    queue: str | None
    tasks: int = 0
    due: int = 0
    overdue: int = 0
    running: int = 0
    retrying: int = 0
    paused: int = 0
    failed: int = 0


@dataclass(frozen=True)
class OverdueTask:
    """The due task with the oldest ``run_at``, and how long ago that was."""

    task_id: str
    callback: str
    queue: str
    run_at: datetime
    overdue_seconds: float


@dataclass(frozen=True)
class RecurringStatus:
    """A recurring or cron task and its last successful run (``None``: none known), with where
    that came from: ``"task"`` (its last run succeeded) or ``"history"`` (the run history)."""

    task_id: str
    callback: str
    queue: str
    run_type: str
    paused: bool
    failed: bool
    last_success_at: datetime | None
    last_success_from: str | None
    created_at: datetime
    stale_seconds: float  # since the last success, or since the task was created


@dataclass
class Status:
    """Everything ``taskshedstatus`` prints, read at ``now``."""

    now: datetime
    grace: float
    workers: list[WorkerStatus]
    queues: list[QueueCounts]
    totals: QueueCounts
    most_overdue: OverdueTask | None
    recurring: list[RecurringStatus]
    recurring_truncated: bool
    query_seconds: dict[str, float] = field(default_factory=dict)


def collect_status(using: str, now: datetime, grace: float) -> Status:
    """Read the status from database ``using``; ``grace`` seconds late makes a due task overdue."""
    seconds: dict[str, float] = {}

    def timed(name: str, read: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return read()
        finally:
            seconds[name] = time.perf_counter() - started

    workers = timed("workers", lambda: read_workers(using, now))
    queues = timed("counts", lambda: count_tasks(using, now, grace))
    overdue = timed("most_overdue", lambda: most_overdue_task(using, now))
    recurring = timed("recurring", lambda: read_recurring(using, now))
    return Status(
        now=now,
        grace=grace,
        workers=workers,
        queues=queues,
        totals=sum_counts(queues),
        most_overdue=overdue,
        recurring=recurring[:RECURRING_LIMIT],
        recurring_truncated=len(recurring) > RECURRING_LIMIT,
        query_seconds=seconds,
    )


def read_workers(using: str, now: datetime) -> list[WorkerStatus]:
    """The live workers: those whose heartbeat has not expired."""
    rows = WorkerRecord.objects.using(using).filter(expires_at__gte=now).order_by("worker_id")
    return [
        WorkerStatus(
            worker_id=row.worker_id,
            hostname=row.hostname,
            pid=row.pid,
            callbacks=sorted(row.callbacks or []),
            heartbeat_at=row.heartbeat_at,
            running=row.running,
        )
        for row in rows[:WORKERS_LIMIT]
    ]


def count_tasks(using: str, now: datetime, grace: float) -> list[QueueCounts]:
    """Per queue, in one pass over the task table: every count is exact."""
    return [QueueCounts(**row) for row in counts_queryset(using, now, grace)]


def counts_queryset(using: str, now: datetime, grace: float) -> "QuerySet[Any, Any]":
    """One row per queue: its tasks, and how many are in each of ``COUNTED``."""
    conditions = {
        "due": due_condition(now),
        "overdue": due_condition(now, now - timedelta(seconds=grace)),
        **{name: status_condition(name, now) for name in COUNTED[2:]},
    }
    counts = {name: Count("pk", filter=condition) for name, condition in conditions.items()}
    rows = Task.objects.using(using).order_by("queue").values("queue")
    return rows.annotate(tasks=Count("pk"), **counts)


def sum_counts(queues: list[QueueCounts]) -> QueueCounts:
    totals = {name: sum(getattr(q, name) for q in queues) for name in ("tasks", *COUNTED)}
    return QueueCounts(queue=None, **totals)


def most_overdue_task(using: str, now: datetime) -> OverdueTask | None:
    """The due task with the oldest ``run_at``: read from the ``run_at`` index, oldest first."""
    row = most_overdue_queryset(using, now).first()
    if row is None:
        return None
    return OverdueTask(**row, overdue_seconds=(now - row["run_at"]).total_seconds())


def most_overdue_queryset(using: str, now: datetime) -> "QuerySet[Any, Any]":
    due = Task.objects.using(using).filter(due_condition(now)).order_by("run_at", "task_id")
    return due.values("task_id", "callback", "queue", "run_at")


def last_success() -> Case:
    """A task's last successful run: its ``last_run_at`` while ``attempts`` is 0 (a worker
    resets it to 0 only when a run succeeds), else its newest ``succeeded`` run in the history
    (the newest runs of that task first, from the ``(task_id, -started_at)`` index)."""
    history = TaskRun.objects.filter(task_id=OuterRef("task_id"), outcome=RunOutcome.SUCCEEDED)
    newest = history.order_by("-started_at", "-id").values("started_at")[:1]
    return Case(
        When(attempts=0, last_run_at__isnull=False, then=F("last_run_at")),
        default=Subquery(newest),
    )


def read_recurring(using: str, now: datetime) -> list[RecurringStatus]:
    """The recurring and cron tasks, active ones first, the stalest first; one more than
    ``RECURRING_LIMIT`` to tell whether there are more."""
    rows = recurring_queryset(using)[: RECURRING_LIMIT + 1]
    return [recurring_status(row, now) for row in rows]


def recurring_queryset(using: str) -> "QuerySet[Any, Any]":
    tasks = (
        Task.objects.using(using)
        .filter(run_type__in=[RunType.RECURRING, RunType.CRON])
        .annotate(last_success=last_success())
        .annotate(since=Coalesce("last_success", "created_at"))
        .order_by("paused", "since", "task_id")
    )
    fields = ("task_id", "callback", "queue", "run_type", "paused", "failed_at", "attempts")
    rows: QuerySet[Any, Any] = tasks.values(*fields, "last_run_at", "last_success", "created_at")
    return rows


def recurring_status(row: dict[str, Any], now: datetime) -> RecurringStatus:
    success: datetime | None = row["last_success"]
    from_task = success is not None and row["attempts"] == 0 and success == row["last_run_at"]
    source = None if success is None else ("task" if from_task else "history")
    return RecurringStatus(
        task_id=row["task_id"],
        callback=row["callback"],
        queue=row["queue"],
        run_type=row["run_type"],
        paused=row["paused"],
        failed=row["failed_at"] is not None,
        last_success_at=success,
        last_success_from=source,
        created_at=row["created_at"],
        stale_seconds=(now - (success or row["created_at"])).total_seconds(),
    )


__all__ = [
    "OverdueTask",
    "QueueCounts",
    "RecurringStatus",
    "Status",
    "WorkerStatus",
    "collect_status",
]
