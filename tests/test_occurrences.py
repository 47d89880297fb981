"""Pure schedule arithmetic: next occurrences with and without coalescing, retry backoff."""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest

from django_taskshed.models import Task
from django_taskshed.occurrences import next_run, retry_delay
from django_taskshed.occurrences import upcoming_runs as upcoming

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=dt_timezone.utc)
MINUTE = timedelta(minutes=1)


def task(run_at: datetime, interval: timedelta | None) -> Task:
    run_type = "once" if interval is None else "recurring"
    return Task(run_type=run_type, run_at=run_at, interval=interval)


def next_occurrence(run_at, interval, now, coalesce):
    """Where a recurring task at ``run_at`` goes after its run ends at ``now``."""
    return next_run(task(run_at, interval), now, coalesce)


def upcoming_runs(run_at, interval, coalesce, now, count):
    return upcoming(task(run_at, interval), coalesce, now, count)


@pytest.mark.parametrize("coalesce", [True, False])
def test_on_time_run_moves_one_interval(coalesce):
    now = T0 + timedelta(seconds=2)

    assert next_occurrence(T0, MINUTE, now, coalesce) == T0 + MINUTE


def test_coalesce_collapses_five_missed_intervals_into_one_run():
    now = T0 + 5 * MINUTE + timedelta(seconds=30)  # due 5 intervals ago, and then some

    assert next_occurrence(T0, MINUTE, now, coalesce=True) == T0 + 6 * MINUTE


def test_without_coalesce_each_missed_occurrence_comes_next():
    now = T0 + 5 * MINUTE + timedelta(seconds=30)

    run_at, runs = T0, 0
    while run_at <= now:  # what a worker does: run while the next occurrence is due
        run_at = next_occurrence(run_at, MINUTE, now, coalesce=False)
        runs += 1

    assert runs == 6  # T0 and the five occurrences missed since
    assert run_at == T0 + 6 * MINUTE


def test_coalesce_on_an_occurrence_boundary_skips_the_one_due_now():
    """An occurrence falling exactly on ``now`` is covered by the run now: next is after now."""
    now = T0 + 3 * MINUTE

    assert next_occurrence(T0, MINUTE, now, coalesce=True) == T0 + 4 * MINUTE
    assert next_occurrence(T0, MINUTE, now, coalesce=False) == T0 + MINUTE


def test_coalesce_keeps_the_phase_of_the_schedule():
    interval = timedelta(seconds=7)
    now = T0 + timedelta(seconds=100)

    following = next_occurrence(T0, interval, now, coalesce=True)

    assert following > now
    assert following - interval <= now
    assert (following - T0) % interval == timedelta(0)


def test_run_late_by_less_than_an_interval_is_not_coalesced_away():
    now = T0 + timedelta(seconds=59)

    assert next_occurrence(T0, MINUTE, now, coalesce=True) == T0 + MINUTE


def test_retry_delay_doubles_after_each_failure():
    assert [retry_delay(n, 5.0).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_delay(0, 5.0) == timedelta(seconds=5)
    assert retry_delay(3, 0) == timedelta(0)


def test_upcoming_runs_of_a_one_off_task_is_its_run_at():
    assert list(upcoming_runs(T0, None, True, T0 - MINUTE, 5)) == [T0]


def test_upcoming_runs_of_an_on_time_recurring_task():
    now = T0 - timedelta(seconds=1)

    assert list(upcoming_runs(T0, MINUTE, True, now, 3)) == [T0, T0 + MINUTE, T0 + 2 * MINUTE]


@pytest.mark.parametrize(
    ("coalesce", "expected"),
    [
        (True, [T0, T0 + 6 * MINUTE, T0 + 7 * MINUTE]),
        (False, [T0, T0 + MINUTE, T0 + 2 * MINUTE]),
    ],
)
def test_upcoming_runs_after_missing_five_intervals(coalesce, expected):
    now = T0 + 5 * MINUTE + timedelta(seconds=30)

    assert list(upcoming_runs(T0, MINUTE, coalesce, now, 3)) == expected
