"""What a callback may raise (``BaseException`` subclasses included), and a worker's death:
in-process workers against the real database (issue 14, items 2 and 3).

The real-process versions (a worker that survives them, ``os._exit``) are in
``tests/chaos/test_callbacks.py``.
"""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore
from django_taskshed.models import Task, TaskRun
from django_taskshed.schedulers import AsyncScheduler
from django_taskshed.workers import EventDrivenWorker, inflight
from tests.conftest import package_apps
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

FAST = {"poll_interval": 0.1}
STORE = DjangoDataStore("default")


class NotAnException(BaseException):
    pass


async def awaits_a_cancelled_future() -> None:
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


RAISED: dict[str, Any] = {
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
    "NotAnException": lambda: NotAnException("custom"),
}
ERROR_LINES = {
    "SystemExit": "SystemExit: 3",
    "KeyboardInterrupt": "KeyboardInterrupt: ",
    "GeneratorExit": "GeneratorExit: ",
    "CancelledError": "asyncio.exceptions.CancelledError: ",
    "NotAnException": "tests.test_callback_errors.NotAnException: custom",
}


def raising_callback(kind: str, sync: bool, calls: list[int]) -> Any:
    if sync:

        def raises() -> None:
            calls.append(1)
            raise RAISED[kind]()

        return raises

    async def araises() -> None:
        calls.append(1)
        await asyncio.sleep(0)
        raise RAISED[kind]()

    return araises


async def stored_if(task_id: str, **conditions: Any) -> Task | None:
    return await Task.objects.filter(pk=task_id, **conditions).afirst()


async def outcomes_of(task_id: str) -> list[str]:
    runs = TaskRun.objects.filter(task_id=task_id).order_by("id")
    return [outcome async for outcome in runs.values_list("outcome", flat=True)]


def assert_lease_free(task: Task) -> None:
    assert (task.lease_owner, task.lease_expires_at, task.claim_token) == (None, None, None)


# --- item 2: a callback can raise anything -----------------------------------------------------


@pytest.mark.parametrize("kind", RAISED)
@pytest.mark.parametrize(
    ("sync", "timeout"),
    [(False, None), (False, 30), (True, None)],
    ids=["async", "async with a timeout", "sync"],
)
@override_settings(TASKSHED={"MAX_RETRIES": 1, "RETRY_BACKOFF": 0.05})
async def test_whatever_a_callback_raises_is_a_failure_retried_and_the_worker_goes_on(
    kind, sync, timeout
):
    calls: list[int] = []
    ran: list[str] = []

    def note(x: str) -> None:
        ran.append(x)

    callbacks = {"raises": raising_callback(kind, sync, calls), "note": note}
    worker = EventDrivenWorker(callbacks, **FAST)
    scheduler = AsyncScheduler(worker=worker)
    await scheduler.add_tasks(
        [Task(task_id="raises", callback="raises", timeout=timeout and timedelta(seconds=timeout))]
    )
    await worker.start()
    try:
        task = await eventually(
            lambda: stored_if("raises", failed_at__isnull=False), what="the task to fail"
        )
        await scheduler.add_task("note", kwargs={"x": "after"})  # the worker goes on
        await eventually(lambda: ran == ["after"], what="a task added after the failures")
    finally:
        await worker.shutdown()

    print(f"\n{kind}, {'sync' if sync else 'async'}: attempts {task.attempts}, {task.last_error!r}")
    assert len(calls) == 2  # the run and MAX_RETRIES = 1 retry
    assert task.attempts == 2
    assert task.last_error.rstrip() == ERROR_LINES[kind].rstrip()
    assert_lease_free(task)
    assert await outcomes_of("raises") == ["failed", "failed"]


async def test_a_cancelled_future_awaited_by_the_callback_is_its_failure():
    worker = EventDrivenWorker({"cancelled": awaits_a_cancelled_future}, **FAST)
    await AsyncScheduler().add_task("cancelled", task_id="c")
    await worker.start()
    try:
        task = await eventually(lambda: stored_if("c", failed_at__isnull=False), what="failure")
    finally:
        await worker.shutdown()
    assert task.attempts == 1 and task.last_error.startswith("asyncio.exceptions.CancelledError")
    assert "in awaits_a_cancelled_future" in task.last_traceback
    assert_lease_free(task)


async def test_the_workers_own_cancellation_at_shutdown_releases_the_task_and_counts_nothing():
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.sleep(3600)

    worker = EventDrivenWorker({"hangs": hangs}, shutdown_timeout=0.1, **FAST)
    await AsyncScheduler().add_task("hangs", task_id="h")
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await worker.shutdown()

    task = await stored_if("h")
    assert task is not None and task.failed_at is None
    assert (task.attempts, task.last_error) == (0, "")
    assert_lease_free(task)
    assert await outcomes_of("h") == []


async def test_a_timeout_cancels_the_callback_and_is_a_timeout_not_a_cancellation():
    async def hangs() -> None:
        await asyncio.sleep(3600)

    worker = EventDrivenWorker({"hangs": hangs}, **FAST)
    await AsyncScheduler().add_tasks(
        [Task(task_id="t", callback="hangs", timeout=timedelta(seconds=0.1))]
    )
    await worker.start()
    try:
        task = await eventually(lambda: stored_if("t", failed_at__isnull=False), what="timeout")
    finally:
        await worker.shutdown()
    assert task.last_error.startswith("TaskTimeoutError:")
    assert await outcomes_of("t") == ["timed_out"]


def test_cancel_requested_on_python_3_10_knows_the_runs_the_worker_cancelled(monkeypatch):
    """3.10 has no ``Task.cancelling()``: the worker notes the runs it cancels."""

    class OldTask:  # an asyncio task as 3.10 has it: no cancelling()
        def cancel(self) -> None:
            pass

    run = OldTask()
    monkeypatch.setattr(asyncio, "current_task", lambda: run)
    assert not inflight.cancel_requested()
    inflight.cancel_run(run)  # type: ignore[arg-type]
    assert inflight.cancel_requested()


# --- item 3: a worker's death counts as an attempt ---------------------------------------------


def die_holding(task_id: str, deaths: int) -> None:
    """``deaths`` workers claim the task and die: their leases lapse."""
    for n in range(deaths):
        claims = STORE.claim_due_tasks(f"dead-worker-{n}", 10, 30)
        assert [claim.task_id for claim in claims] == [task_id]
        lapsed = timezone.now() - timedelta(seconds=1)
        Task.objects.filter(pk=task_id).update(lease_expires_at=lapsed)


async def run_worker_until(task_id: str, callbacks: dict[str, Any], **conditions: Any) -> Task:
    worker = EventDrivenWorker(callbacks, **FAST)
    await worker.start()
    try:
        task = await eventually(lambda: stored_if(task_id, **conditions), what=str(conditions))
        await eventually(lambda: stored_if(task_id, lease_owner=None), what="the lease freed")
    finally:
        await worker.shutdown()
    refreshed = await stored_if(task_id)
    return refreshed or task


@pytest.mark.parametrize(
    ("max_retries", "deaths", "message"),
    [(2, 3, "died 3 times"), (None, 1, "died 1 time")],
    ids=["max_retries=2, 3 deaths", "MAX_RETRIES=0 (default), a SIGKILLed deploy"],
)
async def test_a_task_whose_worker_died_more_often_than_its_retries_fails_without_running(
    max_retries, deaths, message
):
    calls: list[int] = []
    await AsyncScheduler().add_tasks(
        [Task(task_id="poison", callback="poison", max_retries=max_retries)]
    )
    await sync_to_async(die_holding)("poison", deaths)

    task = await run_worker_until("poison", {"poison": calls.append}, failed_at__isnull=False)

    print(f"\ndeaths {deaths}, attempts {task.attempts}: {task.last_error}")
    assert calls == []  # not run again
    assert task.attempts == deaths
    assert task.last_error == f"WorkerDiedError: task 'poison': the worker running it {message}"
    assert task.last_traceback == ""
    assert_lease_free(task)
    assert await outcomes_of("poison") == ["abandoned"] * deaths


async def test_a_task_whose_worker_died_within_its_retries_runs_again():
    ran: list[int] = []
    await AsyncScheduler().add_tasks([Task(task_id="p", callback="note", max_retries=2)])
    await sync_to_async(die_holding)("p", 2)
    worker = EventDrivenWorker({"note": lambda: ran.append(1)}, **FAST)
    await worker.start()
    try:
        await eventually(lambda: _gone("p"), what="the task to be deleted")
    finally:
        await worker.shutdown()
    assert ran == [1]
    assert await outcomes_of("p") == ["abandoned", "abandoned", "succeeded"]


async def _gone(task_id: str) -> bool:
    return await stored_if(task_id) is None


async def test_a_recurring_task_whose_worker_died_moves_to_its_next_occurrence_as_after_a_failure():
    calls: list[int] = []
    first = timezone.now() - timedelta(seconds=1)
    await AsyncScheduler().add_task(
        "tick", first, run_type="recurring", interval=timedelta(hours=1), task_id="r"
    )
    await sync_to_async(die_holding)("r", 1)

    task = await run_worker_until("r", {"tick": calls.append}, run_at__gt=timezone.now())

    assert calls == []  # MAX_RETRIES = 0: the occurrence is not run again
    assert task.failed_at is None and task.attempts == 1
    assert task.run_at == first + timedelta(hours=1)
    assert "the worker running it died 1 time" in task.last_error


@override_settings(TASKSHED={"HISTORY": False})
async def test_without_the_history_the_error_names_the_attempt():
    await AsyncScheduler().add_tasks([Task(task_id="q", callback="x", max_retries=1)])
    await sync_to_async(die_holding)("q", 2)
    task = await run_worker_until("q", {"x": print}, failed_at__isnull=False)
    assert task.last_error == (
        "WorkerDiedError: task 'q': the worker running it died during attempt 2, its last allowed"
    )


async def test_deaths_are_told_apart_from_failures_in_the_count():
    """One failure, then one death: two attempts, one of them a death."""
    calls: list[int] = []

    async def fails_once() -> None:
        calls.append(1)
        raise RuntimeError("first attempt")

    await AsyncScheduler().add_tasks([Task(task_id="m", callback="m", max_retries=1)])
    worker = EventDrivenWorker({"m": fails_once}, **FAST)
    await worker.start()
    try:
        await eventually(lambda: stored_if("m", attempts=1, lease_owner=None), what="a failure")
    finally:
        await worker.shutdown()
    await Task.objects.filter(pk="m").aupdate(run_at=timezone.now())
    await sync_to_async(die_holding)("m", 1)

    task = await run_worker_until("m", {"m": fails_once}, failed_at__isnull=False)

    assert calls == [1]
    assert task.attempts == 2
    assert task.last_error.endswith("the worker running it died 1 time")
    assert await outcomes_of("m") == ["failed", "abandoned"]


# --- the same through Django's Tasks framework (TaskShedBackend) -------------------------------


@pytest.mark.skipif(not settings.TASKS_FRAMEWORK, reason="no Django Tasks framework here")
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("raises_base", "SystemExit"),
        ("raises_base", "KeyboardInterrupt"),
        ("raises_base_async", "SystemExit"),
        ("raises_base_async", "KeyboardInterrupt"),
        ("raises_base_async", "CancelledError"),
    ],
)
@override_settings(TASKSHED={"MAX_RETRIES": 1, "RETRY_BACKOFF": 0})
async def test_a_django_task_that_raises_anything_fails_is_retried_and_the_worker_goes_on(
    name, kind
):
    from django_taskshed.tasks_framework import compat
    from tests.testapp import djtasks

    status = compat.TaskResultStatus
    result = await getattr(djtasks, name).aenqueue(key=f"{name}-{kind}", kind=kind)
    worker = EventDrivenWorker(**FAST)
    await worker.start()
    try:
        await eventually(lambda: _finished(result), what="the last attempt")
        after = await djtasks.add.aenqueue(1, 2, key="after")
        await eventually(lambda: _finished(after), what="a task enqueued after it")
    finally:
        await worker.shutdown()

    assert (result.status, result.attempts) == (status.FAILED, 2)
    paths = [error.exception_class_path for error in result.errors]
    module = "asyncio.exceptions" if kind == "CancelledError" else "builtins"
    assert paths == [f"{module}.{kind}"] * 2
    assert result.errors[-1].traceback.rstrip().endswith(f"{kind}: {kind} from {name}-{kind}")
    assert after.status == status.SUCCESSFUL and after.return_value == 3


async def _finished(result: Any) -> bool:
    from django_taskshed.tasks_framework import compat

    await result.arefresh()
    return result.status in (compat.TaskResultStatus.SUCCESSFUL, compat.TaskResultStatus.FAILED)


@pytest.mark.skipif(not settings.TASKS_FRAMEWORK, reason="no Django Tasks framework here")
async def test_a_django_task_cancelled_by_the_workers_shutdown_is_released_not_failed():
    from django_taskshed.tasks_framework import compat
    from tests.testapp import djtasks
    from tests.testapp.models import Execution

    finished: list[Any] = []

    def note(sender: Any, task_result: Any, **kwargs: Any) -> None:
        finished.append(task_result.status)

    compat.task_finished.connect(note)
    try:
        result = await djtasks.hang_async.aenqueue(key="hung")
        worker = EventDrivenWorker(shutdown_timeout=0.1, **FAST)
        await worker.start()
        await eventually(lambda: Execution.objects.filter(key="hung").aexists(), what="the run")
        await worker.shutdown()
    finally:
        compat.task_finished.disconnect(note)

    await result.arefresh()
    assert finished == []  # not finished: released, to run again
    assert (result.status, result.attempts) == (compat.TaskResultStatus.READY, 0)
