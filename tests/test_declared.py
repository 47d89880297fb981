"""Schedules declared in code (``TASKSHED["SCHEDULES"]``, ``@register_callback(schedule=)``):
synced to the task table on ``migrate`` and at worker start, idempotently, by racing
processes too."""

import subprocess
import sys
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from django_taskshed.checks import check_schedules
from django_taskshed.declared import sync_schedules
from django_taskshed.models import Task
from django_taskshed.registry import register_callback
from django_taskshed.schedulers import SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from tests.workerprocs import ROOT, worker_env

UTC = dt_timezone.utc
NIGHTLY = {"callback": "record", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}
EVERY_MINUTE = {"callback": "record", "interval": 60, "kwargs": {"key": "m"}}


def declared(**schedules) -> override_settings:
    return override_settings(TASKSHED={"SCHEDULES": schedules})


def rows() -> dict[str, Task]:
    return {task.task_id: task for task in Task.objects.all()}


@pytest.mark.django_db
def test_sync_writes_each_schedule_marked_as_declared():
    with declared(nightly=NIGHTLY, minutely=EVERY_MINUTE):
        report = sync_schedules()
    assert (report.added, report.updated, report.removed) == (2, 0, 0)
    stored = rows()
    nightly, minutely = stored["nightly"], stored["minutely"]
    assert nightly.declared_in_code and minutely.declared_in_code
    assert (nightly.run_type, nightly.cron, nightly.timezone) == (
        "cron",
        "30 2 * * *",
        "Europe/Berlin",
    )
    assert nightly.run_at == nightly.next_runs(timezone.now() - timedelta(seconds=5), 1)[0]
    assert (minutely.run_type, minutely.interval) == ("recurring", timedelta(minutes=1))
    assert minutely.kwargs == {"key": "m"}
    assert abs(minutely.run_at - timezone.now()) < timedelta(seconds=30)


@pytest.mark.django_db
def test_a_second_sync_writes_nothing(django_assert_max_num_queries):
    with declared(nightly=NIGHTLY, minutely=EVERY_MINUTE):
        sync_schedules()
        before = {task_id: task.updated_at for task_id, task in rows().items()}
        with django_assert_max_num_queries(4):  # read, (lock), delete of what left the code
            report = sync_schedules()
    assert not report.changed
    assert {task_id: task.updated_at for task_id, task in rows().items()} == before


@pytest.mark.django_db
def test_a_changed_schedule_is_updated_and_keeps_its_paused_state():
    with declared(nightly=NIGHTLY, minutely=EVERY_MINUTE):
        sync_schedules()
    SyncScheduler().pause_tasks(task_ids=["nightly", "minutely"])
    minutely_run_at = rows()["minutely"].run_at
    weekly = {**NIGHTLY, "cron": "0 9 * * MON"}
    with declared(nightly=weekly, minutely={**EVERY_MINUTE, "kwargs": {"key": "new"}}):
        report = sync_schedules()
    assert (report.added, report.updated, report.removed) == (0, 2, 0)
    nightly, minutely = rows()["nightly"], rows()["minutely"]
    assert nightly.paused and minutely.paused
    assert nightly.cron == "0 9 * * MON"
    local = nightly.run_at.astimezone(ZoneInfo(nightly.timezone))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)  # a new schedule: a new run_at
    assert minutely.kwargs == {"key": "new"}
    assert minutely.run_at == minutely_run_at  # same schedule: its next run stays


@pytest.mark.django_db
def test_a_schedule_removed_from_code_is_deleted_and_other_tasks_stay():
    SyncScheduler().add_task("record", task_id="by-hand", kwargs={"key": "h"})
    with declared(nightly=NIGHTLY, minutely=EVERY_MINUTE):
        sync_schedules()
    with declared(minutely=EVERY_MINUTE):
        report = sync_schedules()
    assert report.removed == 1
    assert sorted(rows()) == ["by-hand", "minutely"]
    assert not rows()["by-hand"].declared_in_code


@pytest.mark.django_db
def test_a_schedule_without_a_zone_keeps_the_zone_it_was_made_in():
    plain = {"callback": "record", "cron": "0 8 * * *"}
    with override_settings(TIME_ZONE="America/New_York"), declared(daily=plain):
        sync_schedules()
    first = rows()["daily"]
    assert first.timezone == "America/New_York"
    with override_settings(TIME_ZONE="Asia/Tokyo"), declared(daily=plain):
        assert not sync_schedules().changed
    assert rows()["daily"].timezone == "America/New_York"
    assert rows()["daily"].run_at == first.run_at


@pytest.mark.django_db
def test_a_decorator_declares_a_schedule_named_after_its_callback(empty_registry):
    @register_callback("digest", schedule={"cron": "@daily", "timezone": "UTC"})
    def digest():
        pass

    with declared():
        sync_schedules()
    task = rows()["digest"]
    assert (task.callback, task.cron, task.declared_in_code) == ("digest", "@daily", True)
    assert task.run_at == datetime.combine(
        timezone.now().date() + timedelta(days=1), datetime.min.time(), UTC
    )


@pytest.mark.django_db(transaction=True)
def test_migrate_syncs_the_declared_schedules():
    with declared(nightly=NIGHTLY):
        call_command("migrate", verbosity=0)
    assert rows()["nightly"].declared_in_code


@pytest.mark.django_db(transaction=True)
async def test_a_starting_worker_syncs_the_declared_schedules():
    worker = EventDrivenWorker({"record": print}, poll_interval=60)
    with declared(nightly=NIGHTLY):
        await worker.start()
        await worker.shutdown()
    assert [task.task_id async for task in Task.objects.filter(declared_in_code=True)] == [
        "nightly"
    ]


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({**NIGHTLY, "cron": "30 25 * * *"}, "bad hour field '25'"),
        ({**NIGHTLY, "timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ({**NIGHTLY, "on_ambiguous": "never"}, "on_ambiguous must be one of"),
        ({**NIGHTLY, "interval": 60}, "either cron or interval"),
        ({"callback": "record"}, "either cron or interval"),
        ({"cron": "@daily"}, "needs a callback"),
        ({**NIGHTLY, "colour": "blue"}, "unknown key(s) ['colour']"),
        ({**EVERY_MINUTE, "interval": "an hour"}, "interval must be a timedelta or a number"),
        ({**NIGHTLY, "callback": "nobody"}, "callback 'nobody' is not registered"),
        ("@daily", "a schedule must be a dict"),
    ],
)
def test_check_names_the_schedule_and_what_is_wrong(definition, message):
    with declared(job=definition):
        errors = check_schedules()
    assert errors, f"no error for {definition!r}"
    assert all(error.id == "django_taskshed.E006" for error in errors)
    assert any("TASKSHED['SCHEDULES']['job']" in e.msg and message in e.msg for e in errors), [
        e.msg for e in errors
    ]


def test_check_accepts_good_schedules():
    with declared(
        nightly=NIGHTLY, minutely=EVERY_MINUTE, daily={"callback": "record", "cron": "@daily"}
    ):
        assert check_schedules() == []


# --- racing processes --------------------------------------------------------------------------

FIFTY = {
    f"job-{i:02d}": {
        "callback": "record",
        "cron": "0 0 1 1 *",
        "timezone": "UTC",
        "kwargs": {"key": f"job-{i:02d}"},
    }
    for i in range(50)
}


@pytest.mark.slow
def test_two_workers_and_migrate_racing_leave_exactly_the_declared_rows(worker_procs):
    taskshed = {"SCHEDULES": FIFTY}
    log_path = worker_procs.logdir / "migrate.log"
    with log_path.open("wb") as log:
        migrate = subprocess.Popen(
            [sys.executable, "-m", "django", "migrate", "--no-input"],
            cwd=ROOT, env=worker_env(taskshed), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        workers = worker_procs.start_many(
            ["sync-1", "sync-2"], "--poll-interval", "60", taskshed=taskshed
        )
        assert migrate.wait(60) == 0, log_path.read_text()
    assert sorted(rows()) == sorted(FIFTY)
    assert all(task.declared_in_code for task in rows().values())

    # In code: job-49 removed, job-00 (paused meanwhile) and job-01 changed.
    SyncScheduler().pause_tasks(task_ids=["job-00"])
    changed = {**FIFTY, "job-00": {**FIFTY["job-00"], "kwargs": {"key": "new-0"}}}
    changed["job-01"] = {**FIFTY["job-01"], "cron": "0 12 * * *"}
    del changed["job-49"]
    for worker in workers:
        worker.stop()
    worker_procs.start("sync-3", "--poll-interval", "60", taskshed={"SCHEDULES": changed})

    stored = rows()
    assert sorted(stored) == sorted(changed)
    assert stored["job-00"].paused and stored["job-00"].kwargs == {"key": "new-0"}
    assert stored["job-01"].cron == "0 12 * * *" and stored["job-01"].run_at.hour == 12
    assert not stored["job-02"].paused and stored["job-02"].cron == "0 0 1 1 *"
