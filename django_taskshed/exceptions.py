"""Errors raised by django-taskshed's public API."""

from datetime import datetime


class TaskshedError(Exception):
    """Base class of every django-taskshed error."""


class InvalidTaskError(TaskshedError, ValueError):
    """A task's definition is invalid; ``task_id`` and ``field`` name the culprit."""

    def __init__(self, message: str, *, task_id: str | None = None, field: str | None = None):
        self.task_id = task_id
        self.field = field
        prefix = f"task {task_id!r}: " if task_id else ""
        super().__init__(prefix + message)


class DuplicateCallbackError(TaskshedError, ValueError):
    """A callback name is registered twice."""

    def __init__(self, name: str, existing: str, new: str):
        self.name = name
        super().__init__(
            f"callback name {name!r} is already registered to {existing}; cannot register {new}"
        )


class BadTaskError(TaskshedError):
    """A stored task that can never run as it is (unknown callback, kwargs that do not fit)."""

    def __init__(self, task_id: str, reason: str):
        self.task_id = task_id
        super().__init__(f"task {task_id!r}: {reason}")


class TaskTimeoutError(TaskshedError, TimeoutError):
    """A callback ran longer than its timeout."""

    def __init__(self, task_id: str, seconds: float):
        self.task_id = task_id
        super().__init__(f"task {task_id!r} timed out after {seconds:g} s")


class WorkerDiedError(TaskshedError):
    """A task's workers died running it (killed, out of memory, ``os._exit``) more often than
    its retries allow; it fails without being run again.

    ``deaths`` is how many of its attempts ended so (from the run history; None when the
    history is off), ``attempts`` how many it made."""

    def __init__(self, task_id: str, deaths: int | None, attempts: int):
        self.task_id = task_id
        self.deaths = deaths
        self.attempts = attempts
        if deaths is None:
            what = f"the worker running it died during attempt {attempts}, its last allowed"
        else:
            what = f"the worker running it died {deaths} time{'s' if deaths != 1 else ''}"
        super().__init__(f"task {task_id!r}: {what}")


class StaleTaskError(TaskshedError):
    """``Task.save()`` of an instance older than its row: the task was edited, or a worker
    ran it, since the instance was loaded (or the row was deleted). Nothing was written."""

    def __init__(self, task_id: str, *, deleted: bool = False):
        self.task_id = task_id
        self.deleted = deleted
        what = "was deleted" if deleted else "was changed (an edit, or a worker's run)"
        super().__init__(
            f"task {task_id!r} {what} since this instance was loaded; nothing was saved: "
            "fetch the task again and make the change on it"
        )


class NoWorkerError(TaskshedError, RuntimeError):
    """A call that needs an in-process worker was made on a scheduler without one."""


class WorkerIdInUseError(TaskshedError, RuntimeError):
    """A worker was started with the id of a worker that is still alive."""

    def __init__(
        self, worker_id: str, hostname: str, pid: int, heartbeat_at: datetime, expires_at: datetime
    ):
        self.worker_id = worker_id
        self.hostname = hostname
        self.pid = pid
        self.heartbeat_at = heartbeat_at
        super().__init__(
            f"worker id {worker_id!r} is in use by a live worker: host {hostname}, pid {pid}, "
            f"last heartbeat {heartbeat_at.isoformat(timespec='seconds')}. Stop it or give "
            f"this worker another --worker-id; without heartbeats its row is taken over after "
            f"{expires_at.isoformat(timespec='seconds')}."
        )
