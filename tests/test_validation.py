"""Bad input: each error names its culprit, and nothing is written or announced.

The checks in ``django_taskshed.validation`` are tested on their own first, then through
both schedulers, where every rejected call must leave the table as it was.
"""

import json
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from django.utils import timezone

from django_taskshed.datastores import tasks as tasks_module
from django_taskshed.datastores.validation import (
    aware_utc,
    check_flag,
    check_identifier,
    check_optional,
    check_schedule,
    kwargs_to_json,
)
from django_taskshed.exceptions import InvalidTaskError, TaskshedError
from django_taskshed.models import Task, TaskExecutionTime

UTC = dt_timezone.utc
T1 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
T2 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)

# Async tests reach the database from another thread, so they cannot run inside the test's
# transaction; flushing only this app's tables after each keeps them fast on PostgreSQL.
db = pytest.mark.django_db(transaction=True, available_apps=["django_taskshed"])


# --- The checks on their own -----------------------------------------------------------------


def test_invalid_task_error_carries_its_culprit():
    error = InvalidTaskError("kwargs must be a dict", task_id="t-9", field="kwargs")
    assert isinstance(error, ValueError)
    assert isinstance(error, TaskshedError)
    assert (error.task_id, error.field) == ("t-9", "kwargs")
    assert str(error) == "task 't-9': kwargs must be a dict"
    assert str(InvalidTaskError("no task")) == "no task"


def test_aware_utc_reads_naive_datetimes_in_the_current_time_zone():
    assert aware_utc(datetime(2030, 1, 15, 12, 0)) == datetime(2030, 1, 15, 11, 0, tzinfo=UTC)
    with timezone.override(ZoneInfo("Asia/Tokyo")):
        assert aware_utc(datetime(2030, 1, 15, 12, 0)) == datetime(2030, 1, 15, 3, 0, tzinfo=UTC)


def test_aware_utc_converts_aware_datetimes_to_utc():
    value = datetime(2030, 1, 15, 12, 0, tzinfo=ZoneInfo("America/New_York"))
    converted = aware_utc(value)
    assert converted == value
    assert converted.tzinfo is UTC


@pytest.mark.parametrize("value", ["2030-01-15T12:00", date(2030, 1, 15), 1893456000, None])
def test_aware_utc_rejects_what_is_not_a_datetime(value):
    with pytest.raises(
        InvalidTaskError, match=f"run_at must be a datetime, not {type(value).__name__}"
    ):
        aware_utc(value, task_id="t-1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "task_id must be 1 to 255 characters long, got 0"),
        ("x" * 256, "task_id must be 1 to 255 characters long, got 256"),
        (5, "task_id must be a string, not int"),
        (None, "task_id must be a string, not NoneType"),
        (b"abc", "task_id must be a string, not bytes"),
    ],
)
def test_check_identifier_rejects(value, message):
    with pytest.raises(InvalidTaskError) as caught:
        check_identifier(value, "task_id", 255, None)
    assert message in str(caught.value)
    assert caught.value.field == "task_id"


def test_check_identifier_accepts_the_longest_allowed():
    check_identifier("x", "callback", 200, None)
    check_identifier("x" * 200, "callback", 200, None)


def test_kwargs_to_json_writes_compact_json():
    assert kwargs_to_json(None) == "{}"
    assert kwargs_to_json({}) == "{}"
    text = kwargs_to_json({"a": 1, "b": [1.5, None, True], "c": {"d": "é"}})
    assert json.loads(text) == {"a": 1, "b": [1.5, None, True], "c": {"d": "é"}}
    assert " " not in text


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ([1, 2], "kwargs must be a dict, not list"),
        ("a=1", "kwargs must be a dict, not str"),
        ((("a", 1),), "kwargs must be a dict, not tuple"),
        ({"ok": 1, "when": datetime(2030, 1, 1)}, "'when'"),
        ({"ok": 1, "obj": object()}, "'obj'"),
        ({"nan": float("nan")}, "'nan'"),
        ({"inf": float("inf")}, "'inf'"),
        ({"deep": {"inner": {1, 2}}}, "'deep'"),
        ({1: "one"}, "1"),
        ({None: "none"}, "None"),
        ({("a", "b"): 1}, "('a', 'b')"),
    ],
    ids=[
        "list",
        "str",
        "tuple",
        "datetime value",
        "object value",
        "nan",
        "inf",
        "nested set",
        "int key",
        "None key",
        "tuple key",
    ],
)
def test_kwargs_to_json_names_the_offending_key(kwargs, culprit):
    with pytest.raises(InvalidTaskError) as caught:
        kwargs_to_json(kwargs, task_id="t-1")
    message = str(caught.value)
    assert culprit in message
    assert message.startswith("task 't-1': kwargs")
    assert caught.value.field == "kwargs"


def test_kwargs_to_json_enforces_the_byte_limit():
    exact = {"a": "x" * 10}
    size = len(json.dumps(exact, separators=(",", ":")).encode())
    assert kwargs_to_json(exact, max_bytes=size) == '{"a":"xxxxxxxxxx"}'
    with pytest.raises(InvalidTaskError, match=f"{size} bytes .* limit of {size - 1}"):
        kwargs_to_json(exact, max_bytes=size - 1)


def test_kwargs_to_json_reads_the_limit_from_settings():
    with override_settings(TASKSHED={"KWARGS_MAX_BYTES": 10}):
        with pytest.raises(InvalidTaskError, match="KWARGS_MAX_BYTES"):
            kwargs_to_json({"a": "x" * 10})
    assert kwargs_to_json({"a": "x" * 10}) == '{"a":"xxxxxxxxxx"}'


def schedule(run_type, interval=None, cron="", zone="", **policy):
    """The schedule fields of a task, as ``check_schedule`` reads them."""
    fields = {"on_nonexistent": "shift", "on_ambiguous": "first", **policy}
    return SimpleNamespace(run_type=run_type, interval=interval, cron=cron, timezone=zone, **fields)


@pytest.mark.parametrize(
    ("task", "field", "culprit"),
    [
        (schedule("weekly"), "run_type", "'weekly'"),
        (schedule("ONCE"), "run_type", "'ONCE'"),
        (schedule(None), "run_type", "None"),
        (schedule("recurring"), "interval", "None"),
        (schedule("recurring", timedelta(0)), "interval", "timedelta(0)"),
        (schedule("recurring", timedelta(seconds=-1)), "interval", "timedelta(days=-1"),
        (schedule("recurring", 10), "interval", "10"),
        (schedule("once", timedelta(seconds=10)), "interval", "run_type='recurring'"),
        # cron tasks: which field, which value
        (schedule("cron"), "cron", "needs a cron expression"),
        (schedule("cron", cron="30 25 * * *"), "cron", "bad hour field '25'"),
        (schedule("cron", cron="61 2 * * *"), "cron", "bad minute field '61'"),
        (schedule("cron", cron="0 0 32 * *"), "cron", "bad day-of-month field '32'"),
        (schedule("cron", cron="0 0 * 13 *"), "cron", "bad month field '13'"),
        (schedule("cron", cron="0 0 * * MONDAY"), "cron", "bad day-of-week field 'MONDAY'"),
        (schedule("cron", cron="0 0 * *"), "cron", "has 4 fields; it needs 5"),
        (schedule("cron", cron="0 0 0 * * *"), "cron", "has 6 fields"),
        (schedule("cron", cron="@fortnightly"), "cron", "'@fortnightly' has 1 fields"),
        (schedule("cron", cron="0 0 * * *", zone="Mars/Olympus"), "timezone", "'Mars/Olympus'"),
        (schedule("cron", cron="@daily", on_nonexistent="later"), "on_nonexistent", "'later'"),
        (schedule("cron", cron="@daily", on_ambiguous="twice"), "on_ambiguous", "'twice'"),
        (schedule("cron", timedelta(hours=1), "@daily"), "interval", "only for recurring tasks"),
        (schedule("recurring", timedelta(hours=1), "@daily"), "cron", "only for cron tasks"),
        (schedule("once", cron="@daily"), "cron", "run_type='cron'"),
    ],
)
def test_check_schedule_rejects(task, field, culprit):
    with pytest.raises(InvalidTaskError) as caught:
        check_schedule(task, "t-1")
    assert culprit in str(caught.value)
    assert caught.value.field == field
    assert "'t-1'" in str(caught.value)


def test_check_schedule_accepts_good_schedules():
    check_schedule(schedule("once"), None)
    check_schedule(schedule("recurring", timedelta(microseconds=1)), None)
    for expression in ("30 2 * * *", "*/15 9-17 * * MON-FRI", "@daily", "@HOURLY", "0 0 1,15 * *"):
        check_schedule(schedule("cron", cron=expression, zone="Europe/Berlin"), None)


def test_a_cron_task_without_a_time_zone_gets_the_current_one():
    task = schedule("cron", cron="@daily")
    with timezone.override("America/New_York"):
        check_schedule(task, None)
    assert task.timezone == "America/New_York"


def test_check_optional_and_check_flag():
    check_optional(None, "max_retries", int, None)
    check_optional(0, "max_retries", int, None)
    check_optional(timedelta(seconds=1), "timeout", timedelta, None)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InvalidTaskError, match="max_retries"):
            check_optional(bad, "max_retries", int, "t")
    with pytest.raises(InvalidTaskError, match="timeout"):
        check_optional(timedelta(seconds=-1), "timeout", timedelta, "t")
    check_flag(True, "paused", None)
    check_flag(False, "paused", None)
    for bad in (0, 1, "yes", None):
        with pytest.raises(InvalidTaskError, match="paused must be True or False"):
            check_flag(bad, "paused", "t")


# --- Through the schedulers: errors name the culprit and write nothing -----------------------


async def table() -> list[dict]:
    """Every row, every column: what a rejected call must leave as it was."""
    fields = [f.attname for f in Task._meta.concrete_fields]
    return [row async for row in Task.objects.order_by("pk").values(*fields)]


@pytest.fixture
async def existing() -> list[dict]:
    """A row named like the bad task, so a half-done replace would show (bulk_create: no
    signal, so no notification)."""
    await Task.objects.abulk_create(
        [
            Task(
                task_id="bad-task",
                callback="add",
                run_at=T1,
                kwargs={"v": "original"},
                group_id="g",
            )
        ]
    )
    return await table()


ADD_TASK_ERRORS = {
    "kwargs a list": ({"kwargs": [1, 2]}, "kwargs", "list"),
    "kwargs a string": ({"kwargs": "x"}, "kwargs", "str"),
    "kwargs with a datetime": ({"kwargs": {"a": 1, "when": datetime.now()}}, "kwargs", "'when'"),
    "kwargs with an object": ({"kwargs": {"obj": object()}}, "kwargs", "'obj'"),
    "kwargs with an int key": ({"kwargs": {7: "a"}}, "kwargs", "7"),
    "kwargs with a tuple key": ({"kwargs": {("a", 1): "a"}}, "kwargs", "('a', 1)"),
    "unknown run_type": ({"run_type": "weekly"}, "run_type", "'weekly'"),
    "recurring without interval": ({"run_type": "recurring"}, "interval", "interval"),
    "recurring with zero interval": (
        {"run_type": "recurring", "interval": timedelta(0)},
        "interval",
        "positive",
    ),
    "recurring with negative interval": (
        {"run_type": "recurring", "interval": timedelta(seconds=-5)},
        "interval",
        "positive",
    ),
    "recurring with a number interval": (
        {"run_type": "recurring", "interval": 30},
        "interval",
        "30",
    ),
    "interval on a one-off": ({"interval": timedelta(seconds=5)}, "interval", "interval"),
    "run_at a string": ({"run_at": "2030-01-01T00:00"}, "run_at", "str"),
    "run_at a date": ({"run_at": date(2030, 1, 1)}, "run_at", "date"),
    "callback empty": ({"callback": ""}, "callback", "got 0"),
    "callback too long": ({"callback": "c" * 201}, "callback", "1 to 200"),
    "callback None": ({"callback": None}, "callback", "NoneType"),
    "callback a function": ({"callback": print}, "callback", "builtin_function_or_method"),
    "group_id empty": ({"group_id": ""}, "group_id", "got 0"),
    "group_id too long": ({"group_id": "g" * 256}, "group_id", "1 to 255"),
    "group_id an int": ({"group_id": 3}, "group_id", "int"),
    "paused not a bool": ({"paused": "yes"}, "paused", "'yes'"),
    "coalesce not a bool": ({"coalesce": 1}, "coalesce", "1"),
    "queue empty": ({"queue": ""}, "queue", "got 0"),
    "queue too long": ({"queue": "q" * 101}, "queue", "1 to 100"),
    "queue None": ({"queue": None}, "queue", "NoneType"),
    "queue a list": ({"queue": ["a"]}, "queue", "list"),
    "priority over 100": ({"priority": 101}, "priority", "got 101"),
    "priority under -100": ({"priority": -101}, "priority", "got -101"),
    "priority a float": ({"priority": 1.5}, "priority", "got 1.5"),
    "priority a string": ({"priority": "5"}, "priority", "got '5'"),
    "priority a bool": ({"priority": True}, "priority", "got True"),
    "priority None": ({"priority": None}, "priority", "got None"),
}


@db
@pytest.mark.parametrize("case", ADD_TASK_ERRORS, ids=list(ADD_TASK_ERRORS))
async def test_add_task_rejects_bad_input(scheduler, sent, existing, case):
    arguments, field, culprit = ADD_TASK_ERRORS[case]
    call = {"callback": "add", "run_at": T2, "task_id": "bad-task", **arguments}
    with pytest.raises(InvalidTaskError) as caught:
        await scheduler.add_task(**call)
    message = str(caught.value)
    assert field in message
    assert culprit in message
    assert "bad-task" in message
    assert caught.value.field == field
    assert caught.value.task_id == "bad-task"
    assert await table() == existing
    assert sent == []


@db
@pytest.mark.parametrize(
    ("task_id", "culprit"),
    [("", "got 0"), ("t" * 256, "got 256"), (42, "int"), (["a"], "list")],
    ids=["empty", "too long", "int", "list"],
)
async def test_add_task_rejects_a_bad_task_id(scheduler, sent, existing, task_id, culprit):
    with pytest.raises(InvalidTaskError) as caught:
        await scheduler.add_task("add", task_id=task_id)
    assert "task_id" in str(caught.value)
    assert culprit in str(caught.value)
    assert caught.value.field == "task_id"
    assert await table() == existing
    assert sent == []


@db
async def test_add_task_accepts_the_longest_identifiers(scheduler):
    task = await scheduler.add_task("c" * 200, task_id="t" * 255, group_id="g" * 255)
    stored = await Task.objects.aget(pk="t" * 255)
    assert (stored.callback, stored.group_id) == ("c" * 200, "g" * 255)
    assert task.task_id == "t" * 255


@db
async def test_add_task_accepts_the_edges_of_queue_and_priority(scheduler):
    await scheduler.add_task("add", task_id="high", queue="q" * 100, priority=100)
    await scheduler.add_task("add", task_id="low", queue="q", priority=-100)
    stored = {t.pk: (t.queue, t.priority) async for t in Task.objects.all()}
    assert stored == {"high": ("q" * 100, 100), "low": ("q", -100)}


@db
async def test_add_task_rejects_kwargs_over_the_byte_limit(scheduler, sent, existing):
    with override_settings(TASKSHED={"KWARGS_MAX_BYTES": 64}):
        with pytest.raises(InvalidTaskError) as caught:
            await scheduler.add_task("add", kwargs={"blob": "x" * 64}, task_id="bad-task")
        message = str(caught.value)
        assert "bad-task" in message
        assert "KWARGS_MAX_BYTES" in message
        assert "limit of 64" in message
        assert await table() == existing
        await scheduler.add_task("add", kwargs={"blob": "x" * 40}, task_id="fits")
    assert len(sent) == 1  # the task that fits, only
    assert (await Task.objects.aget(pk="fits")).kwargs == {"blob": "x" * 40}


# A batch that crosses a chunk boundary, with its bad task past it. ``write_tasks`` validates
# every row before it writes one and writes the batch in one statement; ``CHUNK`` (read at each
# call) is the datastore's only chunk size, so these tests set it small: a batch of 200 with its
# bad task at 140 lies across it as one of 10,000 with its bad task at 7,000 lies across the real
# 5,000, at a fiftieth of the cost (building 10,000 unsaved Tasks took about a second a test).
SMALL_CHUNK = 100
BATCH = 2 * SMALL_CHUNK
BAD_INDEX = SMALL_CHUNK + 40  # in the second chunk


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_module, "CHUNK", SMALL_CHUNK)


def batch(count: int, bad_index: int | None = None, bad: dict | None = None) -> list[Task]:
    tasks = [
        Task(task_id=f"t{i:05d}", callback="add", run_at=T1, kwargs={"i": i}, group_id="batch")
        for i in range(count)
    ]
    if bad_index is not None:
        for name, value in (bad or {}).items():
            setattr(tasks[bad_index], name, value)
    return tasks


BATCH_ERRORS = {
    "kwargs not serialisable": ({"kwargs": {"i": BAD_INDEX, "when": object()}}, "'when'"),
    "unknown run_type": ({"run_type": "hourly"}, "'hourly'"),
    "recurring without interval": ({"run_type": "recurring"}, "interval"),
    "callback too long": ({"callback": "c" * 201}, "callback"),
    "queue empty": ({"queue": ""}, "queue must be 1 to 100 characters"),
    "priority out of range": ({"priority": 500}, "priority must be an int from -100 to 100"),
    "duplicate task_id": ({"task_id": "t00010"}, "twice"),  # the first chunk's t00010
}


@db
@pytest.mark.parametrize("case", BATCH_ERRORS, ids=list(BATCH_ERRORS))
async def test_one_bad_task_past_a_chunk_of_a_batch_writes_nothing(
    scheduler, sent, small_chunks, case
):
    bad, culprit = BATCH_ERRORS[case]
    await Task.objects.abulk_create(
        [Task(task_id="t00010", callback="old", run_at=T2, kwargs={"v": "old"})]
    )
    before = await table()
    tasks = batch(BATCH, bad_index=BAD_INDEX, bad=bad)
    bad_id = tasks[BAD_INDEX].task_id
    with pytest.raises(InvalidTaskError) as caught:
        await scheduler.add_tasks(tasks)
    assert repr(bad_id) in str(caught.value)
    assert culprit in str(caught.value)
    assert caught.value.task_id == bad_id
    assert await table() == before
    assert sent == []


@db
async def test_after_a_refused_batch_the_same_batch_without_its_bad_task_goes_in_whole(
    scheduler, sent, small_chunks
):
    with pytest.raises(InvalidTaskError):
        await scheduler.add_tasks(batch(BATCH, bad_index=BAD_INDEX, bad={"run_type": "hourly"}))
    await scheduler.add_tasks(batch(BATCH))
    assert await Task.objects.filter(group_id="batch").acount() == BATCH
    assert len(sent) == 1


@db
async def test_add_tasks_rejects_a_duplicate_task_id_in_one_batch(scheduler, sent):
    tasks = [
        Task(task_id="a", callback="add"),
        Task(task_id="dup", callback="add"),
        Task(task_id="dup", callback="mul"),
    ]
    with pytest.raises(InvalidTaskError) as caught:
        await scheduler.add_tasks(tasks)
    assert "'dup'" in str(caught.value)
    assert caught.value.field == "task_id"
    assert await Task.objects.acount() == 0
    assert sent == []


@db
@pytest.mark.parametrize(
    "intruder",
    [{"task_id": "x", "callback": "add"}, "x", None, TaskExecutionTime("x", T1)],
    ids=["dict", "str", "None", "TaskExecutionTime"],
)
async def test_add_tasks_rejects_what_is_not_a_task(scheduler, sent, intruder):
    tasks = [Task(task_id="a", callback="add"), intruder, Task(task_id="b", callback="add")]
    with pytest.raises(InvalidTaskError) as caught:
        await scheduler.add_tasks(tasks)
    assert type(intruder).__name__ in str(caught.value)
    assert await Task.objects.acount() == 0
    assert sent == []


# --- Selectors -------------------------------------------------------------------------------

SELECTOR_METHODS = ["fetch_tasks", "pause_tasks", "resume_tasks", "remove_tasks"]

SELECTOR_ERRORS = {
    "neither": ({}, ValueError, ["task_ids", "group_id"]),
    "both": ({"task_ids": ["bad-task"], "group_id": "g"}, ValueError, ["not both"]),
    "task_ids a string": ({"task_ids": "bad-task"}, ValueError, ["'bad-task'", "iterable"]),
    "group_id empty": ({"group_id": ""}, InvalidTaskError, ["group_id", "got 0"]),
    "group_id too long": ({"group_id": "g" * 256}, InvalidTaskError, ["group_id", "got 256"]),
    "group_id a list": ({"group_id": ["g"]}, InvalidTaskError, ["group_id", "list"]),
}


@db
@pytest.mark.parametrize("method", SELECTOR_METHODS)
@pytest.mark.parametrize("case", SELECTOR_ERRORS, ids=list(SELECTOR_ERRORS))
async def test_selectors_reject_bad_input(scheduler, sent, existing, method, case):
    arguments, error, culprits = SELECTOR_ERRORS[case]
    with pytest.raises(error) as caught:
        await getattr(scheduler, method)(**arguments)
    for culprit in culprits:
        assert culprit in str(caught.value)
    assert await table() == existing
    assert sent == []


@db
@pytest.mark.parametrize("method", ["pause_tasks", "resume_tasks", "remove_tasks"])
async def test_selector_methods_take_only_keywords(scheduler, existing, method):
    with pytest.raises(TypeError):
        await getattr(scheduler, method)(["bad-task"])
    assert await table() == existing


# --- update_execution_times ------------------------------------------------------------------


@db
@pytest.mark.parametrize(
    ("item", "culprit"),
    [
        (TaskExecutionTime("bad-task", "tomorrow"), "run_at must be a datetime, not str"),
        (TaskExecutionTime("bad-task", None), "run_at must be a datetime, not NoneType"),
        (TaskExecutionTime(7, T2), "task_id must be a string, not int"),
        (TaskExecutionTime("", T2), "task_id must be 1 to 255"),
    ],
    ids=["run_at str", "run_at None", "task_id int", "task_id empty"],
)
async def test_update_execution_times_rejects_bad_items_and_moves_nothing(
    scheduler, sent, existing, item, culprit
):
    await Task.objects.abulk_create([Task(task_id="other", callback="add", run_at=T1)])
    before = await table()
    with pytest.raises(InvalidTaskError) as caught:
        await scheduler.update_execution_times([TaskExecutionTime("other", T2), item])
    assert culprit in str(caught.value)
    assert await table() == before
    assert sent == []
