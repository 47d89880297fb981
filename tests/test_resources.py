"""What a worker starts and stops together: no connection of asgiref's thread, and a shutdown
that completes whatever fails on the way."""

import logging

import pytest
from asgiref.sync import SyncToAsync
from django.db import connections

from django_taskshed.models import WorkerRecord
from django_taskshed.workers import EventDrivenWorker, registration
from tests.conftest import package_apps

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"


def asgiref_connection() -> object:
    """The connection of asgiref's sync thread (None while it has none)."""
    return SyncToAsync.single_thread_executor.submit(lambda: connections[USING].connection).result()


async def test_start_and_shutdown_open_no_connection_on_asgirefs_thread():
    assert asgiref_connection() is None
    worker = EventDrivenWorker({}, poll_interval=0.1)
    await worker.start()
    try:
        assert await worker.count_due() == 0
        assert asgiref_connection() is None
    finally:
        await worker.shutdown()
    assert asgiref_connection() is None


async def test_shutdown_completes_when_unregistering_fails(fail_once, caplog):
    caplog.set_level(logging.INFO, "django_taskshed")
    calls = fail_once(registration, "release")
    worker = EventDrivenWorker({}, poll_interval=0.1)
    await worker.start()

    await worker.shutdown()  # raises nothing

    assert len(calls) == 1
    assert f"worker {worker.worker_id}: unregistering failed; stopping anyway" in caplog.text
    assert f"worker {worker.worker_id} stopped" in caplog.text
    assert all(thread._closed for thread in worker._threads)
    assert await WorkerRecord.objects.filter(pk=worker.worker_id).aexists()  # left to expire
