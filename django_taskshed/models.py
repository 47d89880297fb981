"""The Task model: one row per scheduled task, and the small records beside it."""

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone as django_timezone

from .fenced_save import FencedSaveModel

ID_MAX_LENGTH = 255
CALLBACK_MAX_LENGTH = 200
CRON_MAX_LENGTH = 200
QUEUE_MAX_LENGTH = 100
DEFAULT_QUEUE = "default"
PRIORITY_MIN, PRIORITY_MAX = -100, 100


def new_task_id() -> str:
    """A fresh task id: a uuid4 in hex."""
    return uuid.uuid4().hex


class JSONIsObject(models.Func):
    """SQL condition: the JSON value in ``expression`` is an object, on every backend."""

    output_field = models.BooleanField()
    conditional = True
    function = "json_type"
    template = "json_type(%(expressions)s) = 'object'"

    def as_postgresql(self, compiler, connection, **extra):  # type: ignore[no-untyped-def]
        return self.as_sql(
            compiler, connection, template="jsonb_typeof(%(expressions)s) = 'object'"
        )

    def as_mysql(self, compiler, connection, **extra):  # type: ignore[no-untyped-def]
        return self.as_sql(compiler, connection, template="JSON_TYPE(%(expressions)s) = 'OBJECT'")


class RunType(models.TextChoices):
    ONCE = "once", "once"
    RECURRING = "recurring", "recurring (interval)"
    CRON = "cron", "cron"


class OnNonexistent(models.TextChoices):
    SHIFT = "shift", "shift: run at the first instant after the gap"
    SKIP = "skip", "skip: no run that day"


class OnAmbiguous(models.TextChoices):
    FIRST = "first", "first: the earlier of the two instants"
    SECOND = "second", "second: the later of the two instants"
    BOTH = "both", "both: run twice"


class TaskStatus(models.TextChoices):
    SCHEDULED = "scheduled", "scheduled"
    PAUSED = "paused", "paused"
    RUNNING = "running", "running"
    RETRYING = "retrying", "retrying"
    FAILED = "failed", "failed"


# Tasks that can run at all, written "paused = <false>" on every database and Django version
# (a bare False is written "NOT paused" on SQLite by Django 5.2 and "paused = 0" by 6.x), so
# that the due index's condition (migration 0002) matches it.
RUNNABLE = models.Q(paused=models.Value(False), failed_at__isnull=True)
# The order workers claim due tasks in, which the due index (migration 0007) keeps.
CLAIM_ORDER = ("-priority", "run_at")


def due_condition(now: datetime, until: datetime | None = None) -> models.Q:
    """The condition of ``TaskQuerySet.due``: runnable, ``run_at <= until`` (default now) and
    not under a live lease."""
    free = models.Q(lease_expires_at__isnull=True) | models.Q(lease_expires_at__lt=now)
    return RUNNABLE & models.Q(run_at__lte=until or now) & free


class TaskQuerySet(models.QuerySet["Task"]):
    def runnable(self) -> "TaskQuerySet":
        """Tasks that can run at all: not paused, not failed."""
        return self.filter(RUNNABLE)

    def due(self, now: datetime, until: datetime | None = None) -> "TaskQuerySet":
        """Tasks due by ``until`` (default now): runnable and not under a live lease."""
        return self.filter(due_condition(now, until))

    def in_queues(self, queues: Collection[str] | None) -> "TaskQuerySet":
        """Tasks in one of ``queues``; None means every queue."""
        return self if queues is None else self.filter(queue__in=list(queues))

    def with_status(self, status: str, now: datetime) -> "TaskQuerySet":
        """Tasks whose ``Task.status_at(now)`` is ``status``."""
        return self.filter(status_condition(status, now))


def status_condition(status: str, now: datetime) -> models.Q:
    """The condition of the tasks whose ``Task.status_at(now)`` is ``status``."""
    failed = models.Q(failed_at__isnull=False)
    running = models.Q(lease_expires_at__gt=now)
    conditions = {
        TaskStatus.FAILED: failed,
        TaskStatus.PAUSED: ~failed & models.Q(paused=True),
        TaskStatus.RUNNING: ~failed & models.Q(paused=False) & running,
        TaskStatus.RETRYING: ~failed & models.Q(paused=False, attempts__gt=0) & ~running,
        TaskStatus.SCHEDULED: ~failed & models.Q(paused=False, attempts=0) & ~running,
    }
    return conditions[TaskStatus(status)]


class Task(FencedSaveModel):
    """A scheduled task: what to run (a registered callback name and its kwargs) and when.

    ``run_at`` is the next occurrence, stored in UTC. The lease fields belong to the worker
    that currently runs the task; the attempt and error fields record what happened.
    ``save()`` never writes the lease, and refuses an instance older than its row
    (``StaleTaskError``: see ``fenced_save``).
    """

    task_id = models.CharField(primary_key=True, max_length=ID_MAX_LENGTH, default=new_task_id)
    callback = models.CharField(max_length=CALLBACK_MAX_LENGTH)
    kwargs = models.JSONField(default=dict, blank=True)
    run_at = models.DateTimeField()
    run_type = models.CharField(max_length=10, choices=RunType.choices, default=RunType.ONCE)
    interval = models.DurationField(null=True, blank=True)
    cron = models.CharField(
        max_length=CRON_MAX_LENGTH,
        blank=True,
        default="",
        help_text='Cron tasks: five fields ("30 2 * * *") or a macro such as @daily.',
    )
    timezone = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Cron tasks: the IANA time zone the expression is read in.",
    )
    on_nonexistent = models.CharField(
        max_length=8, choices=OnNonexistent.choices, default=OnNonexistent.SHIFT
    )
    on_ambiguous = models.CharField(
        max_length=8, choices=OnAmbiguous.choices, default=OnAmbiguous.FIRST
    )
    # None, not "", means "no group" / "no lease", as in TaskShed.
    group_id = models.CharField(max_length=ID_MAX_LENGTH, null=True, blank=True, db_index=True)  # noqa: DJ001
    queue = models.CharField(
        max_length=QUEUE_MAX_LENGTH,
        default=DEFAULT_QUEUE,
        help_text="Workers started with --queue claim only from their queues.",
    )
    priority = models.SmallIntegerField(
        default=0,
        help_text=f"{PRIORITY_MIN} to {PRIORITY_MAX}; among due tasks, higher runs first.",
    )
    paused = models.BooleanField(default=False)
    paused_at = models.DateTimeField(null=True, blank=True)
    coalesce = models.BooleanField(default=True)
    max_retries = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Retries after a failure; empty uses TASKSHED['MAX_RETRIES'].",
    )
    timeout = models.DurationField(
        null=True, blank=True, help_text="Longest a run may take; empty uses TASKSHED['TIMEOUT']."
    )
    attempts = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=ID_MAX_LENGTH, null=True, blank=True)  # noqa: DJ001
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    abandoned_by = models.CharField(  # noqa: DJ001
        max_length=ID_MAX_LENGTH,
        null=True,
        blank=True,
        help_text="Set by the last claim when the worker before it died holding the lease.",
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="", help_text="The last failure, one line.")
    last_traceback = models.TextField(blank=True, default="")
    failed_at = models.DateTimeField(null=True, blank=True)
    declared_in_code = models.BooleanField(
        default=False, help_text="Kept in step with TASKSHED['SCHEDULES']; edit it there."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["run_at", "task_id"]
        # The due query's index, taskshed_due_idx, is made per database by migrations 0002
        # and 0007 (priority DESC, then run_at: the claim's order).
        indexes = [models.Index(fields=["run_at"], name="taskshed_run_at_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(run_type__in=RunType.values), name="taskshed_run_type_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(run_type=RunType.ONCE)
                | models.Q(
                    run_type=RunType.RECURRING,
                    interval__isnull=False,
                    interval__gt=timedelta(0),
                    cron="",
                )
                | (
                    models.Q(run_type=RunType.CRON, interval__isnull=True)
                    & ~models.Q(cron="")
                    & ~models.Q(timezone="")
                ),
                name="taskshed_schedule_fields",
            ),
            models.CheckConstraint(condition=JSONIsObject("kwargs"), name="taskshed_kwargs_object"),
            models.CheckConstraint(
                condition=models.Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX),
                name="taskshed_priority_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} ({self.callback})"

    def __repr__(self) -> str:
        return f"<Task {self.task_id!r} {self.callback!r} run_at={self.run_at!r}>"

    def next_runs(self, after: datetime | None = None, count: int = 10) -> list[datetime]:
        """The first ``count`` occurrences of this task's schedule strictly after ``after``
        (default now), as aware UTC datetimes: the function the worker runs by."""
        from .occurrences import next_runs

        return next_runs(self, after or django_timezone.now(), count)

    def status_at(self, now: datetime) -> TaskStatus:
        """failed, paused, running (under a live lease), retrying, or scheduled."""
        if self.failed_at is not None:
            return TaskStatus.FAILED
        if self.paused:
            return TaskStatus.PAUSED
        if self.lease_expires_at is not None and self.lease_expires_at > now:
            return TaskStatus.RUNNING
        return TaskStatus.RETRYING if self.attempts else TaskStatus.SCHEDULED


class WorkerRecord(models.Model):
    """A live ``runtaskworker`` process, kept fresh by its heartbeat so the admin can show it."""

    worker_id = models.CharField(primary_key=True, max_length=ID_MAX_LENGTH)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    expires_at = models.DateTimeField(
        db_index=True, help_text="Without a heartbeat by then, the worker counts as gone."
    )
    callbacks = models.JSONField(default=list, blank=True)
    running = models.PositiveIntegerField(default=0)
    rereads_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The worker reads the schedule again by then anyway: a hint of a task due "
        "then or later need not reach it. Empty: every hint is sent.",
    )

    class Meta:
        ordering = ["worker_id"]
        verbose_name = "worker"

    def __str__(self) -> str:
        return f"{self.worker_id} ({self.hostname}:{self.pid})"


class RunOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    TIMED_OUT = "timed_out", "timed out"
    ABANDONED = "abandoned", "abandoned"
    COALESCED = "coalesced", "coalesced"
    SKIPPED_PAUSED = "skipped_paused", "skipped while paused"


class TaskRun(models.Model):
    """One attempt to run a task (or occurrences that did not run), written by the worker in
    the same transaction as the task's own result; kept after the task is gone."""

    task_id = models.CharField(max_length=ID_MAX_LENGTH)
    callback = models.CharField(max_length=CALLBACK_MAX_LENGTH)
    group_id = models.CharField(max_length=ID_MAX_LENGTH, null=True, blank=True)  # noqa: DJ001
    scheduled_for = models.DateTimeField(help_text="The task's run_at when it was claimed.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices)
    attempt = models.PositiveIntegerField(default=1, help_text="1 for the first attempt.")
    worker_id = models.CharField(max_length=ID_MAX_LENGTH, blank=True, default="")
    error = models.TextField(blank=True, default="", help_text="The failure, one line.")
    traceback = models.TextField(blank=True, default="")
    return_value = models.JSONField(null=True, blank=True)
    return_value_omitted = models.BooleanField(
        default=False, help_text="The value was not JSON or over HISTORY_MAX_RESULT_BYTES."
    )
    kwargs = models.JSONField(null=True, blank=True, help_text="The task's kwargs for this run.")
    missed = models.PositiveIntegerField(default=0, help_text="Occurrences that did not run.")
    missed_from = models.DateTimeField(null=True, blank=True)
    missed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        # The run list's default order, and each of its filters followed by that order. Most
        # runs succeed: the outcome index leaves them out (a filter on "succeeded" walks the
        # first index); PostgreSQL and SQLite make it partial, MySQL has no partial indexes.
        indexes = [
            models.Index(fields=["-started_at", "-id"], name="taskshed_run_started_idx"),
            models.Index(fields=["task_id", "-started_at", "-id"], name="taskshed_run_task_idx"),
            models.Index(
                fields=["outcome", "-started_at", "-id"],
                name="taskshed_run_outcome_idx",
                condition=~models.Q(outcome="succeeded"),
            ),
            models.Index(fields=["callback", "-started_at", "-id"], name="taskshed_run_cb_idx"),
            models.Index(fields=["group_id", "-started_at", "-id"], name="taskshed_run_group_idx"),
            models.Index(
                fields=["worker_id", "-started_at", "-id"], name="taskshed_run_worker_idx"
            ),
        ]
        verbose_name = "task run"

    def __str__(self) -> str:
        return f"{self.task_id} {self.outcome} at {self.started_at or self.scheduled_for}"


@dataclass(frozen=True, slots=True)
class TaskExecutionTime:
    """A task's new next occurrence, for ``update_execution_times()``."""

    task_id: str
    run_at: datetime
