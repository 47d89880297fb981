"""``manage.py taskshedstatus``: the counts per queue, the workers, the most overdue task, recurring
tasks' last successes, the ``--json`` schema and every ``--check`` threshold both ways."""

import io
import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_taskshed.models import Task, TaskRun, WorkerRecord

pytestmark = pytest.mark.django_db

COUNT_KEYS = {"tasks", "due", "overdue", "running", "retrying", "paused", "failed"}


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def make_task(task_id: str, **fields: Any) -> Task:
    fields.setdefault("run_at", ago(-3600))
    created_at = fields.pop("created_at", None)
    task = Task.objects.create(task_id=task_id, callback="record", **fields)
    if created_at is not None:
        Task.objects.filter(pk=task_id).update(created_at=created_at)
    return task


def make_worker(worker_id: str, expires_in: float = 30, **fields: Any) -> WorkerRecord:
    now = timezone.now()
    defaults: dict[str, Any] = {"hostname": "box", "pid": 42, "callbacks": ["record", "add"]}
    return WorkerRecord.objects.create(
        worker_id=worker_id, started_at=now - timedelta(minutes=5),
        heartbeat_at=now - timedelta(seconds=2), expires_at=now + timedelta(seconds=expires_in),
        **{**defaults, **fields},
    )  # fmt: skip


def make_run(task_id: str, outcome: str, started_seconds_ago: float) -> TaskRun:
    started = ago(started_seconds_ago)
    return TaskRun.objects.create(
        task_id=task_id, callback="record", scheduled_for=started, started_at=started,
        finished_at=started + timedelta(seconds=1), outcome=outcome,
    )  # fmt: skip


def status(*args: str) -> str:
    out = io.StringIO()
    call_command("taskshedstatus", *args, stdout=out)
    return out.getvalue()


def status_json(*args: str) -> dict[str, Any]:
    return json.loads(status("--json", *args))  # type: ignore[no-any-return]


def failing(*args: str) -> str:
    """The output of a check that must fail, with exit code 1."""
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("taskshedstatus", "--check", *args, stdout=out)
    assert exited.value.code == 1
    return out.getvalue()


@pytest.fixture
def every_status() -> None:
    """In queue "mail": one task of each status, two of them due; one in "default" overdue."""
    make_task("due", queue="mail", run_at=ago(10))
    make_task("overdue", queue="default", run_at=ago(600))
    make_task("running", queue="mail", run_at=ago(5000), lease_owner="w", lease_expires_at=ago(-60))
    make_task("retrying", queue="mail", run_at=ago(120), attempts=2)
    make_task("paused", queue="mail", run_at=ago(9000), paused=True, paused_at=ago(9000))
    make_task("failed", queue="mail", run_at=ago(9000), failed_at=ago(100), attempts=1)
    make_task("future", queue="mail")


def test_counts_each_status_per_queue_and_in_total(every_status):
    document = status_json()
    queues = {entry["queue"]: entry for entry in document["queues"]}
    assert queues["mail"] == {
        "queue": "mail", "tasks": 6, "due": 2, "overdue": 1, "running": 1, "retrying": 1,
        "paused": 1, "failed": 1,
    }  # fmt: skip
    assert queues["default"] == {
        "queue": "default", "tasks": 1, "due": 1, "overdue": 1, "running": 0, "retrying": 0,
        "paused": 0, "failed": 0,
    }  # fmt: skip
    assert document["totals"] == {
        "tasks": 7, "due": 3, "overdue": 2, "running": 1, "retrying": 1, "paused": 1, "failed": 1,
    }  # fmt: skip


def test_grace_decides_what_is_overdue(every_status):
    assert status_json("--grace", "0")["totals"]["overdue"] == 3
    assert status_json("--grace", "700")["totals"]["overdue"] == 0


def test_the_most_overdue_task_is_the_oldest_due_one_and_by_how_much(every_status):
    overdue = status_json()["most_overdue"]
    assert overdue["task_id"] == "overdue"  # older paused, failed and running ones are not due
    assert overdue["queue"] == "default"
    assert 599 <= overdue["overdue_seconds"] < 660
    assert "most overdue: overdue (record, queue default)" in status()


def test_nothing_due_has_no_most_overdue_task():
    make_task("future")
    assert status_json()["most_overdue"] is None
    assert "most overdue: none (no task is due)" in status()


def test_live_workers_are_listed_with_their_callbacks_and_queues_unknown():
    make_worker("w-1", hostname="alpha", pid=101, running=3)
    make_worker("w-gone", expires_in=-1)
    [worker] = status_json()["workers"]
    assert worker["worker_id"] == "w-1"
    assert (worker["hostname"], worker["pid"], worker["running"]) == ("alpha", 101, 3)
    assert worker["callbacks"] == ["add", "record"]
    assert worker["queues"] is None  # WorkerRecord does not record them
    assert 1 <= worker["heartbeat_age_seconds"] < 60
    text = status()
    assert "workers: 1 live" in text and "w-gone" not in text
    assert "callbacks (queues not recorded)" in text
    assert re.search(r"\n  w-1 +alpha +101 +add, record +3 +\d s ago\n", text)


def test_recurring_tasks_last_success_from_the_task_or_the_history():
    recurring = {"run_type": "recurring", "interval": timedelta(minutes=1)}
    # Its last run succeeded: attempts is 0 and last_run_at is that run.
    make_task("fine", **recurring, last_run_at=ago(100), attempts=0)
    # Its last runs failed: the last success is in the history, behind the failures.
    make_task("failing", **recurring, last_run_at=ago(10), attempts=2)
    make_run("failing", "succeeded", 500)
    make_run("failing", "failed", 70)
    make_run("failing", "failed", 10)
    make_run("other", "succeeded", 5)
    make_task("never", **recurring, created_at=ago(300))
    make_task("held", **recurring, paused=True, created_at=ago(90_000))
    make_task("cron", run_type="cron", cron="@daily", timezone="UTC", last_run_at=ago(50))
    make_task("one-off", last_run_at=ago(7))
    rows = {row["task_id"]: row for row in status_json()["recurring"]}
    assert list(rows) == ["failing", "never", "fine", "cron", "held"]  # active, stalest first
    assert rows["fine"]["last_success_from"] == "task"
    assert 100 <= rows["fine"]["stale_seconds"] < 160
    assert rows["failing"]["last_success_from"] == "history"
    assert 500 <= rows["failing"]["stale_seconds"] < 560
    assert rows["never"]["last_success_at"] is None and rows["never"]["last_success_from"] is None
    assert 300 <= rows["never"]["stale_seconds"] < 360  # since it was created
    assert rows["cron"]["run_type"] == "cron" and rows["held"]["paused"] is True
    text = status()
    assert "recurring tasks: 5 (active first, the stalest first)" in text
    assert "never (created" in text


def check_world() -> None:
    """A task 600 s overdue, two failed, one live worker, an active recurring task 500 s stale
    and a paused one a day stale."""
    make_task("late", run_at=ago(600))
    make_task("broken-1", failed_at=ago(10))
    make_task("broken-2", failed_at=ago(10))
    make_worker("w-1")
    recurring = {"run_type": "recurring", "interval": timedelta(minutes=1)}
    make_task("stale", **recurring, last_run_at=ago(500))
    make_task("held", **recurring, paused=True, created_at=ago(86_400))


THRESHOLD_CASES = [
    # flag, a limit that passes, one that fails, the failure's text
    ("--max-overdue", "700", "300", "max-overdue: task late is 6"),
    ("--max-failed", "2", "1", "max-failed: 2 failed task(s) (limit 1)"),
    ("--min-workers", "1", "2", "min-workers: 1 live worker(s) (minimum 2)"),
    ("--stale-after", "550", "400", "stale-after: recurring task stale has not succeeded for 5"),
]


@pytest.mark.parametrize(("flag", "passing", "failing_limit", "message"), THRESHOLD_CASES)
def test_each_threshold_passes_and_fails(flag, passing, failing_limit, message):
    check_world()
    assert "check: OK" in status("--check", flag, passing)
    assert status_json("--check", flag, passing)["check"] == {"passed": True, "failures": []}
    text = failing(flag, failing_limit)
    assert "check: FAILED (1)" in text
    assert f"FAILED {message}" in text
    document = json.loads(failing("--json", flag, failing_limit))
    [failure] = document["check"]["failures"]
    assert document["check"]["passed"] is False
    assert failure["threshold"] == flag[2:]
    assert failure["limit"] == float(failing_limit)
    assert failure["message"].startswith(message)


def test_a_paused_recurring_task_is_not_stale():
    check_world()  # "held" has not run for a day, but it is paused
    assert "check: OK" in status("--check", "--stale-after", "550")


def test_every_failed_threshold_has_its_line():
    check_world()
    text = failing(
        "--max-overdue", "1", "--max-failed", "0", "--min-workers", "5", "--stale-after", "1"
    )
    failed = [line for line in text.splitlines() if line.startswith("FAILED ")]
    assert [line.split(":")[0] for line in failed] == [
        "FAILED max-overdue", "FAILED max-failed", "FAILED min-workers", "FAILED stale-after",
    ]  # fmt: skip


def test_an_empty_table_passes_every_threshold_but_workers():
    assert "check: OK" in status(
        "--check", "--max-overdue", "0", "--max-failed", "0", "--stale-after", "0"
    )
    assert "min-workers: 0 live worker(s) (minimum 1)" in failing("--min-workers", "1")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--check"], "--check needs at least one threshold"),
        (["--max-failed", "3"], "--max-failed only apply with --check"),
        (["--check", "--max-failed", "-1"], "argument --max-failed: invalid non-negative int"),
        (["--check", "--stale-after", "soon"], "argument --stale-after: invalid non-negative"),
        (["--grace", "-5"], "argument --grace: invalid non-negative float"),
        (["--database", "nowhere"], "no database 'nowhere' in DATABASES"),
    ],
)
def test_bad_arguments_are_command_errors(args, error):
    with pytest.raises(CommandError, match=error) as raised:
        status(*args)
    if not error.startswith("argument"):
        assert raised.value.returncode == 2


def test_json_schema(every_status):
    make_worker("w-1")
    make_task("r", run_type="recurring", interval=timedelta(minutes=1), last_run_at=ago(30))
    document = json.loads(failing("--json", "--max-failed", "0"))
    assert set(document) == {
        "now", "grace_seconds", "workers", "queues", "totals", "most_overdue", "recurring",
        "recurring_truncated", "query_seconds", "check",
    }  # fmt: skip
    datetime.fromisoformat(document["now"])
    assert isinstance(document["grace_seconds"], float)
    [worker] = document["workers"]
    assert types(worker) == {
        "worker_id": str, "hostname": str, "pid": int, "callbacks": list, "queues": type(None),
        "heartbeat_at": str, "heartbeat_age_seconds": float, "running": int,
    }  # fmt: skip
    for entry in document["queues"]:
        assert set(entry) == COUNT_KEYS | {"queue"} and isinstance(entry["queue"], str)
        assert all(type(entry[key]) is int for key in COUNT_KEYS)
    assert types(document["totals"]) == dict.fromkeys(COUNT_KEYS, int)
    assert types(document["most_overdue"]) == {
        "task_id": str, "callback": str, "queue": str, "run_at": str, "overdue_seconds": float,
    }  # fmt: skip
    [recurring] = document["recurring"]
    assert types(recurring) == {
        "task_id": str, "callback": str, "queue": str, "run_type": str, "paused": bool,
        "failed": bool, "last_success_at": str, "last_success_from": str, "created_at": str,
        "stale_seconds": float,
    }  # fmt: skip
    assert document["recurring_truncated"] is False
    assert types(document["query_seconds"]) == dict.fromkeys(
        ["workers", "counts", "most_overdue", "recurring"], float
    )
    assert document["check"]["passed"] is False
    [failure] = document["check"]["failures"]
    assert types(failure) == {"threshold": str, "limit": int, "value": int, "message": str}


def test_without_check_the_json_check_is_null():
    assert status_json()["check"] is None


def types(document: dict[str, Any]) -> dict[str, type]:
    return {key: type(value) for key, value in document.items()}


def test_the_status_is_four_queries(every_status, django_assert_num_queries):
    make_worker("w-1")
    make_task("r", run_type="recurring", interval=timedelta(minutes=1), attempts=1)
    with django_assert_num_queries(4):
        status("--json")
