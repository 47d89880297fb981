"""AsyncScheduler and SyncScheduler: TaskShed's scheduling API over the Task table."""

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from . import notifications
from .changes import Change, CronFields, Operations, Routing, new_task
from .datastores import DjangoDataStore
from .eager import eager
from .exceptions import NoWorkerError
from .models import DEFAULT_QUEUE, Task, TaskExecutionTime

R = TypeVar("R")


class _SchedulerBase:
    def __init__(self, datastore: DjangoDataStore | None = None, *, worker: Any = None):
        self.datastore = datastore or DjangoDataStore()
        self.worker = worker
        self.started = False
        self._ops = Operations(self.datastore)

    def _add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        if self.worker is None:
            raise NoWorkerError("add_callback() needs a worker: pass worker= to the scheduler")
        self.worker.add_callback(name, callback)


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
        cron: str | None = None,
        timezone: str | None = None,
        on_nonexistent: str = "shift",
        on_ambiguous: str = "first",
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
    ) -> Task:
        """Schedule one task and return it as stored.

        ``run_at`` defaults to now; a naive one is read in the current time zone. With
        ``replace_existing=False`` an existing ``task_id`` is left untouched and returned.
        A cron task (``run_type="cron"``) runs at the occurrences of ``cron`` (five fields or a
        macro such as ``@daily``) in ``timezone`` (default: the current time zone, stored with
        the task), by the DST policy ``on_nonexistent`` (``shift`` or ``skip``) and
        ``on_ambiguous`` (``first``, ``second`` or ``both``); its ``run_at`` defaults to the
        first occurrence after now. ``queue`` names the queue the task is in (workers started
        with ``--queue`` claim only from theirs) and ``priority`` (-100 to 100) orders due
        tasks: higher first, then earlier ``run_at``.
        """
        cron_fields = CronFields(cron, timezone, on_nonexistent, on_ambiguous)
        task = new_task(
            callback, run_at, kwargs, run_type, interval, task_id, group_id, paused, coalesce,
            cron_fields, Routing(queue, priority),
        )  # fmt: skip
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

    def __init__(self, datastore: DjangoDataStore | None = None, *, worker: Any = None):
        super().__init__(datastore, worker=worker)
        # One wrapper for every call: building it costs a share of each hop.
        self._hop: Callable[..., Awaitable[tuple[Any, Change | None, bool]]] = sync_to_async(
            self._step
        )

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
        cron: str | None = None,
        timezone: str | None = None,
        on_nonexistent: str = "shift",
        on_ambiguous: str = "first",
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
    ) -> Task:
        """Schedule one task and return it as stored (see ``SyncScheduler.add_task``)."""
        cron_fields = CronFields(cron, timezone, on_nonexistent, on_ambiguous)
        task = new_task(
            callback, run_at, kwargs, run_type, interval, task_id, group_id, paused, coalesce,
            cron_fields, Routing(queue, priority),
        )  # fmt: skip
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

    @eager
    def add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        """Register ``callback`` under ``name`` with the attached worker, at once; the result
        may be awaited, so TaskShed's plain call and ``await`` both work. Without a worker,
        NoWorkerError (a RuntimeError)."""
        self._add_callback(name, callback)

    async def _run(self, operation: Callable[..., tuple[R, Change | None]], *args: Any) -> R:
        result: R
        result, change, send = await self._hop(operation, *args)
        if change is not None:
            if self.worker is not None:
                self.worker.update_schedule(change.run_at)
            if send:
                await notifications.asend_changed(change.run_at)
        return result

    def _step(
        self, operation: Callable[..., tuple[R, Change | None]], *args: Any
    ) -> tuple[R, Change | None, bool]:
        # Django's sync thread runs in autocommit here: the step has committed when it
        # returns, so the hint is routed at once (sent by the caller, or handed to HINTS).
        result, change = operation(*args)
        using = self.datastore.using
        return (
            result,
            change,
            change is not None and notifications.hint_wanted(change.run_at, using),
        )
