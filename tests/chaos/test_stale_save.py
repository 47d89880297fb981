"""Stale saves racing a recurring task in a real ``runtaskworker`` (issue 14, item 4).

The test process loads the task, waits a moment (the worker may run it meanwhile), edits
and saves it, again and again. A save over a newer row is refused (``StaleTaskError``), one
that goes through never writes the lease, and an edit while the task runs never makes its
occurrence run again: each occurrence runs once, and the worker never loses a lease.
"""

import random
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from django_taskshed.exceptions import StaleTaskError
from django_taskshed.models import Task
from django_taskshed.schedulers import SyncScheduler
from tests.testapp.models import Execution

INTERVAL = timedelta(milliseconds=100)
SAVES = 150


@pytest.mark.timeout(60)
def test_stale_saves_racing_a_running_recurring_task_never_rerun_or_unlease_it(worker_procs):
    until = (timezone.now() + timedelta(days=1)).isoformat()
    SyncScheduler().add_task(
        "record_run_at", kwargs={"key": "race", "until": until}, run_type="recurring",
        interval=INTERVAL, task_id="race",
    )  # fmt: skip
    worker = worker_procs.start("chaos-stale", "--poll-interval", "0.5")
    worker_procs.wait_until(lambda: Execution.objects.filter(key="race").exists(), 20, "a run")
    rng = random.Random(14)
    outcomes: Counter[str] = Counter()
    for n in range(SAVES):
        task = Task.objects.get(pk="race")
        time.sleep(rng.uniform(0, 0.015))
        task.priority = n % 7  # an edit of the user's
        task.lease_owner = task.claim_token = task.lease_expires_at = None  # never written
        try:
            task.save()
            outcomes["saved"] += 1
        except StaleTaskError:
            outcomes["refused"] += 1
        worker_procs.check_alive()
    runs_during = Execution.objects.filter(key="race").count()
    worker.send(signal.SIGTERM)
    exit_code = worker.wait(15)

    values = Execution.objects.filter(key="race").values_list("value", flat=True)
    occurrences = Counter(value["run_at"] for value in values)
    twice = {run_at: n for run_at, n in occurrences.items() if n > 1}
    print(
        f"\n{runs_during} runs, {outcomes['saved']} saves, {outcomes['refused']} refused as "
        f"stale, {len(twice)} occurrences run twice, exit code {exit_code}"
    )
    assert exit_code == 0
    assert not twice, f"occurrences run more than once: {twice}"
    assert outcomes["saved"] > 0 and outcomes["refused"] > 0  # the race did happen
    assert runs_during >= 10
    assert "lease lost" not in worker.stderr() + worker.stdout()
    row = Task.objects.get(pk="race")
    assert row.lease_owner is None  # released at the stop
