"""Cron schedules: the documented DST table, properties of ``next_after``
over random expressions, zones and instants, and ``describe()``, ``note()``, macros and the memo.

The table in docs/guides/schedules.md ("Cron schedules and daylight saving") is parsed here, so
the documentation and the code cannot drift apart; the worker tests read it through
``dst_table()`` too.
"""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from functools import cache
from itertools import islice, pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_taskshed.cron import (
    MACROS,
    ON_AMBIGUOUS,
    ON_NONEXISTENT,
    CronSchedule,
    cron_schedule,
    describe,
    expand,
)
from django_taskshed.models import Task
from django_taskshed.occurrences import next_run, upcoming_runs

UTC = dt_timezone.utc
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
TICK = timedelta(microseconds=1)
POLICIES = [
    (nonexistent, ambiguous) for nonexistent in ON_NONEXISTENT for ambiguous in ON_AMBIGUOUS
]
SCHEDULES_GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "schedules.md"
SECTION = "## Cron schedules and daylight saving"
COLUMNS = ["zone", "clocks change", "cron", "policy", "runs"]
CHANGE = re.compile(r"(?P<day>\d{4}-\d{2}-\d{2}) (?P<before>\d{2}:\d{2}) → (?P<after>\d{2}:\d{2})")
RUN_FORMAT = "%Y-%m-%d %H:%M %z"


# --- The DST table (docs/guides/schedules.md) -----------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """One row of the DST table: the runs of ``cron`` in ``zone`` under ``policy``."""

    zone: str
    change: date
    clocks: tuple[str, str]  # the wall clock just before the change, and what it shows after
    cron: str
    policy: str  # a value of one policy, or "any"
    runs: tuple[datetime, ...]

    @property
    def id(self) -> str:
        return f"{self.zone} {self.change} {self.cron} {self.policy}"

    @property
    def window(self) -> tuple[datetime, datetime]:
        """From the start of the day before the change to the end of the day after it."""
        zone = ZoneInfo(self.zone)
        start = datetime.combine(self.change - timedelta(days=1), time(), zone)
        return start, datetime.combine(self.change + timedelta(days=2), time(), zone)

    def policies(self) -> list[tuple[str, str]]:
        """Every (on_nonexistent, on_ambiguous) pair the row stands for."""
        if self.policy in ON_NONEXISTENT:
            return [(self.policy, ambiguous) for ambiguous in ON_AMBIGUOUS]
        if self.policy in ON_AMBIGUOUS:
            return [(nonexistent, self.policy) for nonexistent in ON_NONEXISTENT]
        assert self.policy == "any", f"unknown policy {self.policy!r} in the DST table"
        return POLICIES


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _code(cell: str) -> str:
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


@cache
def dst_table() -> tuple[TableRow, ...]:
    """The rows of the DST table of cron runs around daylight-saving changes."""
    text = SCHEDULES_GUIDE.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    lines = [line for line in text[start:end].splitlines() if line.startswith("|")]
    header, rule, *body = lines
    assert _cells(header) == COLUMNS, header
    assert set("".join(_cells(rule))) <= {"-", ":"}, rule
    rows = []
    for line in body:
        zone, change, cron, policy, runs = _cells(line)
        found = CHANGE.fullmatch(change)
        assert found is not None, f"cannot read the clocks change {change!r}"
        rows.append(
            TableRow(
                zone=zone,
                change=date.fromisoformat(found["day"]),
                clocks=(found["before"], found["after"]),
                cron=_code(cron),
                policy=_code(policy),
                runs=tuple(datetime.strptime(run, RUN_FORMAT) for run in runs.split(", ")),
            )
        )
    return tuple(rows)


def cron_task(cron: str, zone: str, nonexistent: str, ambiguous: str, **fields) -> Task:
    return Task(
        callback="record", run_type="cron", cron=cron, timezone=zone,
        on_nonexistent=nonexistent, on_ambiguous=ambiguous, **fields,
    )  # fmt: skip


def test_the_dst_table_covers_both_expressions_on_each_change_under_each_policy():
    rows = dst_table()
    groups: dict[tuple[str, date, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row.zone, row.change, row.cron), []).append(row.policy)
    changes = {
        ("Europe/Berlin", date(2026, 3, 29)), ("Europe/Berlin", date(2026, 10, 25)),
        ("America/New_York", date(2026, 3, 8)), ("America/New_York", date(2026, 11, 1)),
    }  # fmt: skip
    assert set(groups) == {
        (z, d, cron) for z, d in changes for cron in ("30 2 * * *", "30 1 * * *")
    }
    for key, policies in groups.items():
        assert policies in (["any"], list(ON_NONEXISTENT), list(ON_AMBIGUOUS)), key
    assert len({row.id for row in rows}) == len(rows)


@pytest.mark.parametrize("row", dst_table(), ids=lambda row: row.id)
def test_the_dst_table_states_each_change_and_offset_as_the_zone_has_them(row):
    zone = ZoneInfo(row.zone)
    for run in row.runs:
        assert run.astimezone(zone).utcoffset() == run.utcoffset(), f"{run} is not {row.zone}"
        assert run.astimezone(zone).replace(tzinfo=None) == run.replace(tzinfo=None)
    # The clocks change once that day: the wall clock reaches row.clocks[0], then shows [1].
    midnight = datetime.combine(row.change, time(), zone).astimezone(UTC)
    day = [midnight + m * MINUTE for m in range(25 * 60)]
    offsets = [instant.astimezone(zone).utcoffset() for instant in day]
    (moment,) = [i for i in range(1, len(day)) if offsets[i] != offsets[i - 1]]
    change = day[moment].astimezone(UTC)
    assert (change + offsets[moment - 1]).strftime("%H:%M") == row.clocks[0]
    assert (change + offsets[moment]).strftime("%H:%M") == row.clocks[1]
    assert change.astimezone(zone).date() == row.change


@pytest.mark.parametrize("row", dst_table(), ids=lambda row: row.id)
def test_task_next_runs_gives_the_dst_table(row):
    start, end = row.window
    for nonexistent, ambiguous in row.policies():
        task = cron_task(row.cron, row.zone, nonexistent, ambiguous, run_at=row.runs[0])

        runs = task.next_runs(after=start, count=len(row.runs) + 1)

        assert runs[:-1] == list(row.runs), (nonexistent, ambiguous)
        assert runs[-1] >= end, f"{runs[-1]} runs within the window, missing from the table"
        assert all(run.utcoffset() == timedelta(0) for run in runs)
        # From inside the window, as a worker asks after each run (coalesce=False).
        for earlier, later in pairwise(row.runs):
            assert task.next_runs(after=earlier, count=1) == [later]
            assert task.next_runs(after=later - TICK, count=1) == [later]


db = pytest.mark.django_db(transaction=True, available_apps=["django_taskshed"])


@db
@pytest.mark.parametrize("row", dst_table(), ids=lambda row: row.id)
async def test_a_scheduled_cron_task_gives_the_dst_table(scheduler, row):
    for nonexistent, ambiguous in row.policies():
        task_id = f"table-{nonexistent}-{ambiguous}"
        await scheduler.add_task(
            "record", row.runs[0], {"key": task_id}, run_type="cron", task_id=task_id,
            coalesce=False, cron=row.cron, timezone=row.zone,
            on_nonexistent=nonexistent, on_ambiguous=ambiguous,
        )  # fmt: skip

        stored = await Task.objects.aget(pk=task_id)

        assert stored.run_at == row.runs[0]
        assert (stored.cron, stored.timezone) == (row.cron, row.zone)
        assert (stored.on_nonexistent, stored.on_ambiguous) == (nonexistent, ambiguous)
        assert stored.next_runs(after=stored.run_at, count=len(row.runs) - 1) == list(row.runs[1:])
        before = row.runs[0] - MINUTE
        assert upcoming_runs(stored, stored.coalesce, before, len(row.runs)) == list(row.runs)
        # What a worker writes after each run without coalescing.
        moved = []
        while len(moved) < len(row.runs) - 1:
            stored.run_at = next_run(stored, stored.run_at + SECOND, coalesce=False)
            moved.append(stored.run_at)
        assert moved == list(row.runs[1:])


@db
async def test_a_cron_task_without_run_at_starts_at_its_first_occurrence(scheduler):
    before = datetime.now(UTC)
    added = await scheduler.add_task(
        "record", run_type="cron", cron="30 2 * * *", timezone="Europe/Berlin", task_id="c"
    )
    after = datetime.now(UTC)

    stored = await Task.objects.aget(pk="c")
    assert stored.run_at == added.run_at
    local = stored.run_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert before < stored.run_at <= after + timedelta(days=1, hours=1)
    # 02:30 every day, or 03:00 on a day the clocks jump from 02:00 to 03:00 (shift).
    assert local.strftime("%H:%M") in ("02:30", "03:00")
    assert (stored.on_nonexistent, stored.on_ambiguous) == ("shift", "first")
    # Without a time zone: the current one (the test settings' Europe/Paris), on the row.
    await scheduler.add_task("record", run_type="cron", cron="@daily", task_id="paris")
    paris = await Task.objects.aget(pk="paris")
    assert paris.timezone == "Europe/Paris"
    assert paris.run_at.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M") == "00:00"


# --- Properties over random expressions, zones and instants ----------------------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute change
    "Pacific/Chatham",  # changes at 02:45 / 03:45
    "America/Santiago",  # changes at midnight
    "Europe/Dublin",  # "negative" daylight saving in the tz database
    "UTC",
]
CHECKS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@cache
def transitions(name: str) -> tuple[datetime, ...]:
    """The instants (UTC) the zone's offset changes, 2024 to 2031."""
    zone = ZoneInfo(name)
    found = []
    day = datetime(2024, 1, 1, tzinfo=UTC)
    while day.year < 2032:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            low, high = day, following  # bisect to the second: changes fall on whole minutes
            while high - low > SECOND:
                middle = low + (high - low) // 2
                middle -= timedelta(microseconds=middle.microsecond)
                if middle.astimezone(zone).utcoffset() == day.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high)
        day = following
    return tuple(found)


def _numbers(low: int, high: int, hot: tuple[int, ...]) -> st.SearchStrategy[int]:
    return (
        st.one_of(st.sampled_from(hot), st.integers(low, high)) if hot else st.integers(low, high)
    )


def fixed_field(low: int, high: int, hot: tuple[int, ...] = ()) -> st.SearchStrategy[str]:
    """A field that does not start with "*": a value, a range, a stepped range or a list;
    half of the numbers from ``hot``, if given."""
    number = _numbers(low, high, hot)
    span = st.tuples(number, number).map(sorted)
    return st.one_of(
        number.map(str),
        span.map(lambda s: f"{s[0]}-{s[1]}"),
        st.tuples(span, st.integers(1, 12)).map(lambda s: f"{s[0][0]}-{s[0][1]}/{s[1]}"),
        st.lists(number, min_size=2, max_size=4, unique=True).map(
            lambda values: ",".join(map(str, sorted(values)))
        ),
    )


def star_field(largest_step: int) -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"), st.integers(2, largest_step).map("*/{}".format))


@cache
def expressions(around: tuple[int, ...] | None = None) -> st.SearchStrategy[str]:
    """Five fields; the hour is fixed (a value, range, list) or starts with "*". Given
    ``around``, the (hour, minute, day, month, weekday) of a wall time the clocks skip or
    repeat, that hour, minute and day come often."""
    hot_minutes, hot_hours = (0, 15, 30, 45), (0, 1, 2, 3, 23)
    hours, days = [], [st.just("* * *"), st.just("* * *")]
    if around is not None:
        hour, minute, day, month, weekday = around
        hot_minutes += (minute, (minute + 15) % 60)
        hot_hours = (hour, (hour + 1) % 24)
        hours.append(st.just(str(hour)))
        days += [st.just(f"{day} {month} *"), st.just(f"* * {weekday}")]
    days.append(st.tuples(fixed_field(1, 28), fixed_field(1, 12), fixed_field(0, 6)).map(" ".join))
    minutes = st.one_of(fixed_field(0, 59, hot_minutes), star_field(30))
    hours += [fixed_field(0, 23, hot_hours), star_field(12)]
    return st.tuples(minutes, st.one_of(*hours), st.one_of(*days)).map(" ".join)


RUNS = 16  # occurrences looked at from each instant
NUDGES = (timedelta(0), timedelta(0), -TICK, TICK, 30 * SECOND, -SECOND)


@dataclass(frozen=True)
class Case:
    zone: str
    expression: str
    nonexistent: str
    ambiguous: str
    after: datetime  # aware: in UTC or in the zone
    change: datetime | None  # the change of the zone's offset it is near (UTC), if any

    @property
    def schedule(self) -> tuple[str, str, str, str]:
        return self.expression, self.zone, self.nonexistent, self.ambiguous


@st.composite
def cases(draw, near_change: bool | None = None):
    """A zone, an expression, a policy and an instant: near one of the zone's changes (to the
    minute, give or take a microsecond or a second), the expression then often naming the
    wall times the clocks skip or repeat; or anywhere in 2024-2031."""
    zone = draw(st.sampled_from(ZONES))
    changes = transitions(zone)
    change = None
    if changes and (near_change if near_change is not None else draw(st.booleans())):
        change = draw(st.sampled_from(changes))
        after = change + draw(st.integers(-26 * 60, 26 * 60)) * MINUTE
        after += draw(st.sampled_from(NUDGES))
        # The first wall time skipped (spring) or repeated (autumn).
        local = min(wall(change, zone), wall(change - TICK, zone) + TICK)
        around = (local.hour, local.minute, local.day, local.month, local.isoweekday() % 7)
        expression = draw(expressions(around))
    else:
        after = draw(
            st.datetimes(datetime(2024, 1, 1), datetime(2031, 12, 31), timezones=st.just(UTC))
        )
        expression = draw(expressions())
    if draw(st.booleans()):
        after = after.astimezone(ZoneInfo(zone))
    nonexistent, ambiguous = draw(st.sampled_from(POLICIES))
    return Case(zone, expression, nonexistent, ambiguous, after, change)


def fresh(expression: str, zone: str, nonexistent: str, ambiguous: str) -> CronSchedule:
    """A schedule of its own (no memo shared with the cached one), checked as tasks are."""
    return cron_schedule.__wrapped__(expression, zone, nonexistent, ambiguous)


def fixed_hour(expression: str) -> bool:
    return not expand(expression).split()[1].startswith("*")


def wall(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def matching_walls(expression: str, lowest: datetime, highest: datetime) -> set[datetime]:
    """The wall times (naive) in (lowest, highest] that cronsim matches."""
    found = set()
    for local in CronSim(expand(expression), lowest):
        if local > highest:
            break
        found.add(local)
    return found


def offsets_near(instant: datetime, zone: str) -> set[timedelta]:
    """The UTC offsets ``zone`` has within a day of ``instant`` (its changes are months apart)."""
    moments = (instant - timedelta(hours=26), instant, instant + timedelta(hours=26))
    return {moment.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0) for moment in moments}


def passes(local: datetime, zone: str, offsets: set[timedelta] | None = None) -> list[datetime]:
    """The instants (UTC) whose wall time in ``zone`` is ``local``: none in a gap, two in a
    repeated hour; found by trying each offset the zone has near it."""
    guess = local.replace(tzinfo=UTC)
    found = {guess - offset for offset in offsets or offsets_near(guess, zone)}
    return sorted(instant for instant in found if wall(instant, zone) == local)


def samples(low: datetime, high: datetime, fractions: list[float]) -> list[datetime]:
    """Instants in [low, high): both ends, just before ``high``, and in between."""
    picks = [low, high - TICK, high - SECOND, high - MINUTE]
    picks += [low + (high - low) * fraction for fraction in fractions]
    return [pick for pick in picks if low <= pick < high]


@CHECKS
@given(cases())
def test_the_next_occurrence_is_strictly_after_the_instant(case):
    following = fresh(*case.schedule).next_after(case.after)

    assert following is not None
    assert following > case.after
    assert following.utcoffset() == timedelta(0)


@CHECKS
@given(cases(), st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_every_instant_before_an_occurrence_has_it_as_its_next(case, fractions):
    first = fresh(*case.schedule).next_after(case.after)
    second = fresh(*case.schedule).next_after(first)
    assert first is not None and second is not None and second > first

    # Fresh schedules: the memo must not answer for the computation under test.
    for between in samples(case.after.astimezone(UTC), first, fractions):
        assert fresh(*case.schedule).next_after(between) == first, between
    for between in samples(first, second, fractions):
        assert fresh(*case.schedule).next_after(between) == second, between


@settings(CHECKS, max_examples=80)
@given(cases(near_change=True))
def test_no_occurrence_comes_twice_and_a_fixed_time_runs_once_a_day(case):
    zone, expression, after = case.zone, case.expression, case.after
    for nonexistent, ambiguous in POLICIES:
        runs = cron_task(expression, zone, nonexistent, ambiguous).next_runs(after, RUNS)

        assert len(runs) == RUNS
        assert all(a < b for a, b in pairwise(runs)), (nonexistent, ambiguous)
        doubled = [local for local, n in Counter(wall(run, zone) for run in runs).items() if n > 1]
        if fixed_hour(expression) and ambiguous != "both":
            assert doubled == [], (nonexistent, ambiguous)
        for local in doubled:  # only a wall time the clocks pass twice can run twice
            assert len(passes(local, zone)) == 2, (local, nonexistent, ambiguous)


@settings(CHECKS, max_examples=80)
@given(cases(near_change=True))
def test_a_run_off_the_expression_is_one_moved_out_of_a_gap_and_only_under_shift(case):
    zone, expression, after = case.zone, case.expression, case.after
    for nonexistent, ambiguous in POLICIES:
        schedule = cron_schedule(expand(expression), zone, nonexistent, ambiguous)
        runs = cron_task(expression, zone, nonexistent, ambiguous).next_runs(after, RUNS)
        walls = [wall(moment, zone) for moment in (after, *runs)]  # (not in order in autumn)
        matching = matching_walls(expression, min(walls) - timedelta(hours=3), max(walls))
        for run in runs:
            local = wall(run, zone)
            note = schedule.note(run)
            if local in matching:
                assert note in ("", "twice"), (run, nonexistent, ambiguous)
                assert (note == "twice") == (
                    len(passes(local, zone)) == 2
                    and (ambiguous == "both" or not fixed_hour(expression))
                ), (run, nonexistent, ambiguous)
                continue
            # Under skip, and for an hour that starts with "*", every run matches.
            assert (nonexistent, fixed_hour(expression)) == ("shift", True), (run, ambiguous)
            assert note == "moved"
            # The run is the first instant after a gap that holds a matching wall time.
            before = wall(run - TICK, zone).replace(second=0, microsecond=0)
            assert local - before > MINUTE, f"{run} is no first instant after a gap"
            assert matching_walls(expression, before, local - MINUTE), run


def minute_by_minute(expression: str, zone: str, start: datetime, end: datetime):
    """The runs in [start, end) (whole UTC minutes) under each policy, read from the policies'
    definition alone: walk every minute, see which wall time it shows, whether wall times
    were skipped just before it or it comes twice, and apply the policy."""
    fixed = fixed_hour(expression)
    day = timedelta(days=1)
    matching = matching_walls(expression, wall(start, zone) - day, wall(end, zone) + day)
    offsets = offsets_near(start, zone) | offsets_near(end, zone)
    runs: dict[tuple[str, str], list[datetime]] = {policy: [] for policy in POLICIES}
    instant = start
    while instant < end:
        local, previous = wall(instant, zone), wall(instant - MINUTE, zone)
        skipped = [previous + n * MINUTE for n in range(1, (local - previous) // MINUTE)]
        after_a_matching_gap = bool(matching.intersection(skipped))
        both = passes(local, zone, offsets) if local in matching else []
        for (nonexistent, ambiguous), found in runs.items():
            if fixed and nonexistent == "shift" and after_a_matching_gap:
                found.append(instant)  # the first instant after a gap that held a match
            elif len(both) == 1 or (both and (not fixed or ambiguous == "both")):
                found.append(instant)
            elif both and both[0 if ambiguous == "first" else 1] == instant:
                found.append(instant)
        instant += MINUTE
    return runs


@settings(CHECKS, max_examples=100)
@given(cases(near_change=True), st.integers(-3 * 60, 3 * 60))
def test_runs_around_a_change_are_those_the_policies_define_minute_by_minute(case, shift):
    centre = case.change or case.after.astimezone(UTC).replace(second=0, microsecond=0)
    start = centre + shift * MINUTE - timedelta(hours=4)
    end = start + timedelta(hours=8)  # the change, if any, lies within
    expected = minute_by_minute(case.expression, case.zone, start, end)
    for (nonexistent, ambiguous), runs in expected.items():
        schedule = fresh(case.expression, case.zone, nonexistent, ambiguous)
        found, moment = [], start - TICK
        while (moment := schedule.next_after(moment)) < end:
            found.append(moment)

        assert found == runs, (nonexistent, ambiguous)


@CHECKS
@given(expressions(), st.datetimes(datetime(2024, 1, 1), datetime(2031, 12, 31)))
def test_in_utc_every_policy_runs_at_the_wall_times_cronsim_gives(expression, after):
    expected = [moment.replace(tzinfo=UTC) for moment in islice(CronSim(expression, after), 8)]
    for nonexistent, ambiguous in POLICIES:
        task = cron_task(expression, "UTC", nonexistent, ambiguous)
        assert task.next_runs(after.replace(tzinfo=UTC), 8) == expected


QUERIES = st.lists(
    st.tuples(st.sampled_from(["inside", "later", "earlier"]), st.floats(0, 1)),
    min_size=1,
    max_size=6,
)


@CHECKS
@given(cases(), QUERIES)
def test_a_memoized_answer_equals_a_fresh_computation(case, queries):
    shared = fresh(*case.schedule)
    previous = case.after.astimezone(UTC)  # (arithmetic on a zone's datetime is on wall times)
    answer = shared.next_after(previous)
    for where, fraction in queries:
        # Inside the span the memo answers for, [previous, answer), after it or before it.
        query = {
            "inside": previous + (answer - previous) * fraction,
            "later": answer + timedelta(hours=2) * fraction,
            "earlier": previous - timedelta(hours=2) * fraction - TICK,
        }[where]
        expected = fresh(*case.schedule).next_after(query)
        assert shared.next_after(query) == expected, (where, query)
        previous, answer = query, expected


# --- Unit tests ------------------------------------------------------------------------------

BERLIN = "Europe/Berlin"


def berlin(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    """The instant (UTC) of a Berlin wall time; ``fold=1`` picks the second pass of a
    repeated one. (UTC, because Python never finds a repeated wall time equal to an instant
    of another zone.)"""
    local = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(BERLIN), fold=fold)
    return local.astimezone(UTC)


@pytest.mark.parametrize(
    ("expression", "zone", "words"),
    [
        ("30 2 * * *", BERLIN, "at 02:30 every day, Europe/Berlin"),
        ("0 * * * *", "UTC", "at the start of every hour, UTC"),
        ("*/15 * * * *", "America/New_York", "every 15th minute of every hour, America/New_York"),
        ("30 1 * * 1-5", BERLIN, "at 01:30 on Monday through Friday, Europe/Berlin"),
        ("@daily", "Asia/Tokyo", "at 00:00 every day, Asia/Tokyo"),
        ("@weekly", BERLIN, "at 00:00 on Sunday, Europe/Berlin"),
        ("@monthly", BERLIN, "at 00:00 on the first day of every month, Europe/Berlin"),
        ("@yearly", BERLIN, "at 00:00 on January 1, Europe/Berlin"),
        ("@HOURLY", BERLIN, "at the start of every hour, Europe/Berlin"),
    ],
)
def test_describe_says_it_in_words_with_the_zone(expression, zone, words):
    assert describe(expression, zone) == words


@pytest.mark.parametrize(
    ("expression", "policy", "instant", "note"),
    [
        ("30 2 * * *", ("shift", "first"), berlin(2026, 3, 29, 3, 0), "moved"),
        ("30 2 * * *", ("shift", "first"), berlin(2026, 3, 30, 2, 30), ""),
        ("30 2 * * *", ("shift", "first"), berlin(2026, 10, 25, 2, 30), ""),
        ("30 2 * * *", ("shift", "second"), berlin(2026, 10, 25, 2, 30, 1), ""),
        ("30 2 * * *", ("shift", "both"), berlin(2026, 10, 25, 2, 30), "twice"),
        ("30 2 * * *", ("skip", "both"), berlin(2026, 10, 25, 2, 30, 1), "twice"),
        ("30 1 * * *", ("shift", "both"), berlin(2026, 10, 25, 1, 30), ""),
        ("0 * * * *", ("shift", "first"), berlin(2026, 10, 25, 2, 0), "twice"),
        ("0 * * * *", ("shift", "first"), berlin(2026, 10, 25, 2, 0, 1), "twice"),
        ("0 * * * *", ("shift", "first"), berlin(2026, 3, 29, 3, 0), ""),
        ("*/20 2 * * *", ("shift", "first"), berlin(2026, 3, 29, 3, 0), "moved"),
    ],
)
def test_note_says_why_a_run_is_where_it_is(expression, policy, instant, note):
    schedule = cron_schedule(expression, BERLIN, *policy)

    assert schedule.note(instant) == note
    assert schedule.note(instant.astimezone(UTC)) == note


def test_a_shifted_run_is_where_the_gap_ends_and_a_skipped_one_is_gone():
    start = berlin(2026, 3, 28, 12, 0)
    shifted = cron_task("*/20 2 * * *", BERLIN, "shift", "first").next_runs(start, 4)
    skipped = cron_task("*/20 2 * * *", BERLIN, "skip", "first").next_runs(start, 3)

    # 02:00, 02:20 and 02:40 do not exist on 2026-03-29: one run at 03:00, not three.
    assert shifted == [berlin(2026, 3, 29, 3, 0), *(berlin(2026, 3, 30, 2, m) for m in (0, 20, 40))]
    assert skipped == [berlin(2026, 3, 30, 2, m) for m in (0, 20, 40)]


@pytest.mark.parametrize(("nonexistent", "ambiguous"), POLICIES)
def test_an_hour_that_starts_with_a_star_follows_elapsed_time_whatever_the_policy(
    nonexistent, ambiguous
):
    task = cron_task("@hourly", BERLIN, nonexistent, ambiguous)

    spring = task.next_runs(berlin(2026, 3, 29, 0, 30), 3)
    autumn = task.next_runs(berlin(2026, 10, 25, 0, 30), 4)

    assert spring == [
        berlin(2026, 3, 29, 1, 0),
        berlin(2026, 3, 29, 3, 0),
        berlin(2026, 3, 29, 4, 0),
    ]
    assert [run - autumn[0] for run in autumn] == [timedelta(hours=h) for h in range(4)]
    assert autumn[1:3] == [berlin(2026, 10, 25, 2, 0), berlin(2026, 10, 25, 2, 0, 1)]


MACRO_RUNS = {  # the first three runs after Wednesday 2027-01-13 09:15 in Berlin
    "@hourly": ["2027-01-13 10:00", "2027-01-13 11:00", "2027-01-13 12:00"],
    "@daily": ["2027-01-14 00:00", "2027-01-15 00:00", "2027-01-16 00:00"],
    "@midnight": ["2027-01-14 00:00", "2027-01-15 00:00", "2027-01-16 00:00"],
    "@weekly": ["2027-01-17 00:00", "2027-01-24 00:00", "2027-01-31 00:00"],
    "@monthly": ["2027-02-01 00:00", "2027-03-01 00:00", "2027-04-01 00:00"],
    "@yearly": ["2028-01-01 00:00", "2029-01-01 00:00", "2030-01-01 00:00"],
    "@annually": ["2028-01-01 00:00", "2029-01-01 00:00", "2030-01-01 00:00"],
}


def test_every_macro_is_tested():
    assert set(MACROS) == set(MACRO_RUNS)


@pytest.mark.parametrize(("macro", "first_runs"), MACRO_RUNS.items())
def test_macros_run_as_their_five_fields(macro, first_runs):
    after = berlin(2027, 1, 13, 9, 15)  # a Wednesday
    zone = ZoneInfo(BERLIN)

    runs = cron_task(macro, BERLIN, "shift", "first").next_runs(after, 3)
    spelled = cron_task(MACROS[macro], BERLIN, "shift", "first").next_runs(after, 3)

    assert [run.astimezone(zone).strftime("%Y-%m-%d %H:%M") for run in runs] == first_runs
    assert runs == spelled
    assert expand(macro.upper()) == expand(f"  {macro} ") == MACROS[macro]
    assert describe(macro, BERLIN) == describe(MACROS[macro], BERLIN)


def test_the_memo_answers_inside_its_span_and_recomputes_outside_it():
    shared = fresh("30 2 * * *", BERLIN, "shift", "both")
    after = berlin(2026, 10, 24, 12, 0)
    first = shared.next_after(after)
    assert first == berlin(2026, 10, 25, 2, 30)

    for query in (after + timedelta(hours=3), first - TICK, berlin(2026, 10, 25, 0, 0)):
        assert shared.next_after(query) == first == fresh(*shared_args(shared)).next_after(query)
    # At the first answer and past it: the second pass, then the next day.
    assert shared.next_after(first) == berlin(2026, 10, 25, 2, 30, 1)
    assert shared.next_after(berlin(2026, 10, 25, 2, 30, 1)) == berlin(2026, 10, 26, 2, 30)
    # Back before the span it last answered: still right.
    assert shared.next_after(after) == first


def shared_args(schedule: CronSchedule) -> tuple[str, str, str, str]:
    return schedule.expression, schedule.zone.key, schedule.on_nonexistent, schedule.on_ambiguous


def test_cron_schedule_is_shared_by_tasks_with_the_same_fields():
    one = cron_schedule("30 2 * * *", BERLIN, "shift", "first")

    assert cron_schedule("30 2 * * *", BERLIN, "shift", "first") is one
    assert cron_schedule("30 2 * * *", BERLIN, "skip", "first") is not one
