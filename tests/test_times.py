"""The worker's own reading and writing of times on SQLite (``datastores.times``) gives exactly
what Django's SQLite backend gives, for the values a worker meets and for the odd ones."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, connections

from django_taskshed.datastores.times import parse_utc, utc_text
from django_taskshed.models import Task

pytestmark = pytest.mark.django_db

AWARE = [
    datetime(2026, 11, 30, 5, 1, 2, 345678, tzinfo=timezone.utc),
    datetime(2026, 11, 30, 5, 1, 2, tzinfo=timezone.utc),  # no microseconds: no fraction
    datetime(2026, 7, 1, 14, 30, tzinfo=ZoneInfo("Europe/Paris")),  # another zone
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
]
TEXTS = [
    "2026-11-30 05:01:02.345678",
    "2026-11-30 05:01:02",
    "2026-11-30T05:01:02.5",
    "2026-1-5 5:01",  # not ISO 8601: Django's regular expression reads it
    "2026-11-30 05:01:02+02:00",  # an offset of its own is kept
    None,
]


@pytest.fixture
def sqlite():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite keeps times as text; the other backends' drivers convert them")


def django_read(value):
    expression = Task._meta.get_field("run_at").get_col(Task._meta.db_table)
    for convert in connection.ops.get_db_converters(expression):
        value = convert(value, expression, connection)
    return value


@pytest.mark.parametrize("value", AWARE, ids=str)
def test_a_time_is_written_as_djangos_sqlite_backend_writes_it(sqlite, value):
    assert utc_text(connection)(value) == connection.ops.adapt_datetimefield_value(value)


@pytest.mark.parametrize("text", TEXTS, ids=str)
def test_a_time_is_read_as_djangos_sqlite_backend_reads_it(sqlite, text):
    ours, djangos = parse_utc(text), django_read(text)
    assert ours == djangos
    offset = getattr(ours, "utcoffset", lambda: None)()
    assert offset == getattr(djangos, "utcoffset", lambda: None)()


def test_written_then_read_gives_the_same_instant(sqlite):
    for value in AWARE:
        assert parse_utc(utc_text(connection)(value)) == value


def test_a_database_in_another_time_zone_uses_djangos_own_functions(sqlite, settings):
    """With ``DATABASES[...]["TIME_ZONE"]`` not UTC, Django writes local time: the worker
    does not take its UTC shortcut there."""
    wrapper = connections["default"]
    previous = wrapper.settings_dict.get("TIME_ZONE")
    wrapper.settings_dict["TIME_ZONE"] = "Europe/Paris"
    wrapper.__dict__.pop("timezone", None)
    wrapper.__dict__.pop("timezone_name", None)
    try:
        write = utc_text(wrapper)
        assert write == wrapper.ops.adapt_datetimefield_value
        assert write(AWARE[0]) == "2026-11-30 06:01:02.345678"
    finally:
        wrapper.settings_dict["TIME_ZONE"] = previous
        wrapper.__dict__.pop("timezone", None)
        wrapper.__dict__.pop("timezone_name", None)
