"""Times as SQLite keeps them: text of naive UTC, written and read as the ORM does, faster.

Django's SQLite backend writes an aware time as ``str()`` of it made naive in the
connection's time zone, and reads it back with ``parse_datetime`` and ``make_aware``; per
value it also checks settings and expressions. The worker writes and reads several times per
task, so when the connection's zone is UTC (Django's with ``USE_TZ``) it uses these.
"""

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.dateparse import parse_datetime


def utc_connection(connection: BaseDatabaseWrapper) -> bool:
    """Whether times on ``connection`` are naive UTC (``USE_TZ``, the zone UTC)."""
    return bool(settings.USE_TZ) and connection.timezone_name == "UTC"


def parse_utc(value: Any) -> Any:
    """A time read from SQLite as text, made aware in UTC (``parse_datetime`` for a text
    ``fromisoformat`` does not read; a value that carries its own offset keeps it)."""
    if value is None or isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is not None:
        return parsed
    return parsed.replace(tzinfo=timezone.utc)


def utc_text(connection: BaseDatabaseWrapper) -> Callable[[datetime], Any]:
    """SQLite: the function that writes a time as the ORM's ``adapt_datetimefield_value``
    does (naive UTC text), without its per-call checks when the connection's time zone is
    UTC; otherwise that method itself."""
    if connection.vendor == "sqlite" and utc_connection(connection):
        return _naive_utc_text
    return connection.ops.adapt_datetimefield_value


def _naive_utc_text(value: datetime) -> str:
    zone = value.tzinfo
    if zone is not None:
        if zone is not timezone.utc:  # timezone.now()'s zone needs no conversion
            value = value.astimezone(timezone.utc)
        value = value.replace(tzinfo=None)
    return str(value)
