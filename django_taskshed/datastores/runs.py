"""Writing run history rows (one statement per batch, no model instances on the hot path),
and pruning old ones in small batches."""

from datetime import datetime, timedelta
from typing import Any, Protocol

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet

from ..conf import taskshed_settings
from ..django_internals import delete_without_signals, driver_cursor
from ..models import RunOutcome, TaskRun
from ..occurrences import Missed
from .times import utc_text

# A row, as the worker builds it (workers/history.py): these columns, in this order; missed,
# missed_from and missed_until are 0/None for an attempt.
RUN_COLUMNS = (
    "task_id", "callback", "group_id", "scheduled_for", "started_at", "finished_at", "outcome",
    "attempt", "worker_id", "error", "traceback", "return_value", "return_value_omitted",
    "missed", "missed_from", "missed_until", "kwargs",
)  # fmt: skip
DATETIMES = tuple(
    RUN_COLUMNS.index(name)
    for name in ("scheduled_for", "started_at", "finished_at", "missed_from", "missed_until")
)
PRUNE_BATCH = 1000  # rows per DELETE statement


class Recorded(Protocol):
    """What a history row copies from a task: a ``Task`` or a worker's claim of one."""

    @property
    def task_id(self) -> str: ...
    @property
    def callback(self) -> str: ...
    @property
    def group_id(self) -> str | None: ...


def missed_row(
    task: Recorded,
    outcome: RunOutcome,
    missed: Missed,
    recorded_at: datetime,
    worker_id: str = "",
    attempt: int = 1,
) -> tuple[Any, ...]:
    """The one row of occurrences that did not run (``coalesced`` or ``skipped_paused``):
    scheduled for the first of them, started and finished when they were found."""
    note = "" if missed.complete else f"counting stopped at {missed.count}; more did not run"
    return (
        task.task_id, task.callback, task.group_id, missed.first, recorded_at, recorded_at,
        outcome.value, attempt, worker_id, note, "", None, False, missed.count, missed.first,
        missed.last, None,
    )  # fmt: skip


def abandoned_row(
    task: Recorded,
    scheduled_for: datetime,
    attempt: int,
    dead_worker: str,
    found_at: datetime,
    kwargs: str,
) -> tuple[Any, ...]:
    """The row of an attempt whose worker died holding its lease, found when the task was
    claimed again (``kwargs`` as JSON text)."""
    error = f"the lease of worker {dead_worker} expired before its run ended"
    return (
        task.task_id, task.callback, task.group_id, scheduled_for, found_at, found_at,
        RunOutcome.ABANDONED.value, attempt, dead_worker, error, "", None, False, 0, None, None,
        kwargs,
    )  # fmt: skip


def insert_runs(connection: BaseDatabaseWrapper, rows: list[tuple[Any, ...]]) -> None:
    """Insert history rows (``return_value`` and ``kwargs`` as JSON text or None); the caller
    holds the transaction. PostgreSQL takes them with ``COPY`` (measured: 20 µs a row against 35 for
    an ``INSERT ... SELECT FROM unnest``), the others with one ``executemany``."""
    qn = connection.ops.quote_name
    columns = ", ".join(map(qn, RUN_COLUMNS))
    table = qn(TaskRun._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The driver's own cursor raises the driver's errors: made Django's, as the rest.
            copying = driver_cursor(cursor).copy(f"COPY {table} ({columns}) FROM STDIN")
            with connection.wrap_database_errors, copying as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join(["%s"] * len(RUN_COLUMNS))
        adapt = utc_text(connection)
        adapted = []
        for row in rows:
            values = list(row)
            for i in DATETIMES:
                if values[i] is not None:
                    values[i] = adapt(values[i])
            adapted.append(values)
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", adapted)


def retention() -> timedelta:
    """``TASKSHED["HISTORY_RETENTION"]`` as a timedelta (it may be given in seconds)."""
    value = taskshed_settings.HISTORY_RETENTION
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def prune_batch(using: str, before: datetime) -> "QuerySet[TaskRun, int]":
    """The ids of the next batch to prune: at most ``PRUNE_BATCH`` runs that started before
    ``before``, oldest first (``benchmarks/prune.py`` EXPLAINs it).

    Every run has a ``started_at``, runs that did not happen too (a row without one is never
    pruned), so the condition and the order are one range of ``taskshed_run_started_idx``,
    read backwards: a batch costs the rows it returns (and the dead ones just pruned), not the
    runs kept, even while the planner's statistics still count a big prune's deleted rows.
    """
    runs = TaskRun.objects.using(using).filter(started_at__lt=before)
    return runs.order_by("started_at", "id").values_list("id", flat=True)[:PRUNE_BATCH]


def prune_runs(using: str, before: datetime, max_batches: int | None = None) -> int:
    """Delete runs that started before ``before``, at most ``PRUNE_BATCH`` rows a statement
    and ``max_batches`` statements. Returns how many."""
    runs = TaskRun.objects.using(using)
    deleted = batches = 0
    while max_batches is None or batches < max_batches:
        ids = list(prune_batch(using, before))
        if not ids:
            break
        deleted += delete_without_signals(runs.filter(id__in=ids))
        batches += 1
        if len(ids) < PRUNE_BATCH:
            break
    return deleted
