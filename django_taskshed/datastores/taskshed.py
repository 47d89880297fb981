"""TaskShed's datastore methods, as coroutines over the datastore's sync steps.

TaskShed's datastores are used as ``await datastore.fetch_due_tasks(now)``; these methods
keep those names and that calling convention. Like TaskShed's, they do not notify workers:
the schedulers do (the data access object stores, the scheduler tells).
"""

from collections.abc import Iterable
from datetime import datetime

from asgiref.sync import sync_to_async

from ..models import Task, TaskExecutionTime
from .tasks import TaskOperations


class TaskShedMethods(TaskOperations):
    """The coroutine API of TaskShed's ``DataStore`` base class."""

    async def start(self) -> None:
        """Nothing to open: Django manages the connections. Present for TaskShed's callers."""

    async def shutdown(self) -> None:
        """Nothing to close: Django manages the connections. Present for TaskShed's callers."""

    async def add_tasks(self, tasks: Iterable[Task], *, replace_existing: bool = True) -> None:
        """Write unsaved tasks in one transaction, all or nothing."""
        await sync_to_async(self.write_tasks)(list(tasks), replace_existing=replace_existing)

    async def fetch_due_tasks(self, dt: datetime) -> list[Task]:
        """The tasks due at ``dt`` and free to run, earliest first; nothing is claimed."""
        return await sync_to_async(self.due_tasks)(dt)

    async def fetch_next_wakeup(self) -> datetime | None:
        """The earliest ``run_at`` of a task that can run; None when there is none."""
        return await sync_to_async(self.next_run_at)()

    async def fetch_tasks(self, task_ids: Iterable[str]) -> list[Task]:
        """The tasks with these ids, ordered by run_at."""
        return await sync_to_async(self.read_tasks)(task_ids=list(task_ids))

    async def fetch_group_tasks(self, group_id: str) -> list[Task]:
        """The tasks of a group, ordered by run_at."""
        return await sync_to_async(self.read_tasks)(group_id=group_id)

    async def update_execution_times(self, tasks: Iterable[TaskExecutionTime]) -> None:
        """Move tasks to new run_at values in one transaction."""
        await sync_to_async(self.move_tasks)(list(tasks))

    async def update_tasks_paused_status(self, task_ids: Iterable[str], paused: bool) -> None:
        """Pause or resume the tasks with these ids."""
        step = self.pause_tasks if paused else self.resume_tasks
        await sync_to_async(step)(task_ids=list(task_ids))

    async def update_group_paused_status(self, group_id: str, paused: bool) -> None:
        """Pause or resume a group's tasks."""
        step = self.pause_tasks if paused else self.resume_tasks
        await sync_to_async(step)(group_id=group_id)

    async def remove_tasks(self, task_ids: Iterable[str]) -> None:
        """Delete the tasks with these ids."""
        await sync_to_async(self.delete_tasks)(task_ids=list(task_ids))

    async def remove_all_tasks(self) -> None:
        """Delete every task this datastore sees."""
        await sync_to_async(self.delete_all_tasks)()

    async def remove_group_tasks(self, group_id: str) -> None:
        """Delete a group's tasks."""
        await sync_to_async(self.delete_tasks)(group_id=group_id)
