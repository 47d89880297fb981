"""When tasks run: the one function that computes occurrences, for interval and cron schedules
alike, used by the worker, coalescing, the admin's preview and ``Task.next_runs``."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from .cron import cron_schedule


class Schedule(Protocol):
    def next_after(self, after: datetime) -> datetime | None: ...


class Scheduled(Protocol):
    """What a schedule is made of: a ``Task`` or a worker's claim of one."""

    @property
    def run_type(self) -> str: ...
    @property
    def run_at(self) -> datetime: ...
    @property
    def interval(self) -> timedelta | None: ...
    @property
    def cron(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def on_nonexistent(self) -> str: ...
    @property
    def on_ambiguous(self) -> str: ...


@dataclass(frozen=True)
class OnceSchedule:
    run_at: datetime

    def next_after(self, after: datetime) -> datetime | None:
        return self.run_at if self.run_at > after else None


@dataclass(frozen=True)
class IntervalSchedule:
    """Every ``interval``, on the grid through ``anchor`` (the task's ``run_at``)."""

    anchor: datetime
    interval: timedelta

    def next_after(self, after: datetime) -> datetime:
        return self.anchor + ((after - self.anchor) // self.interval + 1) * self.interval


def schedule_of(task: Scheduled) -> Schedule:
    if task.run_type == "cron":
        return cron_schedule(task.cron, task.timezone, task.on_nonexistent, task.on_ambiguous)
    if task.run_type == "recurring" and task.interval is not None:
        return IntervalSchedule(task.run_at, task.interval)
    return OnceSchedule(task.run_at)


def next_runs(task: Scheduled, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` occurrences of ``task``'s schedule strictly after ``after``."""
    schedule = schedule_of(task)
    runs: list[datetime] = []
    while len(runs) < count and (following := schedule.next_after(after)) is not None:
        runs.append(following)
        after = following
    return runs


def next_run(task: Scheduled, now: datetime, coalesce: bool) -> datetime | None:
    """Where a recurring or cron task goes once its run of ``run_at`` ends.

    With ``coalesce`` the occurrences missed up to ``now`` collapse: the next run is the first
    occurrence after ``now``. Without it each missed occurrence runs once, in order: the next
    run is the occurrence after ``run_at`` (which may still be due).
    """
    after = max(task.run_at, now) if coalesce else task.run_at
    runs = next_runs(task, after, 1)
    return runs[0] if runs else None


def upcoming_runs(task: Scheduled, coalesce: bool, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` runs a worker will make: ``run_at`` (at once, if it is past), then
    what ``next_run`` gives after it."""
    if task.run_type not in ("recurring", "cron"):
        return [task.run_at]
    after = max(task.run_at, now) if coalesce else task.run_at
    return [task.run_at, *next_runs(task, after, count - 1)]


@dataclass(frozen=True)
class Missed:
    """Occurrences that did not run: how many, the first and the last; ``complete`` is False
    when counting stopped at ``MISSED_COUNT_LIMIT`` (there were more)."""

    count: int
    first: datetime
    last: datetime
    complete: bool = True


MISSED_COUNT_LIMIT = 100_000  # cron occurrences counted one by one (about 17 µs each)


def missed_between(task: Scheduled, start: datetime, end: datetime) -> Missed | None:
    """The occurrences of ``task``'s schedule strictly between ``start`` and ``end``.

    An interval schedule is counted in constant time; a cron schedule is walked, at most
    ``MISSED_COUNT_LIMIT`` occurrences.
    """
    schedule = schedule_of(task)
    first = schedule.next_after(start)
    if first is None or first >= end:
        return None
    if isinstance(schedule, IntervalSchedule):
        steps = -((schedule.anchor - end) // schedule.interval) - 1  # the last one before end
        last = schedule.anchor + steps * schedule.interval
        return Missed((last - first) // schedule.interval + 1, first, last)
    count, last = 1, first
    while (following := schedule.next_after(last)) is not None and following < end:
        if count == MISSED_COUNT_LIMIT:
            return Missed(count, first, last, complete=False)
        count, last = count + 1, following
    return Missed(count, first, last)


def retry_delay(attempts: int, backoff: float) -> timedelta:
    """Exponential backoff: ``backoff`` seconds after the first failure, doubling after each."""
    return timedelta(seconds=backoff * 2 ** max(attempts - 1, 0))
