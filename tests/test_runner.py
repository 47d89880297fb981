"""The runner: a coroutine whose ORM connection (on asgiref's sync thread) broke under it fails
that run only; the next run finds a working connection."""

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connections

from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.runner import from_database
from tests.conftest import package_apps
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"


def select_one() -> int:
    with connections[USING].cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


def break_connection() -> None:
    connections[USING].connection.close()  # as when the server ends the backend


async def test_a_broken_connection_of_asgirefs_thread_costs_one_run(settings):
    settings.TASKSHED = {"RETRY_BACKOFF": 0.01, "MAX_RETRIES": 3}
    outcomes: list[str] = []

    async def query() -> None:
        if not outcomes:  # the first run finds its connection broken
            await sync_to_async(break_connection)()
        try:
            await sync_to_async(select_one)()
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("ok")

    worker = EventDrivenWorker({"query": query}, poll_interval=0.1)
    await worker.start()
    try:
        await AsyncScheduler().add_task("query", task_id="q")
        await eventually(lambda: "ok" in outcomes, what="a run that works")
    finally:
        await worker.shutdown()

    assert len(outcomes) == 2 and outcomes[1] == "ok", outcomes  # one failed run, no more
    assert not await Task.objects.filter(pk="q").aexists()


def test_from_database_follows_the_chain_of_causes():
    try:
        try:
            raise OperationalError("gone")
        except OperationalError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as exc:
        assert from_database(exc)
    assert not from_database(RuntimeError("not from the database"))
