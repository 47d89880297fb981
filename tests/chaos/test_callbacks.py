"""Callbacks that kill or cancel, in real ``runtaskworker`` processes (issue 14, items 2, 3).

A callback raising ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit`` or its own
``CancelledError`` fails its run, is retried per policy, and the worker goes on. A callback
that ends the process (``os._exit``) is run at most ``max_retries + 1`` times: the test
restarts each dead worker as a supervisor would, and the task ends failed ("the worker running
it died 3 times") while the other tasks all run to their end, once each.
"""

import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from django_taskshed.models import Task, TaskRun
from django_taskshed.schedulers import SyncScheduler
from tests.testapp.models import Execution

KINDS = ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "CancelledError"]


def finished_runs(keys: list[str]) -> Counter[str]:
    rows = Execution.objects.filter(key__in=keys, finished_at__isnull=False)
    return Counter(rows.values_list("key", flat=True))


@pytest.mark.timeout(60)
def test_callbacks_raising_what_is_not_an_exception_fail_and_the_worker_goes_on(worker_procs):
    raising = [
        Task(
            task_id=f"{callback}-{kind}",
            callback=callback,
            kwargs={"key": f"{callback}-{kind}", "kind": kind},
            max_retries=2,
            priority=10,  # claimed first, with the healthy tasks running beside them
        )
        for callback in ("raise_base", "raise_base_sync")
        for kind in KINDS
    ]
    healthy = [f"healthy-{n}" for n in range(20)]
    SyncScheduler().add_tasks(
        [
            *raising,
            *(Task(task_id=k, callback="record", kwargs={"key": k}) for k in healthy),
        ]
    )
    worker = worker_procs.start(
        "chaos-raise", "--poll-interval", "0.2", taskshed={"RETRY_BACKOFF": 0.05}
    )
    ids = [task.task_id for task in raising]

    worker_procs.wait_until(  # check_alive(): the worker must not exit meanwhile
        lambda: (
            Task.objects.filter(pk__in=ids, failed_at__isnull=False).count() == len(ids)
            and not Task.objects.filter(pk__in=healthy).exists()
        ),
        30,
        "every raising task to fail and every healthy one to run",
    )
    worker.send(signal.SIGTERM)
    exit_code = worker.wait(15)

    tasks = {task.task_id: task for task in Task.objects.filter(pk__in=ids)}
    print(f"\nworker pid {worker.pid} exit code {exit_code}")
    for task_id, task in sorted(tasks.items()):
        print(f"  {task_id}: attempts {task.attempts}, {task.last_error.strip()}")
    assert exit_code == 0
    assert {task.attempts for task in tasks.values()} == {3}  # max_retries = 2
    assert set(Execution.objects.filter(key__in=ids).values_list("worker_pid", flat=True)) == {
        worker.pid
    }  # one process ran every attempt: none of them stopped it
    assert finished_runs(ids) == dict.fromkeys(ids, 3)
    assert finished_runs(healthy) == dict.fromkeys(healthy, 1)
    for task in tasks.values():
        assert task.lease_owner is None
        kind = task.kwargs["kind"]
        assert task.last_error.split(":")[0].endswith(kind), task.last_error
    runs = Counter(TaskRun.objects.filter(task_id__in=ids).values_list("outcome", flat=True))
    assert runs == {"failed": 3 * len(ids)}


@pytest.mark.timeout(60)
def test_a_callback_that_ends_its_process_fails_after_max_retries_and_spares_the_rest(
    worker_procs,
):
    lease, poll = 1, 0.2
    others = [f"other-{n:02}" for n in range(16)]
    SyncScheduler().add_tasks(
        [
            Task(
                task_id="poison",
                callback="exit_process",
                kwargs={"key": "poison"},
                max_retries=2,
                priority=10,
            ),
            *(
                Task(
                    task_id=key,
                    callback="sleep",
                    kwargs={"key": key, "seconds": 0.3},
                    max_retries=3,  # a run cut short by a death is one attempt
                )
                for key in others
            ),
        ]
    )
    args = ("--lease", str(lease), "--poll-interval", str(poll), "--concurrency", "4")
    worker = worker_procs.start("poison-0", *args)
    exit_codes: list[int] = []
    dead_pids: set[int] = set()
    deadline = time.monotonic() + 40
    # A supervisor: each time the worker dies, start another one.
    while not Task.objects.filter(pk="poison", failed_at__isnull=False).exists():
        if worker.returncode is not None:
            exit_codes.append(worker.returncode)
            dead_pids.add(worker.pid)
            worker.signaled = True  # an expected death
            worker = worker_procs.start(f"poison-{len(exit_codes)}", *args)
        assert time.monotonic() < deadline, f"the poison task never failed: exits {exit_codes}"
        time.sleep(0.05)
    worker_procs.wait_until(
        lambda: not Task.objects.filter(pk__in=others).exists(), 20, "the other tasks to run"
    )
    worker.send(signal.SIGTERM)
    last_exit = worker.wait(15)

    poison = Task.objects.get(pk="poison")
    poison_runs = Execution.objects.filter(key="poison").count()
    cut_short = Execution.objects.filter(key__in=others, finished_at__isnull=True).count()
    print(
        f"\nworker exits {exit_codes} then {last_exit}; poison: {poison_runs} runs, attempts "
        f"{poison.attempts}, {poison.last_error!r}; {cut_short} other runs cut short by a death"
    )
    assert exit_codes == [1, 1, 1] and last_exit == 0
    assert poison_runs == 3 and poison.attempts == 3
    assert poison.last_error == "WorkerDiedError: task 'poison': the worker running it died 3 times"
    assert poison.lease_owner is None
    assert list(
        TaskRun.objects.filter(task_id="poison").order_by("id").values_list("outcome", "attempt")
    ) == [("abandoned", 1), ("abandoned", 2), ("abandoned", 3)]
    # The others: none lost (each ran to its end and was deleted); none ran twice, but for a
    # run that ended in a worker that died before writing its result (at-least-once).
    finished = Execution.objects.filter(key__in=others, finished_at__isnull=False)
    by_key = Counter(finished.values_list("key", flat=True))
    redone = Counter(finished.exclude(worker_pid__in=dead_pids).values_list("key", flat=True))
    print(f"others: {sum(by_key.values())} finished runs for {len(others)} tasks")
    assert set(by_key) == set(others)
    assert all(n <= 1 for n in redone.values()), redone
    assert timezone.now() - poison.failed_at < timedelta(minutes=1)
