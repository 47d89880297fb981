"""Cron schedules: expressions parsed by ``cronsim``, and the app's own daylight-saving policy.

``cronsim`` walks the wall clock (naive local times) and matches the five fields as Debian cron
does. What a wall time means in a time zone is decided here, per task:

- a wall time that does not exist (the clocks jump forward over it): ``on_nonexistent="shift"``
  runs at the first instant after the gap, ``"skip"`` does not run;
- a wall time that happens twice (the clocks go back over it): ``on_ambiguous="first"``,
  ``"second"`` or ``"both"`` of the two instants.

The policy is for expressions with a fixed hour. An expression whose hour field starts with
``*`` follows elapsed time: it runs in both passes of a repeated hour and not at all in a gap.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

UTC = dt_timezone.utc
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
ON_NONEXISTENT = ("shift", "skip")
ON_AMBIGUOUS = ("first", "second", "both")
SECOND = timedelta(seconds=1)


class CronError(ValueError):
    """A cron expression, time zone or policy that cannot be used; the message says which."""


def expand(expression: str) -> str:
    """The five fields an expression stands for (a macro such as ``@daily`` expanded)."""
    text = " ".join(str(expression).split())
    return MACROS.get(text.lower(), text)


def check_expression(expression: str) -> str:
    """The expanded expression, or CronError naming the field and the value that is wrong."""
    fields = expand(expression).split()
    if len(fields) != len(FIELDS):
        raise CronError(
            f"cron expression {expression!r} has {len(fields)} fields; it needs 5 "
            f"({' '.join(FIELDS)}) or one of {', '.join(MACROS)}"
        )
    try:
        CronSim(" ".join(fields), datetime(2000, 1, 1))
    except CronSimError as exc:
        raise CronError(_named(str(exc), fields, expression)) from None
    return " ".join(fields)


def _named(message: str, fields: list[str], expression: str) -> str:
    for index, name in enumerate(FIELDS):
        if name in message.lower():
            return f"cron expression {expression!r}: bad {name} field {fields[index]!r}"
    return f"cron expression {expression!r}: {message}"


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or CronError."""
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        message = f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')"
        raise CronError(message) from None


def describe(expression: str, timezone: str) -> str:
    """In words, e.g. "at 02:30 every day, Europe/Berlin"."""
    words = CronSim(expand(expression), datetime(2000, 1, 1)).explain()
    return f"{words[:1].lower()}{words[1:]}, {timezone}"


@dataclass(eq=False)
class CronSchedule:
    """The occurrences of one expression in one time zone under one policy."""

    expression: str
    zone: ZoneInfo
    on_nonexistent: str = "shift"
    on_ambiguous: str = "first"
    # The last answer: every instant in [after, next) has ``next`` as its next occurrence.
    _known: tuple[datetime, datetime] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.fixed_hour = not self.expression.split()[1].startswith("*")

    def next_after(self, after: datetime) -> datetime | None:
        """The first occurrence strictly after ``after`` (aware), in UTC; None if none comes
        within cronsim's search horizon."""
        after = after.astimezone(UTC)
        known = self._known
        if known is not None and known[0] <= after < known[1]:
            return known[1]
        found = self._search(after)
        if found is not None:
            self._known = (after, found)
        return found

    def _search(self, after: datetime) -> datetime | None:
        local = after.astimezone(self.zone)
        start = local.replace(tzinfo=None)
        if not local.fold and _repeated(local):  # the second pass is still to come: look back
            start -= local.utcoffset() - local.replace(fold=1).utcoffset()  # type: ignore[operator]
        best: datetime | None = None
        horizon: datetime | None = None
        for wall in CronSim(self.expression, start - SECOND):
            if horizon is not None and wall > horizon:
                break
            for instant, late in self.instants(wall):
                if instant > after and (best is None or instant < best):
                    best = instant
                    # A second-pass instant can be beaten by a later wall time's first pass.
                    horizon = wall + (self._shift(wall) if late else timedelta(0))
            if best is not None and horizon is not None and wall >= horizon:
                break
        return best

    def instants(self, wall: datetime) -> list[tuple[datetime, bool]]:
        """The instants wall time ``wall`` stands for under the policy, earliest first, each
        with whether it is the second pass of a repeated wall time."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return [(first, False)]
        if first.astimezone(self.zone).replace(tzinfo=None) != wall:  # in a gap
            if self.fixed_hour and self.on_nonexistent == "shift":
                return [(_transition(self.zone, second, first), False)]
            return []
        passes = [(first, False), (second, True)]  # repeated: fold 0 is the earlier
        if not self.fixed_hour or self.on_ambiguous == "both":
            return passes
        return [passes[0]] if self.on_ambiguous == "first" else [passes[1]]

    def _shift(self, wall: datetime) -> timedelta:
        aware = wall.replace(tzinfo=self.zone)
        first, second = aware.utcoffset(), aware.replace(fold=1).utcoffset()
        return abs(first - second) if first is not None and second is not None else timedelta(0)

    def note(self, instant: datetime) -> str:
        """ "moved" for a run moved out of a gap, "twice" for a wall time run in both passes,
        else ""; for the admin's preview."""
        local = instant.astimezone(self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        matches = next(iter(CronSim(self.expression, wall - SECOND)), None) == wall
        if not matches:
            return "moved"
        runs = [i for i, _ in self.instants(wall)]
        return "twice" if len(runs) == 2 else ""


def _repeated(local: datetime) -> bool:
    return local.utcoffset() != local.replace(fold=1).utcoffset()


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant the offset changes, between ``before`` and ``after`` (UTC, a second apart
    at most when it returns): the first instant after a gap."""
    low, high = before, after
    offset = low.astimezone(zone).utcoffset()
    while high - low > SECOND:
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high


def check_choice(name: str, value: str) -> str:
    """``value`` of the policy ``name`` (on_nonexistent or on_ambiguous), or CronError."""
    choices = ON_NONEXISTENT if name == "on_nonexistent" else ON_AMBIGUOUS
    if value not in choices:
        raise CronError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


@lru_cache(maxsize=1024)
def cron_schedule(
    expression: str, timezone: str, on_nonexistent: str, on_ambiguous: str
) -> CronSchedule:
    """The schedule of a task's cron fields (checked), shared by every task that has them."""
    check_choice("on_nonexistent", on_nonexistent)
    check_choice("on_ambiguous", on_ambiguous)
    return CronSchedule(check_expression(expression), zone(timezone), on_nonexistent, on_ambiguous)
