"""``TaskShedBackend``: Django's Tasks framework (``TASKS``) on this app's task table, worker,
admin and run history.

    TASKS = {"default": {"BACKEND": "django_taskshed.backends.TaskShedBackend"}}

An enqueued task is a row of ``django_taskshed.models.Task``, run by ``manage.py
runtaskworker`` beside the TaskShed-style tasks, with the same leases, retries, timeouts and
push wake-up; its result is read from that row while it exists, then from the run history.
"""

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from .datastores import DjangoDataStore
from .models import Task
from .schedulers import AsyncScheduler, SyncScheduler
from .tasks_framework import compat, loaded
from .tasks_framework.payload import Payload, new_result_id
from .tasks_framework.results import task_result

OPTION_NAMES = ("DATABASE", "MAX_RETRIES", "TIMEOUT")
QUEUE_MAX_LENGTH = Task._meta.get_field("queue").max_length or 100


class TaskShedBackend(compat.BaseTaskBackend):  # type: ignore[misc]
    """Runs Django tasks with ``runtaskworker``.

    ``OPTIONS``: ``DATABASE`` (the alias of the task table, default ``"default"``),
    ``MAX_RETRIES`` and ``TIMEOUT`` (seconds) for its tasks (default: ``TASKSHED``'s).
    """

    supports_defer = True  # run_after: the task's run_at
    supports_async_task = True  # coroutine functions run on the worker's event loop
    supports_get_result = True  # from the task row, then from the run history
    supports_priority = True  # claimed by priority, then run_at

    def __init__(self, alias: str, params: dict[str, Any]):
        super().__init__(alias, params)
        self.database = self.options.get("DATABASE", DEFAULT_DB_ALIAS)
        self._valid: set[tuple[Any, ...]] = set()

    def validate_task(self, task: Any) -> None:
        """Django's rules; a valid task is recorded as loaded in this process, so that a worker
        started here may run it.

        Django's checks read the function's signature, which costs more than a worker's whole
        run of a no-op: a combination of the values they look at is checked once.
        """
        aware = task.run_after is None or timezone.is_aware(task.run_after)
        key = (task.func, task.takes_context, task.priority, task.queue_name, aware)
        if key not in self._valid:
            super().validate_task(task)
            self._valid.add(key)
        loaded.record(task)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        row, result = self._prepare(task, args, kwargs)
        scheduler = SyncScheduler(DjangoDataStore(using=self.database))
        scheduler._commit(*scheduler._ops.add_task(row, False))  # noqa: SLF001
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        row, result = self._prepare(task, args, kwargs)
        scheduler = AsyncScheduler(DjangoDataStore(using=self.database))
        await scheduler._run(scheduler._ops.add_task, row, False)  # noqa: SLF001
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        return task_result(str(result_id), self.database)

    def _prepare(self, task: Any, args: Any, kwargs: Any) -> tuple[Task, Any]:
        args, kwargs = json_arguments(task, list(args), dict(kwargs))
        now = timezone.now()
        new_id = new_result_id(now)
        row = Task(
            task_id=new_id,
            callback=task.module_path,
            kwargs=Payload.stored(args, kwargs, task),
            run_at=task.run_after or now,
            queue=task.queue_name,
            priority=task.priority,
            max_retries=self.options.get("MAX_RETRIES"),
            timeout=_seconds(self.options.get("TIMEOUT")),
        )
        result = compat.TaskResult(
            task=task, id=new_id, status=compat.TaskResultStatus.READY, enqueued_at=now,
            started_at=None, finished_at=None, last_attempted_at=None, args=args, kwargs=kwargs,
            backend=self.alias, errors=[], worker_ids=[],
        )  # fmt: skip
        return row, result

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [
            checks.Error(message, id="django_taskshed.E010", obj=f"TASKS[{self.alias!r}]")
            for message in self._problems()
        ]

    def _problems(self) -> list[str]:
        problems = []
        where = f"TASKS[{self.alias!r}]"
        unknown = sorted(set(self.options) - set(OPTION_NAMES))
        if unknown:
            problems.append(
                f"{where}['OPTIONS'] has unknown keys {unknown}; it takes {list(OPTION_NAMES)}"
            )
        if self.database not in settings.DATABASES:
            problems.append(f"{where}['OPTIONS']['DATABASE'] = {self.database!r} is not a database")
        retries = self.options.get("MAX_RETRIES")
        if retries is not None and (type(retries) is not int or retries < 0):
            problems.append(
                f"{where}['OPTIONS']['MAX_RETRIES'] must be an int >= 0, not {retries!r}"
            )
        limit = self.options.get("TIMEOUT")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0
        ):
            problems.append(f"{where}['OPTIONS']['TIMEOUT'] must be seconds > 0, not {limit!r}")
        for queue in self.queues:
            if not isinstance(queue, str) or not queue or len(queue) > QUEUE_MAX_LENGTH:
                problems.append(
                    f"{where}['QUEUES'] holds {queue!r}: a queue is a name of 1 to "
                    f"{QUEUE_MAX_LENGTH} characters"
                )
        return problems


def _seconds(value: Any) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def json_arguments(task: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], Any]:
    """The arguments as a worker will get them back from JSON; ``TypeError`` naming the one
    that does not come back the same (Django's rule: tuples become lists)."""
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
    for label, value in named:
        try:
            normal = compat.normalize_json(value)
            back = json.loads(json.dumps(normal, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{label} of {task.module_path} is not JSON: {exc}") from None
        if back != normal:
            raise TypeError(
                f"{label} of {task.module_path} does not survive JSON: {normal!r} comes back "
                f"as {back!r} (JSON object keys are strings)"
            )
    return compat.normalize_json(args), compat.normalize_json(kwargs)
