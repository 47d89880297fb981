"""Scheduler writes on SQLite with Django's default options, beside a busy in-process worker.

A SQLite transaction that reads and then writes cannot wait for another writer: its upgrade
fails at once with "database is locked". The datastore's write steps take the write lock
first, so they wait (as any write does) instead of failing.
"""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.utils import timezone

from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from tests.conftest import package_apps

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(120),
]

BUSY_TASKS = 3000
ROUNDS = 60


@pytest.fixture
def default_sqlite_options():
    """The test database's connections, in every thread, with Django's default SQLite options
    (the suite's settings ask for IMMEDIATE transactions and a long timeout)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's locking only")
    options = connection.settings_dict["OPTIONS"]  # shared by every thread's connection
    saved = dict(options)
    options.clear()
    connections.close_all()
    yield
    options.update(saved)
    connections.close_all()


async def test_pause_and_resume_beside_a_busy_worker_never_fail(default_sqlite_options):
    ran = 0

    async def noop() -> None:
        nonlocal ran
        ran += 1

    now = timezone.now()
    due = [Task(task_id=f"due-{i}", callback="noop", run_at=now) for i in range(BUSY_TASKS)]
    later = now + timedelta(days=1)
    held = [
        Task(task_id=f"held-{i}", callback="noop", run_at=later, group_id="g") for i in range(10)
    ]
    await sync_to_async(SyncScheduler().add_tasks)([*due, *held])
    worker = EventDrivenWorker({"noop": noop}, poll_interval=0.1, batch_size=20)
    scheduler = AsyncScheduler(worker=worker)
    await worker.start()
    try:
        await asyncio.sleep(0.05)  # the worker is claiming and writing results
        for _ in range(ROUNDS):
            assert await scheduler.pause_tasks(group_id="g") == 10
            assert await scheduler.resume_tasks(group_id="g") == 10
        overlapped = ran < BUSY_TASKS  # the scheduler's calls ran while the worker wrote
    finally:
        await worker.shutdown()
    assert overlapped, "the worker finished before the scheduler's calls: nothing was proven"
    assert 0 < ran <= BUSY_TASKS
