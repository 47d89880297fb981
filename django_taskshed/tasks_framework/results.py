"""A Django ``TaskResult`` read from the task's row while it exists, and from its run history
afterwards (a one-off task's row is deleted once it succeeds)."""

import builtins
from datetime import datetime
from typing import Any

from django.utils import timezone

from .. import exceptions as taskshed_exceptions
from ..models import RunOutcome, Task, TaskRun
from . import compat
from .loaded import loaded_task
from .payload import Payload, is_payload
from .running import bound_task

ATTEMPTS = (RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.TIMED_OUT, RunOutcome.ABANDONED)
FAILURES = (RunOutcome.FAILED, RunOutcome.TIMED_OUT)
ROW_FIELDS = ("callback", "kwargs", "failed_at", "lease_owner", "lease_expires_at", "last_error")
GAVE_UP = f"{taskshed_exceptions.WorkerDiedError.__name__}: "
RUN_FIELDS = (
    "callback", "kwargs", "outcome", "worker_id", "started_at", "finished_at", "error",
    "traceback", "return_value",
)  # fmt: skip


def attempt_rows(task_id: str, using: str = "default") -> list[TaskRun]:
    """The run history's rows of the task's attempts, oldest first."""
    runs = TaskRun.objects.using(using).filter(task_id=task_id, outcome__in=ATTEMPTS)
    return list(runs.order_by("id").only(*RUN_FIELDS))


def task_result(result_id: str, using: str) -> Any:
    """The result of the Django task enqueued as ``result_id``; ``TaskResultDoesNotExist``
    when neither its row nor its history is there."""
    row = Task.objects.using(using).filter(pk=result_id).only(*ROW_FIELDS).first()
    runs = attempt_rows(result_id, using)
    source: Task | TaskRun | None = row if row is not None else (runs[-1] if runs else None)
    stored: Any = source.kwargs if source is not None else None
    if source is None or not is_payload(stored):
        raise compat.TaskResultDoesNotExist(f"no Django task result with id {result_id!r}")
    task = loaded_task(source.callback)
    if task is None:
        raise compat.TaskResultDoesNotExist(
            f"task result {result_id!r} is of {source.callback}, which this process has not "
            "loaded (its module was not imported)"
        )
    payload = Payload.of(stored)
    status, finished_at, value = _state(row, runs)
    worker_ids = [run.worker_id for run in runs]
    if status == compat.TaskResultStatus.RUNNING and row is not None and row.lease_owner:
        worker_ids.append(row.lease_owner)
    result = compat.TaskResult(
        task=bound_task(
            task, payload.backend, payload.queue_name, payload.priority, payload.run_after
        ),
        id=result_id,
        status=status,
        enqueued_at=payload.enqueued_at(result_id),
        started_at=runs[0].started_at if runs else None,
        finished_at=finished_at,
        last_attempted_at=runs[-1].started_at if runs else None,
        args=payload.args,
        kwargs=payload.kwargs,
        backend=payload.backend,
        errors=_errors(row, runs),
        worker_ids=worker_ids,
    )
    object.__setattr__(result, "_return_value", value)
    return result


def _errors(row: Task | None, runs: list[TaskRun]) -> list[Any]:
    """Each failed attempt's error; and, for a task failed because its workers kept dying
    (``WorkerDiedError``, no attempt of its own in the history), that error last."""
    errors = [
        compat.TaskError(exception_class_path=class_path_of(run.error), traceback=run.traceback)
        for run in runs
        if run.outcome in FAILURES
    ]
    if row is not None and row.failed_at is not None and row.last_error.startswith(GAVE_UP):
        path = class_path_of(row.last_error)
        errors.append(compat.TaskError(exception_class_path=path, traceback=row.last_error))
    return errors


def _state(row: Task | None, runs: list[TaskRun]) -> tuple[Any, datetime | None, Any]:
    """Status, ``finished_at`` and return value."""
    statuses = compat.TaskResultStatus
    if row is not None:
        if row.failed_at is not None:
            return statuses.FAILED, row.failed_at, None
        if row.lease_expires_at is not None and row.lease_expires_at > timezone.now():
            return statuses.RUNNING, None, None
        return statuses.READY, None, None
    last = runs[-1]
    if last.outcome == RunOutcome.SUCCEEDED:
        return statuses.SUCCESSFUL, last.finished_at, last.return_value
    return statuses.FAILED, last.finished_at, None


def class_path_of(error: str) -> str:
    """The exception's class path from a stored error line (``runner.error_line``)."""
    name = error.partition(": ")[0]
    if "." in name:
        return name
    for module in (builtins, taskshed_exceptions):
        if isinstance(getattr(module, name, None), type):
            return f"{module.__name__}.{name}"
    return f"__main__.{name}"
