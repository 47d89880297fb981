"""Checks a task definition and brings it to its stored form, or names what is wrong."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.utils import timezone

from .. import cron
from ..conf import taskshed_settings
from ..cron import CronSchedule
from ..exceptions import InvalidTaskError
from ..models import (
    CALLBACK_MAX_LENGTH,
    CRON_MAX_LENGTH,
    ID_MAX_LENGTH,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_MAX_LENGTH,
    RunType,
)

RUN_TYPES = frozenset(RunType.values)
RECURRING, CRON = RunType.RECURRING.value, RunType.CRON.value
UTC = dt_timezone.utc
# json.dumps(kwargs, allow_nan=False, separators=(",", ":")) without a new encoder per call.
_to_json = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


@dataclass(slots=True)
class TaskFields:
    """A task to add as ``add_task()``'s arguments describe it: the fields validation reads
    from an unsaved Task, without building one (a model instance costs more than its checks)."""

    task_id: Any
    callback: Any
    run_at: Any
    kwargs: Any
    run_type: Any
    interval: Any
    group_id: Any
    paused: Any
    coalesce: Any
    cron: Any
    timezone: Any
    on_nonexistent: Any
    on_ambiguous: Any
    queue: Any
    priority: Any
    max_retries: Any = None
    timeout: Any = None
    declared_in_code: Any = False


def aware_utc(value: Any, *, task_id: str | None = None, field: str = "run_at") -> datetime:
    """``value`` as an aware UTC datetime; a naive one is read in the current time zone."""
    if not isinstance(value, datetime):
        raise InvalidTaskError(
            f"{field} must be a datetime, not {type(value).__name__}", task_id=task_id, field=field
        )
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        value = timezone.make_aware(value, timezone.get_current_timezone())
    utc: datetime = value.astimezone(UTC)
    return utc


def check_identifier(value: Any, field: str, max_length: int, task_id: str | None) -> None:
    """A task_id, group_id or callback name: a non-empty string of at most ``max_length``."""
    if type(value) is not str:
        raise InvalidTaskError(
            f"{field} must be a string, not {type(value).__name__}", task_id=task_id, field=field
        )
    if not value or len(value) > max_length:
        raise InvalidTaskError(
            f"{field} must be 1 to {max_length} characters long, got {len(value)}",
            task_id=task_id,
            field=field,
        )


def check_priority(value: Any, task_id: str | None) -> None:
    """An int from ``PRIORITY_MIN`` to ``PRIORITY_MAX`` (-100..100)."""
    if type(value) is not int or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise InvalidTaskError(
            f"priority must be an int from {PRIORITY_MIN} to {PRIORITY_MAX}, got {value!r}",
            task_id=task_id,
            field="priority",
        )


def type_name(value: Any) -> str:
    """The name of ``value``'s type; a subclass of a builtin type (a form's JSON string) is
    named by that builtin."""
    for builtin in (bool, int, float, str, list, tuple, dict):
        if isinstance(value, builtin):
            return builtin.__name__
    return type(value).__name__


def kwargs_to_json(kwargs: Any, task_id: str | None = None, max_bytes: int | None = None) -> str:
    """``kwargs`` as JSON text; it must be a dict with string keys and JSON-serialisable values."""
    if kwargs is None:
        return "{}"
    if not isinstance(kwargs, dict):
        raise InvalidTaskError(
            f"kwargs must be a dict, not {type_name(kwargs)}", task_id=task_id, field="kwargs"
        )
    for key in kwargs:
        if type(key) is not str:
            raise InvalidTaskError(
                f"kwargs keys must be strings, got {key!r}", task_id=task_id, field="kwargs"
            )
    try:
        text = _to_json(kwargs)
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError(
            f"kwargs {_offending_key(kwargs)} is not JSON-serialisable ({exc})",
            task_id=task_id,
            field="kwargs",
        ) from None
    max_bytes = taskshed_settings.KWARGS_MAX_BYTES if max_bytes is None else max_bytes
    if len(text) > max_bytes and len(text.encode()) > max_bytes:
        raise InvalidTaskError(
            f"kwargs is {len(text.encode())} bytes as JSON, over the limit of {max_bytes} "
            "(TASKSHED['KWARGS_MAX_BYTES'])",
            task_id=task_id,
            field="kwargs",
        )
    return text


def _offending_key(kwargs: dict[Any, Any]) -> str:
    for key, value in kwargs.items():
        try:
            json.dumps({"k": value}, allow_nan=False)
        except (TypeError, ValueError):
            return f"key {key!r} ({type(value).__name__})"
    return "(a key)"


def check_schedule(task: Any, task_id: str | None) -> None:
    """``run_type`` is known and the fields of its kind of schedule, and no other, are set: a
    positive ``interval`` for a recurring task, a valid ``cron`` (with its time zone and
    policy) for a cron task."""
    run_type, interval, cron_text = task.run_type, task.interval, task.cron or ""
    if run_type not in RUN_TYPES:
        raise InvalidTaskError(
            f"run_type must be 'once', 'recurring' or 'cron', not {run_type!r}",
            task_id=task_id,
            field="run_type",
        )
    if run_type == RECURRING and (not isinstance(interval, timedelta) or interval <= timedelta(0)):
        raise InvalidTaskError(
            f"a recurring task needs a positive timedelta interval, got {interval!r}",
            task_id=task_id,
            field="interval",
        )
    if run_type != RECURRING and interval is not None:
        raise InvalidTaskError(
            f"interval is only for recurring tasks (this one is {run_type!r}); pass "
            "run_type='recurring', or leave interval out",
            task_id=task_id,
            field="interval",
        )
    if run_type != CRON and cron_text:
        raise InvalidTaskError(
            f"a cron expression is only for cron tasks (this one is {run_type!r}); pass "
            "run_type='cron'",
            task_id=task_id,
            field="cron",
        )
    if run_type == CRON:
        check_cron(task, task_id)


def check_cron(task: Any, task_id: str | None) -> CronSchedule:
    """A cron task's schedule, or InvalidTaskError naming the field that is wrong. A missing
    ``timezone`` is filled in with the current time zone, so the row keeps it."""
    if not isinstance(task.cron, str) or not task.cron.strip():
        raise InvalidTaskError("a cron task needs a cron expression", task_id=task_id, field="cron")
    task.timezone = task.timezone or timezone.get_current_timezone_name()
    for field, value in (("cron", task.cron), ("timezone", task.timezone)):
        if not isinstance(value, str) or len(value) > CRON_MAX_LENGTH:
            raise InvalidTaskError(
                f"{field} must be a string of at most {CRON_MAX_LENGTH} characters, got {value!r}",
                task_id=task_id,
                field=field,
            )
    checks = (
        ("cron", lambda: cron.check_expression(task.cron)),
        ("timezone", lambda: cron.zone(task.timezone)),
        ("on_nonexistent", lambda: cron.check_choice("on_nonexistent", task.on_nonexistent)),
        ("on_ambiguous", lambda: cron.check_choice("on_ambiguous", task.on_ambiguous)),
    )
    for field, check in checks:
        try:
            check()
        except cron.CronError as exc:
            raise InvalidTaskError(str(exc), task_id=task_id, field=field) from None
    return cron.cron_schedule(task.cron, task.timezone, task.on_nonexistent, task.on_ambiguous)


def first_run(task: Any, now: datetime, task_id: str | None) -> datetime:
    """``run_at`` as given, or now; a cron task's, its first occurrence after now."""
    if task.run_at is not None:
        return aware_utc(task.run_at, task_id=task_id)
    if task.run_type != RunType.CRON:
        return now
    first = check_cron(task, task_id).next_after(now)
    if first is None:
        raise InvalidTaskError(
            f"cron expression {task.cron!r} has no occurrence within 50 years",
            task_id=task_id,
            field="cron",
        )
    return first


def check_optional(value: Any, field: str, kind: type, task_id: str | None) -> None:
    """``value`` is None or a non-negative ``kind`` (an int or a timedelta)."""
    if value is None:
        return
    if type(value) is not kind or value < kind():
        raise InvalidTaskError(
            f"{field} must be None or a non-negative {kind.__name__}, got {value!r}",
            task_id=task_id,
            field=field,
        )


def check_flag(value: Any, field: str, task_id: str | None) -> None:
    if type(value) is not bool:
        raise InvalidTaskError(
            f"{field} must be True or False, got {value!r}", task_id=task_id, field=field
        )


def task_row(task: Any, now: datetime, max_bytes: int) -> tuple[Any, ...]:
    """The stored values of an unsaved Task, in ``upserts.INSERT_COLUMNS`` order."""
    task_id = task.task_id
    check_identifier(task_id, "task_id", ID_MAX_LENGTH, None)
    check_identifier(task.callback, "callback", CALLBACK_MAX_LENGTH, task_id)
    if task.group_id is not None:
        check_identifier(task.group_id, "group_id", ID_MAX_LENGTH, task_id)
    check_schedule(task, task_id)
    check_flag(task.paused, "paused", task_id)
    check_flag(task.coalesce, "coalesce", task_id)
    check_optional(task.max_retries, "max_retries", int, task_id)
    check_optional(task.timeout, "timeout", timedelta, task_id)
    check_flag(task.declared_in_code, "declared_in_code", task_id)
    check_identifier(task.queue, "queue", QUEUE_MAX_LENGTH, task_id)
    check_priority(task.priority, task_id)
    run_at = first_run(task, now, task_id)
    return (
        task_id,
        task.callback,
        kwargs_to_json(task.kwargs, task_id, max_bytes),
        run_at,
        task.run_type,
        task.interval,
        task.group_id,
        task.paused,
        now if task.paused else None,
        task.coalesce,
        task.max_retries,
        task.timeout,
        now,
        now,
        " ".join((task.cron or "").split()),
        task.timezone or "",
        task.on_nonexistent,
        task.on_ambiguous,
        task.declared_in_code,
        task.queue,
        task.priority,
    )
