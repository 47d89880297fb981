"""The scheduler's side of the datastore: write, read, pause, resume, move and delete tasks."""

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from django.db import connections
from django.db.models import Min, Q
from django.utils import timezone

from ..conf import taskshed_settings
from ..django_internals import delete_without_signals
from ..exceptions import InvalidTaskError
from ..models import ID_MAX_LENGTH, Task, TaskExecutionTime, TaskQuerySet
from . import upserts
from .paused import skip_paused_occurrences
from .transactions import writing
from .validation import TaskFields, aware_utc, check_identifier, task_row

T = TypeVar("T")
CHUNK = 5000


def chunks(items: list[T], size: int | None = None) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (default ``CHUNK``, read at each call)."""
    size = size or CHUNK
    for start in range(0, len(items), size):
        yield items[start : start + size]


def selector(task_ids: Iterable[str] | None, group_id: str | None) -> list[Q]:
    """The rows named by an iterable of ``task_ids`` or by one ``group_id``, in parts.

    Long id lists are split so that no query passes the database's parameter limit.
    """
    if task_ids is not None and group_id is not None:
        raise ValueError("pass either task_ids or group_id, not both")
    if group_id is not None:
        check_identifier(group_id, "group_id", ID_MAX_LENGTH, None)
        return [Q(group_id=group_id)]
    if task_ids is None:
        raise ValueError("pass task_ids (an iterable of task ids) or group_id; neither was given")
    if isinstance(task_ids, str):
        raise ValueError(f"task_ids must be an iterable of task ids, not the string {task_ids!r}")
    return [Q(pk__in=part) for part in chunks(list(task_ids))]


def validated_rows(tasks: Iterable[Task | TaskFields]) -> list[tuple[Any, ...]]:
    """Stored rows of unsaved tasks, or InvalidTaskError naming the first bad one."""
    now = timezone.now()
    max_bytes = taskshed_settings.KWARGS_MAX_BYTES
    rows = []
    for task in tasks:
        if not isinstance(task, (Task, TaskFields)):
            raise InvalidTaskError(f"expected an unsaved Task, got {type(task).__name__}")
        rows.append(task_row(task, now, max_bytes))
    seen: set[str] = set()
    for row in rows:
        if row[0] in seen:
            raise InvalidTaskError(
                "task_id appears twice in one batch", task_id=row[0], field="task_id"
            )
        seen.add(row[0])
    return rows


class TaskOperations:
    """Each scheduler operation as one sync, transactional step over ``get_queryset()``.

    Args:
        using: The database alias; defaults to ``TASKSHED["DATABASE"]``.
    """

    def __init__(self, using: str | None = None):
        self._using = using

    @property
    def using(self) -> str:
        return self._using or taskshed_settings.DATABASE

    def get_queryset(self) -> TaskQuerySet:
        """The tasks this datastore sees; every operation, the worker's too, starts here.

        Override it to narrow what a scheduler and a worker see (say, one tenant's groups).
        """
        return Task.objects.using(self.using)

    def write_tasks(
        self, tasks: Iterable[Task], *, replace_existing: bool = True
    ) -> datetime | None:
        """Write unsaved tasks in one transaction: all or nothing. Returns the earliest run_at."""
        rows = validated_rows(tasks)
        if not rows:
            return None
        with writing(self.using):
            upserts.insert_tasks(connections[self.using], rows, replace_existing)
        if len(rows) >= upserts.ANALYZE_AFTER_ROWS:
            upserts.refresh_statistics(connections[self.using])
        earliest: datetime = min(row[3] for row in rows)
        return earliest

    def write_task(self, task: Task | TaskFields, *, replace_existing: bool = True) -> Task:
        """Write one task and return it as stored (the existing row if not replaced)."""
        (row,) = validated_rows([task])
        kept = upserts.insert_task(connections[self.using], row, replace_existing)
        if kept is None:
            return self.get_queryset().get(pk=row[0])
        return upserts.task_from_row(row, kept, self.using)

    def read_tasks(
        self, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> list[Task]:
        """The tasks named, ordered by run_at."""
        parts = selector(task_ids, group_id)
        found = [task for part in parts for task in self.get_queryset().filter(part)]
        return (
            sorted(found, key=lambda task: (task.run_at, task.task_id)) if len(parts) > 1 else found
        )

    def next_run_at(self) -> datetime | None:
        """The earliest run_at of a task that can run (not paused, not failed)."""
        earliest: datetime | None = (
            self.get_queryset().runnable().aggregate(next=Min("run_at"))["next"]
        )
        return earliest

    def move_tasks(self, times: Iterable[TaskExecutionTime]) -> datetime | None:
        """Move tasks to new run_at values in one transaction. Returns the earliest."""
        moved = {}
        for item in times:
            check_identifier(item.task_id, "task_id", ID_MAX_LENGTH, None)
            moved[item.task_id] = aware_utc(item.run_at, task_id=item.task_id)
        if not moved:
            return None
        now = timezone.now()
        tasks = [Task(task_id=tid, run_at=run_at, updated_at=now) for tid, run_at in moved.items()]
        with writing(self.using):
            self.get_queryset().bulk_update(tasks, ["run_at", "updated_at"], batch_size=500)
        return min(moved.values())

    def pause_tasks(
        self, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Pause tasks not already paused, stamping ``paused_at``. Returns how many."""
        now = timezone.now()
        parts = selector(task_ids, group_id)
        return self._update(parts, Q(paused=False), paused=True, paused_at=now, updated_at=now)

    def resume_tasks(
        self, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> tuple[int, datetime | None]:
        """Resume paused tasks. Returns how many, and the earliest run_at among them.

        A recurring or cron task's occurrences that fell due while it was paused are skipped
        (``paused.skip_paused_occurrences``): it next runs at its first occurrence from now.
        """
        parts = selector(task_ids, group_id)
        with writing(self.using):
            paused = [self.get_queryset().filter(part, paused=True) for part in parts]
            for query in paused:
                skip_paused_occurrences(query, timezone.now())
            found = [query.aggregate(m=Min("run_at"))["m"] for query in paused]
            count = self._update(
                parts, Q(paused=True), paused=False, paused_at=None, updated_at=timezone.now()
            )
        return count, min((f for f in found if f is not None), default=None)

    def run_tasks_now(
        self,
        task_ids: Iterable[str] | None = None,
        group_id: str | None = None,
        *,
        only_failed: bool = False,
    ) -> int:
        """Make tasks due now: resumed, failure state cleared. Returns how many."""
        now = timezone.now()
        reset = {"run_at": now, "paused": False, "paused_at": None, "failed_at": None}
        where = Q(failed_at__isnull=False) if only_failed else Q()
        parts = selector(task_ids, group_id)
        return self._update(parts, where, attempts=0, updated_at=now, **reset)

    def delete_tasks(
        self, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Delete tasks. Returns how many."""
        parts = selector(task_ids, group_id)
        with writing(self.using):
            return sum(delete_without_signals(self.get_queryset().filter(p)) for p in parts)

    def delete_all_tasks(self) -> int:
        """Delete every task this datastore sees. Returns how many."""
        with writing(self.using):
            return delete_without_signals(self.get_queryset())

    def due_tasks(self, now: datetime) -> list[Task]:
        """The tasks due at ``now`` and free to claim, earliest first; nothing is claimed."""
        return list(self.get_queryset().due(aware_utc(now, field="now")).order_by("run_at"))

    def _update(self, parts: list[Q], where: Q, **values: Any) -> int:
        with writing(self.using):
            return sum(self.get_queryset().filter(part, where).update(**values) for part in parts)
