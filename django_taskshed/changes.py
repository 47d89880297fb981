"""Each scheduler operation as one sync step over the datastore, with the change it made.

The change (the earliest ``run_at`` it affects, when known) is what workers are told once
the step has committed.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from .datastores import DjangoDataStore
from .datastores.validation import TaskFields
from .models import DEFAULT_QUEUE, Task, TaskExecutionTime, new_task_id


class CronFields(NamedTuple):
    """``add_task()``'s cron keywords."""

    cron: str | None
    timezone: str | None
    on_nonexistent: str
    on_ambiguous: str


class Routing(NamedTuple):
    """``add_task()``'s ``queue`` and ``priority``."""

    queue: str
    priority: int


DEFAULT_ROUTING = Routing(DEFAULT_QUEUE, 0)


class Change(NamedTuple):
    """A committed change; ``run_at`` is its earliest affected occurrence, if known."""

    run_at: datetime | None


class Operations:
    """Each scheduler operation as one sync step returning ``(result, Change or None)``."""

    def __init__(self, datastore: DjangoDataStore):
        self.datastore = datastore

    def add_task(self, task: Task | TaskFields, replace_existing: bool) -> tuple[Task, Change]:
        stored = self.datastore.write_task(task, replace_existing=replace_existing)
        return stored, Change(None if stored.paused else stored.run_at)

    def add_tasks(
        self, tasks: Iterable[Task], replace_existing: bool
    ) -> tuple[None, Change | None]:
        earliest = self.datastore.write_tasks(tasks, replace_existing=replace_existing)
        return None, None if earliest is None else Change(earliest)

    def fetch_tasks(
        self, task_ids: Iterable[str] | None, group_id: str | None
    ) -> tuple[list[Task], None]:
        return self.datastore.read_tasks(task_ids, group_id), None

    def pause_tasks(
        self, task_ids: Iterable[str] | None, group_id: str | None
    ) -> tuple[int, Change | None]:
        count = self.datastore.pause_tasks(task_ids, group_id)
        return count, Change(None) if count else None

    def resume_tasks(
        self, task_ids: Iterable[str] | None, group_id: str | None
    ) -> tuple[int, Change | None]:
        count, earliest = self.datastore.resume_tasks(task_ids, group_id)
        return count, Change(earliest) if count else None

    def remove_tasks(
        self, task_ids: Iterable[str] | None, group_id: str | None
    ) -> tuple[int, Change | None]:
        count = self.datastore.delete_tasks(task_ids, group_id)
        return count, Change(None) if count else None

    def run_tasks_now(
        self, task_ids: Iterable[str] | None, group_id: str | None, only_failed: bool
    ) -> tuple[int, Change | None]:
        count = self.datastore.run_tasks_now(task_ids, group_id, only_failed=only_failed)
        return count, Change(None) if count else None

    def update_execution_times(
        self, times: Iterable[TaskExecutionTime]
    ) -> tuple[None, Change | None]:
        earliest = self.datastore.move_tasks(times)
        return None, None if earliest is None else Change(earliest)


def new_task(
    callback: str,
    run_at: datetime | None,
    kwargs: dict[str, Any] | None,
    run_type: str,
    interval: timedelta | None,
    task_id: str | None,
    group_id: str | None,
    paused: bool,
    coalesce: bool,
    cron: CronFields,
    routing: Routing = DEFAULT_ROUTING,
) -> TaskFields:
    """The task that ``add_task()`` arguments describe (validated when it is written)."""
    return TaskFields(
        task_id=new_task_id() if task_id is None else task_id,
        callback=callback,
        run_at=run_at,  # None: validation makes it now
        kwargs={} if kwargs is None else kwargs,
        run_type=run_type,
        interval=interval,
        group_id=group_id,
        paused=paused,
        coalesce=coalesce,
        cron=cron.cron or "",
        timezone=cron.timezone or "",
        on_nonexistent=cron.on_nonexistent,
        on_ambiguous=cron.on_ambiguous,
        queue=routing.queue,
        priority=routing.priority,
    )
