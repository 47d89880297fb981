"""``TaskShedBackend``: Django's Tasks framework on the task table, the worker and the history.

In-process workers here; real ``runtaskworker`` processes at the end (marked slow)."""

import logging
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_taskshed.models import Task, TaskRun
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from tests.conftest import package_apps
from tests.waiting import eventually

if not settings.TASKS_FRAMEWORK:  # pragma: no cover
    pytest.skip("no Django Tasks framework here", allow_module_level=True)

from django_taskshed.backends import TaskShedBackend  # noqa: E402
from django_taskshed.tasks_framework import compat  # noqa: E402
from tests.testapp import djtasks  # noqa: E402
from tests.testapp.models import Execution  # noqa: E402

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]
Status = compat.TaskResultStatus
FAST = {"poll_interval": 0.1}


async def run_until(condition, what: str, timeout: float = 10) -> EventDrivenWorker:
    """A worker serving the registry (the Django tasks loaded here included) until
    ``condition`` holds."""
    worker = EventDrivenWorker(**FAST)
    await worker.start()
    try:
        await eventually(condition, timeout=timeout, what=what)
    finally:
        await worker.shutdown()
    return worker


async def finished(result) -> bool:
    await result.arefresh()
    return result.status in (Status.SUCCESSFUL, Status.FAILED)


# --- enqueue -----------------------------------------------------------------------------------


def test_enqueue_writes_a_due_task_row_and_reads_back_the_same_result():
    before = timezone.now()
    result = djtasks.add.enqueue(2, 3, key="k")
    assert result.status == Status.READY and result.backend == "default"
    assert (result.args, result.kwargs, result.attempts) == ([2, 3], {"key": "k"}, 0)
    row = Task.objects.get(pk=result.id)
    assert row.callback == "tests.testapp.djtasks.add"
    assert before <= row.run_at <= timezone.now() and row.run_at == result.enqueued_at
    assert (row.queue, row.priority) == ("default", 0)
    assert djtasks.add.get_result(result.id) == result


def test_run_after_priority_and_queue_are_the_rows():
    later = timezone.now() + timedelta(hours=1)
    task = djtasks.add.using(run_after=later, priority=7, queue_name="reports")
    result = task.enqueue(1, 1)
    row = Task.objects.get(pk=result.id)
    assert (row.run_at, row.priority, row.queue) == (later, 7, "reports")
    again = djtasks.add.get_result(result.id)
    assert again.task == task and again.status == Status.READY


def test_a_row_keeps_only_the_options_that_are_not_the_usual_ones():
    """Each claim and history row copies the payload: the usual options are left out, the
    enqueue time is told by the id, and a row written with all of them and its enqueue time
    (by an earlier version) reads the same."""
    plain = djtasks.add.enqueue(1, 2)
    stored = Task.objects.get(pk=plain.id).kwargs
    assert stored == {"args": [1, 2], "kwargs": {}}
    later = timezone.now() + timedelta(hours=1)
    special = djtasks.add.using(run_after=later, priority=-5, queue_name="reports").enqueue(3, 4)
    options = Task.objects.get(pk=special.id).kwargs["task_options"]
    assert options == {"queue_name": "reports", "priority": -5, "run_after": later.isoformat()}
    assert djtasks.add.get_result(plain.id) == plain
    assert djtasks.add.get_result(special.id) == special
    full = {"backend": "default", "queue_name": "default", "priority": 0, "run_after": None}
    earlier = timezone.now() - timedelta(days=3)
    Task.objects.filter(pk=plain.id).update(
        kwargs={**stored, "task_options": {**full, "enqueued_at": earlier.isoformat()}}
    )
    assert djtasks.add.get_result(plain.id).enqueued_at == earlier


def test_a_result_id_is_a_uuid7_that_tells_its_enqueue_time_to_the_microsecond():
    import uuid

    from django_taskshed.tasks_framework.payload import enqueued_at_of, new_result_id

    moments = [
        datetime(2026, 11, 29, 21, 40, 41, 123456, tzinfo=dt_timezone.utc),
        datetime(2026, 11, 29, 21, 40, 41, 123999, tzinfo=dt_timezone.utc),
        datetime(2026, 11, 29, 21, 40, 41, 124000, tzinfo=dt_timezone.utc),
        datetime(1970, 1, 1, tzinfo=dt_timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt_timezone.utc),
    ]
    ids = [new_result_id(moment) for moment in moments]
    assert [uuid.UUID(i).version for i in ids] == [7] * 5
    assert [uuid.UUID(i).variant for i in ids] == [uuid.RFC_4122] * 5
    assert [enqueued_at_of(i) for i in ids] == moments
    assert sorted(ids[:3]) == ids[:3]  # ids sort by enqueue time
    assert len({new_result_id(moments[0]) for _ in range(100)}) == 100
    # another zone: the same moment
    east = moments[0].astimezone(dt_timezone(timedelta(hours=5, minutes=30)))
    assert enqueued_at_of(new_result_id(east)) == moments[0]
    # ids this backend did not make tell nothing
    assert enqueued_at_of(str(uuid.uuid4())) is None
    assert enqueued_at_of("stranger") is None


@override_settings(USE_TZ=False)
def test_a_result_id_tells_a_naive_enqueue_time_without_time_zones():
    from django_taskshed.tasks_framework.payload import enqueued_at_of, new_result_id

    naive = datetime(2026, 11, 29, 21, 40, 41, 5)
    assert enqueued_at_of(new_result_id(naive)) == naive


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((timezone.now(), 1), {}, "argument 0 of tests.testapp.djtasks.add is not JSON"),
        ((1, 2), {"key": {1: "one"}}, "keyword argument 'key' of tests.testapp.djtasks.add does "
         "not survive JSON"),
        ((float("nan"), 2), {}, "argument 0 of tests.testapp.djtasks.add is not JSON"),
    ],
)  # fmt: skip
def test_arguments_that_do_not_survive_json_are_refused_at_enqueue(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        djtasks.add.enqueue(*args, **kwargs)
    assert not Task.objects.exists()


def test_tuples_come_back_as_lists_as_django_says():
    result = djtasks.add.enqueue((1, 2), 3)
    assert result.args == [[1, 2], 3]


def test_an_enqueue_rolled_back_with_its_transaction_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        result = djtasks.add.enqueue(1, 2)
        assert Task.objects.filter(pk=result.id).exists()  # visible inside
        raise RuntimeError("roll back")
    assert not Task.objects.exists()
    with pytest.raises(compat.TaskResultDoesNotExist):
        djtasks.add.get_result(result.id)


def test_an_unknown_id_or_a_taskshed_task_is_no_result():
    with pytest.raises(compat.TaskResultDoesNotExist):
        djtasks.add.get_result("no-such-id")
    SyncScheduler().add_task("record", task_id="plain", kwargs={"key": "plain"})
    with pytest.raises(compat.TaskResultDoesNotExist):
        djtasks.add.get_result("plain")


def test_the_backend_says_what_it_supports():
    backend = djtasks.add.get_backend()
    assert isinstance(backend, TaskShedBackend)
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"OPTIONS": {"RETRIES": 1}}, "has unknown keys ['RETRIES']"),
        ({"OPTIONS": {"DATABASE": "nope"}}, "'nope' is not a database"),
        ({"OPTIONS": {"MAX_RETRIES": -1}}, "MAX_RETRIES'] must be an int >= 0, not -1"),
        ({"OPTIONS": {"TIMEOUT": "5"}}, "TIMEOUT'] must be seconds > 0, not '5'"),
        ({"QUEUES": ["default", ""]}, "QUEUES'] holds '': a queue is a name of 1 to"),
    ],
)
def test_manage_py_check_names_a_bad_entry(entry, message):
    backend = TaskShedBackend("bad", entry)
    (error,) = backend.check()
    assert message in error.msg and error.id == "django_taskshed.E010"


@pytest.mark.django_db(transaction=True)  # every app: the checks of Django's contrib apps run
def test_manage_py_check_passes_the_test_settings():
    assert not [m for m in run_checks() if m.id == "django_taskshed.E010"]


# --- running -----------------------------------------------------------------------------------


async def test_a_worker_runs_sync_and_async_tasks_and_results_outlive_their_rows():
    sync_result = await djtasks.add.aenqueue(2, 3, key="sync")
    async_result = await djtasks.add_async.aenqueue(4, 5, key="async")
    worker = await run_until(lambda: _all_finished(sync_result, async_result), "both results")
    assert not await Task.objects.filter(pk__in=[sync_result.id, async_result.id]).aexists()
    assert (sync_result.status, sync_result.return_value) == (Status.SUCCESSFUL, 5)
    assert (async_result.status, async_result.return_value) == (Status.SUCCESSFUL, {"sum": 9})
    for result in (sync_result, async_result):
        assert result.worker_ids == [worker.worker_id] and result.attempts == 1
        assert result.enqueued_at <= result.started_at <= result.finished_at
        assert result.last_attempted_at == result.started_at and result.errors == []
    assert await Execution.objects.filter(key__in=["sync", "async"]).acount() == 2
    fetched = await djtasks.add.aget_result(sync_result.id)
    assert fetched == sync_result


async def _all_finished(*results) -> bool:
    return all([await finished(result) for result in results])


@override_settings(TASKSHED={"MAX_RETRIES": 2, "RETRY_BACKOFF": 0})
async def test_failures_are_retried_and_each_is_in_errors():
    result = await djtasks.fail_until.aenqueue(key="flaky", attempts=3)
    worker = await run_until(lambda: finished(result), "the third attempt")
    assert (result.status, result.return_value, result.attempts) == (Status.SUCCESSFUL, "done", 3)
    assert [error.exception_class_path for error in result.errors] == ["builtins.ValueError"] * 2
    assert result.errors[0].traceback.rstrip().endswith("ValueError: attempt too early for flaky")
    assert result.worker_ids == [worker.worker_id] * 3


@override_settings(TASKSHED={"MAX_RETRIES": 1, "RETRY_BACKOFF": 0})
async def test_a_task_that_keeps_failing_ends_failed():
    result = await djtasks.fail_until.aenqueue(key="doomed", attempts=99)
    await run_until(lambda: finished(result), "the last attempt")
    assert (result.status, result.attempts, len(result.errors)) == (Status.FAILED, 2, 2)
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="has not finished|failed"):
        result.return_value  # noqa: B018


async def test_a_value_json_cannot_hold_fails_the_run():
    result = await djtasks.returns_a_set.aenqueue(key="set")
    await run_until(lambda: finished(result), "the run")
    assert result.status == Status.FAILED
    assert result.errors[0].exception_class_path == "builtins.TypeError"


@override_settings(TASKSHED={"MAX_RETRIES": 1, "RETRY_BACKOFF": 0})
async def test_takes_context_passes_the_attempt_and_the_result():
    result = await djtasks.with_context.aenqueue(key="ctx")
    worker = await run_until(lambda: finished(result), "the run")
    assert result.return_value == {"attempt": 1, "id": result.id, "workers": [worker.worker_id]}


async def test_a_row_naming_a_task_not_loaded_fails_at_once_without_importing_it():
    await AsyncScheduler().add_tasks(
        [
            Task(
                task_id="stranger",
                callback="tests.testapp.not_loaded.run",
                kwargs={"args": [], "kwargs": {}, "task_options": {}},
            )
        ]
    )
    await run_until(lambda: _failed("stranger"), "the row to fail")
    row = await Task.objects.aget(pk="stranger")
    assert "no callback named 'tests.testapp.not_loaded.run'" in row.last_error
    import sys

    assert "tests.testapp.not_loaded" not in sys.modules


async def _failed(task_id: str) -> bool:
    return await Task.objects.filter(pk=task_id, failed_at__isnull=False).aexists()


def test_a_running_task_reads_as_running_with_its_worker():
    result = djtasks.add.enqueue(1, 2)
    lease = timezone.now() + timedelta(seconds=30)
    Task.objects.filter(pk=result.id).update(lease_owner="w-1", lease_expires_at=lease)
    result.refresh()
    assert (result.status, result.worker_ids) == (Status.RUNNING, ["w-1"])


def test_history_off_results_end_with_the_row(settings):
    settings.TASKSHED = {"HISTORY": False}
    result = djtasks.add.enqueue(1, 2)
    Task.objects.filter(pk=result.id).delete()
    assert not TaskRun.objects.exists()
    with pytest.raises(compat.TaskResultDoesNotExist):
        result.refresh()


# --- real runtaskworker processes --------------------------------------------------------------


def wait_finished(worker_procs, *results, timeout: float = 20):
    def done() -> bool:
        for result in results:
            result.refresh()
        return all(r.status in (Status.SUCCESSFUL, Status.FAILED) for r in results)

    worker_procs.wait_until(done, timeout, "the results")


@pytest.mark.slow
def test_a_runtaskworker_runs_what_another_process_enqueued(worker_procs):
    results = [djtasks.add.enqueue(1, 2, key="p-sync"), djtasks.add_async.enqueue(3, 4, key="p-a")]
    worker = worker_procs.start("dj-1", "--poll-interval", "0.5")
    wait_finished(worker_procs, *results)
    assert [r.status for r in results] == [Status.SUCCESSFUL] * 2
    assert [r.return_value for r in results] == [3, {"sum": 7}]
    assert all(r.worker_ids == ["dj-1"] for r in results)
    late = djtasks.add.enqueue(5, 6, key="p-late")  # pushed to the running worker
    wait_finished(worker_procs, late)
    assert late.return_value == 11
    worker.stop()


@pytest.mark.slow
def test_due_tasks_run_by_priority_then_run_at(worker_procs):
    past = timezone.now() - timedelta(seconds=10)
    order = [(0, 1), (5, 2), (-3, 0), (5, 0), (100, 3)]  # (priority, seconds after past)
    results = [
        djtasks.ordered.using(priority=p, run_after=past + timedelta(seconds=s)).enqueue(
            key=f"o-{p}-{s}"
        )
        for p, s in order
    ]
    worker_procs.start("dj-order", "--concurrency", "1", "--batch-size", "1")
    wait_finished(worker_procs, *results)
    ran = list(Execution.objects.filter(callback="ordered").values_list("key", flat=True))
    assert ran == ["o-100-3", "o-5-0", "o-5-2", "o-0-1", "o--3-0"]


@pytest.mark.slow
def test_workers_on_different_queues_run_only_their_own(worker_procs):
    mail = worker_procs.start("dj-mail", "--queue", "mail", wait=False)
    rest = worker_procs.start("dj-rest", "--queue", "reports,batch", wait=False)
    for process in (mail, rest):
        worker_procs.wait_until(process.banner, 30, "a start-up line")
    results = {
        queue: [djtasks.add.using(queue_name=queue).enqueue(n, n, key=f"{queue}-{n}")
                for n in range(3)]
        for queue in ("mail", "reports", "batch")
    }  # fmt: skip
    wait_finished(worker_procs, *[r for rs in results.values() for r in rs])
    for queue, expected in (("mail", "dj-mail"), ("reports", "dj-rest"), ("batch", "dj-rest")):
        assert {r.worker_ids[0] for r in results[queue]} == {expected}, queue
    leftover = djtasks.add.enqueue(0, 0, key="default-queue")  # no worker serves "default"
    time.sleep(1.5)
    leftover.refresh()
    assert leftover.status == Status.READY


@pytest.mark.slow
def test_a_worker_that_did_not_load_the_task_fails_it_without_importing(worker_procs):
    result = djtasks.add.enqueue(1, 1, key="unloaded")
    worker_procs.start("dj-bare", "--poll-interval", "0.2", env={"TASKSHED_TEST_NO_DJTASKS": "1"})
    wait_finished(worker_procs, result)
    assert result.status == Status.FAILED
    assert "no callback named 'tests.testapp.djtasks.add'" in result.errors[0].traceback
    assert not Execution.objects.filter(key="unloaded").exists()


@pytest.mark.django_db(transaction=True)  # the whole flush: it logs in (package_apps())
def test_the_admin_shows_a_django_task_with_its_definition_read_only(admin_client):
    from django.urls import reverse

    result = djtasks.add.enqueue(1, 2, key="admin")
    url = reverse("admin:django_taskshed_task_change", args=[result.id])
    page = admin_client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert "callback" not in form.fields and "kwargs" not in form.fields  # read-only
    assert "tests.testapp.djtasks.add" in page.content.decode()


@pytest.mark.django_db(transaction=True)  # the whole flush: it logs in (package_apps())
def test_the_admin_edits_a_callback_task_whose_arguments_look_like_a_django_tasks(admin_client):
    from django.urls import reverse

    Task.objects.create(
        task_id="lookalike", callback="record", run_at=timezone.now(),
        kwargs={"args": [1], "kwargs": {}},
    )  # fmt: skip
    page = admin_client.get(reverse("admin:django_taskshed_task_change", args=["lookalike"]))
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert "callback" in form.fields and "kwargs" in form.fields  # editable


def test_the_running_result_names_the_task_as_it_was_enqueued():
    """bound_task's copies (no second validation) equal what Task.using() gives."""
    from django_taskshed.tasks_framework.running import bound_task

    later = timezone.now() + timedelta(minutes=5)
    enqueued = djtasks.add.using(priority=3, queue_name="mail", run_after=later)
    bound = bound_task(djtasks.add, "default", "mail", 3, later)
    assert bound == enqueued and bound.run_after == later and bound.func is djtasks.add.func
    assert bound_task(djtasks.add, "default", "default", 0, None) is djtasks.add


# --- what a run costs when no one looks ---------------------------------------------------------


@pytest.fixture
def tasks_log_level():
    """Sets the framework logger's level for one test (Django 6 logs it at INFO by default)."""
    logger = compat.tasks_logger
    before = logger.level

    def set_level(level: int) -> None:
        logger.setLevel(level)

    yield set_level
    logger.setLevel(before)


@pytest.fixture
def results_built(monkeypatch):
    """Counts the TaskResults built for runs under way."""
    from django_taskshed.tasks_framework import running

    built = []
    real = running.running_result

    def counting(*args, **kwargs):
        built.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(running, "running_result", counting)
    return built


async def test_a_success_no_one_would_see_builds_no_result_and_sends_nothing(
    tasks_log_level, results_built
):
    tasks_log_level(logging.WARNING)
    sync_result = await djtasks.add.aenqueue(1, 2, key="quiet-sync")
    async_result = await djtasks.add_async.aenqueue(3, 4, key="quiet-async")
    await run_until(lambda: _all_finished(sync_result, async_result), "both results")
    assert (sync_result.return_value, async_result.return_value) == (3, {"sum": 7})
    assert results_built == []


async def test_receivers_and_info_logging_see_every_run(tasks_log_level, results_built, caplog):
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.id, task_result.status))

    tasks_log_level(logging.WARNING)
    compat.task_started.connect(receiver)
    compat.task_finished.connect(receiver)
    try:
        result = await djtasks.add_async.aenqueue(1, 1, key="watched")
        await run_until(lambda: finished(result), "the watched run")
    finally:
        compat.task_started.disconnect(receiver)
        compat.task_finished.disconnect(receiver)
    assert seen == [
        (TaskShedBackend, result.id, Status.RUNNING),
        (TaskShedBackend, result.id, Status.SUCCESSFUL),
    ]
    tasks_log_level(logging.INFO)
    with caplog.at_level(logging.INFO, logger=compat.tasks_logger.name):
        logged = await djtasks.add.aenqueue(2, 2, key="logged")
        await run_until(lambda: finished(logged), "the logged run")
    states = [r.getMessage().rsplit("=", 1)[1] for r in caplog.records if logged.id in r.message]
    assert states == [Status.RUNNING, Status.SUCCESSFUL]
    assert len(results_built) == 2


@override_settings(TASKSHED={"MAX_RETRIES": 0})
async def test_a_failure_is_logged_with_its_exception_when_successes_are_not(
    tasks_log_level, caplog
):
    tasks_log_level(logging.WARNING)
    with caplog.at_level(logging.WARNING, logger=compat.tasks_logger.name):
        result = await djtasks.fail_until.aenqueue(key="loud", attempts=5)
        await run_until(lambda: finished(result), "the failed run")
    (record,) = [r for r in caplog.records if r.name == compat.tasks_logger.name]
    assert record.levelno == logging.ERROR and record.getMessage().endswith("state=FAILED")
    assert result.id in record.getMessage() and record.exc_info[0] is ValueError
    assert result.status == Status.FAILED


def test_a_retry_reads_its_earlier_workers_from_the_backends_database(monkeypatch):
    """A unit: ``OPTIONS["DATABASE"]`` of the backend the task was enqueued on is read."""
    from types import SimpleNamespace

    from django_taskshed.datastores import ClaimedTask
    from django_taskshed.tasks_framework import results, running
    from django_taskshed.tasks_framework.payload import Payload
    from django_taskshed.workers.current import CurrentRun, current_run

    read = []
    monkeypatch.setattr(
        results, "attempt_rows", lambda task_id, using: read.append((task_id, using)) or []
    )
    backends = {"other": SimpleNamespace(database="tasks_db")}
    monkeypatch.setattr(compat, "task_backends", backends)
    now = timezone.now()
    options = {"backend": "other", "queue_name": "default", "priority": 0, "run_after": None,
               "enqueued_at": now.isoformat()}  # fmt: skip
    claim = ClaimedTask(
        task_id="t1", callback="c", kwargs={}, run_at=now, run_type="once", interval=None,
        coalesce=False, max_retries=None, timeout=None, attempts=2, updated_at=now, cron="",
        timezone="", on_nonexistent="shift", on_ambiguous="first", group_id=None, priority=0,
        abandoned_by=None, claim_token="tok",
    )  # fmt: skip
    token = current_run.set(CurrentRun(claim, now, "w2"))
    monkeypatch.setattr(running, "running_result", lambda task, payload, earlier: earlier)
    try:
        assert running.result_of(djtasks.add, Payload([], {}, options)) == ["", ""]
    finally:
        current_run.reset(token)
    assert read == [("t1", "tasks_db")]


async def test_a_task_whose_worker_died_past_its_retries_fails_with_that_error():
    from asgiref.sync import sync_to_async

    from tests.test_callback_errors import die_holding

    result = await djtasks.add_async.aenqueue(1, 2, key="poisoned")  # MAX_RETRIES: 0
    await sync_to_async(die_holding)(result.id, 1)
    await run_until(lambda: finished(result), "the task given up")
    assert (result.status, result.attempts, result.worker_ids) == (
        Status.FAILED, 1, ["dead-worker-0"],
    )  # fmt: skip
    (error,) = result.errors
    assert error.exception_class_path == "django_taskshed.exceptions.WorkerDiedError"
    assert error.traceback.endswith("the worker running it died 1 time")
    assert not await Execution.objects.filter(key="poisoned").aexists()
