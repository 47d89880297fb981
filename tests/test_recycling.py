"""Recycling: a worker over ``max_memory`` stops claiming, lets its runs finish and stops; a
real ``runtaskworker --max-memory`` then exits 0."""

import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone

from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker, recycling
from tests.conftest import package_apps
from tests.testapp.models import Execution
from tests.waiting import eventually

MB = 1024 * 1024


def test_resident_memory_is_read_from_proc_or_getrusage(monkeypatch):
    now = recycling.resident_bytes()
    assert now is not None and 5 * MB < now < 100_000 * MB
    monkeypatch.setattr(recycling, "STATM", "/nonexistent/statm")
    peak = recycling.resident_bytes()  # getrusage's peak: never below the resident memory
    assert peak is not None and peak >= now * 0.9


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_a_worker_over_its_memory_limit_drains_and_stops(monkeypatch, caplog):
    monkeypatch.setattr(recycling, "CHECK_EVERY", 0.2)
    ran = []

    async def slow():
        await asyncio.sleep(0.5)
        ran.append("slow")

    worker = EventDrivenWorker({"slow": slow}, max_memory=1, poll_interval=0.1)
    await AsyncScheduler().add_task("slow", task_id="under-way")
    await worker.start()
    await eventually(lambda: worker.running_count(), what="the run to start")
    later = timezone.now() + timedelta(seconds=2)
    await AsyncScheduler().add_task("slow", task_id="not-claimed", run_at=later)
    await asyncio.wait_for(worker.wait_stopped(), 10)

    assert ran == ["slow"]
    assert [t.task_id async for t in Task.objects.all()] == ["not-claimed"]
    assert "is over --max-memory 1 MB" in caplog.text


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_a_worker_under_its_memory_limit_goes_on(monkeypatch):
    monkeypatch.setattr(recycling, "CHECK_EVERY", 0.05)
    worker = EventDrivenWorker({}, max_memory=1_000_000, poll_interval=0.1)
    await worker.start()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(worker.wait_stopped(), 0.3)
    await worker.shutdown()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, available_apps=package_apps())
def test_runtaskworker_over_max_memory_finishes_its_run_and_exits_0(worker_procs):
    SyncScheduler().add_task("sleep", kwargs={"key": "under-way", "seconds": 1.5})
    worker = worker_procs.start("recycled", "--max-memory", "1", "--poll-interval", "0.2")
    worker_procs.wait_until(lambda: Execution.objects.exists(), 15, "the run to start")
    SyncScheduler().add_task(
        "record", kwargs={"key": "later"}, run_at=timezone.now() + timedelta(seconds=2)
    )

    assert worker.wait(20) == 0
    assert list(Execution.objects.values_list("key", flat=True)) == ["under-way"]
    assert Execution.objects.get().finished_at is not None
    assert list(Task.objects.values_list("task_id", flat=True)) != []  # "later" waits
    assert "is over --max-memory 1 MB" in worker.stderr()
