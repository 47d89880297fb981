"""Hints no worker needs, with a real ``runtaskworker`` over channels_redis (needs REDIS_URL).

The group sends of this process are counted (a spy on channels_redis' ``group_send``). A task
added beyond the worker's published re-read time sends nothing and still runs on time; one
due sooner is sent and runs on time. The race: many adds, most beyond the re-read time of a
worker that renews it every second, none later than the push bound.
"""

import random
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from django_taskshed import rereads
from django_taskshed.models import Task, WorkerRecord
from django_taskshed.schedulers import SyncScheduler
from tests import test_notifications_procs
from tests.test_notifications_procs import (
    NOT_BEFORE,
    PUSH_LATENESS,
    due_in,
    lateness,
    start_listening_worker,
    wait_for_execution,
)
from tests.testapp.models import Execution

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
# The fixtures of the push tests: a group of this test's own on channels_redis; its sends.
push_group = test_notifications_procs.push_group
group_sends = test_notifications_procs.group_sends

POLL = 2.0  # s: the worker re-reads the schedule at least this often, and publishes it
RACE_POLL = rereads.MIN_HORIZON  # s: the shortest poll that still publishes
RACE_ADDS = 40


def wait_for_published(fleet):
    return fleet.wait_until(
        lambda: WorkerRecord.objects.filter(rereads_at__isnull=False).first(),
        10,
        "the worker's published re-read time",
    )


def test_a_task_beyond_the_workers_next_read_sends_nothing_and_still_runs_on_time(
    worker_procs, push_group, group_sends
):
    start_listening_worker(worker_procs, {"POLL_INTERVAL": POLL})
    wait_for_published(worker_procs)

    far = timezone.now() + timedelta(hours=1)
    Task.objects.create(task_id="far", callback="record", kwargs={"key": "far"}, run_at=far)
    run_at = due_in(POLL + 1)  # beyond any re-read time the worker can have published
    SyncScheduler().add_task("record", run_at=run_at, kwargs={"key": "beyond"}, task_id="beyond")
    assert group_sends == []
    late = lateness(wait_for_execution(worker_procs, "beyond", POLL + 5), run_at)
    assert NOT_BEFORE <= late <= PUSH_LATENESS, f"found by its re-read {late:.3f} s late"
    assert group_sends == []

    run_at = due_in()  # sooner than its next read: the hint goes out
    SyncScheduler().add_task("record", run_at=run_at, kwargs={"key": "soon"}, task_id="soon")
    assert len(group_sends) == 1
    late = lateness(wait_for_execution(worker_procs, "soon", 5), run_at)
    assert NOT_BEFORE <= late <= PUSH_LATENESS, f"pushed, {late:.3f} s late"


def test_many_adds_while_the_worker_renews_its_promise_none_is_late(
    worker_procs, push_group, group_sends
):
    start_listening_worker(worker_procs, {"POLL_INTERVAL": RACE_POLL})
    wait_for_published(worker_procs)
    scheduler, due = SyncScheduler(), {}
    for n in range(RACE_ADDS):
        key = f"race-{n}"
        due[key] = due_in(random.uniform(0.5, 2.5))  # on both sides of the horizon
        scheduler.add_task("record", run_at=due[key], kwargs={"key": key}, task_id=key)
        time.sleep(random.uniform(0.03, 0.1))
    worker_procs.wait_until(lambda: Execution.objects.count() >= RACE_ADDS, 10, f"{RACE_ADDS} runs")
    late = {e.key: lateness(e, due[e.key]) for e in Execution.objects.all()}
    assert len(late) == RACE_ADDS
    worst = max(late.values())
    assert NOT_BEFORE <= min(late.values()) and worst <= PUSH_LATENESS, f"worst {worst:.3f} s"
    assert 0 < len(group_sends) < RACE_ADDS, f"{len(group_sends)} sent: no skip was raced"
