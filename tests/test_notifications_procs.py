"""Notifications to real ``runtaskworker`` subprocesses through channels_redis (needs REDIS_URL).

The workers poll only every 60 s here, so a task that starts within ``PUSH_LATENESS`` of its
``run_at`` was started by a notification. Lateness is the ledger's ``started_at`` (taken by the
callback in the worker process) minus the task's ``run_at`` (taken in this process): both are
``django.utils.timezone.now()``, the system's wall clock (CLOCK_REALTIME) on this one machine.

The outage test runs its own ``redis-server`` on a free port, stops and restarts it; it never
touches the shared server.
"""

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from django_taskshed import notifications
from django_taskshed.models import Task
from django_taskshed.schedulers import SyncScheduler
from tests.conftest import SentHints
from tests.redis_support import (
    REDIS_SERVER,
    PrivateRedis,
    redis_group_members,
    redis_layer,
    unique_name,
)
from tests.testapp.models import Execution
from tests.workerprocs import WorkerFleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DUE_IN = 0.2  # s: tasks are scheduled this far ahead
PUSH_LATENESS = 0.25  # s after run_at
NOT_BEFORE = -0.005  # s: a task may start this early (the event loop's timer granularity)
PUSH_ONLY = {"POLL_INTERVAL": 60}
OUTAGE_POLL = 2.0  # s: the safety poll of the worker in the outage test
REJOIN_WITHIN = 15.0  # s: the worker retries the layer at most every 5 s


def due_in(seconds: float = DUE_IN) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def wait_for_execution(fleet: WorkerFleet, key: str, timeout: float) -> Execution:
    return fleet.wait_until(
        lambda: Execution.objects.filter(key=key).first(), timeout, f"the run of {key}"
    )


def lateness(execution: Execution, run_at: datetime) -> float:
    return (execution.started_at - run_at).total_seconds()


def layer_config() -> tuple[str, str]:
    """The URL and key prefix of this test's channels_redis layer."""
    from django.conf import settings

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    return config["hosts"][0], config["prefix"]


def start_listening_worker(
    fleet: WorkerFleet, taskshed: dict[str, Any], worker_id: str = "push"
) -> Any:
    """Start a worker in this test's group and wait until it has joined the group."""
    group = notifications.taskshed_settings.GROUP
    worker = fleet.start(worker_id, "--concurrency", "4", taskshed={**taskshed, "GROUP": group})
    assert "channel layer RedisChannelLayer" in worker.banner()
    url, prefix = layer_config()
    fleet.wait_until(lambda: redis_group_members(url, prefix, group), 10, "the worker to join")
    return worker


def use_redis_layer(url: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """channels_redis at ``url`` (a key prefix and group of this test's own) here and in the
    workers this test starts, whichever layer the rest of the suite runs on."""
    settings.REDIS_URL = url  # tests/workerprocs.py passes it, and the prefix, to workers
    settings.CHANNEL_LAYERS = {"default": redis_layer(url)}
    settings.TASKSHED = {"GROUP": unique_name("ntf-procs")}
    monkeypatch.setenv("TASKSHED_TEST_LAYER", "redis")  # read by the workers' tests/settings.py


@pytest.fixture
def push_group(redis_url: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """channels_redis on the suite's Redis server, with a group of this test's own."""
    use_redis_layer(redis_url, settings, monkeypatch)
    return settings.TASKSHED["GROUP"]


@pytest.fixture
def group_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every group_send this process makes through channels_redis (read, once the hints on
    their way, ``notifications.HINTS``, are delivered)."""
    from channels_redis.core import RedisChannelLayer

    calls: list[tuple[str, dict[str, Any]]] = SentHints()
    original = RedisChannelLayer.group_send

    async def spy(self: Any, group: str, message: dict[str, Any]) -> None:
        calls.append((group, message))
        await original(self, group, message)

    monkeypatch.setattr(RedisChannelLayer, "group_send", spy)
    return calls


def add_with_scheduler(key: str, run_at: datetime, client: Any) -> None:
    SyncScheduler().add_task("record", run_at=run_at, kwargs={"key": key}, task_id=key)


def add_with_task_objects(key: str, run_at: datetime, client: Any) -> None:
    Task.objects.create(task_id=key, callback="record", kwargs={"key": key}, run_at=run_at)


def add_with_admin(key: str, run_at: datetime, client: Any) -> None:
    local = timezone.localtime(run_at)  # the admin form takes the current time zone's time
    response = client.post(
        "/admin/django_taskshed/task/add/",
        {
            "task_id": key,
            "callback": "record",
            "kwargs": f'{{"key": "{key}"}}',
            "run_at_0": local.strftime("%Y-%m-%d"),
            "run_at_1": local.strftime("%H:%M:%S.%f"),
            "run_type": "once",
            "queue": "default",
            "priority": "0",
            "coalesce": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]


ADDERS = {
    "scheduler": add_with_scheduler,
    "admin POST": add_with_admin,
    "Task.objects.create": add_with_task_objects,
}


@pytest.mark.parametrize("adder", ADDERS, ids=ADDERS.keys())
def test_a_task_due_in_200_ms_runs_on_time_through_push(worker_procs, push_group, client, adder):
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(admin)
    client.get("/admin/django_taskshed/task/add/")  # warm up: the POST should take milliseconds
    start_listening_worker(worker_procs, PUSH_ONLY)
    time.sleep(0.2)  # the worker has read the (empty) schedule: its next poll is 60 s away

    run_at = due_in()
    started = time.monotonic()
    ADDERS[adder]("pushed", run_at, client)
    added_in = time.monotonic() - started
    execution = wait_for_execution(worker_procs, "pushed", 5)
    late = lateness(execution, run_at)
    assert NOT_BEFORE <= late <= PUSH_LATENESS, f"{late:.3f} s late (added in {added_in:.3f} s)"
    assert Execution.objects.count() == 1


def test_a_rolled_back_add_task_sends_nothing_and_runs_nothing(
    worker_procs, push_group, group_sends
):
    start_listening_worker(worker_procs, PUSH_ONLY)
    scheduler = SyncScheduler()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            scheduler.add_task("record", kwargs={"key": "rolled-back"}, task_id="rolled-back")
            assert Task.objects.filter(pk="rolled-back").exists()
            raise RuntimeError("roll back")
    time.sleep(1.5)
    assert not Task.objects.exists()
    assert not Execution.objects.exists()
    assert group_sends == []

    # The worker was listening all along: the same add, committed, runs at once.
    run_at = due_in()
    scheduler.add_task("record", run_at=run_at, kwargs={"key": "committed"}, task_id="committed")
    execution = wait_for_execution(worker_procs, "committed", 5)
    assert NOT_BEFORE <= lateness(execution, run_at) <= PUSH_LATENESS
    assert [message for _, message in group_sends] == [notifications.changed_message(run_at)]
    assert list(Execution.objects.values_list("key", flat=True)) == ["committed"]


@pytest.fixture
def private_redis(redis_url: str, tmp_path: Path):
    """A redis-server of this test's own (the test stops and restarts it)."""
    if not Path(REDIS_SERVER).exists():
        pytest.fail(f"the outage test needs {REDIS_SERVER} to run a Redis server of its own")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def push_is_on_time(fleet: WorkerFleet, key: str) -> float:
    run_at = due_in()
    SyncScheduler().add_task("record", run_at=run_at, kwargs={"key": key}, task_id=key)
    return lateness(wait_for_execution(fleet, key, OUTAGE_POLL + 3), run_at)


@pytest.mark.timeout(90)
def test_a_redis_outage_costs_at_most_a_poll_and_push_recovers(
    worker_procs, private_redis, settings, monkeypatch
):
    use_redis_layer(private_redis.url, settings, monkeypatch)
    group = settings.TASKSHED["GROUP"]
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    worker = start_listening_worker(worker_procs, {"POLL_INTERVAL": OUTAGE_POLL})
    time.sleep(0.2)
    assert NOT_BEFORE <= push_is_on_time(worker_procs, "before") <= PUSH_LATENESS

    private_redis.stop()
    run_at = due_in()
    started = time.monotonic()
    SyncScheduler().add_task("record", run_at=run_at, kwargs={"key": "during"}, task_id="during")
    Task.objects.create(
        task_id="during-2", callback="record", kwargs={"key": "during-2"}, run_at=run_at
    )
    assert time.monotonic() - started < 1.0, "scheduling waited on the dead layer"
    for key, due in (("during", run_at), ("during-2", run_at)):
        late = lateness(wait_for_execution(worker_procs, key, OUTAGE_POLL + 3), due)
        assert late <= OUTAGE_POLL + 0.5, f"{key} ran {late:.3f} s late with Redis down"
    assert worker.returncode is None

    private_redis.start()  # same port, empty: the worker must notice and join again
    restarted = time.monotonic()
    worker_procs.wait_until(
        lambda: redis_group_members(private_redis.url, prefix, group),
        REJOIN_WITHIN,
        "the worker to rejoin the group after Redis came back",
    )
    rejoined_in = time.monotonic() - restarted
    # Three on-time runs in a row: each could be a lucky poll (2 s) with odds of 1 in 10.
    late = [push_is_on_time(worker_procs, f"after-{n}") for n in range(3)]
    assert all(NOT_BEFORE <= x <= PUSH_LATENESS for x in late), (
        f"lateness {late} s after the worker rejoined in {rejoined_in:.1f} s"
    )
    assert worker.returncode is None
    assert "channel layer unavailable" in worker.stderr()
