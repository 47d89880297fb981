"""``task_started`` and ``task_finished``: sent by a worker around each run, in its process."""

import asyncio
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from django_taskshed.exceptions import TaskTimeoutError
from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler
from django_taskshed.signals import task_finished, task_started
from django_taskshed.workers import EventDrivenWorker
from tests.conftest import package_apps
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

STARTED_KEYS = {"task_id", "callback", "scheduled_for", "started_at", "attempt", "worker_id"}
FINISHED_KEYS = STARTED_KEYS | {"finished_at", "outcome", "exception"}


@pytest.fixture
def received():
    """Every signal sent during the test: (name, sender, kwargs)."""
    seen: list[tuple[str, object, dict]] = []

    def on_started(sender, signal, **kwargs):
        seen.append(("started", sender, kwargs))

    def on_finished(sender, signal, **kwargs):
        seen.append(("finished", sender, kwargs))

    task_started.connect(on_started)
    task_finished.connect(on_finished)
    yield seen
    task_started.disconnect(on_started)
    task_finished.disconnect(on_finished)


async def ok():
    return 42


async def boom():
    raise ZeroDivisionError("boom")


async def slow():
    await asyncio.sleep(5)


async def run_until_gone(worker: EventDrivenWorker, *task_ids: str) -> None:
    await worker.start()
    try:
        await eventually(
            lambda: _none_due(task_ids), timeout=10, what=f"the runs of {', '.join(task_ids)}"
        )
    finally:
        await worker.shutdown()


async def _none_due(task_ids) -> bool:
    now = timezone.now()
    return not await Task.objects.filter(
        pk__in=task_ids, run_at__lte=now, failed_at__isnull=True
    ).aexists()


async def test_each_run_is_announced_before_and_after_with_how_it_ended(received):
    scheduler = AsyncScheduler()
    due = timezone.now()
    await scheduler.add_task("ok", run_at=due, task_id="good")
    await scheduler.add_task("boom", run_at=due, task_id="bad")
    timeout_task = Task(task_id="late", callback="slow", run_at=due, timeout=timedelta(seconds=0.2))
    await scheduler.add_tasks([timeout_task])
    worker = EventDrivenWorker({"ok": ok, "boom": boom, "slow": slow}, poll_interval=0.1)
    await run_until_gone(worker, "good", "bad", "late")

    started = {kw["task_id"]: kw for name, _, kw in received if name == "started"}
    finished = {kw["task_id"]: kw for name, _, kw in received if name == "finished"}
    assert set(started) == set(finished) == {"good", "bad", "late"}
    assert {sender for _, sender, _ in received} == {Task}
    for task_id in ("good", "bad", "late"):
        before, after = started[task_id], finished[task_id]
        assert set(before) == STARTED_KEYS and set(after) == FINISHED_KEYS
        assert before["scheduled_for"] == due
        assert before["attempt"] == 1 and before["worker_id"] == worker.worker_id
        assert {k: after[k] for k in STARTED_KEYS} == before
        assert before["started_at"] <= after["finished_at"]
    assert (finished["good"]["outcome"], finished["good"]["exception"]) == ("succeeded", None)
    assert finished["bad"]["outcome"] == "failed"
    assert isinstance(finished["bad"]["exception"], ZeroDivisionError)
    assert finished["late"]["outcome"] == "timed_out"
    assert isinstance(finished["late"]["exception"], TaskTimeoutError)
    assert finished["good"]["callback"] == "ok"


async def test_attempt_counts_retries(received, settings):
    settings.TASKSHED = {"MAX_RETRIES": 1, "RETRY_BACKOFF": 0}
    await AsyncScheduler().add_task("boom", task_id="twice")
    worker = EventDrivenWorker({"boom": boom}, poll_interval=0.1)
    await worker.start()
    try:
        await eventually(
            lambda: Task.objects.filter(pk="twice", failed_at__isnull=False).aexists(),
            what="the retry to fail too",
        )
    finally:
        await worker.shutdown()
    attempts = [kw["attempt"] for name, _, kw in received if name == "finished"]
    assert attempts == [1, 2]


async def test_a_receiver_that_raises_is_logged_and_the_run_goes_on(caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    task_started.connect(broken)
    task_finished.connect(broken)
    try:
        await AsyncScheduler().add_task("ok", task_id="fine")
        worker = EventDrivenWorker({"ok": ok}, poll_interval=0.1)
        await run_until_gone(worker, "fine")
    finally:
        task_started.disconnect(broken)
        task_finished.disconnect(broken)
    assert not await Task.objects.filter(pk="fine").aexists()  # it ran and succeeded
    errors = [
        r for r in caplog.records if r.name == "django.dispatch" and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 2  # one for task_started, one for task_finished
    assert all(isinstance(r.exc_info[1], RuntimeError) for r in errors)


@pytest.mark.slow
def test_a_real_worker_sends_task_finished_in_its_own_process(worker_procs):
    from asgiref.sync import async_to_sync

    from tests.testapp.models import Execution

    async_to_sync(AsyncScheduler().add_tasks)(
        [
            Task(task_id="p-ok", callback="record", kwargs={"key": "p-ok"}),
            Task(task_id="p-fail", callback="fail", kwargs={"key": "p-fail"}),
        ]
    )
    worker = worker_procs.start(
        "signals-1", "--poll-interval", "0.2", env={"TASKSHED_TEST_SIGNALS": "1"}
    )
    signalled = Execution.objects.filter(key__startswith="signal:")
    worker_procs.wait_until(lambda: signalled.count() >= 2, 20, "two task_finished receipts")
    got = {row.key: row for row in signalled}
    assert (got["signal:p-ok"].callback, got["signal:p-fail"].callback) == ("succeeded", "failed")
    assert {row.worker_pid for row in got.values()} == {worker.pid}  # sent in the worker's process
    assert {row.value["worker_id"] for row in got.values()} == {"signals-1"}
    assert {row.value["attempt"] for row in got.values()} == {1}
