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


def occurrences(run_at: datetime, interval: timedelta | None, count: int) -> Iterator[datetime]:
    """The next ``count`` occurrences from ``run_at`` (one for a one-off task)."""
    if interval is None:
        yield run_at
        return
    for step in range(count):
        yield run_at + step * interval


def retry_delay(attempts: int, backoff: float) -> timedelta:
    """Exponential backoff: ``backoff`` seconds after the first failure, doubling after each."""
    return timedelta(seconds=backoff * 2 ** max(attempts - 1, 0))
