"""Schedules declared in code, kept in step with the task table.

``TASKSHED["SCHEDULES"]`` maps a name (the task's ``task_id``) to a dict with ``callback``,
either ``cron`` (and optional ``timezone``, ``on_nonexistent``, ``on_ambiguous``) or
``interval`` (a ``timedelta`` or seconds), and optional ``kwargs``, ``group_id``,
``coalesce``, ``max_retries``, ``timeout`` (a ``timedelta`` or seconds), ``queue`` and
``priority``.
``@register_callback(schedule={...})`` declares one named after its callback.

``sync_schedules`` runs on ``migrate`` and when a worker starts; any number of them may run
at once. A new schedule is inserted (a racing insert of the same one is a no-op), a changed
one is updated and keeps its paused state, an unchanged one is not written, and a row
declared earlier whose schedule left the code is deleted.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from . import notifications
from .conf import taskshed_settings
from .datastores import DjangoDataStore, upserts
from .datastores.tasks import validated_rows
from .datastores.transactions import writing
from .django_internals import delete_without_signals
from .exceptions import InvalidTaskError
from .models import DEFAULT_QUEUE, RunType, Task, TaskQuerySet
from .registry import declared_in_decorators

logger = logging.getLogger(__name__)

KEYS = {
    "callback", "cron", "timezone", "on_nonexistent", "on_ambiguous", "interval", "kwargs",
    "group_id", "coalesce", "max_retries", "timeout", "queue", "priority",
}  # fmt: skip
# The fields a schedule defines; the rest of a row (run_at, paused, attempts...) is state.
DEFINITION = (
    "callback", "kwargs", "run_type", "interval", "cron", "timezone", "on_nonexistent",
    "on_ambiguous", "group_id", "coalesce", "max_retries", "timeout", "queue", "priority",
)  # fmt: skip
WHEN = ("run_type", "interval", "cron", "timezone", "on_nonexistent", "on_ambiguous")


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def declared_schedules() -> dict[str, Any]:
    """Name -> definition: the settings' schedules, then the decorators' (settings win)."""
    found = dict(declared_in_decorators())
    value = taskshed_settings.SCHEDULES
    found.update(value if isinstance(value, dict) else {})
    return found


def _seconds(value: Any, key: str, name: str) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise InvalidTaskError(
        f"{key} must be a timedelta or a number of seconds, not {value!r}", task_id=name, field=key
    )


def schedule_task(name: str, definition: Any) -> Task:
    """The unsaved task a definition stands for, or InvalidTaskError naming what is wrong."""
    if not isinstance(definition, dict):
        raise InvalidTaskError(f"a schedule must be a dict, not {type(definition).__name__}")
    unknown = sorted(set(definition) - KEYS)
    if unknown:
        raise InvalidTaskError(f"unknown key(s) {unknown}; known: {sorted(KEYS)}", task_id=name)
    if "callback" not in definition:
        raise InvalidTaskError("a schedule needs a callback", task_id=name, field="callback")
    if ("cron" in definition) == ("interval" in definition):
        raise InvalidTaskError(
            "a schedule needs either cron or interval, not both nor neither", task_id=name
        )
    cron = "cron" in definition
    return Task(
        task_id=name,
        callback=definition["callback"],
        kwargs=definition.get("kwargs") or {},
        run_type=RunType.CRON if cron else RunType.RECURRING,
        run_at=None,  # type: ignore[misc]  # validation makes it the first occurrence, or now
        interval=_seconds(definition.get("interval"), "interval", name),
        cron=definition.get("cron") or "",
        timezone=definition.get("timezone") or "",
        on_nonexistent=definition.get("on_nonexistent", "shift"),
        on_ambiguous=definition.get("on_ambiguous", "first"),
        group_id=definition.get("group_id"),
        coalesce=definition.get("coalesce", True),
        max_retries=definition.get("max_retries"),
        timeout=_seconds(definition.get("timeout"), "timeout", name),
        queue=definition.get("queue", DEFAULT_QUEUE),
        priority=definition.get("priority", 0),
        declared_in_code=True,
    )


def schedule_errors() -> list[str]:
    """What is wrong with each declared schedule, one message each (for ``manage.py check``)."""
    errors = []
    for name, definition in declared_schedules().items():
        try:
            validated_rows([schedule_task(str(name), definition)])
        except InvalidTaskError as exc:
            errors.append(f"TASKSHED['SCHEDULES'][{name!r}]: {exc}")
    return errors


def sync_schedules(datastore: DjangoDataStore | None = None) -> SyncReport:
    """Write the declared schedules to the task table, in one transaction; see the module."""
    datastore = datastore or DjangoDataStore()
    wanted = {task.task_id: task for task in map(_task, declared_schedules().items())}
    report = SyncReport()
    with writing(datastore.using):
        tasks = datastore.get_queryset()
        locked = tasks.filter(pk__in=list(wanted)).select_for_update()  # until written
        stored = {t.task_id: t for t in locked}
        new = [task for task_id, task in wanted.items() if task_id not in stored]
        if new:
            rows = validated_rows(new)
            upserts.insert_tasks(connections[datastore.using], rows, replace_existing=False)
            report.added = len(new)
        for task_id, row in stored.items():
            report.updated += _update(tasks, row, wanted[task_id])
        gone = tasks.filter(declared_in_code=True).exclude(pk__in=list(wanted))
        report.removed = delete_without_signals(gone)
        if report.changed:
            notifications.notify_on_commit(None, datastore.using)
    if report.changed:
        logger.info(
            "declared schedules: %d added, %d updated, %d removed",
            report.added,
            report.updated,
            report.removed,
        )
    return report


def _task(item: tuple[str, Any]) -> Task:
    return schedule_task(str(item[0]), item[1])


def _update(tasks: TaskQuerySet, row: Task, task: Task) -> bool:
    """Bring ``row`` to ``task``'s definition, keeping its state (paused, attempts...); a
    new ``run_at`` only when the schedule itself changed. False if nothing changed."""
    if not task.timezone:  # a zone left out keeps the one the row got when it was made
        task.timezone = row.timezone
    (values,) = validated_rows([task])  # fills in a new cron task's zone too
    changes = {f: getattr(task, f) for f in DEFINITION if getattr(row, f) != getattr(task, f)}
    if not changes and row.declared_in_code:
        return False
    if changes.keys() & set(WHEN):
        changes["run_at"] = values[upserts.INSERT_COLUMNS.index("run_at")]
    tasks.filter(pk=row.pk).update(**changes, declared_in_code=True, updated_at=timezone.now())
    return True
