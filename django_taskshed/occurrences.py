"""Pure schedule arithmetic: next occurrences, coalescing, retry backoff."""

from collections.abc import Iterator
from datetime import datetime, timedelta


def next_occurrence(
    run_at: datetime, interval: timedelta, now: datetime, coalesce: bool
) -> datetime:
    """The occurrence after ``run_at`` that a recurring task runs next.

    With ``coalesce`` the occurrences missed up to ``now`` collapse: the next one is the
    first after ``now``. Without it, each missed occurrence runs once, so the next is
    simply ``run_at + interval`` (which may still be due).
    """
    following = run_at + interval
    if not coalesce or following > now:
        return following
    missed = (now - run_at) // interval
    return run_at + (missed + 1) * interval


def upcoming_runs(
    run_at: datetime, interval: timedelta | None, coalesce: bool, now: datetime, count: int
) -> Iterator[datetime]:
    """The next ``count`` runs a worker will make (one for a one-off task).

    A run due in the past starts at once; each following occurrence is what the worker
    computes with ``next_occurrence`` when that run ends.
    """
    current = run_at
    for _ in range(count if interval is not None else 1):
        yield current
        if interval is not None:
            current = next_occurrence(current, interval, max(now, current), coalesce)


def retry_delay(attempts: int, backoff: float) -> timedelta:
    """Exponential backoff: ``backoff`` seconds after the first failure, doubling after each."""
    return timedelta(seconds=backoff * 2 ** max(attempts - 1, 0))
