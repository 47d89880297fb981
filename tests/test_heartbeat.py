"""The heartbeat thread keeps one connection from beat to beat, and replaces it once broken."""

import threading
from typing import Any

import pytest
from django.db import connections

from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.heartbeat import Heartbeat
from tests.conftest import package_apps
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"


@pytest.fixture
def beats(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The raw connection each beat of the heartbeat thread used (strong references, so that
    a new connection is never mistaken for an old one at the same address)."""
    seen: list[Any] = []
    beat = Heartbeat.beat

    def spy(self: Heartbeat) -> None:
        beat(self)
        if threading.current_thread().name == "taskshed-heartbeat":
            seen.append(connections[self.using].connection)

    monkeypatch.setattr(Heartbeat, "beat", spy)
    return seen


async def test_the_heartbeat_keeps_its_connection_from_beat_to_beat(beats, settings):
    assert settings.DATABASES[USING].get("CONN_MAX_AGE", 0) == 0  # Django's default: 0
    worker = EventDrivenWorker({}, lease=0.3, poll_interval=0.1)  # a beat every 0.1 s
    await worker.start()
    try:
        await eventually(lambda: len(beats) >= 6, what="six heartbeats")
    finally:
        await worker.shutdown()

    assert all(connection is beats[0] for connection in beats), (
        f"{len({id(c) for c in beats})} connections for {len(beats)} beats"
    )


async def test_a_broken_heartbeat_connection_is_replaced_without_a_failed_beat(beats, caplog):
    worker = EventDrivenWorker({}, lease=0.3, poll_interval=0.1)
    await worker.start()
    try:
        await eventually(lambda: len(beats) >= 2, what="two heartbeats")
        broken = beats[-1]
        broken.close()  # as when the server ends the backend
        await eventually(lambda: len(beats) >= 5, what="three more heartbeats")
    finally:
        await worker.shutdown()

    assert beats[-1] is not broken
    assert "heartbeat of worker" not in caplog.text


def test_a_beat_leaves_alone_the_row_of_a_worker_that_took_the_id_over(caplog):
    """This process was stopped (SIGSTOP) past its lease and another took its id over: the
    old heartbeat neither overwrites nor re-registers, and says so."""
    from datetime import timedelta

    from django.utils import timezone

    from django_taskshed.datastores import DjangoDataStore
    from django_taskshed.models import WorkerRecord

    now = timezone.now()
    fields = {"hostname": "host-a", "heartbeat_at": now, "expires_at": now + timedelta(hours=1)}
    mine = WorkerRecord(worker_id="w", pid=111, started_at=now - timedelta(minutes=5), **fields)
    WorkerRecord.objects.create(worker_id="w", pid=222, started_at=now, running=7, **fields)
    Heartbeat(mine, DjangoDataStore(USING), 60.0, list, lambda: 1).beat()

    (stored,) = WorkerRecord.objects.all()
    assert (stored.pid, stored.running, stored.heartbeat_at) == (222, 7, now)
    assert "the id was taken over by host host-a, pid 222" in caplog.text
