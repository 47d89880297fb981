"""The run list's date hierarchy from the two ends of the ``started_at`` index, not every row."""

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from django.db.models import Max, Min, QuerySet
from django.utils import timezone

from ..models import TaskRun

if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    RunRows = QuerySet[TaskRun]
else:
    RunRows = QuerySet


def _next(day: date, kind: str) -> date:
    """The first day of the next ``kind`` (year, month or day) after ``day``'s."""
    if kind == "year":
        return date(day.year + 1, 1, 1)
    if kind == "month":
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return date.fromordinal(day.toordinal() + 1)


def _start(moment: datetime, kind: str) -> date:
    """The first day (local time) of the year, month or day of ``moment``."""
    local = timezone.localtime(moment).date()
    if kind == "year":
        return local.replace(month=1, day=1)
    return local.replace(day=1) if kind == "month" else local


def calendar(first: datetime, last: datetime, kind: str) -> list[date]:
    """Every year, month or day (local time) from ``first``'s to ``last``'s."""
    steps, step, end = [], _start(first, kind), _start(last, kind)
    while step <= end:
        steps.append(step)
        step = _next(step, kind)
    return steps


class RunQuerySet(RunRows):
    """Django's date hierarchy lists the days (months, years) that have runs with a DISTINCT
    over every row in range: a scan of the table at a million runs. Here it lists every day
    from the first run to the last in range, read from the ends of the index (a day without
    runs, rare when tasks run every few minutes, links to an empty page)."""

    def datetimes(self, field_name: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        """The local first days of ``kind`` from the first run to the last (a list)."""
        if field_name != "started_at" or kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, *args, **kwargs)  # type: ignore[arg-type]
        ends = self.aggregate(first=Min(field_name), last=Max(field_name))
        if ends["first"] is None:
            return []
        return calendar(ends["first"], ends["last"], kind)
