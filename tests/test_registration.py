"""One live worker per worker id: registration refuses a live holder and takes over a gone one."""

import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from django_taskshed.exceptions import WorkerIdInUseError
from django_taskshed.models import WorkerRecord
from django_taskshed.workers import EventDrivenWorker, registration
from tests.conftest import package_apps

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"


def record(worker_id: str, **fields) -> WorkerRecord:
    now = timezone.now()
    values = {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": now,
        "heartbeat_at": now,
        "expires_at": now + timedelta(seconds=60),
        **fields,
    }
    return WorkerRecord(worker_id=worker_id, **values)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_a_second_worker_with_a_live_workers_id_is_refused_naming_it():
    first = EventDrivenWorker({"a": print}, worker_id="twin", poll_interval=0.1)
    second = EventDrivenWorker({"b": print}, worker_id="twin", poll_interval=0.1)
    await first.start()
    try:
        holder = await WorkerRecord.objects.aget(pk="twin")
        with pytest.raises(WorkerIdInUseError) as refused:
            await second.start()
        message = str(refused.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}" in message
        assert f"last heartbeat {holder.heartbeat_at.isoformat(timespec='seconds')}" in message
        assert (await WorkerRecord.objects.aget(pk="twin")).callbacks == ["a"]  # untouched
        await second.shutdown()  # nothing to stop: does nothing
    finally:
        await first.shutdown()
    assert not await WorkerRecord.objects.filter(pk="twin").aexists()


@pytest.mark.parametrize(
    "holder",
    [
        {"hostname": "elsewhere", "expires_at": timezone.now() - timedelta(seconds=1)},
        {"pid": 0},  # replaced below by the pid of a process of this host that has exited
    ],
    ids=["expired-row-of-another-host", "live-row-of-a-dead-process-here"],
)
def test_the_row_of_a_gone_worker_is_taken_over(holder, caplog):
    if holder.get("pid") == 0:
        holder = {"pid": dead_pid()}
    record("gone", **holder).save()
    mine = record("gone", pid=os.getpid() + 1_000_000)  # another process of this host

    registration.register(mine, USING)

    row = WorkerRecord.objects.get(pk="gone")
    assert (row.hostname, row.pid) == (socket.gethostname(), mine.pid)
    assert "took over the row of a worker that is gone" in caplog.text


def test_a_live_row_of_another_host_is_kept_until_it_expires():
    record("far", hostname="elsewhere", pid=1).save()
    with pytest.raises(WorkerIdInUseError, match="host elsewhere, pid 1, last heartbeat"):
        registration.register(record("far", pid=2), USING)
    assert WorkerRecord.objects.get(pk="far").hostname == "elsewhere"


def test_release_leaves_the_row_of_a_worker_that_took_the_id_over():
    mine = record("handed-on")
    registration.register(mine, USING)
    WorkerRecord.objects.filter(pk="handed-on").update(pid=mine.pid + 1)  # taken over

    registration.release(mine, USING)

    assert WorkerRecord.objects.filter(pk="handed-on").exists()


@pytest.mark.parametrize("stale", [False, True], ids=["no-row", "stale-row"])
def test_of_workers_registering_one_id_at_once_exactly_one_wins(stale):
    """Race-free: each registers on its own connection, released together by a barrier."""
    if stale:
        record("race", hostname="elsewhere", expires_at=timezone.now() - timedelta(1)).save()
    contenders = 4
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []

    def contend(n: int) -> None:
        try:
            barrier.wait()
            registration.register(record("race", pid=10_000_000 + n, hostname="host"), USING)
            outcomes.append("won")
        except WorkerIdInUseError:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused"] * (contenders - 1) + ["won"]
    assert WorkerRecord.objects.get(pk="race").hostname == "host"
