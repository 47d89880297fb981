"""The Task model: its fields and defaults, and the database constraints that keep rows sane.

The constraints are tested by writing around the validation (``Task.objects``), on every
database the suite runs on.
"""

import dataclasses
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import IntegrityError, transaction

from django_taskshed.models import (
    CALLBACK_MAX_LENGTH,
    ID_MAX_LENGTH,
    RunType,
    Task,
    TaskExecutionTime,
)

UTC = dt_timezone.utc
T1 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)


def test_task_defaults():
    task = Task(callback="add", run_at=T1)
    assert len(task.task_id) == 32
    int(task.task_id, 16)
    assert task.kwargs == {}
    assert task.run_type == "once"
    assert task.interval is None
    assert task.group_id is None
    assert task.paused is False
    assert task.paused_at is None
    assert task.coalesce is True
    assert task.attempts == 0
    assert task.max_retries is None
    assert task.timeout is None
    assert task.lease_owner is None
    assert task.lease_expires_at is None
    assert task.failed_at is None
    assert (task.last_error, task.last_traceback) == ("", "")


def test_each_task_gets_its_own_id_and_kwargs():
    first, second = Task(callback="add"), Task(callback="add")
    assert first.task_id != second.task_id
    first.kwargs["a"] = 1
    assert second.kwargs == {}


def test_field_limits_match_the_validation():
    meta = Task._meta
    assert meta.pk.name == "task_id"
    assert ID_MAX_LENGTH == 255
    assert CALLBACK_MAX_LENGTH == 200
    assert meta.get_field("task_id").max_length == ID_MAX_LENGTH
    assert meta.get_field("group_id").max_length == ID_MAX_LENGTH
    assert meta.get_field("callback").max_length == CALLBACK_MAX_LENGTH
    assert meta.get_field("group_id").db_index is True
    assert meta.get_field("group_id").null is True


def test_run_types():
    assert RunType.values == ["once", "recurring", "cron"]
    assert RunType.ONCE == "once"
    assert RunType.RECURRING == "recurring"
    assert RunType.CRON == "cron"


def test_tasks_are_ordered_by_run_at_then_id():
    assert Task._meta.ordering == ["run_at", "task_id"]


def test_str_and_repr_name_the_task():
    task = Task(task_id="t-1", callback="add", run_at=T1)
    assert str(task) == "t-1 (add)"
    assert repr(task).startswith("<Task 't-1' 'add' run_at=datetime.datetime(2030, 1, 15, 9, 0")


def test_task_execution_time_is_a_small_frozen_record():
    item = TaskExecutionTime("t-1", T1)
    assert (item.task_id, item.run_at) == ("t-1", T1)
    assert item == TaskExecutionTime(task_id="t-1", run_at=T1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.run_at = T1 + timedelta(1)
    assert not hasattr(item, "__dict__")  # slots


@pytest.mark.django_db
def test_a_saved_task_reads_back():
    Task.objects.create(
        task_id="t-1",
        callback="add",
        run_at=T1,
        kwargs={"a": [1, {"b": None}]},
        run_type="recurring",
        interval=timedelta(minutes=5),
        max_retries=2,
        timeout=timedelta(seconds=30),
    )
    task = Task.objects.get(pk="t-1")
    assert task.kwargs == {"a": [1, {"b": None}]}
    assert task.run_at == T1
    assert task.interval == timedelta(minutes=5)
    assert task.timeout == timedelta(seconds=30)
    assert task.max_retries == 2
    assert task.created_at is not None
    assert task.updated_at is not None


# --- Database constraints --------------------------------------------------------------------

BAD_ROWS = {
    "unknown run_type": {"run_type": "weekly"},
    "empty run_type": {"run_type": ""},
    "recurring without interval": {"run_type": "recurring", "interval": None},
    "recurring with zero interval": {"run_type": "recurring", "interval": timedelta(0)},
    "recurring with negative interval": {
        "run_type": "recurring",
        "interval": timedelta(seconds=-1),
    },
    "recurring with a cron expression": {
        "run_type": "recurring",
        "interval": timedelta(minutes=1),
        "cron": "* * * * *",
    },
    "cron without an expression": {"run_type": "cron", "timezone": "UTC"},
    "cron without a time zone": {"run_type": "cron", "cron": "@daily"},
    "cron with an interval": {
        "run_type": "cron",
        "cron": "@daily",
        "timezone": "UTC",
        "interval": timedelta(minutes=1),
    },
    "kwargs a list": {"kwargs": [1, 2]},
    "kwargs a string": {"kwargs": "x"},
    "kwargs a number": {"kwargs": 5},
    "kwargs null": {"kwargs": None},
}


def assert_rejected(write) -> None:
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            write()


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_the_database_rejects_a_bad_row_on_create(case):
    values = {"task_id": "bad", "callback": "add", "run_at": T1, **BAD_ROWS[case]}
    assert_rejected(lambda: Task.objects.create(**values))
    assert not Task.objects.filter(pk="bad").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_the_database_rejects_a_bad_row_on_update(case):
    Task.objects.create(task_id="good", callback="add", run_at=T1, kwargs={"a": 1})
    assert_rejected(lambda: Task.objects.filter(pk="good").update(**BAD_ROWS[case]))
    task = Task.objects.get(pk="good")
    assert (task.run_type, task.interval, task.kwargs) == ("once", None, {"a": 1})


@pytest.mark.django_db
def test_the_database_accepts_sane_rows():
    Task.objects.create(task_id="once", callback="add", run_at=T1)
    Task.objects.create(task_id="empty kwargs", callback="add", run_at=T1, kwargs={})
    Task.objects.create(
        task_id="recurring",
        callback="add",
        run_at=T1,
        run_type="recurring",
        interval=timedelta(microseconds=1),
    )
    Task.objects.create(task_id="nested", callback="add", run_at=T1, kwargs={"a": {"b": [1]}})
    assert Task.objects.count() == 4
