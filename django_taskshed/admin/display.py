"""Tasks in words for people: schedules, and times relative to now or in local time."""

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.timesince import timesince, timeuntil


def in_words(interval: timedelta | None) -> str:
    """``"once"`` or ``"every 5 minutes"``."""
    if interval is None:
        return "once"
    seconds = interval.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds:g} seconds"


def relative(moment: datetime | None, now: datetime) -> str:
    """``"in 5 s"``, ``"3 minutes ago"``."""
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    if abs(delta) < 60:
        seconds = round(abs(delta))
        return f"in {seconds} s" if delta > 0 else f"{seconds} s ago"
    if moment > now:
        return f"in {timeuntil(moment, now, depth=1)}"
    return f"{timesince(moment, now, depth=1)} ago"


def local_time(moment: datetime | None, now: datetime) -> str:
    """The local time, with the date only when it is not today."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    today = timezone.localtime(now).date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")


def seconds(span: timedelta) -> str:
    """``"0.012 s"``, ``"4.5 s"``, ``"3 min 20 s"``: a lateness or a duration."""
    total = span.total_seconds()
    if abs(total) < 60:
        return f"{total:.3g} s" if abs(total) < 10 else f"{total:.1f} s"
    minutes, rest = divmod(round(total), 60)
    return f"{minutes} min {rest} s"
