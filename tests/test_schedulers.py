"""AsyncScheduler and SyncScheduler: DESIGN.md's public API, run against the database.

Most tests run once with each scheduler (the ``scheduler`` fixture): the sync one is
called through ``sync_to_async``, the way sync code reaches the database from async tests.
"""

import asyncio
import inspect
import re
import warnings
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from django_taskshed import notifications
from django_taskshed.datastores import DjangoDataStore
from django_taskshed.datastores import tasks as tasks_module
from django_taskshed.exceptions import InvalidTaskError, TaskshedError
from django_taskshed.models import Task, TaskExecutionTime
from django_taskshed.notifications import (
    MESSAGE_TYPE,
    changed_message,
    channel_layer,
    parse_changed,
)
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from tests.conftest import SCHEDULER_METHODS

UTC = dt_timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
T1 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
T2 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
T3 = datetime(2030, 1, 15, 11, 0, tzinfo=UTC)
T4 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
SMALL_CHUNK = 100  # the id-list chunk size these tests set: long lists must cross it

# Async tests reach the database from another thread, so they cannot run inside the test's
# transaction; flushing only this app's tables after each keeps them fast on PostgreSQL.
db = pytest.mark.django_db(transaction=True, available_apps=["django_taskshed"])


def field_values(task: Task) -> dict:
    """Every stored column of ``task`` (Django's ``==`` on models compares only the pk)."""
    return {field.attname: getattr(task, field.attname) for field in Task._meta.concrete_fields}


async def fetch_row(task_id: str) -> Task:
    return await Task.objects.aget(pk=task_id)


async def stored_ids() -> list[str]:
    return [pk async for pk in Task.objects.order_by("pk").values_list("pk", flat=True)]


async def seed(*tasks: Task) -> None:
    """Write rows around the schedulers (no notification)."""
    await Task.objects.abulk_create(tasks)


def row(task_id: str, run_at: datetime = T1, **fields) -> Task:
    return Task(task_id=task_id, callback="add", run_at=run_at, **fields)


# --- The API of DESIGN.md ----------------------------------------------------------------------


class DesignedScheduler:
    """The signatures DESIGN.md fixes, parameter for parameter."""

    def __init__(self, datastore=None, *, worker=None): ...
    def start(self): ...
    def shutdown(self): ...
    def add_task(
        self,
        callback,
        run_at=None,
        kwargs=None,
        run_type="once",
        interval=None,
        task_id=None,
        group_id=None,
        paused=False,
        coalesce=True,
        *,
        replace_existing=True,
        # "Being added": cron tasks (the names are DESIGN.md's; keyword-only here)
        cron=None,
        timezone=None,
        on_nonexistent="shift",
        on_ambiguous="first",
        # "Being added": queues and priorities (DESIGN.md, Django's Tasks framework)
        queue="default",
        priority=0,
    ): ...
    def add_tasks(self, tasks, *, replace_existing=True): ...
    def fetch_tasks(self, *, task_ids=None, group_id=None): ...
    def pause_tasks(self, *, task_ids=None, group_id=None): ...
    def resume_tasks(self, *, task_ids=None, group_id=None): ...
    def remove_tasks(self, *, task_ids=None, group_id=None): ...
    def update_execution_times(self, tasks): ...
    def add_callback(self, name, callback): ...


METHODS = list(SCHEDULER_METHODS)  # the public methods DESIGN.md names


def parameters(func) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


@pytest.mark.parametrize("cls", [AsyncScheduler, SyncScheduler])
@pytest.mark.parametrize("name", ["__init__", *METHODS])
def test_signature_is_the_designed_one(cls, name):
    assert parameters(getattr(cls, name)) == parameters(getattr(DesignedScheduler, name))


@pytest.mark.parametrize("name", [name for name in METHODS if name != "add_callback"])
def test_async_methods_are_coroutines_and_sync_methods_are_not(name):
    assert inspect.iscoroutinefunction(getattr(AsyncScheduler, name))
    assert not inspect.iscoroutinefunction(getattr(SyncScheduler, name))


def test_add_callback_is_neither_a_coroutine_nor_needs_awaiting():
    """TaskShed calls ``scheduler.add_callback(...)`` plainly: it registers when called."""
    assert not inspect.iscoroutinefunction(AsyncScheduler.add_callback)
    assert not inspect.iscoroutinefunction(SyncScheduler.add_callback)


def test_public_api_is_importable_from_the_designed_paths():
    from django_taskshed.datastores import DjangoDataStore as designed_datastore
    from django_taskshed.models import Task as designed_task
    from django_taskshed.models import TaskExecutionTime as designed_time
    from django_taskshed.registry import register_callback

    assert designed_datastore is DjangoDataStore
    assert designed_task is Task
    assert designed_time is TaskExecutionTime
    assert callable(register_callback)


@pytest.mark.parametrize("cls", [AsyncScheduler, SyncScheduler])
def test_datastore_defaults_to_a_django_datastore_on_the_default_alias(cls):
    scheduler = cls()
    assert isinstance(scheduler.datastore, DjangoDataStore)
    assert scheduler.datastore.using == "default"
    assert scheduler.worker is None


@pytest.mark.parametrize("cls", [AsyncScheduler, SyncScheduler])
def test_given_datastore_and_worker_are_kept(cls, fake_worker):
    datastore = DjangoDataStore(using="default")
    scheduler = cls(datastore, worker=fake_worker)
    assert scheduler.datastore is datastore
    assert scheduler.worker is fake_worker


# --- start / shutdown ------------------------------------------------------------------------


@db
async def test_start_and_shutdown_are_idempotent(scheduler):
    assert await scheduler.start() is None
    assert await scheduler.start() is None
    assert scheduler.started is True
    task = await scheduler.add_task("add", task_id="after-two-starts")
    assert task.task_id == "after-two-starts"
    assert await scheduler.shutdown() is None
    assert await scheduler.shutdown() is None
    assert scheduler.started is False
    await scheduler.start()
    assert scheduler.started is True


async def test_shutdown_before_start_does_nothing(scheduler):
    await scheduler.shutdown()
    assert scheduler.started is False


# --- add_task --------------------------------------------------------------------------------


@db
async def test_add_task_returns_the_task_as_stored(scheduler):
    task = await scheduler.add_task(
        "add",
        run_at=T1,
        kwargs={"a": 1, "b": [2, 3], "c": {"d": None}},
        run_type="recurring",
        interval=timedelta(seconds=90),
        task_id="t-1",
        group_id="g",
        coalesce=False,
    )
    assert isinstance(task, Task)
    stored = await fetch_row("t-1")
    assert field_values(task) == field_values(stored)
    assert stored.kwargs == {"a": 1, "b": [2, 3], "c": {"d": None}}
    assert stored.run_at == T1
    assert stored.run_type == "recurring"
    assert stored.interval == timedelta(seconds=90)
    assert stored.group_id == "g"
    assert stored.coalesce is False
    assert stored.paused is False
    assert stored.paused_at is None
    assert stored.created_at is not None


@db
async def test_add_task_defaults(scheduler):
    before = timezone.now()
    task = await scheduler.add_task("add")
    after = timezone.now()
    stored = await fetch_row(task.task_id)
    assert len(stored.task_id) == 32
    int(stored.task_id, 16)  # a uuid4 in hex
    assert before <= stored.run_at <= after  # run_at defaults to now
    assert stored.kwargs == {}
    assert stored.run_type == "once"
    assert stored.interval is None
    assert stored.group_id is None
    assert stored.paused is False
    assert stored.coalesce is True
    assert field_values(task) == field_values(stored)


@db
async def test_a_cron_task_runs_first_at_its_next_occurrence_in_the_current_zone(scheduler, sent):
    before = timezone.now()
    task = await scheduler.add_task("add", run_type="cron", cron="30 2 * * *", task_id="c")
    stored = await fetch_row("c")
    assert field_values(task) == field_values(stored)
    assert (stored.cron, stored.timezone) == ("30 2 * * *", "Europe/Paris")  # the settings'
    assert (stored.on_nonexistent, stored.on_ambiguous) == ("shift", "first")
    local = timezone.localtime(stored.run_at, ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute, local.second) == (2, 30, 0)
    assert before < stored.run_at <= before + timedelta(days=1, hours=1)
    assert stored.next_runs(before, 1) == [stored.run_at]
    assert sent == [stored.run_at]


@db
async def test_a_cron_task_keeps_a_given_run_at_and_its_zone_and_policy(scheduler):
    await scheduler.add_task(
        "add", run_at=T1, run_type="cron", cron="@hourly", timezone="America/New_York",
        on_nonexistent="skip", on_ambiguous="both", task_id="c",
    )  # fmt: skip
    stored = await fetch_row("c")
    assert stored.run_at == T1
    assert (stored.timezone, stored.on_nonexistent, stored.on_ambiguous) == (
        "America/New_York", "skip", "both",
    )  # fmt: skip
    await scheduler.update_execution_times([TaskExecutionTime("c", T2)])
    assert (await fetch_row("c")).run_at == T2
    assert (await fetch_row("c")).next_runs(T2, 2) == [
        T2 + timedelta(hours=1),
        T2 + timedelta(hours=2),
    ]


@db
@pytest.mark.parametrize(
    ("fields", "culprit"),
    [
        ({"run_type": "cron", "cron": "30 2 * * 8"}, "bad day-of-week field '8'"),
        ({"run_type": "cron", "cron": "@daily", "timezone": "Berlin"}, "unknown time zone"),
        ({"run_type": "cron", "cron": "@daily", "on_ambiguous": "last"}, "on_ambiguous"),
        (
            {"run_type": "recurring", "interval": timedelta(hours=1), "cron": "@daily"},
            "only for cron",
        ),
    ],
)
async def test_a_bad_cron_task_is_refused_naming_the_field_and_nothing_is_written(
    scheduler, fields, culprit
):
    with pytest.raises(InvalidTaskError, match=re.escape(culprit)):
        await scheduler.add_task("add", task_id="bad", **fields)
    assert not await Task.objects.filter(pk="bad").aexists()


@db
async def test_add_tasks_takes_cron_tasks(scheduler):
    tasks = [
        Task(task_id="c1", callback="add", run_type="cron", cron="0 9 * * MON", timezone="UTC"),
        Task(task_id="c2", callback="add", run_type="cron", cron="0 9 * * *", run_at=T1),
    ]
    await scheduler.add_tasks(tasks)
    first, second = await fetch_row("c1"), await fetch_row("c2")
    assert first.run_at.weekday() == 0 and (first.run_at.hour, first.run_at.minute) == (9, 0)
    assert second.run_at == T1 and second.timezone == "Europe/Paris"


@db
async def test_add_task_gives_each_task_its_own_id(scheduler):
    first = await scheduler.add_task("add")
    second = await scheduler.add_task("add")
    assert first.task_id != second.task_id
    assert await Task.objects.acount() == 2


@db
async def test_add_task_paused_stamps_paused_at(scheduler):
    before = timezone.now()
    task = await scheduler.add_task("add", run_at=T1, task_id="p", paused=True)
    after = timezone.now()
    stored = await fetch_row("p")
    assert stored.paused is True
    assert before <= stored.paused_at <= after
    assert field_values(task) == field_values(stored)


@db
async def test_add_task_replace_existing_true_replaces_the_definition(scheduler):
    first = await scheduler.add_task("add", run_at=T1, kwargs={"a": 1}, task_id="t", group_id="g")
    second = await scheduler.add_task(
        "mul",
        run_at=T2,
        kwargs={"a": 2},
        run_type="recurring",
        interval=timedelta(minutes=5),
        task_id="t",
    )
    stored = await fetch_row("t")
    assert await Task.objects.acount() == 1
    assert (stored.callback, stored.run_at, stored.kwargs) == ("mul", T2, {"a": 2})
    assert (stored.run_type, stored.interval, stored.group_id) == (
        "recurring",
        timedelta(minutes=5),
        None,
    )
    assert stored.created_at == first.created_at
    assert stored.updated_at >= first.updated_at
    assert field_values(second) == field_values(stored)


@db
async def test_add_task_replace_existing_false_leaves_the_existing_row_untouched(scheduler):
    await scheduler.add_task("add", run_at=T1, kwargs={"a": 1}, task_id="t", group_id="g")
    before = field_values(await fetch_row("t"))
    returned = await scheduler.add_task(
        "mul", run_at=T2, kwargs={"a": 2}, task_id="t", replace_existing=False
    )
    stored = await fetch_row("t")
    assert field_values(stored) == before
    assert field_values(returned) == before
    assert returned.kwargs == {"a": 1}


@db
async def test_add_task_replace_existing_false_still_adds_a_new_task(scheduler):
    returned = await scheduler.add_task("add", run_at=T1, task_id="new", replace_existing=False)
    stored = await fetch_row("new")
    assert field_values(returned) == field_values(stored)


@db
async def test_replacing_keeps_the_lease_and_clears_the_failure(scheduler):
    """A replaced row keeps its lease and created_at; its failure state is cleared; the
    returned Task is what a fetch returns."""
    await scheduler.add_task("add", run_at=T1, task_id="t")
    await Task.objects.filter(pk="t").aupdate(
        lease_owner="worker-1",
        lease_expires_at=T3,
        claim_token="tok",
        attempts=3,
        failed_at=T2,
        last_run_at=T2,
        last_error="ZeroDivisionError: division by zero",
        last_traceback="Traceback (most recent call last): ...",
    )
    returned = await scheduler.add_task("add", run_at=T4, task_id="t")
    stored = await fetch_row("t")
    assert (stored.lease_owner, stored.lease_expires_at, stored.claim_token) == (
        "worker-1",
        T3,
        "tok",
    )
    assert stored.attempts == 0
    assert stored.failed_at is None
    assert stored.run_at == T4
    assert field_values(returned) == field_values(stored)


# --- add_tasks -------------------------------------------------------------------------------


@db
async def test_add_tasks_writes_every_task(scheduler):
    tasks = (
        Task(callback="add", run_at=T1 + timedelta(minutes=i), task_id=f"t{i}", group_id="g")
        for i in range(5)
    )
    assert await scheduler.add_tasks(tasks) is None
    fetched = await scheduler.fetch_tasks(group_id="g")
    assert [t.task_id for t in fetched] == [f"t{i}" for i in range(5)]
    assert [t.run_at for t in fetched] == [T1 + timedelta(minutes=i) for i in range(5)]


@db
async def test_add_tasks_fills_in_defaults(scheduler):
    before = timezone.now()
    await scheduler.add_tasks([Task(callback="add", task_id="t", paused=True)])
    after = timezone.now()
    stored = await fetch_row("t")
    assert before <= stored.run_at <= after
    assert before <= stored.paused_at <= after
    assert before <= stored.created_at <= after
    assert stored.kwargs == {}
    assert stored.attempts == 0
    assert stored.failed_at is None


@db
async def test_add_tasks_of_nothing_writes_nothing(scheduler, sent):
    await scheduler.add_tasks([])
    assert await Task.objects.acount() == 0
    assert sent == []


@db
async def test_add_tasks_replace_existing_false_keeps_existing_rows(scheduler):
    await scheduler.add_task("add", run_at=T1, kwargs={"v": "old"}, task_id="old")
    before = field_values(await fetch_row("old"))
    await scheduler.add_tasks(
        [
            Task(callback="mul", run_at=T2, kwargs={"v": "new"}, task_id="old"),
            Task(callback="mul", run_at=T3, kwargs={"v": "new"}, task_id="fresh"),
        ],
        replace_existing=False,
    )
    assert field_values(await fetch_row("old")) == before
    assert (await fetch_row("fresh")).kwargs == {"v": "new"}


@db
async def test_add_tasks_replace_existing_true_replaces_rows(scheduler):
    first = await scheduler.add_task("add", run_at=T1, kwargs={"v": "old"}, task_id="old")
    await scheduler.add_tasks(
        [
            Task(callback="mul", run_at=T2, kwargs={"v": "new"}, task_id="old"),
            Task(callback="mul", run_at=T3, kwargs={"v": "new"}, task_id="fresh"),
        ]
    )
    old = await fetch_row("old")
    assert (old.callback, old.run_at, old.kwargs) == ("mul", T2, {"v": "new"})
    assert old.created_at == first.created_at
    assert await stored_ids() == ["fresh", "old"]


# --- fetch_tasks -----------------------------------------------------------------------------


@db
async def test_fetch_tasks_by_ids_is_ordered_by_run_at(scheduler):
    await seed(row("a", T3), row("b", T1), row("c", T2), row("d", T0))
    fetched = await scheduler.fetch_tasks(task_ids=["a", "b", "c"])
    assert [t.task_id for t in fetched] == ["b", "c", "a"]
    assert all(isinstance(t, Task) for t in fetched)


@db
async def test_fetch_tasks_by_group_is_ordered_by_run_at(scheduler):
    await seed(
        row("a", T3, group_id="g"),
        row("b", T1, group_id="g"),
        row("c", T0, group_id="other"),
        row("d", T2),
    )
    fetched = await scheduler.fetch_tasks(group_id="g")
    assert [t.task_id for t in fetched] == ["b", "a"]


@db
async def test_fetch_tasks_ignores_unknown_ids(scheduler):
    await seed(row("a"))
    assert [t.task_id for t in await scheduler.fetch_tasks(task_ids=["a", "nope"])] == ["a"]
    assert await scheduler.fetch_tasks(task_ids=[]) == []
    assert await scheduler.fetch_tasks(group_id="nope") == []


@db
@pytest.mark.parametrize("make_ids", [tuple, set, iter], ids=["tuple", "set", "iterator"])
async def test_fetch_tasks_takes_any_iterable_of_ids(scheduler, make_ids):
    await seed(row("a", T2), row("b", T1), row("c", T3))
    fetched = await scheduler.fetch_tasks(task_ids=make_ids(["a", "b"]))
    assert [t.task_id for t in fetched] == ["b", "a"]


# --- pause / resume --------------------------------------------------------------------------


@db
async def test_pause_tasks_by_ids_stamps_paused_at(scheduler):
    await seed(row("a"), row("b"), row("c"))
    before = timezone.now()
    assert await scheduler.pause_tasks(task_ids=["a", "b", "unknown"]) == 2
    after = timezone.now()
    a, b, c = await scheduler.fetch_tasks(task_ids=["a", "b", "c"])
    assert (a.paused, b.paused, c.paused) == (True, True, False)
    assert before <= a.paused_at <= after
    assert before <= b.paused_at <= after
    assert c.paused_at is None


@db
async def test_pausing_twice_keeps_the_first_stamp(scheduler):
    await seed(row("a"), row("b"))
    assert await scheduler.pause_tasks(task_ids=["a"]) == 1
    first_stamp = (await fetch_row("a")).paused_at
    await asyncio.sleep(0.01)
    assert await scheduler.pause_tasks(task_ids=["a", "b"]) == 1  # only b was not paused
    assert (await fetch_row("a")).paused_at == first_stamp
    assert (await fetch_row("b")).paused_at > first_stamp


@db
async def test_pause_and_resume_by_group(scheduler):
    await seed(row("a", group_id="g"), row("b", group_id="g"), row("c", group_id="h"))
    assert await scheduler.pause_tasks(group_id="g") == 2
    assert [t.paused for t in await scheduler.fetch_tasks(task_ids=["a", "b", "c"])] == [
        True,
        True,
        False,
    ]
    assert await scheduler.pause_tasks(group_id="g") == 0
    assert await scheduler.resume_tasks(group_id="g") == 2
    for task in await scheduler.fetch_tasks(task_ids=["a", "b", "c"]):
        assert (task.paused, task.paused_at) == (False, None)
    assert await scheduler.resume_tasks(group_id="g") == 0


@db
async def test_resume_tasks_by_ids_clears_paused_at(scheduler):
    await seed(row("a"), row("b"), row("c"))
    await scheduler.pause_tasks(task_ids=["a", "b", "c"])
    assert await scheduler.resume_tasks(task_ids=["a", "b", "unknown"]) == 2
    a, b, c = await scheduler.fetch_tasks(task_ids=["a", "b", "c"])
    assert (a.paused, a.paused_at, b.paused, b.paused_at) == (False, None, False, None)
    assert c.paused is True
    assert c.paused_at is not None
    assert await scheduler.resume_tasks(task_ids=["a"]) == 0


@db
async def test_pause_then_resume_then_pause_stamps_again(scheduler):
    await seed(row("a"))
    await scheduler.pause_tasks(task_ids=["a"])
    first_stamp = (await fetch_row("a")).paused_at
    await scheduler.resume_tasks(task_ids=["a"])
    await asyncio.sleep(0.01)
    await scheduler.pause_tasks(task_ids=["a"])
    assert (await fetch_row("a")).paused_at > first_stamp


# --- remove ----------------------------------------------------------------------------------


@db
async def test_remove_tasks_by_ids(scheduler):
    await seed(row("a"), row("b"), row("c"))
    assert await scheduler.remove_tasks(task_ids=["a", "c", "unknown"]) == 2
    assert await stored_ids() == ["b"]
    assert await scheduler.remove_tasks(task_ids=["a"]) == 0


@db
async def test_remove_tasks_by_group(scheduler):
    await seed(row("a", group_id="g"), row("b", group_id="g"), row("c", group_id="h"), row("d"))
    assert await scheduler.remove_tasks(group_id="g") == 2
    assert await stored_ids() == ["c", "d"]
    assert await scheduler.remove_tasks(group_id="g") == 0


# --- Long id lists (more than one chunk of ids) ----------------------------------------------


@db
async def test_long_id_lists_fetch_pause_resume_and_remove_every_task(scheduler, monkeypatch):
    """Across chunks of ids, with a small chunk size (tests/test_datastores.py crosses the real
    one, against the database's parameter limits)."""
    monkeypatch.setattr(tasks_module, "CHUNK", SMALL_CHUNK)
    count = 2 * SMALL_CHUNK + 37
    # Ids in one order, run_at in the opposite one: ordering must follow run_at across chunks.
    await seed(*(row(f"t{i:05d}", T1 - timedelta(seconds=i)) for i in range(count)))
    ids = [f"t{i:05d}" for i in range(count)]
    fetched = await scheduler.fetch_tasks(task_ids=ids)
    assert len(fetched) == count
    assert [t.task_id for t in fetched] == ids[::-1]
    assert await scheduler.pause_tasks(task_ids=ids) == count
    assert await Task.objects.filter(paused=True).acount() == count
    assert await scheduler.resume_tasks(task_ids=ids) == count
    assert await Task.objects.filter(paused=False, paused_at=None).acount() == count
    assert await scheduler.remove_tasks(task_ids=ids[:-1]) == count - 1
    assert await stored_ids() == [ids[-1]]


# --- Time zones ------------------------------------------------------------------------------


def raw_run_at(task_id: str) -> datetime:
    """The stored run_at as the database holds it, as a naive UTC datetime."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT run_at AT TIME ZONE 'UTC' FROM django_taskshed_task WHERE task_id = %s",
                [task_id],
            )
        else:
            cursor.execute("SELECT run_at FROM django_taskshed_task WHERE task_id = %s", [task_id])
        (value,) = cursor.fetchone()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None) if value.utcoffset() == timedelta(0) else value


@db
@pytest.mark.parametrize(
    ("naive", "utc"),
    [
        (datetime(2030, 1, 15, 12, 0), datetime(2030, 1, 15, 11, 0)),  # CET, UTC+1
        (datetime(2030, 7, 15, 12, 0), datetime(2030, 7, 15, 10, 0)),  # CEST, UTC+2
    ],
    ids=["winter", "summer"],
)
async def test_naive_run_at_is_read_in_the_current_time_zone(scheduler, naive, utc):
    returned = await scheduler.add_task("add", run_at=naive, task_id="t")
    stored = await fetch_row("t")
    assert stored.run_at == utc.replace(tzinfo=UTC)
    assert stored.run_at == naive.replace(tzinfo=PARIS)
    assert returned.run_at == stored.run_at
    assert await sync_to_async(raw_run_at)("t") == utc


@db
async def test_naive_run_at_follows_timezone_override(scheduler):
    naive = datetime(2030, 1, 15, 12, 0)
    with timezone.override(NEW_YORK):
        await scheduler.add_task("add", run_at=naive, task_id="one")
        await scheduler.add_tasks([Task(callback="add", run_at=naive, task_id="many")])
    for task_id in ("one", "many"):
        assert (await fetch_row(task_id)).run_at == datetime(2030, 1, 15, 17, 0, tzinfo=UTC)
        assert await sync_to_async(raw_run_at)(task_id) == datetime(2030, 1, 15, 17, 0)


@db
@pytest.mark.parametrize(
    "zone", [NEW_YORK, ZoneInfo("Asia/Kolkata"), ZoneInfo("Pacific/Chatham"), UTC], ids=str
)
async def test_aware_run_at_in_any_zone_is_stored_as_the_same_instant_in_utc(scheduler, zone):
    instant = datetime(2030, 3, 1, 6, 45, 30, 123456, tzinfo=zone)
    returned = await scheduler.add_task("add", run_at=instant, task_id="one")
    await scheduler.add_tasks([Task(callback="add", run_at=instant, task_id="many")])
    for task in (returned, await fetch_row("one"), await fetch_row("many")):
        assert task.run_at == instant
        assert task.run_at.utcoffset() == timedelta(0)
    expected = instant.astimezone(UTC).replace(tzinfo=None)
    assert await sync_to_async(raw_run_at)("one") == expected
    assert await sync_to_async(raw_run_at)("many") == expected


# --- update_execution_times ------------------------------------------------------------------


@db
async def test_update_execution_times_moves_tasks(scheduler, sent):
    await seed(row("a", T1), row("b", T1), row("c", T1))
    updated_before = (await fetch_row("a")).updated_at
    result = await scheduler.update_execution_times(
        [
            TaskExecutionTime("a", datetime(2030, 2, 1, 12, 0)),  # naive: Paris time
            TaskExecutionTime("b", datetime(2030, 2, 1, 12, 0, tzinfo=NEW_YORK)),
            TaskExecutionTime("unknown", T0),
        ]
    )
    assert result is None
    a, b, c = [await fetch_row(task_id) for task_id in "abc"]
    assert a.run_at == datetime(2030, 2, 1, 11, 0, tzinfo=UTC)
    assert b.run_at == datetime(2030, 2, 1, 17, 0, tzinfo=UTC)
    assert c.run_at == T1
    assert a.updated_at > updated_before
    assert await stored_ids() == ["a", "b", "c"]  # the unknown id created nothing
    assert len(sent) == 1


@db
async def test_update_execution_times_reads_naive_times_in_the_overridden_zone(scheduler):
    await seed(row("a", T1))
    with timezone.override(NEW_YORK):
        await scheduler.update_execution_times([TaskExecutionTime("a", datetime(2030, 2, 1, 12))])
    assert (await fetch_row("a")).run_at == datetime(2030, 2, 1, 17, 0, tzinfo=UTC)


@db
async def test_update_execution_times_of_nothing_does_nothing(scheduler, sent):
    await seed(row("a", T1))
    await scheduler.update_execution_times([])
    assert (await fetch_row("a")).run_at == T1
    assert sent == []


# --- add_callback and the in-process worker --------------------------------------------------


async def noop() -> None:
    return None


async def test_add_callback_without_a_worker_raises(scheduler):
    with pytest.raises(TaskshedError, match="worker") as raised:
        await scheduler.add_callback("noop", noop)
    assert isinstance(raised.value, RuntimeError)  # as TaskShed raises


def test_add_callback_called_plainly_without_a_worker_raises_at_once():
    with pytest.raises(RuntimeError, match="needs a worker"):
        AsyncScheduler().add_callback("noop", noop)


async def test_add_callback_called_plainly_registers_at_once(fake_worker):
    scheduler = AsyncScheduler(worker=fake_worker)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited"
        scheduler.add_callback("noop", noop)
    assert fake_worker.callbacks == {"noop": noop}
    with pytest.raises(ValueError, match="noop"):
        scheduler.add_callback("noop", noop)


async def test_add_callback_registers_with_the_worker(make_scheduler, fake_worker):
    scheduler = make_scheduler(worker=fake_worker)
    assert await scheduler.add_callback("noop", noop) is None
    assert fake_worker.callbacks == {"noop": noop}
    with pytest.raises(ValueError, match="noop"):
        await scheduler.add_callback("noop", noop)
    assert fake_worker.callbacks == {"noop": noop}


@db
async def test_changes_wake_the_in_process_worker(make_scheduler, fake_worker, sent):
    scheduler = make_scheduler(worker=fake_worker)
    steps = [
        lambda: scheduler.add_task("add", run_at=T2, task_id="a", group_id="g"),
        lambda: scheduler.add_tasks([row("b", T1, group_id="g"), row("c", T3)]),
        lambda: scheduler.fetch_tasks(group_id="g"),
        lambda: scheduler.pause_tasks(group_id="g"),
        lambda: scheduler.pause_tasks(group_id="g"),  # changes nothing
        lambda: scheduler.resume_tasks(task_ids=["a"]),
        lambda: scheduler.update_execution_times([TaskExecutionTime("c", T0)]),
        lambda: scheduler.remove_tasks(task_ids=["a", "b", "c"]),
    ]
    for step in steps:
        await step()
        # Across processes, hints far ahead go out from notifications.HINTS, where they may
        # merge with the next ones: each step's is delivered before the next step.
        assert notifications.HINTS.flush(10)
    assert fake_worker.wakeups == [T2, T1, None, T2, T0, None]
    assert sent == fake_worker.wakeups


# --- Notifications ---------------------------------------------------------------------------


async def seed_for_notifications() -> None:
    await seed(
        row("a", T2, group_id="g", paused=True, paused_at=T0),
        row("b", T3, group_id="g", paused=True, paused_at=T0),
        row("c", T1),
    )


CHANGES = {
    "add_task": (lambda s: s.add_task("add", run_at=T4, task_id="n"), T4),
    "add_task paused": (lambda s: s.add_task("add", run_at=T4, task_id="n", paused=True), None),
    "add_tasks": (lambda s: s.add_tasks([row("n", T4), row("m", T0)]), T0),
    "pause_tasks": (lambda s: s.pause_tasks(task_ids=["c"]), None),
    "resume_tasks by group": (lambda s: s.resume_tasks(group_id="g"), T2),
    "resume_tasks by ids": (lambda s: s.resume_tasks(task_ids=["b", "c"]), T3),
    "remove_tasks": (lambda s: s.remove_tasks(task_ids=["a", "c"]), None),
    "update_execution_times": (
        lambda s: s.update_execution_times(
            [TaskExecutionTime("a", T4), TaskExecutionTime("c", T0)]
        ),
        T0,
    ),
}


@db
@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
async def test_each_change_sends_one_notification(scheduler, sent, change):
    operation, hint = CHANGES[change]
    await seed_for_notifications()
    await operation(scheduler)
    assert sent == [hint]


NO_CHANGES = {
    "fetch_tasks": lambda s: s.fetch_tasks(task_ids=["a", "b", "c"]),
    "fetch_tasks by group": lambda s: s.fetch_tasks(group_id="g"),
    "pause_tasks of paused tasks": lambda s: s.pause_tasks(group_id="g"),
    "resume_tasks of running tasks": lambda s: s.resume_tasks(task_ids=["c"]),
    "remove_tasks of unknown ids": lambda s: s.remove_tasks(task_ids=["x", "y"]),
    "remove_tasks of an empty group": lambda s: s.remove_tasks(group_id="empty"),
    "add_tasks of nothing": lambda s: s.add_tasks([]),
    "update_execution_times of nothing": lambda s: s.update_execution_times([]),
}


@db
@pytest.mark.parametrize("no_change", NO_CHANGES, ids=list(NO_CHANGES))
async def test_what_changes_nothing_sends_nothing(scheduler, sent, no_change):
    await seed_for_notifications()
    before = [field_values(t) async for t in Task.objects.all()]
    await NO_CHANGES[no_change](scheduler)
    assert sent == []
    assert [field_values(t) async for t in Task.objects.all()] == before


@db
def test_sync_add_task_in_a_rolled_back_transaction_writes_and_sends_nothing(sent, fake_worker):
    scheduler = SyncScheduler(worker=fake_worker)
    with pytest.raises(RuntimeError, match="roll back"):
        with transaction.atomic():
            scheduler.add_task("add", run_at=T1, task_id="t")
            scheduler.add_tasks([row("u", T2)])
            assert Task.objects.count() == 2
            raise RuntimeError("roll back")
    assert Task.objects.count() == 0
    assert sent == []
    assert fake_worker.wakeups == []


@db
def test_sync_scheduler_notifies_once_after_the_outer_transaction_commits(sent, fake_worker):
    scheduler = SyncScheduler(worker=fake_worker)
    with transaction.atomic():
        scheduler.add_task("add", run_at=T2, task_id="t")
        scheduler.add_tasks([row("u", T1)])
        assert sent == []
        assert fake_worker.wakeups == []
    assert sent == [T1]  # one message for the transaction, with its earliest run_at
    assert fake_worker.wakeups == [T1]


@db
def test_a_change_without_a_hint_in_a_transaction_sends_no_hint(sent):
    scheduler = SyncScheduler()
    with transaction.atomic():
        scheduler.add_task("add", run_at=T2, task_id="t")
        scheduler.pause_tasks(task_ids=["t"])
    assert sent == [None]


@db
def test_a_rolled_back_savepoint_drops_only_its_own_changes(sent):
    scheduler = SyncScheduler()
    with transaction.atomic():
        scheduler.add_task("add", run_at=T2, task_id="kept")
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                scheduler.add_task("add", run_at=T1, task_id="dropped")
                raise RuntimeError("roll back the savepoint")
    assert list(Task.objects.values_list("pk", flat=True)) == ["kept"]
    # One message for the transaction. The rolled-back change had already merged its earlier
    # hint into the transaction's notice: an early wake-up costs a worker one re-read, while
    # a second message per savepoint would cost every worker one.
    assert sent == [T1]


@db
def test_sync_scheduler_in_autocommit_notifies_at_once(sent):
    scheduler = SyncScheduler()
    scheduler.add_task("add", run_at=T2, task_id="t")
    assert sent == [T2]


async def join_group(layer) -> str:
    channel = await layer.new_channel()
    await layer.group_add("taskshed", channel)
    return channel


async def receive(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), timeout=5)


@db
async def test_async_scheduler_message_reaches_the_group(hungry_worker):
    layer = channel_layer()
    channel = await join_group(layer)
    try:
        await AsyncScheduler().add_task("add", run_at=T1, task_id="t")
        message = await receive(layer, channel)
        await AsyncScheduler().pause_tasks(task_ids=["t"])
        paused = await receive(layer, channel)
    finally:
        await layer.group_discard("taskshed", channel)
    assert message == {"type": MESSAGE_TYPE, "run_at": T1.isoformat()}
    assert message["type"] == "taskshed.changed"
    assert parse_changed(message) == T1
    assert paused == {"type": "taskshed.changed", "run_at": None}
    assert parse_changed(paused) is None


@db
def test_sync_scheduler_message_reaches_the_group(hungry_worker):
    layer = channel_layer()
    channel = async_to_sync(join_group)(layer)
    try:
        SyncScheduler().add_task("add", run_at=datetime(2030, 1, 15, 10, 0), task_id="t")
        message = async_to_sync(receive)(layer, channel)
    finally:
        async_to_sync(layer.group_discard)("taskshed", channel)
    assert message == {"type": "taskshed.changed", "run_at": "2030-01-15T09:00:00+00:00"}
    assert parse_changed(message) == T1


@pytest.mark.parametrize(
    "run_at",
    [T1, datetime(2030, 7, 1, 12, 0, 0, 123456, tzinfo=PARIS), None],
    ids=["utc", "paris with microseconds", "no hint"],
)
def test_the_message_survives_the_redis_serializer(run_at):
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"])  # never connects here
    message = changed_message(run_at)
    assert message == {
        "type": "taskshed.changed",
        # Hints travel in UTC, whatever zone the change was made in.
        "run_at": None if run_at is None else run_at.astimezone(dt_timezone.utc).isoformat(),
    }
    received = layer.deserialize(layer.serialize(message))
    assert received == message
    assert parse_changed(received) == run_at
    # The serializer is the real one: a datetime itself would not get through.
    with pytest.raises(TypeError):
        layer.serialize({"type": "taskshed.changed", "run_at": T1})


@pytest.mark.parametrize(
    "message",
    [
        None,
        "taskshed.changed",
        {"run_at": None},
        {"type": "other.type", "run_at": None},
        {"type": "taskshed.changed", "run_at": 1893456000},
        {"type": "taskshed.changed", "run_at": "not a date"},
        {"type": "taskshed.changed", "run_at": "2030-01-15T09:00:00"},  # no offset
        {"type": "taskshed.changed", "run_at": "2030-01-15T09:00:00+00:00" + " " * 60},
    ],
    ids=["None", "str", "no type", "other type", "number", "garbage", "naive", "too long"],
)
def test_parse_changed_rejects_malformed_messages(message):
    with pytest.raises(ValueError):
        parse_changed(message)
