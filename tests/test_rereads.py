"""Hints no worker needs: the re-read times workers publish, and the senders' test of them.

The rule (``rereads.hint_needed``) against real rows; the schedulers skipping the group (but
not the in-process worker) when it says so, through a layer that stands for one across
processes; the worker's side (``Claims``: one publish per promise, never asleep past it) and
the heartbeat leaving the published time alone. Real processes: test_rereads_procs.py.
"""

from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from django_taskshed import notifications, rereads
from django_taskshed.datastores import DjangoDataStore
from django_taskshed.models import Task, WorkerRecord
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.alarm import Alarm
from django_taskshed.workers.claiming import CLAIM_AHEAD, Claims
from django_taskshed.workers.heartbeat import Heartbeat
from django_taskshed.workers.options import WorkerOptions
from tests.conftest import package_apps
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"
HOUR = timedelta(hours=1)


def register(worker_id: str, rereads_at: datetime | None, expired: bool = False) -> WorkerRecord:
    now = timezone.now()
    expires = now + (-HOUR if expired else HOUR)
    return WorkerRecord.objects.create(
        worker_id=worker_id, hostname="test", pid=1, started_at=now, heartbeat_at=now,
        expires_at=expires, rereads_at=rereads_at,
    )  # fmt: skip


def from_now(**delta: float) -> datetime:
    return timezone.now() + timedelta(**delta)


# --- the rule ----------------------------------------------------------------------------------


def test_with_no_worker_registered_the_hint_is_sent():
    """Nothing promises a read: a listener on the group that is not a worker gets it."""
    assert rereads.hint_needed(from_now(hours=1), USING)


@pytest.mark.parametrize(
    ("promises", "needed"),
    [
        ([30], False),  # the one worker reads again 30 minutes before the task is due
        ([60], False),  # ... or exactly when it is due: that read finds it
        ([30, 59.9], False),
        ([30, 61], True),  # one would sleep past it
        ([30, None], True),  # one publishes nothing: it wants every hint
    ],
)
def test_a_hint_is_skipped_only_if_every_worker_reads_again_by_its_run_at(promises, needed):
    run_at = from_now(hours=1)
    for n, minutes in enumerate(promises):
        register(f"w{n}", None if minutes is None else run_at - timedelta(minutes=60 - minutes))
    assert rereads.hint_needed(run_at, USING) is needed


def test_an_expired_row_still_counts():
    """Its worker may be alive and slow to beat: only a dropped row stops counting."""
    run_at = from_now(hours=1)
    register("live", run_at - HOUR / 2)
    register("stale", run_at + HOUR, expired=True)
    assert rereads.hint_needed(run_at, USING)


def test_a_hint_without_a_time_or_due_soon_is_sent_unasked(django_assert_num_queries):
    register("w", from_now(seconds=0.1))  # reads again before any of these is due
    with django_assert_num_queries(0):
        assert rereads.hint_needed(None, USING)
        assert rereads.hint_needed(from_now(seconds=rereads.MIN_HORIZON - 0.1), USING)
    with django_assert_num_queries(1):
        assert not rereads.hint_needed(from_now(seconds=rereads.MIN_HORIZON + 1), USING)


def test_a_failed_read_sends_the_hint(monkeypatch):
    register("w", from_now(seconds=1))
    monkeypatch.setattr(rereads, "_statements", lambda using: ("SELECT * FROM nowhere", ""))
    assert rereads.hint_needed(from_now(hours=1), USING)


# --- the senders ---------------------------------------------------------------------------------


class RemoteLayer:
    """Stands for a layer across processes (not the in-memory one): records group sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append(notifications.parse_changed(message))


@pytest.fixture
def remote_layer(monkeypatch: pytest.MonkeyPatch) -> RemoteLayer:
    layer = RemoteLayer()
    monkeypatch.setattr(notifications, "channel_layer", lambda: layer)
    return layer


def delivered(layer: RemoteLayer) -> list[Any]:
    """The hints ``layer`` got, once those on the way (``notifications.HINTS``) arrived."""
    assert notifications.HINTS.flush(10)
    return layer.sent


def add_sync(run_at: datetime, worker: Any = None) -> None:
    SyncScheduler(worker=worker).add_task("note", run_at=run_at)


def add_async(run_at: datetime, worker: Any = None) -> None:
    async_to_sync(AsyncScheduler(worker=worker).add_task)("note", run_at=run_at)


def add_with_create(run_at: datetime, worker: Any = None) -> None:
    Task.objects.create(callback="note", run_at=run_at)


ADDERS = {"SyncScheduler": add_sync, "AsyncScheduler": add_async, "Task.objects": add_with_create}


@pytest.mark.parametrize("adder", ADDERS.values(), ids=ADDERS.keys())
def test_senders_skip_the_group_only_for_hints_no_worker_needs(remote_layer, adder):
    register("w", from_now(minutes=10))
    far, near = from_now(hours=1), from_now(minutes=5)
    adder(far)
    assert delivered(remote_layer) == []
    adder(near)
    assert delivered(remote_layer) == [near]


@pytest.mark.parametrize("adder", [add_sync, add_async], ids=["SyncScheduler", "AsyncScheduler"])
def test_the_in_process_worker_is_woken_even_when_the_group_is_skipped(
    remote_layer, fake_worker, adder
):
    register("w", from_now(minutes=10))
    far = from_now(hours=1)
    adder(far, fake_worker)
    assert (fake_worker.wakeups, delivered(remote_layer)) == ([far], [])


# --- the workers ---------------------------------------------------------------------------------


class FakeThread:
    """Stands for a worker's database thread: notes each step, and answers without a database."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.fail_publish = False

    async def run(self, func: Any, *args: Any) -> Any:
        self.steps.append(func.__name__)
        if func is rereads.publish:
            if self.fail_publish:
                raise ConnectionError("the database went away")
            return 1
        return [] if func.__name__ == "claim_due_tasks" else None


def claims_with(thread: FakeThread, poll_interval: float) -> Claims:
    options = WorkerOptions.from_kwargs({"poll_interval": poll_interval})
    return Claims(DjangoDataStore(USING), "w", options, thread, Alarm())  # type: ignore[arg-type]


async def test_a_worker_publishes_once_per_promise_and_renews_it_before_claiming(monkeypatch):
    thread = FakeThread()
    claims = claims_with(thread, 5.0)
    before = timezone.now()
    for _ in range(3):
        await claims.claim(10)
    assert thread.steps == ["publish", "claim_due_tasks", "claim_due_tasks", "claim_due_tasks"]
    promise = claims.promise
    assert promise is not None and before + timedelta(seconds=5) <= promise <= from_now(seconds=5)

    renewal = promise - timedelta(seconds=CLAIM_AHEAD)  # the promise has come
    monkeypatch.setattr(timezone, "now", lambda: renewal)
    thread.steps.clear()
    await claims.claim(10)
    assert thread.steps == ["publish", "claim_due_tasks"]
    assert claims.promise == renewal + timedelta(seconds=5)


async def test_a_failed_publish_is_a_failed_step_and_is_tried_again_before_the_next_claim():
    thread = FakeThread()
    claims = claims_with(thread, 5.0)
    thread.fail_publish = True
    with pytest.raises(ConnectionError):
        await claims.claim(10)
    assert (thread.steps, claims.promise) == (["publish"], None)
    thread.fail_publish = False
    await claims.claim(10)
    assert thread.steps == ["publish", "publish", "claim_due_tasks"]


async def test_a_worker_never_sleeps_past_its_promise():
    claims = claims_with(FakeThread(), 5.0)
    claims.promise = from_now(seconds=0.5)
    claims.alarm.ring()  # return at once: only the deadline it slept towards matters
    await claims.sleep(0)
    assert claims.alarm.deadline == claims.promise - timedelta(seconds=CLAIM_AHEAD)


async def test_a_full_worker_past_its_promise_waits_for_a_slot_without_spinning():
    """It reads nothing until a slot frees (its next claim renews the promise first)."""
    claims = claims_with(FakeThread(), 5.0)
    claims.promise = from_now(seconds=-1)
    claims.alarm.ring()
    await claims.sleep(0)
    assert claims.alarm.deadline >= from_now(seconds=4.9)


async def test_a_worker_that_polls_more_often_than_the_horizon_publishes_nothing():
    thread = FakeThread()
    claims = claims_with(thread, rereads.MIN_HORIZON / 2)
    await claims.claim(10)
    assert (thread.steps, claims.promise) == (["claim_due_tasks"], None)


async def test_a_running_worker_publishes_its_next_read_in_its_row():
    worker = EventDrivenWorker({}, poll_interval=2.0)
    started = timezone.now()
    await worker.start()
    try:
        record = await eventually(
            lambda: WorkerRecord.objects.filter(rereads_at__isnull=False).afirst(),
            what="the worker's published re-read time",
        )
        assert record.worker_id == worker.worker_id
        assert started + timedelta(seconds=2) <= record.rereads_at <= from_now(seconds=2)
    finally:
        await worker.shutdown()
    assert not await WorkerRecord.objects.aexists()


def test_the_heartbeat_leaves_the_published_time_alone_and_registers_anew_without_one():
    record = register("w", None)
    promise = from_now(seconds=30)
    assert rereads.publish(USING, "w", promise) == 1
    heartbeat = Heartbeat(record, DjangoDataStore(USING), 60.0, list, lambda: 3)
    heartbeat.beat()
    stored = WorkerRecord.objects.get()
    assert (stored.rereads_at, stored.running) == (promise, 3)
    assert stored.heartbeat_at > record.started_at

    WorkerRecord.objects.all().delete()  # dropped as expired by another worker
    heartbeat.beat()
    assert WorkerRecord.objects.get().rereads_at is None
