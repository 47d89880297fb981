"""The test clock (``django_taskshed.testing``): interval, cron and retry schedules run as it
moves, across the changes of the clocks, with the worker's runner and no sleep."""

import asyncio
import re
import time
import unittest
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import TestCase, override_settings
from django.utils import timezone

from django_taskshed import testing
from django_taskshed.models import Task, TaskExecutionTime, TaskRun
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.testing import TaskshedClockMixin, taskshed_clock

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")
TESTING_GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "testing.md"

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]


class Calls:
    """Callbacks that record the clock's time at each call; ``flaky`` fails its first calls."""

    def __init__(self, failures: int = 0):
        self.at: list[datetime] = []
        self.failures = failures

    def tick(self) -> str:
        self.at.append(timezone.now())
        return "ok"

    async def atick(self) -> str:
        return self.tick()

    def flaky(self) -> str:
        self.at.append(timezone.now())
        if len(self.at) <= self.failures:
            raise ConnectionError(f"attempt {len(self.at)} failed")
        return "ok"

    def map(self) -> dict:
        return {"tick": self.tick, "atick": self.atick, "flaky": self.flaky}


def local(moments) -> list[str]:
    return [moment.astimezone(BERLIN).isoformat() for moment in moments]


def history(task_id: str) -> list[tuple]:
    rows = TaskRun.objects.filter(task_id=task_id).order_by("scheduled_for", "id")
    return list(rows.values_list("outcome", "attempt", "scheduled_for", "started_at"))


# --- The frozen "now" -----------------------------------------------------------------------


def test_now_is_frozen_inside_the_block_and_real_again_after_it():
    start = datetime(2026, 3, 29, 1, 59, tzinfo=BERLIN)
    with taskshed_clock(start) as clock:
        assert clock.now == start
        time.sleep(0.01)
        assert timezone.now() == start  # what the schedulers, datastore and runner read
        assert clock.advance(minutes=2) == []
        assert local([timezone.now()]) == ["2026-03-29T03:01:00+02:00"]  # across the gap
        clock.jump(hours=1)
        assert clock.now == start.astimezone(UTC) + timedelta(minutes=62)  # elapsed time
    assert abs(timezone.now() - testing.real_now()) < timedelta(seconds=5)


def test_a_naive_start_is_read_in_the_current_time_zone():
    with timezone.override(BERLIN), taskshed_clock(datetime(2026, 10, 25, 12, 0)) as clock:
        assert local([clock.now]) == ["2026-10-25T12:00:00+01:00"]


def test_the_clock_only_moves_forward():
    with taskshed_clock(testing.real_now()) as clock:
        with pytest.raises(ValueError, match="only moves forward"):
            clock.advance(seconds=-1)
        with pytest.raises(ValueError, match="only moves forward"):
            clock.jump(days=-1)


def test_the_default_run_at_and_the_first_cron_run_are_read_from_the_clock():
    start = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    with taskshed_clock(start):
        once = SyncScheduler().add_task("tick")
        cron = SyncScheduler().add_task("tick", run_type="cron", cron="@daily", timezone="UTC")
    assert once.run_at == start
    assert cron.run_at == datetime(2026, 3, 29, tzinfo=ZoneInfo("UTC"))


# --- Interval schedules -----------------------------------------------------------------------


@pytest.mark.parametrize("coalesce", [True, False])
def test_an_interval_task_runs_at_each_occurrence_across_spring_forward(coalesce):
    calls = Calls()
    start = datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN)
    with taskshed_clock(start, callbacks=calls.map()) as clock:
        task = SyncScheduler().add_task(
            "tick",
            run_at=start + timedelta(hours=1),
            run_type="recurring",
            interval=timedelta(hours=1),
            coalesce=coalesce,
        )
        ran = clock.advance(hours=4)
        assert local([clock.now]) == ["2026-03-29T05:30:00+02:00"]

    expected = [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:30:00+02:00",  # one hour after 01:30 +01:00: the clocks went forward
        "2026-03-29T04:30:00+02:00",
        "2026-03-29T05:30:00+02:00",
    ]
    assert local(run.scheduled_for for run in ran) == expected
    assert local(calls.at) == expected  # the callback read the clock at its run
    assert {(run.task_id, run.outcome, run.attempt) for run in ran} == {
        (task.task_id, "succeeded", 1)
    }
    assert [row[:2] for row in history(task.task_id)] == [("succeeded", 1)] * 4
    assert all(row[2] == row[3] for row in history(task.task_id))  # started on time
    assert set(TaskRun.objects.values_list("worker_id", flat=True)) == {"taskshed-clock"}
    assert local([Task.objects.get().run_at]) == ["2026-03-29T06:30:00+02:00"]


def test_an_occurrence_at_the_end_of_the_step_runs_and_the_next_step_does_not_repeat_it():
    calls = Calls()
    start = datetime(2026, 1, 1, tzinfo=BERLIN)
    with taskshed_clock(start, callbacks=calls.map()) as clock:
        SyncScheduler().add_task("tick", run_type="recurring", interval=timedelta(minutes=10))
        assert len(clock.run_due()) == 1  # run_at defaulted to now: due at once
        assert clock.run_due() == []
        assert len(clock.advance(minutes=10)) == 1
        assert clock.advance(minutes=9) == []
        assert len(clock.advance(minutes=1)) == 1
    assert len(calls.at) == 3


def test_a_jump_leaves_the_missed_occurrences_to_coalescing():
    calls = Calls()
    start = datetime(2026, 1, 1, tzinfo=BERLIN)
    with taskshed_clock(start, callbacks=calls.map()) as clock:
        task = SyncScheduler().add_task(
            "tick",
            run_at=start + timedelta(hours=1),
            run_type="recurring",
            interval=timedelta(hours=1),
        )
        clock.jump(hours=3, minutes=30)  # as if no worker ran
        ran = clock.run_due()
        assert [(run.scheduled_for, run.ran_at) for run in ran] == [
            (start + timedelta(hours=1), clock.now)
        ]
        assert Task.objects.get().run_at == start + timedelta(hours=4)
    coalesced = TaskRun.objects.get(task_id=task.task_id, outcome="coalesced")
    assert (coalesced.missed, coalesced.missed_from, coalesced.missed_until) == (
        2,
        start + timedelta(hours=2),
        start + timedelta(hours=3),
    )


def test_without_coalescing_a_jump_runs_each_missed_occurrence_once_in_order():
    calls = Calls()
    start = datetime(2026, 1, 1, tzinfo=BERLIN)
    with taskshed_clock(start, callbacks=calls.map()) as clock:
        SyncScheduler().add_task(
            "tick",
            run_at=start + timedelta(hours=1),
            run_type="recurring",
            interval=timedelta(hours=1),
            coalesce=False,
        )
        clock.jump(hours=3, minutes=30)
        ran = clock.run_due()
    assert [run.scheduled_for for run in ran] == [start + timedelta(hours=h) for h in (1, 2, 3)]
    assert not TaskRun.objects.filter(outcome="coalesced").exists()


def test_tasks_run_in_the_order_they_fall_due_and_new_ones_are_picked_up():
    order: list[str] = []
    start = datetime(2026, 1, 1, tzinfo=BERLIN)

    def first():
        order.append("first")
        SyncScheduler().add_task("third", run_at=timezone.now() + timedelta(minutes=1))

    callbacks = {
        "first": first,
        "second": lambda: order.append("second"),
        "third": lambda: order.append("third"),
    }
    with taskshed_clock(start, callbacks=callbacks) as clock:
        SyncScheduler().add_task("second", run_at=start + timedelta(minutes=5))
        SyncScheduler().add_task("first", run_at=start + timedelta(minutes=3))
        ran = clock.advance(minutes=10)
    assert order == ["first", "third", "second"]
    assert [run.scheduled_for - start for run in ran] == [timedelta(minutes=m) for m in (3, 4, 5)]


# --- Cron schedules across the changes of the clocks ----------------------------------------

CRON_CASES = [
    # (start, policy keyword, expected runs over three days)
    (
        "2026-03-27T12:00:00+01:00",
        {"on_nonexistent": "shift"},
        ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    (
        "2026-03-27T12:00:00+01:00",
        {"on_nonexistent": "skip"},
        ["2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00"],
    ),
    (
        "2026-10-23T12:00:00+02:00",
        {"on_ambiguous": "first"},
        ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "2026-10-23T12:00:00+02:00",
        {"on_ambiguous": "second"},
        ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "2026-10-23T12:00:00+02:00",
        {"on_ambiguous": "both"},
        [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-26T02:30:00+01:00",
        ],
    ),
]


@pytest.mark.parametrize(("start", "policy", "expected"), CRON_CASES)
@pytest.mark.parametrize("coalesce", [True, False])
def test_a_cron_task_runs_at_each_occurrence_by_its_daylight_saving_policy(
    start, policy, expected, coalesce
):
    calls = Calls()
    with taskshed_clock(datetime.fromisoformat(start), callbacks=calls.map()) as clock:
        task = SyncScheduler().add_task(
            "atick", run_type="cron", cron="30 2 * * *", timezone="Europe/Berlin",
            coalesce=coalesce, **policy,
        )  # fmt: skip
        ran = clock.advance(days=3)
    assert local(run.scheduled_for for run in ran) == expected
    assert local(calls.at) == expected
    assert local(row[2] for row in history(task.task_id)) == expected


def test_advancing_in_small_steps_runs_the_same_occurrences_as_one_big_step():
    calls = Calls()
    with taskshed_clock(
        datetime(2026, 10, 24, 23, 0, tzinfo=BERLIN), callbacks=calls.map()
    ) as clock:
        SyncScheduler().add_task(
            "tick", run_type="cron", cron="*/30 * * * *", timezone="Europe/Berlin"
        )
        for _ in range(12):
            clock.advance(minutes=25)
    assert local(calls.at) == [
        "2026-10-24T23:30:00+02:00",
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the repeated hour, by elapsed time
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


# --- Retries --------------------------------------------------------------------------------


@override_settings(TASKSHED={"RETRY_BACKOFF": 5.0})
def test_a_failing_task_is_retried_with_backoff_across_spring_forward_then_succeeds():
    calls = Calls(failures=2)
    start = datetime(2026, 3, 29, 1, 59, 50, tzinfo=BERLIN)
    with taskshed_clock(start, callbacks=calls.map()) as clock:
        SyncScheduler().add_tasks([Task(task_id="flaky", callback="flaky", max_retries=3)])
        first = clock.run_due()
        assert [(run.outcome, run.attempt) for run in first] == [("failed", 1)]
        assert first[0].error == "ConnectionError: attempt 1 failed"
        assert local([Task.objects.get().run_at]) == ["2026-03-29T01:59:55+01:00"]
        assert clock.advance(seconds=4) == []
        ran = clock.advance(seconds=20)
        assert not Task.objects.exists()  # a one-off task is deleted once it succeeds
    assert [(run.outcome, run.attempt) for run in ran] == [("failed", 2), ("succeeded", 3)]
    backoff = [
        "2026-03-29T01:59:50+01:00",
        "2026-03-29T01:59:55+01:00",
        "2026-03-29T03:00:05+02:00",
    ]
    assert local(calls.at) == backoff  # 5 s, then 10 s: across the gap in local time
    assert [(outcome, attempt) for outcome, attempt, *_ in history("flaky")] == [
        ("failed", 1),
        ("failed", 2),
        ("succeeded", 3),
    ]


@override_settings(TASKSHED={"RETRY_BACKOFF": 60.0})
def test_a_task_that_runs_out_of_retries_is_left_failed():
    calls = Calls(failures=10)
    with taskshed_clock(datetime(2026, 1, 1, tzinfo=BERLIN), callbacks=calls.map()) as clock:
        SyncScheduler().add_tasks([Task(task_id="flaky", callback="flaky", max_retries=1)])
        ran = clock.advance(hours=1)
    assert [(run.outcome, run.attempt) for run in ran] == [("failed", 1), ("failed", 2)]
    assert Task.objects.get().failed_at == datetime(2026, 1, 1, 0, 1, tzinfo=BERLIN)


def test_an_unknown_callback_fails_the_task_at_once():
    with taskshed_clock(datetime(2026, 1, 1, tzinfo=BERLIN), callbacks={}) as clock:
        SyncScheduler().add_task("missing")
        (run,) = clock.run_due()
    assert run.outcome == "failed"
    assert "no callback named 'missing'" in run.error


def test_a_callback_that_moves_its_own_task_keeps_the_move():
    # The task is written and run at the same frozen time: its edit must still win.
    start = datetime(2026, 1, 1, tzinfo=BERLIN)
    runs_at: list[datetime] = []

    def snooze():
        runs_at.append(timezone.now())
        if len(runs_at) == 1:
            later = TaskExecutionTime("snooze", timezone.now() + timedelta(hours=1))
            SyncScheduler().update_execution_times([later])

    with taskshed_clock(start, callbacks={"snooze": snooze}) as clock:
        SyncScheduler().add_task("snooze", task_id="snooze")
        ran = clock.advance(hours=2)
    assert [run.outcome for run in ran] == ["succeeded", "succeeded"]
    assert [moment - start for moment in runs_at] == [timedelta(0), timedelta(hours=1)]
    assert not Task.objects.exists()


def test_a_callback_that_fails_in_the_database_leaves_the_test_transaction_usable():
    def broken():
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    with taskshed_clock(datetime(2026, 1, 1, tzinfo=BERLIN), callbacks={"broken": broken}) as clock:
        SyncScheduler().add_task("broken", task_id="broken")
        (run,) = clock.run_due()
    assert run.outcome == "failed"
    assert TaskRun.objects.get(task_id="broken").outcome == "failed"
    assert Task.objects.get().last_error == run.error


@override_settings(TASKSHED={"TIMEOUT": 0.01})
def test_a_run_past_its_timeout_is_reported_timed_out():
    async def slow():
        await asyncio.sleep(5)

    with taskshed_clock(datetime(2026, 1, 1, tzinfo=BERLIN), callbacks={"slow": slow}) as clock:
        SyncScheduler().add_task("slow", task_id="slow")
        (run,) = clock.run_due()
    assert run.outcome == "timed_out"
    assert run.error.startswith("TaskTimeoutError:")
    assert TaskRun.objects.get(task_id="slow").outcome == "timed_out"


def test_a_task_that_keeps_rescheduling_itself_at_now_stops_the_clock(monkeypatch):
    monkeypatch.setattr(testing, "MAX_RUNS", 5)

    def again():
        SyncScheduler().add_task("again", task_id="again")

    with taskshed_clock(datetime(2026, 1, 1, tzinfo=BERLIN), callbacks={"again": again}) as clock:
        SyncScheduler().add_task("again", task_id="again")
        with pytest.raises(RuntimeError, match="ran 5 times"):
            clock.run_due()


# --- The registry, the fixture, the mixin, async tests ---------------------------------------


def test_callbacks_default_to_the_registry(empty_registry):
    calls = Calls()
    empty_registry.register_callback("registered")(calls.tick)
    with taskshed_clock(datetime(2026, 1, 1, tzinfo=BERLIN)) as clock:
        SyncScheduler().add_task("registered")
        assert [run.outcome for run in clock.run_due()] == ["succeeded"]
    assert len(calls.at) == 1


class TestTheFixture:
    @pytest.fixture
    def taskshed_clock_start(self):
        return datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN)

    def test_it_starts_at_the_overridden_start(self, taskshed_clock):
        assert local([taskshed_clock.now, timezone.now()]) == ["2026-03-29T01:00:00+01:00"] * 2
        calls = Calls()
        taskshed_clock.callbacks = calls.map()
        SyncScheduler().add_task("tick", run_type="recurring", interval=timedelta(minutes=45))
        taskshed_clock.advance(hours=1, minutes=30)
        assert local(calls.at) == [
            "2026-03-29T01:00:00+01:00",
            "2026-03-29T01:45:00+01:00",
            "2026-03-29T03:30:00+02:00",
        ]


def test_the_default_fixture_starts_at_the_real_time(taskshed_clock):
    assert abs(taskshed_clock.now - testing.real_now()) < timedelta(seconds=5)


class MixinTests(TaskshedClockMixin, TestCase):
    taskshed_clock_start = datetime(2026, 10, 25, 1, 0, tzinfo=BERLIN)

    def test_self_clock_drives_a_task(self):
        calls = Calls()
        self.clock.callbacks = calls.map()
        SyncScheduler().add_task(
            "tick",
            run_type="cron",
            cron="30 2 * * *",
            timezone="Europe/Berlin",
            on_ambiguous="both",
        )
        ran = self.clock.advance(hours=3)
        self.assertEqual(
            local(run.scheduled_for for run in ran),
            ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"],
        )
        self.assertEqual(local([timezone.now()]), ["2026-10-25T03:00:00+01:00"])


@pytest.mark.django_db(transaction=True)
async def test_an_async_test_awaits_the_clock():
    calls = Calls()
    start = datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN)
    with taskshed_clock(start, callbacks=calls.map()) as clock:
        scheduler = AsyncScheduler()
        task = await scheduler.add_task("atick", run_type="recurring", interval=timedelta(hours=1))
        ran = await clock.aadvance(hours=1)
        ran += await clock.arun_due()
    assert local(run.scheduled_for for run in ran) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:30:00+02:00",
    ]
    rows = await sync_to_async(history)(task.task_id)
    assert [row[0] for row in rows] == ["succeeded", "succeeded"]


# --- The testing guide's example -----------------------------------------------------------


def guide_example() -> list[str]:
    """The Python blocks of the guide "Testing your own tasks" (docs/guides/testing.md)."""
    return re.findall(r"```python\n(.*?)```", TESTING_GUIDE.read_text(), re.DOTALL)


def test_the_guide_example_runs(empty_registry, mailoutbox):
    callbacks, example, fixture, mixin = guide_example()
    exec(compile(callbacks, "testing guide: myapp/tasks.py", "exec"), {})  # noqa: S102
    namespace: dict = {}
    exec(compile(example, "testing guide: myapp/tests/test_reports.py", "exec"), namespace)  # noqa: S102
    namespace["test_the_nightly_report_goes_out_across_the_change_to_summer_time"]()
    assert mailoutbox[0].to == ["ops@example.com"]

    Task.objects.all().delete()  # each example starts with no tasks, as a test of its own
    exec(compile(fixture, "testing guide: the fixture", "exec"), namespace)  # noqa: S102
    with taskshed_clock(datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN)) as clock:
        namespace["test_reminders"](clock)

    Task.objects.all().delete()
    exec(compile(mixin, "testing guide: the mixin", "exec"), namespace)  # noqa: S102
    result = unittest.TestResult()
    namespace["ReportTests"]("test_the_report_runs_nightly").run(result)
    assert (result.testsRun, result.errors, result.failures) == (1, [], [])
