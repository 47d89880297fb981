"""EventDrivenWorker in this process, against the real database: runs, failures, claims, leases.

The worker's database steps run on other threads, so every test commits
(``django_db(transaction=True)``). Callbacks are closures that note what ran; the
subprocess tests in test_runtaskworker.py use the ledger instead.
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, Outcome, hotpath
from django_taskshed.datastores.leases import CLAIM_FIELDS
from django_taskshed.models import Task, TaskExecutionTime, TaskRun, WorkerRecord
from django_taskshed.registry import get_callbacks, worker_callbacks
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers import worker as worker_module
from django_taskshed.workers.history import run_row
from tests.conftest import package_apps
from tests.test_cron import dst_table
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

FAST = {"poll_interval": 0.1}  # tests wait on conditions, so the safety poll may be short
USING = "default"
STORE = DjangoDataStore(USING)
MINUTE = timedelta(minutes=1)


@asynccontextmanager
async def running(worker: EventDrivenWorker) -> AsyncIterator[EventDrivenWorker]:
    await worker.start()
    try:
        yield worker
    finally:
        await worker.shutdown()


async def stored(task_id: str) -> Task | None:
    return await Task.objects.filter(pk=task_id).afirst()


def seconds_from_now(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


async def tasks_left(count: int) -> bool:
    return await Task.objects.acount() == count


def assert_lease_free(task: Task) -> None:
    assert (task.lease_owner, task.lease_expires_at, task.claim_token) == (None, None, None)


# --- running -----------------------------------------------------------------------------------


async def test_successful_one_off_tasks_are_deleted():
    ran = []

    async def note(n):
        ran.append(n)

    def note_sync(n):
        ran.append(f"sync {n}")

    worker = EventDrivenWorker({"note": note, "note_sync": note_sync}, **FAST)
    scheduler = AsyncScheduler(worker=worker)
    async with running(worker):
        await scheduler.add_tasks([Task(callback="note", kwargs={"n": n}) for n in range(5)])
        await scheduler.add_task("note_sync", kwargs={"n": 5})
        await eventually(lambda: tasks_left(0), what="every task to be deleted")

    assert sorted(ran, key=str) == [0, 1, 2, 3, 4, "sync 5"]


async def test_a_failed_claim_is_logged_and_the_worker_goes_on(monkeypatch, fail_once, caplog):
    monkeypatch.setattr(worker_module, "ERROR_BACKOFF", 0.05)
    calls = fail_once(DjangoDataStore, "claim_due_tasks")
    ran = []

    async def note():
        ran.append(1)

    worker = EventDrivenWorker({"note": note}, **FAST)
    await AsyncScheduler().add_task("note", task_id="after-the-failure")
    async with running(worker):
        await eventually(lambda: tasks_left(0), what="the task to run after the failure")

    assert ran == [1] and len(calls) >= 2
    assert "database step failed" in caplog.text
    assert worker.claimed_count == 1


async def test_at_most_concurrency_callbacks_run_at_once():
    active, peak = 0, 0

    async def slow():
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.2)
        active -= 1

    worker = EventDrivenWorker({"slow": slow}, concurrency=3, **FAST)
    async with running(worker):
        await AsyncScheduler(worker=worker).add_tasks([Task(callback="slow") for _ in range(9)])
        await eventually(lambda: tasks_left(0), what="all nine tasks")

    assert peak == 3


async def test_recurring_task_moves_to_its_next_occurrence():
    ran = []
    worker = EventDrivenWorker({"tick": lambda: ran.append(1)}, **FAST)
    scheduler = AsyncScheduler(worker=worker)
    added = await scheduler.add_task(
        "tick", seconds_from_now(-0.1), run_type="recurring", interval=timedelta(minutes=1)
    )
    async with running(worker):
        await eventually(lambda: ran, what="the first run")
        task = await eventually(lambda: stored_if(added.task_id, run_at__gt=added.run_at))

    assert ran == [1]
    assert task.run_at == added.run_at + timedelta(minutes=1)
    assert task.attempts == 0
    assert task.last_run_at is not None
    assert task.failed_at is None
    assert_lease_free(task)


async def stored_if(task_id: str, **conditions: Any) -> Task | None:
    return await Task.objects.filter(pk=task_id, **conditions).afirst()


@pytest.mark.parametrize(("coalesce", "runs"), [(True, 1), (False, 6)])
async def test_catch_up_after_missing_five_intervals(coalesce, runs):
    """Due 5.5 intervals ago: occurrences at -5.5, -4.5 ... -0.5 intervals are all past."""
    interval = timedelta(minutes=1)
    ran = []
    worker = EventDrivenWorker({"tick": lambda: ran.append(timezone.now())}, **FAST)
    first = timezone.now() - 5.5 * interval
    added = await AsyncScheduler().add_task(
        "tick", first, run_type="recurring", interval=interval, coalesce=coalesce
    )
    future = first + 6 * interval  # the first occurrence after now, 30 s ahead
    async with running(worker):
        task = await eventually(lambda: stored_if(added.task_id, run_at=future, lease_owner=None))

    assert len(ran) == runs
    assert task.run_at == future
    assert task.attempts == 0


# --- failures ----------------------------------------------------------------------------------


@override_settings(TASKSHED={"MAX_RETRIES": 2, "RETRY_BACKOFF": 0.2})
async def test_raising_callback_is_retried_with_backoff_then_marked_failed():
    attempts: list[datetime] = []

    async def boom():
        attempts.append(timezone.now())
        raise RuntimeError(f"boom {len(attempts)}")

    worker = EventDrivenWorker({"boom": boom}, **FAST)
    await AsyncScheduler().add_task("boom", task_id="boom")
    async with running(worker):
        task = await eventually(
            lambda: stored_if("boom", failed_at__isnull=False), what="the task to fail"
        )

    assert len(attempts) == 3  # the first run and MAX_RETRIES retries
    gaps = [(b - a).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert 0.2 <= gaps[0] < 1.2  # RETRY_BACKOFF, then doubled; the upper bounds only show
    assert 0.4 <= gaps[1] < 1.4  # that the small override was used, not the 5 s default
    assert task.attempts == 3
    assert task.last_error == "RuntimeError: boom 3"
    assert "Traceback (most recent call last)" in task.last_traceback
    assert "in boom" in task.last_traceback
    assert task.last_traceback.rstrip().endswith("RuntimeError: boom 3")
    assert attempts[-2] < task.last_run_at <= attempts[-1]
    assert_lease_free(task)
    assert await sync_to_async(STORE.claim_due_tasks)("check", 10, 5) == []


@override_settings(TASKSHED={"MAX_RETRIES": 2, "RETRY_BACKOFF": 0.05})
async def test_task_that_fails_twice_then_succeeds_is_deleted():
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) <= 2:
            raise RuntimeError("not yet")

    worker = EventDrivenWorker({"flaky": flaky}, **FAST)
    await AsyncScheduler().add_task("flaky", task_id="flaky")
    async with running(worker):
        await eventually(lambda: tasks_left(0), what="the task to succeed")

    assert len(attempts) == 3


@override_settings(TASKSHED={"MAX_RETRIES": 5, "RETRY_BACKOFF": 0.05})
async def test_per_task_max_retries_overrides_the_setting():
    attempts = []

    async def boom():
        attempts.append(1)
        raise RuntimeError("boom")

    worker = EventDrivenWorker({"boom": boom}, **FAST)
    await AsyncScheduler().add_tasks([Task(task_id="once", callback="boom", max_retries=1)])
    async with running(worker):
        task = await eventually(lambda: stored_if("once", failed_at__isnull=False))

    assert len(attempts) == 2
    assert task.attempts == 2


@override_settings(TASKSHED={"MAX_RETRIES": 3, "RETRY_BACKOFF": 0.05})
async def test_unknown_callback_and_misfit_kwargs_fail_at_once_beside_healthy_tasks():
    ran = []

    async def add(a, b):
        ran.append(a + b)

    worker = EventDrivenWorker({"add": add}, **FAST)
    early = seconds_from_now(-1)  # claimed before the healthy tasks
    await AsyncScheduler().add_tasks(
        [
            Task(task_id="ghost", callback="missing", run_at=early),
            Task(task_id="misfit", callback="add", kwargs={"a": 1, "b": 2, "c": 3}, run_at=early),
            Task(task_id="short", callback="add", kwargs={"a": 1}, run_at=early),
            *(Task(callback="add", kwargs={"a": n, "b": 1}) for n in range(5)),
        ]
    )
    async with running(worker):
        await eventually(lambda: tasks_left(3), what="the healthy tasks to run")
        bad = await eventually(lambda: failed_tasks(3), what="three failed tasks")

    assert sorted(ran) == [1, 2, 3, 4, 5]
    assert {task.task_id for task in bad} == {"ghost", "misfit", "short"}
    for task in bad:
        assert task.attempts == 1, task.task_id  # no retries despite MAX_RETRIES = 3
        assert task.last_error.startswith("BadTaskError: task "), task.last_error
        assert_lease_free(task)
    errors = {task.task_id: task.last_error for task in bad}
    assert "no callback named 'missing' is registered" in errors["ghost"]
    assert "kwargs do not fit add(a, b)" in errors["misfit"]
    assert "unexpected keyword argument 'c'" in errors["misfit"]
    assert "kwargs do not fit add(a, b)" in errors["short"]
    assert "missing a required argument: 'b'" in errors["short"]


async def failed_tasks(count: int) -> list[Task] | None:
    found = [task async for task in Task.objects.filter(failed_at__isnull=False)]
    return found if len(found) == count else None


@pytest.mark.parametrize("source", ["task field", "TIMEOUT setting"])
@pytest.mark.parametrize("kind", ["async hang", "sync sleeper"])
async def test_timeout_counts_as_a_failure(kind, source):
    events = []

    async def hang():
        events.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    def sleeper():
        events.append("started")
        time.sleep(1.0)  # cannot be interrupted: reported once it returns
        events.append("returned")

    callback = hang if kind == "async hang" else sleeper
    timeout = timedelta(seconds=0.3) if source == "task field" else None
    settings = {"MAX_RETRIES": 3} | ({"TIMEOUT": 0.3} if timeout is None else {})
    with override_settings(TASKSHED=settings):
        worker = EventDrivenWorker({"slow": callback}, **FAST)
        task = Task(task_id="slow", callback="slow", max_retries=0, timeout=timeout)
        await AsyncScheduler().add_tasks([task])
        started = time.monotonic()
        async with running(worker):
            task = await eventually(lambda: stored_if("slow", failed_at__isnull=False))
        elapsed = time.monotonic() - started

    assert task.last_error == "TaskTimeoutError: task 'slow' timed out after 0.3 s"
    assert task.attempts == 1
    assert_lease_free(task)
    if kind == "async hang":
        assert events == ["started", "cancelled"]
        assert elapsed < 3
    else:
        assert events == ["started", "returned"]


@override_settings(TASKSHED={"MAX_RETRIES": 5, "RETRY_BACKOFF": 0.05})
async def test_recurring_task_failure_still_schedules_its_next_occurrence():
    async def boom():
        raise ValueError("recurring boom")

    worker = EventDrivenWorker({"boom": boom}, **FAST)
    added = await AsyncScheduler().add_task(
        "boom", seconds_from_now(-0.1), run_type="recurring", interval=timedelta(minutes=1)
    )
    async with running(worker):
        task = await eventually(lambda: stored_if(added.task_id, attempts=1, lease_owner=None))

    assert task.run_at == added.run_at + timedelta(minutes=1)  # not run_at + backoff
    assert task.failed_at is None
    assert task.last_error == "ValueError: recurring boom"
    assert "ValueError: recurring boom" in task.last_traceback


# --- waking ------------------------------------------------------------------------------------


async def test_update_schedule_wakes_a_sleeping_worker(make_scheduler):
    ran_at = []
    worker = EventDrivenWorker({"note": lambda: ran_at.append(time.monotonic())}, poll_interval=30)
    scheduler = make_scheduler(worker=worker)
    async with running(worker):
        # Let the worker make its first (empty) claim and go to sleep for the 30 s poll.
        await asyncio.sleep(0.3)
        added = time.monotonic()
        await scheduler.add_task("note", seconds_from_now(0.2))
        await eventually(lambda: ran_at, timeout=5, what="the task to run")

    # Without the wake-up the worker would sleep until its 30 s poll.
    assert ran_at[0] - added < 0.2 + 0.5


# --- edits, lost leases and the heartbeat ------------------------------------------------------


class Gate:
    """A callback that runs until the test opens the gate."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.opened = asyncio.Event()
        self.runs = 0

    async def __call__(self, **kwargs: Any) -> None:
        self.runs += 1
        self.started.set()
        await self.opened.wait()


async def edit_pause(scheduler: AsyncScheduler) -> None:
    await scheduler.pause_tasks(task_ids=["edited"])


async def edit_replace(scheduler: AsyncScheduler) -> None:
    await scheduler.add_task("gate", seconds_from_now(3600), {"n": 2}, task_id="edited")


async def edit_move(scheduler: AsyncScheduler) -> None:
    await scheduler.update_execution_times([TaskExecutionTime("edited", seconds_from_now(3600))])


@pytest.mark.parametrize(
    ("run_type", "edit"),
    [("once", edit_pause), ("once", edit_replace), ("recurring", edit_move)],
    ids=["pause a one-off", "replace a one-off", "move a recurring"],
)
async def test_edit_made_while_a_task_runs_is_kept(run_type, edit):
    gate = Gate()
    worker = EventDrivenWorker({"gate": gate}, **FAST)
    scheduler = AsyncScheduler(worker=worker)
    interval = timedelta(minutes=1) if run_type == "recurring" else None
    await scheduler.add_task("gate", None, {"n": 1}, run_type, interval, task_id="edited")
    async with running(worker):
        await asyncio.wait_for(gate.started.wait(), 5)
        await edit(scheduler)
        before = await stored("edited")
        gate.opened.set()
        task = await eventually(lambda: stored_if("edited", lease_owner=None), what="settle")

    assert gate.runs == 1
    assert task is not None, "the worker's settle deleted an edited task"
    assert task.last_run_at is not None
    for field in ("kwargs", "run_at", "paused", "paused_at", "attempts", "failed_at"):
        assert getattr(task, field) == getattr(before, field), field
    if edit is edit_pause:
        assert task.paused
    if edit is edit_replace:
        assert task.kwargs == {"n": 2}
    assert task.run_at > seconds_from_now(3000) or task.paused


@pytest.mark.parametrize("outcome", ["success", "failure"])
@pytest.mark.parametrize("thief", ["other worker", "same worker id"])
async def test_lost_lease_changes_nothing(outcome, thief):
    gate = Gate()

    async def gated():
        await gate()
        if outcome == "failure":
            raise RuntimeError("should not be recorded")

    worker = EventDrivenWorker({"gated": gated}, **FAST)
    await AsyncScheduler().add_task("gated", task_id="stolen")
    owner = "rival-worker" if thief == "other worker" else worker.worker_id
    stolen = {"lease_owner": owner, "claim_token": "f" * 32}
    async with running(worker):
        await asyncio.wait_for(gate.started.wait(), 5)
        claimed = await stored("stolen")
        assert claimed.lease_owner == worker.worker_id
        # Another claim is written into the row, as after an expiry and a re-claim.
        await Task.objects.filter(pk="stolen").aupdate(
            lease_expires_at=seconds_from_now(60), **stolen
        )
        before = await stored("stolen")
        gate.opened.set()
        await eventually(lambda: worker.running_count() == 0, what="the callback to end")
    # shutdown() has flushed the outcome and released what this worker holds

    task = await stored("stolen")
    assert task is not None, "a worker that lost its lease deleted the task"
    assert gate.runs == 1
    for field in (
        "lease_owner", "claim_token", "lease_expires_at", "attempts", "last_error",
        "last_traceback", "last_run_at", "failed_at", "run_at", "updated_at",
    ):  # fmt: skip
        assert getattr(task, field) == getattr(before, field), field


@pytest.mark.parametrize("blocking", [False, True], ids=["awaiting", "blocking the loop"])
async def test_heartbeat_renews_the_lease_of_a_long_task(blocking):
    """Lease 1 s, task 3 s: the lease moves forward and a rival never gets the task."""
    started, done = threading.Event(), threading.Event()
    runs = []

    async def long_task():
        runs.append(1)
        started.set()
        if blocking:
            time.sleep(3)  # noqa: ASYNC251  (on purpose: the heartbeat must not need the loop)
        else:
            await asyncio.sleep(3)
        done.set()

    worker = EventDrivenWorker({"long": long_task}, lease=1, **FAST)
    await AsyncScheduler().add_task("long", task_id="long")
    rival_claims: list[str] = []
    expiries: list[datetime] = []

    def rival() -> None:
        """Another worker, in a thread so that a blocked event loop does not stop it."""
        try:
            if not started.wait(10):
                return
            while not done.wait(0.1):
                claims = STORE.claim_due_tasks("rival", 10, 1.0)
                rival_claims.extend(claim.task_id for claim in claims)
                row = Task.objects.filter(pk="long").values_list("lease_expires_at", flat=True)
                expiries.extend(expiry for expiry in row if expiry is not None)
        finally:
            connections.close_all()

    thread = threading.Thread(target=rival)
    thread.start()
    try:
        async with running(worker):
            await eventually(done.is_set, timeout=10, what="the task to finish")
            await eventually(lambda: tasks_left(0), what="the task to be deleted")
    finally:
        done.set()
        await asyncio.to_thread(thread.join, 5)

    assert rival_claims == []
    assert runs == [1]
    assert len(expiries) >= 10
    assert expiries == sorted(expiries)
    # Renewed about every lease/3 s over 3 s: the expiry moved well past the first lease.
    assert (expiries[-1] - expiries[0]).total_seconds() >= 1.5


# --- claims ------------------------------------------------------------------------------------


@pytest.mark.slow  # many seconds of racing claims: once per database
def test_claim_never_hands_a_task_to_two_claimers():
    SyncScheduler().add_tasks([Task(callback="x", task_id=f"t{n:04}") for n in range(600)])
    claimed: dict[str, list[str]] = {}

    def claimer(name: str, barrier: threading.Barrier | None) -> None:
        mine = claimed.setdefault(name, [])
        try:
            if barrier is not None:
                barrier.wait()
            while batch := STORE.claim_due_tasks(name, 7, 60):
                mine.extend(claim.task_id for claim in batch)
        finally:
            if barrier is not None:
                connections.close_all()

    names = [f"claimer-{n}" for n in range(8)]
    if connection.features.has_select_for_update_skip_locked:
        barrier = threading.Barrier(len(names))
        threads = [threading.Thread(target=claimer, args=(name, barrier)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(1 for ids in claimed.values() if ids) > 1, "no contention happened"
    else:  # SQLite serialises writers: claimers take turns
        for _ in range(100):
            for name in names:
                claimed.setdefault(name, []).extend(
                    claim.task_id for claim in STORE.claim_due_tasks(name, 7, 60)
                )

    everything = [task_id for ids in claimed.values() for task_id in ids]
    assert len(everything) == len(set(everything)) == 600
    owners = dict(Task.objects.values_list("task_id", "lease_owner"))
    for name, ids in claimed.items():
        assert {owners[task_id] for task_id in ids} <= {name}


def test_claim_takes_only_due_unpaused_unfailed_and_unleased_tasks():
    now = timezone.now()
    SyncScheduler().add_tasks(
        [
            Task(task_id="due", callback="x", run_at=now - timedelta(seconds=2)),
            Task(task_id="later", callback="x", run_at=now + timedelta(minutes=1)),
            Task(task_id="paused", callback="x", run_at=now, paused=True),
            Task(task_id="failed", callback="x", run_at=now),
            Task(task_id="leased", callback="x", run_at=now),
            Task(task_id="expired", callback="x", run_at=now - timedelta(seconds=1)),
        ]
    )
    Task.objects.filter(pk="failed").update(failed_at=now)
    Task.objects.filter(pk="leased").update(lease_owner="w0", lease_expires_at=now + MINUTE)
    Task.objects.filter(pk="expired").update(lease_owner="w0", lease_expires_at=now - MINUTE)

    claims = STORE.claim_due_tasks("w1", 10, 30)

    assert [claim.task_id for claim in claims] == ["due", "expired"]  # earliest first
    assert len({claim.claim_token for claim in claims}) == 1
    rows = Task.objects.filter(pk__in=["due", "expired"])
    for task in rows:
        assert task.lease_owner == "w1"
        assert task.claim_token == claims[0].claim_token
        assert 29 < (task.lease_expires_at - timezone.now()).total_seconds() <= 30
    assert STORE.claim_due_tasks("w2", 10, 30) == []


def test_claim_returns_the_rows_as_stored():
    run_at = timezone.now() - timedelta(seconds=5)
    SyncScheduler().add_tasks(
        [
            Task(
                task_id="full", callback="x", run_at=run_at, run_type="recurring",
                kwargs={"n": [1, "two", {"three": 3.5}], "s": "é"}, interval=MINUTE,
                max_retries=4, timeout=timedelta(seconds=7), coalesce=False,
            )
        ]
    )  # fmt: skip
    task = Task.objects.get(pk="full")

    (claim,) = STORE.claim_due_tasks("w1", 10, 30)

    expected = {field: getattr(task, field) for field in CLAIM_FIELDS}
    assert {field: getattr(claim, field) for field in CLAIM_FIELDS} == expected
    assert claim.claim_token == Task.objects.get(pk="full").claim_token


@pytest.mark.parametrize("history", [False, True], ids=["no history", "with history"])
def test_settle_writes_what_it_still_holds_and_reports_the_rest(history):
    """One batch: finished one-offs, moved recurring tasks and a failure are written; a task
    edited while it ran keeps the edit (lease cleared, last_run_at stamped); a task whose
    lease went to another claim is left exactly as it is. With history rows, each written
    result has its run recorded once, and a lost one none (on PostgreSQL the three kinds of
    write go in one transaction, the edited task by the general path)."""
    now = timezone.now()
    later = now + timedelta(hours=1)
    ids = ["done-1", "done-2", "moved", "failing", "edited", "lost"]
    SyncScheduler().add_tasks(
        [Task(task_id=i, callback="x", run_at=now - timedelta(seconds=1)) for i in ids]
    )
    claims = {claim.task_id: claim for claim in STORE.claim_due_tasks("w1", 10, 30)}
    assert sorted(claims) == sorted(ids)
    Task.objects.get(pk="edited").save()  # an edit: updated_at moves
    Task.objects.filter(pk="lost").update(lease_owner="w2", claim_token="f" * 32)
    lost_before = Task.objects.get(pk="lost")
    outcomes = [
        Outcome(claims["done-1"], delete=True),
        Outcome(claims["done-2"], delete=True),
        Outcome(claims["moved"], changes={"run_at": later, "attempts": 0, "last_run_at": now}),
        Outcome(
            claims["failing"],
            changes={"attempts": 1, "last_run_at": now, "last_error": "E: x", "failed_at": now},
        ),
        Outcome(claims["edited"], delete=True),
        Outcome(claims["lost"], delete=True),
    ]
    if history:
        outcomes = [
            Outcome(
                o.claim, o.delete, o.changes, (run_row(o.claim, o, "succeeded", now, now, "w1"),)
            )
            for o in outcomes
        ]

    report = STORE.settle("w1", outcomes)

    assert (report.settled, report.edited, report.lost) == (4, ["edited"], ["lost"])
    rows = {task.task_id: task for task in Task.objects.all()}
    assert sorted(rows) == ["edited", "failing", "lost", "moved"]
    assert (rows["moved"].run_at, rows["moved"].last_run_at) == (later, now)
    assert (rows["failing"].failed_at, rows["failing"].attempts) == (now, 1)
    assert rows["failing"].last_error == "E: x"
    for task_id in ("moved", "failing", "edited"):
        assert_lease_free(rows[task_id])
    assert rows["edited"].last_run_at is not None
    assert rows["lost"].__dict__ | {"_state": None} == lost_before.__dict__ | {"_state": None}
    recorded = sorted(TaskRun.objects.values_list("task_id", flat=True))
    assert recorded == (sorted(set(ids) - {"lost"}) if history else [])
    assert STORE.settle("w1", outcomes[:1]).lost == ["done-1"]
    assert TaskRun.objects.count() == len(recorded)


def test_unedited_results_are_written_without_reading_their_rows_back():
    """PostgreSQL and SQLite write a batch of unedited results with one fenced statement per
    kind of write (a deletion, an update): the task table is not read first. On SQLite the
    history rows follow in the same transaction."""
    if not hotpath.can_settle(connection):
        pytest.skip("MySQL settles by the ORM path: it reads the held rows first")
    now = timezone.now()
    SyncScheduler().add_tasks(
        [Task(task_id=i, callback="x", run_at=now - timedelta(seconds=1)) for i in ("a", "b")]
    )
    claims = {claim.task_id: claim for claim in STORE.claim_due_tasks("w1", 10, 30)}
    deleted = Outcome(claims["a"], delete=True)
    moved = Outcome(claims["b"], changes={"run_at": now + timedelta(hours=1), "attempts": 0})
    outcomes = [
        Outcome(o.claim, o.delete, o.changes, (run_row(o.claim, o, "succeeded", now, now, "w1"),))
        for o in (deleted, moved)
    ]
    with CaptureQueriesContext(connection) as queries:
        report = STORE.settle("w1", outcomes)
    assert (report.settled, report.edited, report.lost) == (2, [], [])
    table = Task._meta.db_table
    on_tasks = [q["sql"] for q in queries if f'"{table}"' in q["sql"]]
    assert len(on_tasks) == 2, on_tasks
    assert not any(sql.lstrip().upper().startswith("SELECT") for sql in on_tasks), on_tasks
    assert list(Task.objects.values_list("task_id", "lease_owner")) == [("b", None)]
    assert sorted(TaskRun.objects.values_list("task_id", flat=True)) == ["a", "b"]


# --- registration and options ------------------------------------------------------------------


async def test_worker_row_lists_callbacks_while_running_and_goes_at_shutdown():
    worker = EventDrivenWorker({"b": print, "a": print}, **FAST)
    await worker.start()
    try:
        record = await WorkerRecord.objects.aget(pk=worker.worker_id)
        assert record.callbacks == ["a", "b"]
        assert record.pid == os.getpid()
        assert record.heartbeat_at >= record.started_at
    finally:
        await worker.shutdown()

    assert not await WorkerRecord.objects.filter(pk=worker.worker_id).aexists()


async def test_a_short_lease_worker_keeps_the_row_of_a_live_long_lease_worker():
    """Rows of dead workers expire; a live worker's row must not, whatever its lease."""
    steady = EventDrivenWorker({"a": print}, lease=30, **FAST)  # beats every 10 s
    brisk = EventDrivenWorker({"b": print}, lease=0.3, **FAST)  # beats every 0.1 s

    async with running(steady):
        registered = (await WorkerRecord.objects.aget(pk=steady.worker_id)).heartbeat_at
        async with running(brisk):
            await eventually(
                lambda: WorkerRecord.objects.filter(
                    pk=brisk.worker_id, heartbeat_at__gt=registered + timedelta(seconds=1)
                ).aexists(),
                what="a second of brisk heartbeats",
            )
            assert await WorkerRecord.objects.filter(pk=steady.worker_id).aexists(), (
                "the row of a live worker (lease 30 s) was removed by a worker with lease 0.3 s"
            )


async def test_worker_without_a_map_serves_the_registry():
    worker = EventDrivenWorker(**FAST)
    async with running(worker):
        record = await WorkerRecord.objects.aget(pk=worker.worker_id)

    assert record.callbacks == sorted(worker_callbacks())
    assert {"record", "sleep", "fail", "hang", "flaky"} <= set(record.callbacks)
    # and the Django tasks of a TaskShedBackend this process has loaded, by module path
    assert set(record.callbacks) - set(get_callbacks()) == {
        name for name in record.callbacks if name.startswith("tests.testapp.djtasks.")
    }


async def test_add_callback_serves_a_new_name_and_refuses_a_taken_one():
    ran = []
    worker = EventDrivenWorker({"a": print}, **FAST)
    scheduler = AsyncScheduler(worker=worker)
    await scheduler.add_callback("b", lambda: ran.append("b"))

    with pytest.raises(ValueError, match="'a' is already registered"):
        worker.add_callback("a", print)
    with pytest.raises(ValueError, match="'b' is already registered"):
        await scheduler.add_callback("b", print)

    async with running(worker):
        await scheduler.add_task("b")
        await eventually(lambda: ran, what="the added callback to run")
    assert ran == ["b"]


async def test_taskshed_calling_conventions_work(settings):
    """As TaskShed's docs call them: ``scheduler.add_callback`` without ``await``, and
    ``await worker.update_schedule()``."""
    settings.TASKSHED = {"CHANNEL_LAYER": None}  # so that only update_schedule() wakes it
    ran = []
    worker = EventDrivenWorker({}, poll_interval=60)  # only a wake-up finds the task in time
    scheduler = AsyncScheduler(worker=worker)
    scheduler.add_callback("later", lambda: ran.append("later"))
    async with running(worker):
        await AsyncScheduler().add_task("later")  # no worker attached: no direct wake-up
        assert await worker.update_schedule() is None
        await eventually(lambda: ran, what="the task after update_schedule()")
    assert ran == ["later"]


async def test_a_failing_callback_is_logged_at_error_with_its_traceback(caplog):
    async def explode():
        raise ZeroDivisionError("boom")

    worker = EventDrivenWorker({"explode": explode}, **FAST)
    await AsyncScheduler().add_task("explode", task_id="x")
    async with running(worker):
        await eventually(
            lambda: stored_if("x", failed_at__isnull=False), what="the failure to be recorded"
        )
    (record,) = [r for r in caplog.records if r.getMessage().startswith("task x ")]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "task x (explode) failed: boom" in record.getMessage()


class TenantDataStore(DjangoDataStore):
    """Sees only the tasks of groups that start with "tenant-a"."""

    def get_queryset(self):
        return super().get_queryset().filter(group_id__startswith="tenant-a")


async def test_a_datastore_subclass_narrows_what_the_scheduler_and_the_worker_see():
    ran = []

    async def note(key):
        ran.append(key)

    tasks = [
        Task(task_id=f"{tenant}-{i}", callback="note", kwargs={"key": f"{tenant}-{i}"},
             group_id=f"{tenant}:jobs")
        for tenant in ("tenant-a", "tenant-b") for i in range(3)
    ]  # fmt: skip
    await AsyncScheduler().add_tasks(tasks)
    store = TenantDataStore()
    scheduler = AsyncScheduler(store)
    both = ["tenant-a-0", "tenant-b-0"]
    assert [t.task_id for t in await scheduler.fetch_tasks(task_ids=both)] == ["tenant-a-0"]
    assert await scheduler.fetch_tasks(group_id="tenant-b:jobs") == []
    assert await scheduler.pause_tasks(task_ids=both) == 1
    assert await scheduler.resume_tasks(task_ids=both) == 1
    assert await scheduler.remove_tasks(group_id="tenant-b:jobs") == 0

    worker = EventDrivenWorker({"note": note}, datastore=store, **FAST)
    async with running(worker):
        await eventually(lambda: len(ran) == 3, what="tenant-a's tasks to run")
        await asyncio.sleep(0.3)  # three polls: time enough to take a task it should not see
    assert sorted(ran) == ["tenant-a-0", "tenant-a-1", "tenant-a-2"]
    left = [t async for t in Task.objects.order_by("pk")]
    assert [t.task_id for t in left] == ["tenant-b-0", "tenant-b-1", "tenant-b-2"]
    for task in left:
        assert_lease_free(task)
        assert (task.attempts, task.last_run_at, task.paused) == (0, None, False)


def test_unknown_worker_option_raises_type_error():
    with pytest.raises(TypeError, match="unknown worker option.*colour"):
        EventDrivenWorker({}, colour="blue")


# --- cron tasks --------------------------------------------------------------------------------


async def test_cron_task_runs_and_moves_to_its_next_occurrence():
    ran = []
    worker = EventDrivenWorker({"tick": lambda: ran.append(1)}, **FAST)
    added = await AsyncScheduler(worker=worker).add_task(
        "tick", seconds_from_now(-0.1), run_type="cron", cron="0 3 * * *",
        timezone="Europe/Berlin",
    )  # fmt: skip
    async with running(worker):
        await eventually(lambda: ran, what="the run")
        task = await eventually(
            lambda: stored_if(added.task_id, run_at__gt=added.run_at, lease_owner=None)
        )

    assert ran == [1]
    berlin = ZoneInfo("Europe/Berlin")
    today = task.last_run_at.astimezone(berlin).date()
    three_oclock = [
        datetime(day.year, day.month, day.day, 3, tzinfo=berlin).astimezone(dt_timezone.utc)
        for day in (today, today + timedelta(days=1))
    ]
    assert task.run_at == min(run for run in three_oclock if run > task.last_run_at)
    assert task.attempts == 0
    assert task.failed_at is None
    assert_lease_free(task)


def own_run_at(key: str) -> datetime:
    """A callback's view of its task's ``run_at`` (the occurrence it runs for)."""
    return Task.objects.values_list("run_at", flat=True).get(pk=key)


async def paused_and_free(count: int) -> bool:
    return await Task.objects.filter(paused=True, lease_owner=None).acount() == count


def dst_row(zone: str, cron: str, policy: str) -> Any:
    return next(
        row for row in dst_table() if (row.zone, row.cron, row.policy) == (zone, cron, policy)
    )


async def test_cron_task_without_coalesce_runs_through_a_dst_change_as_the_docs_say():
    """Due since a table's first value, without coalescing: the worker runs each occurrence
    in order; the callback pauses its task once it runs past the table's window."""
    rows = {
        "berlin-shift": dst_row("Europe/Berlin", "30 2 * * *", "shift"),
        "new-york-both": dst_row("America/New_York", "30 1 * * *", "both"),
    }
    seen: dict[str, list[datetime]] = {key: [] for key in rows}

    def note(key: str) -> None:
        run_at = own_run_at(key)
        seen[key].append(run_at)
        if run_at >= rows[key].window[1]:
            Task.objects.filter(pk=key).update(paused=True)

    worker = EventDrivenWorker({"note": note}, **FAST)
    scheduler = AsyncScheduler(worker=worker)
    for key, row in rows.items():
        nonexistent, ambiguous = row.policies()[0]
        await scheduler.add_task(
            "note", row.runs[0], {"key": key}, run_type="cron", task_id=key, coalesce=False,
            cron=row.cron, timezone=row.zone, on_nonexistent=nonexistent,
            on_ambiguous=ambiguous,
        )  # fmt: skip
    async with running(worker):
        await eventually(
            lambda: paused_and_free(len(rows)),
            timeout=20,
            what="both tasks to run through their window and pause",
        )

    for key, row in rows.items():
        # The table's runs, then the next day's (no change of clocks then), which paused it.
        assert seen[key] == [*row.runs, row.runs[-1] + timedelta(days=1)], key
        task = await stored(key)
        assert task.run_at == row.runs[-1] + timedelta(days=2)
        assert task.attempts == 0


@pytest.mark.parametrize(("coalesce", "runs"), [(True, 1), (False, 5)])
async def test_cron_catch_up_after_missing_four_occurrences(coalesce, runs):
    """Hourly at the minute half an hour from now: the last five occurrences are past (the
    latest half an hour ago), the next comes in half an hour."""
    now = timezone.now()
    minute = (now.minute + 30) % 60
    latest = now.replace(minute=minute, second=0, microsecond=0)
    if latest > now:
        latest -= timedelta(hours=1)
    first = latest - timedelta(hours=4)
    ran: list[datetime] = []
    worker = EventDrivenWorker({"note": lambda key: ran.append(own_run_at(key))}, **FAST)
    await AsyncScheduler().add_task(
        "note", first, {"key": "hourly"}, run_type="cron", task_id="hourly",
        coalesce=coalesce, cron=f"{minute} * * * *", timezone="UTC",
    )  # fmt: skip
    future = latest + timedelta(hours=1)
    async with running(worker):
        task = await eventually(lambda: stored_if("hourly", run_at=future, lease_owner=None))

    assert ran == [first + timedelta(hours=n) for n in range(runs)]  # each once, in order
    assert task.run_at == future
    assert task.attempts == 0
