"""The "task changed" transport: messages, senders, failing layers, in-process workers listening.

Tests that use a real layer run with the in-memory layer and, when ``REDIS_URL`` is set, with
channels_redis (``layer_kind``); each configures its own layer with a unique key prefix and
group, because other test runs share the Redis server. Senders are observed through the
``sent`` fixture (the hint of every notification), through a channel of our own in the group
(``Inbox``) or by spying on the layer class. The real ``runtaskworker`` subprocesses are in
test_notifications_procs.py.
"""

import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from django.core.checks import Error
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_taskshed import notifications
from django_taskshed.checks import check_settings
from django_taskshed.datastores import DjangoDataStore
from django_taskshed.models import Task, TaskExecutionTime, WorkerRecord
from django_taskshed.notifications import (
    MESSAGE_TYPE,
    SEND_TIMEOUT,
    GroupListener,
    changed_message,
    channel_layer,
    notify_on_commit,
    parse_changed,
)
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from tests.redis_support import (
    Inbox,
    SilentServer,
    free_port,
    group_members,
    memory_layer,
    redis_layer,
    unique_name,
)
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(30)

UTC = dt_timezone.utc
PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
T1 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
T2 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
T3 = datetime(2030, 1, 15, 11, 0, tzinfo=UTC)
NOT_BEFORE = -0.005  # s: a task may start this early (the event loop's timer granularity)
PUSH_LATENESS = 0.25  # s after run_at: only a notification can wake a worker that polls each 60 s
SLACK = 0.3  # s on top of SEND_TIMEOUT for one failing send, start to finish

# Async tests reach the database from another thread, so every test commits; flushing only this
# app's tables keeps them fast on PostgreSQL.
db = pytest.mark.django_db(transaction=True, available_apps=["django_taskshed"])
HAS_CHANNELS_REDIS = importlib.util.find_spec("channels_redis") is not None
needs_channels_redis = pytest.mark.skipif(
    not HAS_CHANNELS_REDIS, reason="channels_redis is not installed"
)


def row(task_id: str, run_at: datetime = T1, **fields: Any) -> Task:
    return Task(task_id=task_id, callback="note", run_at=run_at, **fields)


def seconds_from_now(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


# --- Layers ------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def layer_kind(request: pytest.FixtureRequest) -> str:
    """Runs a test with the in-memory layer and with channels_redis (which needs REDIS_URL)."""
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    return request.param


@pytest.fixture
def use_layer(layer_kind: str, settings: Any, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``use_layer(**config)``: this test's kind of layer with ``config``, as the ``default``
    alias, and a group of its own. Returns the layer (``settings.TASKSHED["GROUP"]`` names the
    group)."""

    def configure(**config: Any) -> Any:
        if layer_kind == "memory":
            entry = memory_layer(**config)
        else:
            entry = redis_layer(request.getfixturevalue("redis_url"), **config)
        settings.CHANNEL_LAYERS = {"default": entry}
        settings.TASKSHED = {"GROUP": unique_name("ntf")}
        return channel_layer()

    return configure


def layer_classes() -> list[type]:
    classes: list[type] = [InMemoryChannelLayer]
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:
        return classes
    return [*classes, RedisChannelLayer]


@pytest.fixture
def layer_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Every ``group_send``/``group_add``/``new_channel`` call on any layer, in order."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for cls in layer_classes():
        for name in ("group_send", "group_add", "new_channel"):
            original = getattr(cls, name)

            async def spy(self: Any, *args: Any, _name: str = name, _original: Any = original):
                calls.append((_name, args))
                return await _original(self, *args)

            monkeypatch.setattr(cls, name, spy)
    return calls


# --- Messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_at",
    [
        T1,
        datetime(2030, 1, 15, 9, 0, 0, 123456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["whole seconds", "microseconds", "epoch", "the last microsecond"],
)
def test_a_utc_run_at_round_trips_as_an_iso_string(run_at):
    message = changed_message(run_at)
    assert message == {"type": "taskshed.changed", "run_at": run_at.isoformat()}
    assert message["run_at"].endswith("+00:00")
    parsed = parse_changed(message)
    assert parsed == run_at
    assert parsed.utcoffset() == timedelta(0)


def test_an_aware_run_at_elsewhere_round_trips_to_the_same_instant():
    run_at = datetime(2030, 7, 1, 12, 0, tzinfo=PARIS)
    assert parse_changed(changed_message(run_at)) == run_at


def test_no_run_at_round_trips_as_null():
    assert changed_message(None) == {"type": MESSAGE_TYPE, "run_at": None}
    assert parse_changed(changed_message(None)) is None
    assert parse_changed({"type": MESSAGE_TYPE}) is None  # an absent hint is no hint


def test_messages_carry_only_plain_values():
    for run_at in (T1, None):
        message = changed_message(run_at)
        assert json.loads(json.dumps(message)) == message


MALFORMED = {
    "a list": [MESSAGE_TYPE, T1.isoformat()],
    "a string": MESSAGE_TYPE,
    "None": None,
    "bytes": b'{"type": "taskshed.changed"}',
    "no type": {"run_at": T1.isoformat()},
    "another type": {"type": "taskshed.run", "run_at": T1.isoformat()},
    "type None": {"type": None, "run_at": None},
    "type not a string": {"type": 42},
    "run_at an int": {"type": MESSAGE_TYPE, "run_at": 1_900_000_000},
    "run_at a float": {"type": MESSAGE_TYPE, "run_at": 1.9e9},
    "run_at a list": {"type": MESSAGE_TYPE, "run_at": [T1.isoformat()]},
    "run_at a dict": {"type": MESSAGE_TYPE, "run_at": {"iso": T1.isoformat()}},
    "run_at bytes": {"type": MESSAGE_TYPE, "run_at": T1.isoformat().encode()},
    "run_at true": {"type": MESSAGE_TYPE, "run_at": True},
    "run_at naive": {"type": MESSAGE_TYPE, "run_at": "2030-01-15T09:00:00"},
    "run_at a date": {"type": MESSAGE_TYPE, "run_at": "2030-01-15"},
    "run_at garbage": {"type": MESSAGE_TYPE, "run_at": "garbage"},
    "run_at empty": {"type": MESSAGE_TYPE, "run_at": ""},
    "run_at month 13": {"type": MESSAGE_TYPE, "run_at": "2030-13-01T00:00:00+00:00"},
    "run_at offset 24h": {"type": MESSAGE_TYPE, "run_at": "2030-01-15T09:00:00+24:00"},
    "run_at overlong": {"type": MESSAGE_TYPE, "run_at": T1.isoformat() + " " * 40},
    "run_at 1 MB": {"type": MESSAGE_TYPE, "run_at": "9" * 1_000_000},
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_messages_are_rejected_with_value_error(message):
    started = time.perf_counter()
    with pytest.raises(ValueError):
        parse_changed(message)
    assert time.perf_counter() - started < 0.05


@needs_channels_redis
@pytest.mark.parametrize(
    "message",
    [
        changed_message(None),
        changed_message(T1),
        changed_message(datetime(2030, 1, 15, 9, 0, 0, 1, tzinfo=UTC)),
        changed_message(datetime(2030, 7, 1, 12, 0, tzinfo=PARIS)),
        changed_message(timezone.now()),
    ],
    ids=["no hint", "T1", "microsecond", "Paris", "now"],
)
def test_every_message_survives_channels_redis_serializer(message):
    """The in-memory layer does not serialize; channels_redis packs messages with msgpack."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])  # no connection is made
    packed = layer.serialize(message)
    assert isinstance(packed, bytes)
    unpacked = layer.deserialize(packed)
    assert unpacked == message
    assert parse_changed(unpacked) == parse_changed(message)


# --- Group names -------------------------------------------------------------------------------


def test_the_default_group_is_a_valid_channels_group_name():
    assert notifications.taskshed_settings.GROUP == "taskshed"
    assert InMemoryChannelLayer().require_valid_group_name("taskshed")
    assert not [e for e in check_settings() if "GROUP" in e.msg]


@pytest.mark.parametrize(
    "group",
    ["taskshed", "a.b-c_D9", "g" * 99, "g" * 100, "task shed", "tâche", "ключ", "٣", "", "a/b"],
)
def test_the_group_setting_is_checked_as_channels_checks_it(settings, group):
    """The system check accepts a GROUP exactly when channels does and it is ASCII."""
    settings.TASKSHED = {"GROUP": group}
    errors = [e for e in check_settings() if isinstance(e, Error) and "GROUP" in e.msg]
    try:
        valid = BaseChannelLayer().require_valid_group_name(group) and group.isascii()
    except TypeError:
        valid = False
    assert bool(errors) == (not valid)


def test_the_group_check_rejects_a_trailing_newline_that_channels_lets_through(settings):
    settings.TASKSHED = {"GROUP": "taskshed\n"}
    assert [e for e in check_settings() if "GROUP" in e.msg]


# --- Once per transaction ----------------------------------------------------------------------


@db
def test_task_objects_changes_in_one_transaction_send_one_message_with_the_earliest_hint(sent):
    with transaction.atomic():
        Task.objects.create(task_id="a", callback="note", run_at=T2)
        Task.objects.create(task_id="b", callback="note", run_at=T1)
        b = Task.objects.get(pk="b")
        b.run_at = T3
        b.save()
        assert sent == []
    assert sent == [T1]


@db
@pytest.mark.parametrize(
    "change",
    ["delete", "save paused", "queryset delete"],
)
def test_a_change_without_a_hint_makes_the_transaction_send_no_hint(sent, change):
    Task.objects.bulk_create([row("x", T0, group_id="g"), row("y", T0, group_id="g")])
    with transaction.atomic():
        Task.objects.create(task_id="a", callback="note", run_at=T1)
        if change == "delete":
            Task.objects.get(pk="x").delete()
        elif change == "save paused":
            Task.objects.create(task_id="p", callback="note", run_at=T0, paused=True)
        else:
            Task.objects.filter(group_id="g").delete()
        Task.objects.create(task_id="b", callback="note", run_at=T2)
    assert sent == [None]


@db
def test_schedulers_and_task_objects_in_one_transaction_send_one_message(sent):
    scheduler = SyncScheduler()
    with transaction.atomic():
        scheduler.add_task("note", run_at=T2, task_id="a")
        Task.objects.create(task_id="b", callback="note", run_at=T1)
        scheduler.add_tasks([row("c", T3)])
    assert sent == [T1]


@db
def test_a_rolled_back_transaction_sends_nothing(sent):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Task.objects.create(task_id="a", callback="note", run_at=T1)
            SyncScheduler().add_task("note", run_at=T2, task_id="b")
            Task.objects.get(pk="a").delete()
            raise RuntimeError("roll back")
    assert sent == []
    assert not Task.objects.exists()


@db
@pytest.mark.parametrize(
    "outer_first", [True, False], ids=["outer change first", "savepoint first"]
)
def test_a_rolled_back_savepoint_still_sends_for_the_outer_changes(sent, outer_first):
    Task.objects.bulk_create([row("old", T3)])  # no signal
    with transaction.atomic():
        if outer_first:
            Task.objects.create(task_id="kept", callback="note", run_at=T2)
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                Task.objects.create(task_id="dropped", callback="note", run_at=T1)
                Task.objects.get(pk="old").delete()
                raise RuntimeError("roll back the savepoint")
        if not outer_first:
            Task.objects.create(task_id="kept", callback="note", run_at=T2)
        assert sent == []
    assert sorted(Task.objects.values_list("pk", flat=True)) == ["kept", "old"]
    # One message that covers T2. (A hint from the rolled-back part could only make it
    # earlier or None, which costs a worker one extra look at the schedule.)
    assert len(sent) == 1
    assert sent[0] is None or sent[0] <= T2


@db
def test_a_transaction_whose_only_changes_were_rolled_back_to_a_savepoint_sends_nothing(sent):
    with transaction.atomic():
        Task.objects.bulk_create([row("untouched", T3)])  # no signal: not a notified change
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                Task.objects.create(task_id="dropped", callback="note", run_at=T1)
                raise RuntimeError("roll back the savepoint")
    assert sent == []


@db
def test_changes_in_committed_savepoints_send_one_message_for_the_transaction(sent):
    """Nested ``atomic()`` blocks that commit are part of the outer transaction: still one
    message, with the earliest hint (``notify_on_commit`` promises once per transaction)."""
    with transaction.atomic():
        with transaction.atomic():
            Task.objects.create(task_id="inner", callback="note", run_at=T1)
        Task.objects.create(task_id="outer", callback="note", run_at=T2)
        with transaction.atomic():
            SyncScheduler().add_task("note", run_at=T3, task_id="scheduled")
    assert sorted(Task.objects.values_list("pk", flat=True)) == ["inner", "outer", "scheduled"]
    assert len(sent) == 1, f"{len(sent)} messages for one transaction: {sent}"
    assert sent[0] is None or sent[0] <= T1


@db
def test_in_autocommit_each_change_sends_at_once(sent):
    Task.objects.create(task_id="a", callback="note", run_at=T2)
    assert sent == [T2]
    Task.objects.create(task_id="p", callback="note", run_at=T1, paused=True)
    assert sent == [T2, None]
    Task.objects.get(pk="a").delete()
    assert sent == [T2, None, None]
    SyncScheduler().add_task("note", run_at=T3, task_id="b")
    assert sent == [T2, None, None, T3]


@db
def test_a_queryset_delete_of_many_rows_sends_one_message(sent):
    Task.objects.bulk_create([row(f"t{i}", T1, group_id="g") for i in range(5)])
    assert sent == []  # bulk_create sends no signal
    assert Task.objects.filter(group_id="g").delete()[0] == 5
    assert sent == [None]


@db
def test_notify_on_commit_merges_only_notices_for_the_same_worker(sent, fake_worker):
    with transaction.atomic():
        notify_on_commit(T2, "default", fake_worker)
        notify_on_commit(T1, "default", fake_worker)
        notify_on_commit(T0, "default")
    assert fake_worker.wakeups == [T1]
    # Two notices, each sent to the group; across processes hints on their way to a send may
    # merge into the earliest (``HINTS``), so the group gets T0 and at most T1 besides.
    assert sorted(sent) in ([T0, T1], [T0])


NOT_AWARE_RUN_ATS = {
    "naive datetime": datetime(2030, 1, 15, 10, 0),  # Europe/Paris: T1
    "aware ISO string": "2030-01-15T09:00:00+00:00",
    "naive string": "2030-01-15 10:00:00",
}


@db
@pytest.mark.filterwarnings("ignore:DateTimeField Task.run_at received a naive datetime")
@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "in a transaction"])
@pytest.mark.parametrize("run_at", NOT_AWARE_RUN_ATS.values(), ids=NOT_AWARE_RUN_ATS.keys())
def test_task_objects_with_a_run_at_django_accepts_sends_a_hint_workers_accept(
    sent, run_at, in_transaction
):
    """Django stores a naive datetime (in the current time zone) or an ISO string given to a
    DateTimeField; the notification must still be one a worker accepts (an aware time for
    that instant, or no hint), and the save must not fail because of it."""
    if in_transaction:
        with transaction.atomic():
            Task.objects.create(task_id="later", callback="note", run_at=T2)
            Task.objects.create(task_id="t", callback="note", run_at=run_at)
    else:
        Task.objects.create(task_id="t", callback="note", run_at=run_at)
    assert Task.objects.get(pk="t").run_at == T1
    assert len(sent) == 1
    (hint,) = sent
    assert hint is None or parse_changed(changed_message(hint)) == T1


# --- Through a real layer ----------------------------------------------------------------------


@db
async def test_each_async_scheduler_operation_sends_exactly_one_message(use_layer, hungry_worker):
    layer = use_layer()
    group = notifications.taskshed_settings.GROUP
    scheduler = AsyncScheduler()
    operations = [
        (lambda: scheduler.add_task("note", run_at=T2, task_id="a", group_id="g"), T2),
        (lambda: scheduler.add_tasks([row("b", T1, group_id="g"), row("c", T3)]), T1),
        (lambda: scheduler.fetch_tasks(group_id="g"), "no message"),
        (lambda: scheduler.pause_tasks(group_id="g"), None),
        (lambda: scheduler.resume_tasks(task_ids=["a"]), T2),
        (lambda: scheduler.update_execution_times([TaskExecutionTime("c", T0)]), T0),
        (lambda: scheduler.run_tasks_now(task_ids=["b"]), None),
        (lambda: scheduler.remove_tasks(task_ids=["a", "b", "c"]), None),
        (lambda: scheduler.remove_tasks(task_ids=["a", "b", "c"]), "no message"),
    ]
    async with Inbox(layer, group) as inbox:
        expected: list[Any] = []
        for operation, hint in operations:
            await operation()
            if hint != "no message":
                expected.append(hint)
            messages = await inbox.wait_for(len(expected))
            assert [parse_changed(m) for m in messages] == expected
    assert all(set(m) == {"type", "run_at"} for m in messages)
    assert all(m["run_at"] is None or m["run_at"].endswith("+00:00") for m in messages)


@db
async def test_task_objects_and_sync_scheduler_messages_reach_the_group(use_layer, hungry_worker):
    layer = use_layer()
    async with Inbox(layer, notifications.taskshed_settings.GROUP) as inbox:
        await Task.objects.acreate(task_id="a", callback="note", run_at=T2)
        await inbox.wait_for(1)
        await sync_to_async(SyncScheduler().add_task)("note", run_at=T1, task_id="b")
        await (await Task.objects.aget(pk="a")).adelete()
        messages = await inbox.wait_for(3)
    first, *rest = [parse_changed(m) for m in messages]
    # T1 is far ahead: across processes its hint goes out from notifications.HINTS, and
    # may come after the delete's (a hint without a time is sent by the caller, at once).
    assert first == T2
    assert sorted(rest, key=lambda hint: hint is not None) == [None, T1]


@db
def test_a_sync_scheduler_change_rolled_back_sends_no_message_and_writes_nothing(
    use_layer, layer_calls, hungry_worker
):
    use_layer()
    scheduler = SyncScheduler()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            scheduler.add_task("note", run_at=T1, task_id="a")
            scheduler.add_tasks([row("b", T2)])
            scheduler.pause_tasks(task_ids=["a"])
            raise RuntimeError("roll back")
    assert not Task.objects.exists()
    assert [name for name, _ in layer_calls] == []
    scheduler.add_task("note", run_at=T1, task_id="a")  # the same change, committed: one send
    assert notifications.HINTS.flush(10)  # across processes, sent off this thread
    assert [(name, args[1]) for name, args in layer_calls] == [("group_send", changed_message(T1))]


@db
@pytest.mark.parametrize("off", ["CHANNEL_LAYER None", "no CHANNEL_LAYERS", "unknown alias"])
def test_notifications_off_send_nothing_and_workers_join_nothing(settings, layer_calls, off):
    settings.CHANNEL_LAYERS = {"default": memory_layer()}
    if off == "CHANNEL_LAYER None":
        settings.TASKSHED = {"CHANNEL_LAYER": None}
    elif off == "no CHANNEL_LAYERS":
        del settings.CHANNEL_LAYERS
    else:
        settings.TASKSHED = {"CHANNEL_LAYER": "elsewhere"}
    assert channel_layer() is None

    async def start_and_stop_a_worker() -> None:
        worker = EventDrivenWorker({}, poll_interval=60)
        await worker.start()
        await asyncio.sleep(0.05)
        await worker.shutdown()

    SyncScheduler().add_task("note", run_at=T1, task_id="a")
    async_to_sync(AsyncScheduler().add_task)("note", run_at=T2, task_id="b")
    Task.objects.create(task_id="c", callback="note", run_at=T3)
    Task.objects.get(pk="c").delete()
    async_to_sync(start_and_stop_a_worker)()
    assert layer_calls == []
    assert sorted(Task.objects.values_list("pk", flat=True)) == ["a", "b"]


# --- A failing layer ---------------------------------------------------------------------------


SENDERS = {
    "SyncScheduler": lambda task_id: SyncScheduler().add_task("note", run_at=T1, task_id=task_id),
    "AsyncScheduler": lambda task_id: async_to_sync(AsyncScheduler().add_task)(
        "note", run_at=T1, task_id=task_id
    ),
    "Task.objects": lambda task_id: Task.objects.create(
        task_id=task_id, callback="note", run_at=T1
    ),
}


@pytest.fixture(params=["group_send raises", "group_send hangs", "closed port", "silent server"])
def failing_layer(request: pytest.FixtureRequest, settings: Any, monkeypatch: pytest.MonkeyPatch):
    """A channel layer whose sends fail: in Python, or channels_redis with no Redis behind."""
    settings.TASKSHED = {"GROUP": unique_name("ntf")}
    if request.param.startswith("group_send"):
        settings.CHANNEL_LAYERS = {"default": memory_layer()}

        async def fail(self: Any, group: str, message: Any) -> None:
            if request.param == "group_send hangs":
                await asyncio.sleep(60)
            raise ConnectionError("the layer is down")

        monkeypatch.setattr(InMemoryChannelLayer, "group_send", fail)
        yield request.param
        return
    if not HAS_CHANNELS_REDIS:
        pytest.skip("channels_redis is not installed")
    if request.param == "closed port":
        settings.CHANNEL_LAYERS = {"default": redis_layer(f"redis://127.0.0.1:{free_port()}/0")}
        yield request.param
        return
    server = SilentServer()
    settings.CHANNEL_LAYERS = {"default": redis_layer(server.url)}
    yield request.param
    server.close()


@db
@pytest.mark.parametrize("sender", SENDERS, ids=SENDERS.keys())
def test_a_failing_layer_never_raises_into_the_caller_nor_holds_it_up(
    failing_layer, sender, caplog, hungry_worker
):
    caplog.set_level(logging.WARNING, logger="django_taskshed.notifications")
    for attempt in range(2):  # the second send of an outage is bounded too
        started = time.monotonic()
        SENDERS[sender](f"t{attempt}")
        elapsed = time.monotonic() - started
        assert elapsed < SEND_TIMEOUT + SLACK, f"{sender} held up for {elapsed:.3f} s"
        # A hint the workers' re-read times decide (across processes) fails off the caller's
        # thread, as bounded; each is still logged.
        assert notifications.HINTS.flush(SEND_TIMEOUT + SLACK)
    assert Task.objects.count() == 2
    failures = [r for r in caplog.records if "could not notify workers" in r.getMessage()]
    assert len(failures) == 2


@db
def test_a_send_the_caller_stopped_waiting_for_is_logged_once(
    settings, monkeypatch, caplog, hungry_worker
):
    """The sync caller waits a little longer than the send's own timeout; when the sender
    thread is later still (a loaded machine), both see the failure and one warning is logged."""
    settings.TASKSHED = {"GROUP": unique_name("ntf")}
    settings.CHANNEL_LAYERS = {"default": memory_layer()}
    ended = threading.Event()

    async def late_timeout(send: Any) -> None:
        send.close()
        try:
            await asyncio.sleep(notifications.SEND_TIMEOUT + 0.4)  # past the caller's wait
            raise TimeoutError
        finally:
            ended.set()

    monkeypatch.setattr(notifications, "_within", late_timeout)
    caplog.set_level(logging.WARNING, logger="django_taskshed.notifications")
    SyncScheduler().add_task("note", run_at=T1, task_id="late")
    assert ended.wait(5)
    time.sleep(0.1)  # the send's except clause runs after the sleep's finally
    failures = [r for r in caplog.records if "could not notify workers" in r.getMessage()]
    assert len(failures) == 1


# --- Hints the workers' re-read times decide: off the caller's thread ------------------------


class GatedLayer:
    """Stands for a layer across processes (not the in-memory one) whose sends wait for
    ``gate``; ``entered`` is set when a send has begun."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sent: list[datetime | None] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.entered.set()
        await asyncio.to_thread(self.gate.wait, 10)
        self.sent.append(parse_changed(message))


@pytest.fixture
def gated_layer(monkeypatch: pytest.MonkeyPatch, hungry_worker: Any) -> GatedLayer:
    layer = GatedLayer()
    monkeypatch.setattr(notifications, "channel_layer", lambda: layer)
    monkeypatch.setattr(notifications, "SEND_TIMEOUT", 10.0)  # a held send is not a failure
    yield layer
    layer.gate.set()


@db
@pytest.mark.parametrize("sender", SENDERS, ids=SENDERS.keys())
def test_the_caller_waits_neither_for_the_workers_times_nor_for_the_send(gated_layer, sender):
    """A hint an hour ahead, on a layer across processes: the caller's queries are its
    write's; the read of the workers' times and the send happen on the hints' thread."""
    with CaptureQueriesContext(connection) as caller:
        SENDERS[sender]("t")
    if sender != "AsyncScheduler":  # whose queries run on asgiref's thread, not seen here
        workers_table = WorkerRecord._meta.db_table
        assert caller.captured_queries
        assert not [q["sql"] for q in caller.captured_queries if workers_table in q["sql"]]
    assert gated_layer.entered.wait(5)  # the send has begun, and waits for the gate
    assert gated_layer.sent == []
    gated_layer.gate.set()
    assert notifications.HINTS.flush(10)
    assert gated_layer.sent == [T1]


@db
def test_hints_waiting_for_a_send_merge_into_their_earliest(gated_layer):
    scheduler = SyncScheduler()
    scheduler.add_task("note", run_at=T2, task_id="first")
    assert gated_layer.entered.wait(5)  # T2 is being sent; the next ones wait their turn
    for task_id, run_at in [("a", T3), ("b", T1), ("c", T2)]:
        scheduler.add_task("note", run_at=run_at, task_id=task_id)
    gated_layer.gate.set()
    assert notifications.HINTS.flush(10)
    assert gated_layer.sent == [T2, T1]


@db
def test_a_hint_whose_check_fails_outside_the_database_is_sent(gated_layer, monkeypatch):
    def broken(run_at: Any, using: str) -> bool:
        raise RuntimeError("not a database error")

    monkeypatch.setattr(notifications, "hint_needed", broken)
    gated_layer.gate.set()
    SyncScheduler().add_task("note", run_at=T1, task_id="t")
    assert notifications.HINTS.flush(10)
    assert gated_layer.sent == [T1]


def hint_thread_sessions() -> int:
    """Client sessions on this test database other than this thread's own (PostgreSQL; not
    autovacuum's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def no_hint_thread_session(within: float = 5.0) -> bool:
    """Whether the sessions besides this thread's are gone within ``within`` seconds (a closed
    connection's backend leaves pg_stat_activity a moment after the client closed it)."""
    deadline = time.monotonic() + within
    while hint_thread_sessions():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@db
def test_the_hints_thread_closes_its_connection_when_idle_or_asked(gated_layer, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("counts sessions in pg_stat_activity")
    monkeypatch.setattr(notifications._Hints, "LINGER", 60.0)  # no idle close while asked
    gated_layer.gate.set()
    assert notifications.HINTS.flush(10, close_connections=True)
    assert no_hint_thread_session()
    SyncScheduler().add_task("note", run_at=T1, task_id="asked")
    assert notifications.HINTS.flush(10)
    assert hint_thread_sessions() == 1  # its query's, kept for the next hints
    assert notifications.HINTS.flush(10, close_connections=True)
    assert no_hint_thread_session()
    monkeypatch.setattr(notifications._Hints, "LINGER", 0.5)  # read after its next hint
    SyncScheduler().add_task("note", run_at=T2, task_id="idle")
    assert notifications.HINTS.flush(10)
    assert hint_thread_sessions() == 1
    assert no_hint_thread_session(), "still connected seconds after its last hint"
    assert gated_layer.sent == [T1, T2]


EXIT_SCRIPT = """
import sys
from datetime import timedelta
import django
from django.conf import settings

database, url, prefix, group = sys.argv[1:]
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_taskshed"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
    CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                "CONFIG": {"hosts": [url], "prefix": prefix}}},
    TASKSHED={"GROUP": group}, USE_TZ=True,
)
django.setup()
from django.core.management import call_command
from django.utils import timezone
from django_taskshed.models import WorkerRecord
from django_taskshed.schedulers import SyncScheduler

call_command("migrate", verbosity=0)
now = timezone.now()
WorkerRecord.objects.create(worker_id="w", hostname="elsewhere", pid=1, started_at=now,
                            heartbeat_at=now, expires_at=now + timedelta(hours=1))
SyncScheduler().add_task("note", run_at=now + timedelta(hours=1), task_id="last")
print("added")
"""


async def test_a_script_that_adds_and_exits_still_sends_its_hint(redis_url, tmp_path):
    """The hint is sent off the caller's thread: a process that ends right after the add
    sends it before it exits (a registered worker wants every hint; channels_redis)."""
    from channels_redis.core import RedisChannelLayer

    prefix, group = unique_name("taskshed-exit"), unique_name("exit")
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    # By host name where it is an address here: at exit, asyncio resolves it in a thread pool.
    by_name = redis_url.replace("//127.0.0.1:", "//localhost:")
    command = [
        sys.executable, "-c", EXIT_SCRIPT, str(tmp_path / "exit.sqlite3"), by_name, prefix,
        group,
    ]  # fmt: skip
    async with Inbox(layer, group) as inbox:
        before = timezone.now()
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60
        )
        after = timezone.now()
        assert done.returncode == 0 and done.stdout.strip() == "added", done.stderr
        messages = await inbox.wait_for(1)
    await layer.flush()
    assert len(messages) == 1
    hint = parse_changed(messages[0])
    assert hint is not None and before + timedelta(hours=1) <= hint <= after + timedelta(hours=1)


# --- GroupListener -----------------------------------------------------------------------------


class FlakyLayer(InMemoryChannelLayer):
    """Fails the first ``joins`` group_add calls and the first ``receives`` receive calls."""

    def __init__(self, joins: int = 0, receives: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.failures = {"group_add": joins, "receive": receives}
        self.group_adds = 0

    def fail(self, operation: str) -> None:
        if self.failures[operation] > 0:
            self.failures[operation] -= 1
            raise ConnectionError(f"{operation} failed on purpose")

    async def group_add(self, group: str, channel: str) -> None:
        self.group_adds += 1
        self.fail("group_add")
        await super().group_add(group, channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.fail("receive")
        return await super().receive(channel)


@asynccontextmanager
async def listening(layer: Any, group: str = "g") -> AsyncIterator[tuple[GroupListener, list]]:
    hints: list[Any] = []
    listener = GroupListener(layer, group, hints.append)
    listener.start()
    try:
        await asyncio.wait_for(listener.joined.wait(), 5)
        yield listener, hints
    finally:
        await listener.close()


async def test_the_listener_passes_hints_on_and_drops_malformed_messages(caplog):
    layer = InMemoryChannelLayer()
    async with listening(layer) as (listener, hints):
        for message in (changed_message(T1), {"type": "x"}, {"type": MESSAGE_TYPE, "run_at": 1}):
            await layer.group_send("g", message)
        await layer.group_send("g", changed_message(None))
        await eventually(lambda: len(hints) == 2, what="two hints")
    assert hints == [T1, None]
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 2


async def test_the_listener_rejoins_after_layer_errors():
    layer = FlakyLayer(joins=2, receives=1)
    async with listening(layer) as (listener, hints):
        await eventually(lambda: layer.failures["receive"] == 0, what="the failing receive")
        await eventually(lambda: listener.joined.is_set(), what="the listener to rejoin")
        await layer.group_send("g", changed_message(T2))
        await eventually(lambda: hints == [T2], what="the hint after rejoining")
    assert layer.group_adds >= 4  # two failed, one joined, one rejoined after the receive error


async def test_the_listener_renews_its_membership_and_leaves_on_close():
    layer = InMemoryChannelLayer(group_expiry=1)
    async with listening(layer) as (listener, hints):
        members = await group_members(layer, "g")
        assert members == {listener.channel}
        first = layer.groups["g"][listener.channel]
        await eventually(lambda: layer.groups["g"][listener.channel] > first, 2, "a renewal")
    assert await group_members(layer, "g") == set()


class SwallowingLayer(InMemoryChannelLayer):
    """Its first group_add takes 0.2 s and, if cancelled meanwhile, finishes anyway: some
    clients lose a cancellation that arrives mid-command (redis-py 8.1 does, see below)."""

    swallowed = 0

    async def group_add(self, group: str, channel: str) -> None:
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            type(self).swallowed += 1
        await super().group_add(group, channel)


async def close_within(listener: GroupListener, seconds: float) -> bool:
    """Close ``listener``; True if that took under ``seconds``. Stops it anyway if not."""
    closing = asyncio.ensure_future(listener.close())
    done, _ = await asyncio.wait({closing}, timeout=seconds)
    if not done:  # clean up: cancel again (the listener now waits in receive) and let go
        for task in listener._tasks:
            task.cancel()
        await asyncio.wait({closing}, timeout=2)
    return bool(done)


async def test_the_listener_closes_even_if_the_layer_swallows_a_cancellation():
    layer = SwallowingLayer()
    listener = GroupListener(layer, "g", lambda hint: None)
    listener.start()
    await asyncio.sleep(0.05)  # the listener is joining
    assert await close_within(listener, 1.0), "close() hung: the listener ignored its cancel"
    assert SwallowingLayer.swallowed == 1


class IdleLayer(InMemoryChannelLayer):
    """A receive that finds nothing ends in the layer's read timeout, as channels_redis's does
    after 5 s (here at once, ``idle`` times)."""

    def __init__(self, idle: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.idle = idle
        self.group_adds = 0

    async def group_add(self, group: str, channel: str) -> None:
        self.group_adds += 1
        await super().group_add(group, channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.idle > 0:
            self.idle -= 1
            raise RedisTimeoutError("Timeout reading from the layer")
        return await super().receive(channel)


@pytest.mark.parametrize(
    ("exc", "idle"),
    [
        (TimeoutError("read"), True),
        (asyncio.TimeoutError(), True),
        (RedisTimeoutError("Timeout reading from the layer"), True),
        (RedisConnectionError("Connection refused"), False),
        (OSError("unreachable"), False),
    ],
)
def test_only_a_timeout_is_an_idle_receive(exc, idle):
    assert notifications.idle_timeout(exc) is idle


def test_importing_the_app_does_not_import_redis():
    """A process with the in-memory layer, or none, carries none of redis' modules (~6 MB)."""
    code = (
        "import sys, django; django.setup();"
        " import django_taskshed.notifications, django_taskshed.schedulers;"
        " from django_taskshed.workers import EventDrivenWorker;"
        " from django.core.management import load_command_class;"
        " load_command_class('django_taskshed', 'runtaskworker');"
        " print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TASKSHED_TEST_LAYER": "memory",
    }
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


async def test_an_idle_layer_is_not_an_outage(caplog):
    """Timed-out receives: no warning, no back-off, no rejoin; the next hint comes at once."""
    layer = IdleLayer(idle=5)
    async with listening(layer) as (listener, hints):
        await eventually(lambda: layer.idle == 0, what="the idle receives")
        sent = time.monotonic()
        await layer.group_send("g", changed_message(T1))
        await eventually(lambda: hints == [T1], what="the hint after idling")
        assert time.monotonic() - sent < 0.1  # before: 0.2 s doubling back-off per timeout
    assert layer.group_adds == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.slow
@needs_channels_redis
async def test_a_worker_idle_on_channels_redis_hears_the_next_hint_at_once(redis_url, caplog):
    """channels_redis ends an idle receive with redis' TimeoutError after 5 s."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[redis_url], prefix=unique_name("taskshed-idle"))
    async with listening(layer) as (listener, hints):
        await asyncio.sleep(11)  # two idle timeouts
        sent = time.monotonic()
        await layer.group_send("g", changed_message(T2))
        await eventually(lambda: hints == [T2], what="the hint after idling")
        assert time.monotonic() - sent < 0.1
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()], caplog.text


@needs_channels_redis
async def test_the_listener_closes_while_joining_channels_redis(redis_url):
    """Closing a listener whose join is under way while this process sends on the same layer
    (an ASGI process with an embedded worker does). redis-py may finish the interrupted
    command and drop the cancel; close() must not wait for ever."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[redis_url], prefix=unique_name("taskshed-ntf"))
    for attempt in range(10):  # with redis-py 8.1 most attempts lose the race
        listener = GroupListener(layer, f"g{attempt}", lambda hint: None)
        listener.start()
        await layer.send("elsewhere", {"type": "chat.message"})
        assert await close_within(listener, 2.0), f"close() hung on attempt {attempt + 1}"


# --- An in-process worker ----------------------------------------------------------------------


class Ledger:
    """Callbacks for in-process workers: ``note(label)`` records when each label started."""

    def __init__(self) -> None:
        self.started: dict[str, datetime] = {}

    def callbacks(self) -> dict[str, Callable[..., Any]]:
        async def note(label: str) -> None:
            self.started[label] = timezone.now()

        return {"note": note}

    def lateness(self, label: str, run_at: datetime) -> float:
        return (self.started[label] - run_at).total_seconds()


@asynccontextmanager
async def listening_worker(
    ledger: Ledger, poll_interval: float = 60
) -> AsyncIterator[EventDrivenWorker]:
    """A started worker that has joined its group (and has nothing due)."""
    layer = channel_layer()
    group = notifications.taskshed_settings.GROUP
    worker = EventDrivenWorker(ledger.callbacks(), poll_interval=poll_interval)
    await worker.start()
    try:
        await eventually(lambda: group_members(layer, group), 2, "the worker to join the group")
        await asyncio.sleep(0.05)  # let the join finish (see test_the_listener_closes_...)
        yield worker
    finally:
        await shut_down(worker)


async def shut_down(worker: EventDrivenWorker, seconds: float = 5.0) -> None:
    """``worker.shutdown()``, failing (and stopping the worker anyway) if it hangs."""
    stopping = asyncio.ensure_future(worker.shutdown())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    if done:
        return stopping.result()
    listener = worker._listener
    if listener is not None:  # its tasks ignored one cancel: a second one stops them
        for task in listener._tasks:
            task.cancel()
    await asyncio.wait({stopping}, timeout=seconds)
    raise AssertionError(f"worker.shutdown() hung for {seconds} s (its group listener)")


async def assert_still_running(worker: EventDrivenWorker) -> None:
    """The worker's loop has not ended (a fault would have stopped it)."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(worker.wait_stopped(), 0.05)


async def claims_counted(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """Patches the worker's claim step to note when it runs."""
    times: list[datetime] = []
    claim = DjangoDataStore.claim_due_tasks

    def counted(*args: Any, **kwargs: Any) -> Any:
        times.append(timezone.now())
        return claim(*args, **kwargs)

    monkeypatch.setattr(DjangoDataStore, "claim_due_tasks", counted)
    return times


@db
async def test_a_worker_joins_the_group_at_start_and_leaves_it_at_shutdown(use_layer):
    layer = use_layer()
    group = notifications.taskshed_settings.GROUP
    assert await group_members(layer, group) == set()
    async with listening_worker(Ledger()) as worker:
        assert len(await group_members(layer, group)) == 1
        await assert_still_running(worker)
    assert await group_members(layer, group) == set()


@db
async def test_a_worker_is_in_the_group_when_start_returns(use_layer):
    """A notification sent as soon as ``start()`` returns (or ``runtaskworker`` prints its
    start-up line) must reach the worker; otherwise its task waits for the poll."""
    layer = use_layer()
    group = notifications.taskshed_settings.GROUP
    worker = EventDrivenWorker({}, poll_interval=60)
    await worker.start()
    try:
        members_at_start = await group_members(layer, group)
        await eventually(lambda: group_members(layer, group), 2, "the worker to join")
        await asyncio.sleep(0.05)  # let the join finish (see test_the_listener_closes_...)
    finally:
        await shut_down(worker)
    assert len(members_at_start) == 1


@db
async def test_a_message_wakes_the_worker_only_when_earlier_than_its_deadline(
    use_layer, monkeypatch
):
    layer = use_layer()
    group = notifications.taskshed_settings.GROUP
    claims = await claims_counted(monkeypatch)
    ledger = Ledger()
    async with listening_worker(ledger):
        await eventually(lambda: claims, what="the first claim")
        await asyncio.sleep(0.1)  # asleep now, until its poll in 60 s
        due = seconds_from_now(0.2)
        await Task.objects.abulk_create([row("a", due, kwargs={"label": "a"})])  # no signal
        before = len(claims)
        await layer.group_send(group, changed_message(seconds_from_now(120)))  # after the poll
        await asyncio.sleep(0.5)
        assert len(claims) == before, "a hint later than the deadline woke the worker"
        assert ledger.started == {}
        hinted = timezone.now()  # the task is overdue by now: it starts on the hint
        await layer.group_send(group, changed_message(due))
        await eventually(lambda: "a" in ledger.started, 1, "the hinted task")
        assert ledger.lateness("a", hinted) < PUSH_LATENESS

        due = seconds_from_now(0.2)
        await Task.objects.abulk_create([row("b", due, kwargs={"label": "b"})])
        await layer.group_send(group, changed_message(None))  # no hint: re-read the schedule
        await eventually(lambda: "b" in ledger.started, 1, "the task after a hint-less message")
        assert NOT_BEFORE <= ledger.lateness("b", due) < PUSH_LATENESS


FORGED = {
    "unknown type naming a task": {
        "type": "taskshed.run",
        "task_id": "victim",
        "callback": "note",
        "kwargs": {"label": "forged"},
    },
    "no type": {"task_id": "victim", "callback": "note"},
    "type not a string": {"type": 7, "run_at": None},
    "run_at an int": {"type": MESSAGE_TYPE, "run_at": 12345},
    "run_at a list": {"type": MESSAGE_TYPE, "run_at": ["2030-01-15T09:00:00+00:00"]},
    "run_at a dict": {"type": MESSAGE_TYPE, "run_at": {"callback": "note"}},
    "run_at garbage": {"type": MESSAGE_TYPE, "run_at": "garbage \x00 \x7f"},
    "run_at naive": {"type": MESSAGE_TYPE, "run_at": "2030-01-15T09:00:00"},
    "run_at 1 MB": {"type": MESSAGE_TYPE, "run_at": "2" * 1_000_000},
    "body 1 MB": {"type": "taskshed.padding", "padding": "x" * 1_000_000},
}
# Well formed but naming a task, a callback and kwargs: only the hint counts.
FORGED_VALID = {
    "type": MESSAGE_TYPE,
    "run_at": "0001-01-01T00:00:00+00:00",
    "task_id": "victim",
    "callback": "note",
    "kwargs": {"label": "forged"},
    "padding": "y" * 1_000_000,
}


@db
async def test_forged_messages_run_nothing_and_the_worker_keeps_working(use_layer, caplog):
    layer = use_layer()
    group = notifications.taskshed_settings.GROUP
    caplog.set_level(logging.WARNING, logger="django_taskshed")
    ledger = Ledger()
    await Task.objects.abulk_create([row("victim", T0, kwargs={"label": "victim"}, paused=True)])
    async with listening_worker(ledger) as worker:
        for message in FORGED.values():
            await layer.group_send(group, message)
        await layer.group_send(group, FORGED_VALID)
        due = seconds_from_now(0.3)
        await AsyncScheduler().add_task("note", run_at=due, kwargs={"label": "real"})
        await eventually(lambda: "real" in ledger.started, 2, "the real task")
        await asyncio.sleep(0.2)
        await assert_still_running(worker)
    assert ledger.started.keys() == {"real"}
    assert NOT_BEFORE <= ledger.lateness("real", due) < PUSH_LATENESS
    dropped = [r for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(dropped) == len(FORGED)
    assert all(len(r.getMessage()) < 1000 for r in dropped)  # a 1 MB body is not logged whole
    victim = await Task.objects.aget(pk="victim")
    assert (victim.paused, victim.attempts, victim.last_run_at) == (True, 0, None)


@db
async def test_undecodable_bytes_in_the_worker_channel_do_not_stop_the_worker(redis_url, settings):
    """Bytes written to Redis by something other than channels_redis: the receive fails, the
    listener rejoins, and the next real notification still wakes the worker."""
    settings.CHANNEL_LAYERS = {"default": redis_layer(redis_url)}
    settings.TASKSHED = {"GROUP": unique_name("ntf")}
    layer = channel_layer()
    group = notifications.taskshed_settings.GROUP
    ledger = Ledger()
    async with listening_worker(ledger) as worker:
        (channel,) = await group_members(layer, group)
        key = layer.prefix + layer.non_local_name(channel)
        connection = layer.connection(layer.consistent_hash(channel))
        for junk in (b"\x00" * 12 + b"\xc1\xc1", b"short", layer.serialize([1, 2]), b"x" * 100):
            await connection.zadd(key, {junk: time.time()})
        # Each undecodable entry costs the listener a retry (0.2 s, doubling): 1.4 s in all.
        due = seconds_from_now(2.5)
        await asyncio.sleep(2)
        await AsyncScheduler().add_task("note", run_at=due, kwargs={"label": "real"})
        await eventually(lambda: "real" in ledger.started, 2, "the real task")
        await assert_still_running(worker)
    assert NOT_BEFORE <= ledger.lateness("real", due) < PUSH_LATENESS


@db
@pytest.mark.slow
@pytest.mark.timeout(40)
async def test_push_still_works_after_several_group_expiries(use_layer):
    expiry = 2
    layer = use_layer(group_expiry=expiry)
    group = notifications.taskshed_settings.GROUP
    ledger = Ledger()
    async with listening_worker(ledger), Inbox(layer, group) as unrenewed:
        # The inbox joined once and never renews: it shows that memberships did expire.
        await asyncio.sleep(3 * expiry + 1.5)
        due = seconds_from_now(0.2)
        await AsyncScheduler().add_task("note", run_at=due, kwargs={"label": "late"})
        await eventually(lambda: "late" in ledger.started, 2, "the task after the expiries")
        assert unrenewed.messages == [], "the unrenewed membership did not expire"
    assert NOT_BEFORE <= ledger.lateness("late", due) < PUSH_LATENESS


@db
async def test_a_worker_and_a_channels_consumer_in_one_process_both_receive(use_layer):
    """An ASGI process may embed a worker beside Channels consumers on the same layer
    (channels_redis serves all of one process's channels through one receive loop)."""
    layer = use_layer()
    group = notifications.taskshed_settings.GROUP
    ledger = Ledger()
    async with listening_worker(ledger), Inbox(layer, "chat-" + group) as consumer:
        await asyncio.sleep(0.1)  # both are waiting in receive()
        await layer.group_send("chat-" + group, {"type": "chat.message", "text": "hi"})
        assert await consumer.wait_for(1, timeout=2) == [{"type": "chat.message", "text": "hi"}]
        due = seconds_from_now(0.2)
        await AsyncScheduler().add_task("note", run_at=due, kwargs={"label": "a"})
        await eventually(lambda: "a" in ledger.started, 2, "the task")
        await layer.group_send("chat-" + group, {"type": "chat.message", "text": "again"})
        assert len(await consumer.wait_for(2, timeout=2)) == 2
    assert NOT_BEFORE <= ledger.lateness("a", due) < PUSH_LATENESS
