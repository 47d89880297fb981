"""AsyncScheduler and SyncScheduler: TaskShed's scheduling API over the Task table."""

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from asgiref.sync import sync_to_async

from . import notifications
from .datastores import DjangoDataStore
from .exceptions import TaskshedError
from .models import Task, TaskExecutionTime, new_task_id

R = TypeVar("R")


class Change(NamedTuple):
    """A committed change; ``run_at`` is its earliest affected occurrence, if known."""

    run_at: datetime | None


class Operations:
    """Each scheduler operation as one sync step returning ``(result, Change or None)``."""

    def __init__(self, datastore: DjangoDataStore):
        self.datastore = datastore

    def add_task(self, task: Task, replace_existing: bool) -> tuple[Task, Change]:
        stored = self.datastore.add_task(task, replace_existing=replace_existing)
        return stored, Change(None if stored.paused else stored.run_at)

    def add_tasks(
        self, tasks: Iterable[Task], replace_existing: bool
    ) -> tuple[None, Change | None]:
        earliest = self.datastore.add_tasks(tasks, replace_existing=replace_existing)
        return None, None if earliest is None else Change(earliest)

    def fetch_tasks(
        self, task_ids: Iterable[str] | None, group_id: str | None
    ) -> tuple[list[Task], None]:
        return self.datastore.fetch_tasks(task_ids, group_id), None

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
        count = self.datastore.remove_tasks(task_ids, group_id)
        return count, Change(None) if count else None

    def run_tasks_now(
        self, task_ids: Iterable[str] | None, group_id: str | None, only_failed: bool
    ) -> tuple[int, Change | None]:
        count = self.datastore.run_tasks_now(task_ids, group_id, only_failed=only_failed)
        return count, Change(None) if count else None

    def update_execution_times(
        self, times: Iterable[TaskExecutionTime]
    ) -> tuple[None, Change | None]:
        earliest = self.datastore.update_execution_times(times)
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
) -> Task:
    """The unsaved Task that ``add_task()`` arguments describe."""
    return Task(
        task_id=new_task_id() if task_id is None else task_id,
        callback=callback,
        run_at=run_at,  # type: ignore[misc]  # None: validation makes it now
        kwargs={} if kwargs is None else kwargs,
        run_type=run_type,
        interval=interval,
        group_id=group_id,
        paused=paused,
        coalesce=coalesce,
    )


class _SchedulerBase:
    def __init__(self, datastore: DjangoDataStore | None = None, *, worker: Any = None):
        self.datastore = datastore or DjangoDataStore()
        self.worker = worker
        self.started = False
        self._ops = Operations(self.datastore)

    def _add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        if self.worker is None:
            raise TaskshedError("add_callback() needs a worker: pass worker= to the scheduler")
        self.worker.add_callback(name, callback)


SELECTOR_DOC = "Select tasks by an iterable of ``task_ids`` or by one ``group_id``."


class SyncScheduler(_SchedulerBase):
    """The scheduler for sync code (views, the shell, commands).

    Every method is one transaction; workers are notified once it commits, so a change
    made inside ``transaction.atomic()`` that rolls back tells nobody.

    Args:
        datastore: Where tasks live; defaults to ``DjangoDataStore()``.
        worker: An in-process worker to wake directly and to take ``add_callback()``.
    """

    def start(self) -> None:
        """Mark the scheduler started; calling it again does nothing."""
        self.started = True

    def shutdown(self) -> None:
        """Mark the scheduler stopped; calling it again does nothing."""
        self.started = False

    def add_task(
        self,
        callback: str,
        run_at: datetime | None = None,
        kwargs: dict[str, Any] | None = None,
        run_type: str = "once",
        interval: timedelta | None = None,
        task_id: str | None = None,
        group_id: str | None = None,
        paused: bool = False,
        coalesce: bool = True,
        *,
        replace_existing: bool = True,
    ) -> Task:
        """Schedule one task and return it as stored.

        ``run_at`` defaults to now; a naive one is read in the current time zone. With
        ``replace_existing=False`` an existing ``task_id`` is left untouched and returned.
        """
        task = new_task(
            callback, run_at, kwargs, run_type, interval, task_id, group_id, paused, coalesce
        )
        return self._commit(*self._ops.add_task(task, replace_existing))

    def add_tasks(self, tasks: Iterable[Task], *, replace_existing: bool = True) -> None:
        """Schedule many unsaved tasks in one transaction: all or nothing, one notification."""
        self._commit(*self._ops.add_tasks(tasks, replace_existing))

    def fetch_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> list[Task]:
        """The tasks with these ids, or in this group, ordered by run_at."""
        return self._commit(*self._ops.fetch_tasks(task_ids, group_id))

    def pause_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Suspend tasks until resumed (the first pause is stamped); returns how many."""
        return self._commit(*self._ops.pause_tasks(task_ids, group_id))

    def resume_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Resume paused tasks; returns how many."""
        return self._commit(*self._ops.resume_tasks(task_ids, group_id))

    def remove_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Delete tasks; returns how many."""
        return self._commit(*self._ops.remove_tasks(task_ids, group_id))

    def run_tasks_now(
        self,
        *,
        task_ids: Iterable[str] | None = None,
        group_id: str | None = None,
        only_failed: bool = False,
    ) -> int:
        """Make tasks due now (resumed, failure cleared); ``only_failed`` retries just the
        failed ones. Returns how many."""
        return self._commit(*self._ops.run_tasks_now(task_ids, group_id, only_failed))

    def update_execution_times(self, tasks: Iterable[TaskExecutionTime]) -> None:
        """Move tasks to new run_at values in one transaction."""
        self._commit(*self._ops.update_execution_times(tasks))

    def add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        """Register ``callback`` under ``name`` with the attached worker."""
        self._add_callback(name, callback)

    def _commit(self, result: R, change: Change | None) -> R:
        if change is not None:
            notifications.notify_on_commit(change.run_at, self.datastore.using, self.worker)
        return result


class AsyncScheduler(_SchedulerBase):
    """TaskShed's ``AsyncScheduler``: the same API as ``SyncScheduler``, as coroutines.

    Each call runs one transactional step on Django's sync thread (``sync_to_async``),
    then notifies workers from the event loop.

    Args:
        datastore: Where tasks live; defaults to ``DjangoDataStore()``.
        worker: An in-process ``EventDrivenWorker`` to wake directly and to take
            ``add_callback()``.
    """

    async def start(self) -> None:
        """Mark the scheduler started; calling it again does nothing."""
        self.started = True

    async def shutdown(self) -> None:
        """Mark the scheduler stopped; calling it again does nothing."""
        self.started = False

    async def add_task(
        self,
        callback: str,
        run_at: datetime | None = None,
        kwargs: dict[str, Any] | None = None,
        run_type: str = "once",
        interval: timedelta | None = None,
        task_id: str | None = None,
        group_id: str | None = None,
        paused: bool = False,
        coalesce: bool = True,
        *,
        replace_existing: bool = True,
    ) -> Task:
        """Schedule one task and return it as stored (see ``SyncScheduler.add_task``)."""
        task = new_task(
            callback, run_at, kwargs, run_type, interval, task_id, group_id, paused, coalesce
        )
        return await self._run(self._ops.add_task, task, replace_existing)

    async def add_tasks(self, tasks: Iterable[Task], *, replace_existing: bool = True) -> None:
        """Schedule many unsaved tasks in one transaction: all or nothing, one notification."""
        await self._run(self._ops.add_tasks, tasks, replace_existing)

    async def fetch_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> list[Task]:
        """The tasks with these ids, or in this group, ordered by run_at."""
        return await self._run(self._ops.fetch_tasks, task_ids, group_id)

    async def pause_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Suspend tasks until resumed (the first pause is stamped); returns how many."""
        return await self._run(self._ops.pause_tasks, task_ids, group_id)

    async def resume_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Resume paused tasks; returns how many."""
        return await self._run(self._ops.resume_tasks, task_ids, group_id)

    async def remove_tasks(
        self, *, task_ids: Iterable[str] | None = None, group_id: str | None = None
    ) -> int:
        """Delete tasks; returns how many."""
        return await self._run(self._ops.remove_tasks, task_ids, group_id)

    async def run_tasks_now(
        self,
        *,
        task_ids: Iterable[str] | None = None,
        group_id: str | None = None,
        only_failed: bool = False,
    ) -> int:
        """Make tasks due now (resumed, failure cleared); ``only_failed`` retries just the
        failed ones. Returns how many."""
        return await self._run(self._ops.run_tasks_now, task_ids, group_id, only_failed)

    async def update_execution_times(self, tasks: Iterable[TaskExecutionTime]) -> None:
        """Move tasks to new run_at values in one transaction."""
        await self._run(self._ops.update_execution_times, tasks)

    async def add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        """Register ``callback`` under ``name`` with the attached worker."""
        self._add_callback(name, callback)

    async def _run(self, operation: Callable[..., tuple[R, Change | None]], *args: Any) -> R:
        # Django's sync thread runs in autocommit here: the step has committed when it returns.
        result, change = await sync_to_async(operation)(*args)
        if change is not None:
            if self.worker is not None:
                self.worker.update_schedule(change.run_at)
            await notifications.asend_changed(change.run_at)
        return result
