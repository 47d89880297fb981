"""Queues and priorities: stored by both schedulers and declared schedules, and claimed by
priority then ``run_at``, from the queues a worker serves, on both claim paths."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError, connections, transaction
from django.test import override_settings
from django.utils import timezone

from django_taskshed.checks import check_schedules
from django_taskshed.datastores import DjangoDataStore, hotpath
from django_taskshed.declared import sync_schedules
from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.options import WorkerOptions, describe_queues, queue_names
from tests.conftest import package_apps
from tests.waiting import eventually

STORE = DjangoDataStore()
SECOND = timedelta(seconds=1)


@pytest.fixture(params=["one statement", "transaction"])
def claim_path(request, monkeypatch):
    """Each test runs on the single-statement claim and on the transaction path."""
    if request.param == "transaction":
        monkeypatch.setattr(hotpath, "can_claim", lambda connection: False)
    elif not hotpath.can_claim(connections[STORE.using]):
        pytest.skip("this database has no single-statement claim")
    return request.param


def add(task_id, seconds_ago, priority=0, queue="default", **fields):
    run_at = timezone.now() - timedelta(seconds=seconds_ago)
    SyncScheduler().add_tasks(
        [
            Task(
                task_id=task_id,
                callback="x",
                run_at=run_at,
                priority=priority,
                queue=queue,
                **fields,
            )
        ]
    )


def claimed(limit=10, queues=None, worker="w1"):
    return [claim.task_id for claim in STORE.claim_due_tasks(worker, limit, 60, 0.0, queues)]


# --- the claim -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_claim_takes_higher_priority_first_then_earlier_run_at(claim_path):
    add("low-early", 50, priority=-5)
    add("mid-late", 10)
    add("mid-early", 20)
    add("high-late", 1, priority=100)
    add("high-early", 5, priority=100)
    add("top-not-due", -60, priority=100)

    assert claimed(limit=3) == ["high-early", "high-late", "mid-early"]
    assert claimed(limit=10, worker="w2") == ["mid-late", "low-early"]
    assert claimed(worker="w3") == []


@pytest.mark.django_db
def test_a_claim_returns_priority_with_the_claim(claim_path):
    add("t", 1, priority=-100)
    (claim,) = STORE.claim_due_tasks("w1", 10, 60)
    assert claim.priority == -100


@pytest.mark.django_db
def test_a_claim_takes_only_from_its_queues(claim_path):
    add("a-1", 3, queue="a")
    add("b-1", 2, queue="b", priority=50)
    add("c-1", 1, queue="c")
    add("default-1", 4)

    assert claimed(queues=["b", "c"]) == ["b-1", "c-1"]
    assert claimed(queues=["a"], worker="w2") == ["a-1"]
    assert claimed(queues=["a", "b", "c"], worker="w3") == []
    assert claimed(worker="w4") == ["default-1"]  # None: every queue


@pytest.mark.django_db
def test_the_next_free_run_at_is_the_earliest_in_the_queues_whatever_the_priority():
    add("a-high-later", -60, priority=100, queue="a")
    add("a-low-sooner", -30, priority=-100, queue="a")
    add("b-soonest", -10, queue="b")
    runs = {task.pk: task.run_at for task in Task.objects.all()}

    assert STORE.next_free_run_at() == runs["b-soonest"]
    assert STORE.next_free_run_at(["a"]) == runs["a-low-sooner"]
    assert STORE.next_free_run_at(["z"]) is None


# --- what the schedulers store ---------------------------------------------------------------


@pytest.mark.django_db
def test_tasks_get_the_default_queue_and_priority():
    SyncScheduler().add_task("x", task_id="one")
    SyncScheduler().add_tasks([Task(task_id="many", callback="x")])
    assert set(Task.objects.values_list("queue", "priority")) == {("default", 0)}


@pytest.mark.django_db
def test_sync_add_task_stores_and_replaces_queue_and_priority():
    scheduler = SyncScheduler()
    first = scheduler.add_task("x", task_id="t", queue="mail", priority=7)
    assert (first.queue, first.priority) == ("mail", 7)
    kept = scheduler.add_task("x", task_id="t", queue="other", replace_existing=False)
    assert (kept.queue, kept.priority) == ("mail", 7)
    replaced = scheduler.add_task("x", task_id="t", queue="reports", priority=-3)
    assert (replaced.queue, replaced.priority) == ("reports", -3)
    assert Task.objects.values_list("queue", "priority").get() == ("reports", -3)


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
async def test_async_add_task_and_add_tasks_store_and_replace_queue_and_priority():
    scheduler = AsyncScheduler()
    task = await scheduler.add_task("x", task_id="t", queue="mail", priority=100)
    assert (task.queue, task.priority) == ("mail", 100)
    await scheduler.add_tasks([Task(task_id=f"b{i}", callback="x", queue="bulk") for i in (1, 2)])
    await scheduler.add_tasks([Task(task_id="b1", callback="x", queue="moved", priority=-100)])
    stored = {t.pk: (t.queue, t.priority) async for t in Task.objects.all()}
    assert stored == {"t": ("mail", 100), "b1": ("moved", -100), "b2": ("bulk", 0)}


@pytest.mark.django_db
def test_the_database_rejects_a_priority_out_of_range():
    Task.objects.create(task_id="ok", callback="x", run_at=timezone.now(), priority=-100)
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.create(task_id="bad", callback="x", run_at=timezone.now(), priority=101)


# --- declared schedules ----------------------------------------------------------------------


@pytest.mark.django_db
def test_declared_schedules_carry_queue_and_priority():
    job = {"callback": "record", "interval": 60, "queue": "nightly", "priority": 9}
    with override_settings(TASKSHED={"SCHEDULES": {"job": job}}):
        assert check_schedules() == []
        sync_schedules()
        assert Task.objects.values_list("queue", "priority").get() == ("nightly", 9)
    with override_settings(TASKSHED={"SCHEDULES": {"job": {**job, "priority": -9}}}):
        assert sync_schedules().updated == 1
    assert Task.objects.values_list("queue", "priority").get() == ("nightly", -9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"priority": 101}, "priority must be an int from -100 to 100, got 101"),
        ({"queue": ""}, "queue must be 1 to 100 characters long"),
    ],
)
def test_the_check_names_a_bad_queue_or_priority(change, message):
    job = {"callback": "record", "interval": 60, **change}
    with override_settings(TASKSHED={"SCHEDULES": {"job": job}}):
        errors = check_schedules()
    assert [e.id for e in errors] == ["django_taskshed.E006"]
    assert "TASKSHED['SCHEDULES']['job']" in errors[0].msg
    assert message in errors[0].msg


# --- the worker's options --------------------------------------------------------------------


def test_queue_names_take_repeated_and_comma_separated_names():
    assert queue_names(["a", "b,c", " c , d"]) == ("a", "b", "c", "d")
    assert queue_names("solo") == ("solo",)
    assert WorkerOptions.from_kwargs({"queues": ["a,b"]}).queues == ("a", "b")
    assert WorkerOptions.from_kwargs({}).queues is None
    assert describe_queues(None) == "every queue"
    assert describe_queues(("a", "b")) == "queues [a, b]"


@pytest.mark.parametrize("bad", [[""], ["a,,b"], ["q" * 101], [], [3]])
def test_queue_names_reject_empty_or_long_names(bad):
    with pytest.raises(ValueError, match="queue"):
        queue_names(bad)


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_an_in_process_worker_runs_only_its_queues():
    ran = []

    async def note(key):
        ran.append(key)

    await AsyncScheduler().add_tasks(
        [Task(task_id=q, callback="note", kwargs={"key": q}, queue=q) for q in ("a", "b", "c")]
    )
    worker = EventDrivenWorker({"note": note}, queues=["b,c"], poll_interval=0.2)
    await worker.start()
    try:
        await eventually(lambda: sorted(ran) == ["b", "c"], what="the b and c tasks")
    finally:
        await worker.shutdown()
    assert sorted(ran) == ["b", "c"]
    left = await sync_to_async(list)(Task.objects.values_list("pk", "lease_owner"))
    assert left == [("a", None)]


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_a_worker_sleeps_while_only_other_queues_have_due_tasks(monkeypatch):
    claims = []
    claim = DjangoDataStore.claim_due_tasks

    def counted(*args, **kwargs):
        claims.append(1)
        return claim(*args, **kwargs)

    monkeypatch.setattr(DjangoDataStore, "claim_due_tasks", counted)
    await AsyncScheduler().add_task("note", task_id="elsewhere", queue="other")
    worker = EventDrivenWorker({"note": print}, queues=["mine"], poll_interval=10)
    await worker.start()
    try:
        await asyncio.sleep(0.5)
    finally:
        await worker.shutdown()
    assert len(claims) <= 2, f"{len(claims)} claims in 0.5 s: the worker spun"
