"""Lost connections: the worker's own to PostgreSQL (counted, kept, terminated under load) and
its channel layer's Redis (an outage of a Redis the test starts for itself).

Figures (connection counts, recovery times, exit codes) are printed: ``pytest -s`` shows them.
"""

import asyncio
import signal
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from asgiref.sync import SyncToAsync
from django.db import connections
from django.utils import timezone

from django_taskshed.models import RunOutcome, Task, TaskRun, WorkerRecord
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from tests.testapp.models import Execution

from .faults import RedisServer, backends, runs_per_key, terminate, wait_for, worker_database

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

BEAT = 0.2  # --lease 0.6: the heartbeat beats every 0.2 s


ATTEMPTS = (RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.TIMED_OUT, RunOutcome.ABANDONED)


def add_once(callbacks: list[str], keys: list[str], run_at: list[datetime] | None = None) -> None:
    """One one-off task per key (3 retries), the callbacks taken in turn."""
    times = run_at or [timezone.now()] * len(keys)
    SyncScheduler().add_tasks(
        [
            Task(task_id=key, callback=callbacks[n % len(callbacks)], kwargs={"key": key},
                 run_at=at, max_retries=3)
            for n, (key, at) in enumerate(zip(keys, times, strict=True))
        ]
    )  # fmt: skip


def no_tasks_left() -> bool:
    return not Task.objects.exists()


def test_a_worker_holds_the_three_documented_connections_and_reopens_none(worker_procs):
    name = "chaos-connections"
    keys = [f"count-{n}" for n in range(30)]
    worker_procs.start(name, "--lease", str(3 * BEAT), env=worker_database(name))
    add_once(["record_sync"], keys)  # a sync callback: its thread's connection closes after it
    worker_procs.wait_until(no_tasks_left, 15, "the tasks to run")
    ran_at = timezone.now()  # the heartbeat's connection opens at its first beat: wait for one
    worker_procs.wait_until(
        lambda: WorkerRecord.objects.filter(pk=name, heartbeat_at__gt=ran_at).exists(),
        10,
        "a heartbeat after the runs",
    )

    first = backends(name)
    beat_at = WorkerRecord.objects.get(pk=name).heartbeat_at
    six_beats_later = beat_at + timedelta(seconds=6 * BEAT - 0.05)  # CONN_MAX_AGE is 0
    worker_procs.wait_until(
        lambda: WorkerRecord.objects.filter(pk=name, heartbeat_at__gte=six_beats_later).exists(),
        10,
        "six heartbeats",
    )
    later = backends(name)

    print(f"\n[chaos] idle worker after 30 tasks: {len(first)} connections {first}; {len(later)} "
          f"after 6 heartbeats {later}")  # fmt: skip
    assert len(first) == 3, "claims, results and the heartbeat: one connection each"
    assert later == first, "a connection was closed and reopened between two looks"


def test_terminated_backends_lose_no_task_and_sigterm_still_exits_0(worker_procs):
    name = "chaos-terminated"
    count = 300
    keys = [f"term-{n:04}" for n in range(count)]
    worker = worker_procs.start(
        name, "--lease", "3", "--poll-interval", "1", "--concurrency", "20",
        env=worker_database(name), taskshed={"RETRY_BACKOFF": 0.1},
    )  # fmt: skip
    start = timezone.now() + timedelta(seconds=0.2)  # one task due every 10 ms from then on
    due = {key: start + n * timedelta(seconds=0.01) for n, key in enumerate(keys)}
    # A sync callback, and a coroutine that calls the ORM through sync_to_async (asgiref's
    # thread): each must find a working connection again once its own was terminated.
    add_once(["record_sync", "record"], keys, list(due.values()))
    worker_procs.wait_until(lambda: Execution.objects.count() >= count // 3, 15, "a third run")

    killed_at = timezone.now()
    killed = terminate(name)
    worker_procs.wait_until(no_tasks_left, 30, "every task to run")
    lateness = [  # of the tasks that a claim after the termination had to start
        (row.started_at - due[row.key]).total_seconds()
        for row in Execution.objects.filter(key__in=keys)
        if due[row.key] > killed_at
    ]

    idle_killed = terminate(name)  # the connections the shutdown will use, broken again
    worker.send(signal.SIGTERM)
    exit_code = worker.wait(15)
    runs = runs_per_key("term-")
    # A callback whose own ledger INSERT was cut off may have committed it and still failed
    # (the commit can come before the termination reaches the client): that attempt failed,
    # so the task was retried, by its policy. The worker's guarantee is about attempts: each
    # task succeeds once, and no ledger row comes without an attempt of its own.
    attempts = Counter(
        TaskRun.objects.filter(task_id__in=keys, outcome__in=ATTEMPTS).values_list(
            "task_id", flat=True
        )
    )
    succeeded = Counter(
        TaskRun.objects.filter(task_id__in=keys, outcome=RunOutcome.SUCCEEDED).values_list(
            "task_id", flat=True
        )
    )
    retried = sorted(key for key, n in runs.items() if n > 1)

    print(
        f"\n[chaos] terminated {killed} backends under load and {idle_killed} idle; "
        f"{len(lateness)} tasks due after the first termination, latest started "
        f"{max(lateness):.3f} s after its run_at; exit code {exit_code}; "
        f"{count - len(runs)} lost; {len(retried)} ran again after a failed attempt "
        f"({sum(attempts.values()) - count} attempts failed)"
    )
    assert killed >= 3 and idle_killed >= 3
    assert exit_code == 0, worker.describe()
    assert "unregistering failed" not in worker.stderr()
    assert not WorkerRecord.objects.filter(pk=name).exists()
    assert len(runs) == count, "tasks lost"
    assert all(succeeded[key] == 1 for key in keys), "a task did not succeed exactly once"
    twice = [key for key in keys if runs[key] > attempts[key]]
    assert not twice, f"ran more often than attempted (a double run): {twice}"
    assert lateness and max(lateness) < 2.0, "claims did not resume within 2 s"


def test_a_redis_outage_costs_at_most_a_poll_and_pushes_resume(worker_procs, settings):
    redis = RedisServer()
    redis.start()
    try:
        outage(worker_procs, settings, redis)
    finally:
        redis.stop()
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


def outage(worker_procs, settings, redis: RedisServer) -> None:
    import redis as redis_client

    prefix, poll = "chaos-redis", 2.0
    layer = {"hosts": [redis.url], "prefix": prefix}
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": layer}
    }
    env = {
        "REDIS_URL": redis.url,
        "TASKSHED_TEST_LAYER": "redis",
        "TASKSHED_TEST_LAYER_PREFIX": prefix,
    }
    worker_procs.start("chaos-redis", "--poll-interval", str(poll), env=env)
    members = redis_client.Redis.from_url(redis.url)

    def latency(key: str, add) -> tuple[float, float]:  # (seconds the add took, to the start)
        begun = timezone.now()
        add(key)
        added = (timezone.now() - begun).total_seconds()
        row = worker_procs.wait_until(
            lambda: Execution.objects.filter(key=key).first(), poll + 5, f"{key} to start"
        )
        return added, (row.started_at - begun).total_seconds()

    def sync_add(key: str) -> None:
        SyncScheduler().add_task("record", kwargs={"key": key}, task_id=key)

    def async_add(key: str) -> None:
        asyncio.run(AsyncScheduler().add_task("record", kwargs={"key": key}, task_id=key))

    _, before = latency("redis-up", sync_add)
    redis.stop()
    down_sync = latency("redis-down-sync", sync_add)
    down_async = latency("redis-down-async", async_add)
    restarted = time.monotonic()
    redis.start()
    group = f"{prefix}:group:taskshed"
    wait_for(lambda: members.zcard(group), 10, "the worker to rejoin the group")
    rejoined = time.monotonic() - restarted
    after = [latency(f"redis-back-{n}", sync_add)[1] for n in range(2)]
    members.close()

    print(
        f"\n[chaos] Redis outage (poll {poll} s): start {before:.3f} s before; while down "
        f"add_task took {down_sync[0]:.3f} s (sync) / {down_async[0]:.3f} s (async), tasks "
        f"started {down_sync[1]:.3f} / {down_async[1]:.3f} s after; worker rejoined "
        f"{rejoined:.2f} s after Redis came back; then started {after[0]:.3f}, {after[1]:.3f} s"
    )
    assert before < 0.5, "the push did not work before the outage"
    for added, started in (down_sync, down_async):
        assert added < 0.5, "a scheduler blocked on the missing Redis"
        assert started < poll + 1, "a task waited longer than a poll"
    assert max(after) < 0.5, "pushes did not resume after Redis came back"
