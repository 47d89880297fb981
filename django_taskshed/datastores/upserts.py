"""Hand-written SQL for the hot paths (bulk and single upserts), one dialect per vendor."""

import functools
import json
import logging
import weakref
from typing import Any

from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.duration import duration_microseconds

from ..models import Task

logger = logging.getLogger(__name__)

INSERT_COLUMNS = (
    "task_id", "callback", "kwargs", "run_at", "run_type", "interval", "group_id", "paused",
    "paused_at", "coalesce", "max_retries", "timeout", "created_at", "updated_at", "cron",
    "timezone", "on_nonexistent", "on_ambiguous", "declared_in_code", "queue", "priority",
)  # fmt: skip
CONSTANT_COLUMNS = {
    "attempts": "0",
    "lease_owner": "NULL",
    "lease_expires_at": "NULL",
    "claim_token": "NULL",
    "abandoned_by": "NULL",
    "last_run_at": "NULL",
    "last_error": "''",
    "last_traceback": "''",
    "failed_at": "NULL",
}
# On replace, the definition is rewritten and the failure state cleared; the lease and
# created_at stay with the row.
REPLACED_COLUMNS = [c for c in INSERT_COLUMNS if c not in ("task_id", "created_at")]
RESET_ON_REPLACE = {"attempts": "0", "failed_at": "NULL"}
# What an upsert does not decide itself: read back with RETURNING for the instance it returns.
KEPT_COLUMNS = (
    "created_at", "lease_owner", "lease_expires_at", "claim_token", "abandoned_by", "last_run_at",
    "last_error", "last_traceback",
)  # fmt: skip
KEPT_DATETIMES = ("created_at", "lease_expires_at", "last_run_at")
DATETIME_POSITIONS = (3, 8, 12, 13)
# A batch this large can change the table's statistics enough that PostgreSQL's planner,
# still thinking the table small, claims with a bitmap scan and a sort over every due row
# instead of walking the due index to its LIMIT (measured: 3,600 vs 5,800 tasks/s).
ANALYZE_AFTER_ROWS = 5000
ANALYZE_LOCK_TIMEOUT = "200ms"
# PostgreSQL inserts a batch as one statement over arrays, one per column (unnest).
PG_ARRAY_TYPES = (
    "text", "text", "jsonb", "timestamptz", "text", "interval", "text", "bool",
    "timestamptz", "bool", "int4", "interval", "timestamptz", "timestamptz", "text", "text",
    "text", "text", "bool", "text", "int2",
)  # fmt: skip
DURATION_POSITIONS = (5, 11)
# PostgreSQL on psycopg 3 writes a batch of at least this many rows with a binary COPY into a
# temporary staging table and one INSERT ... SELECT from it, which takes about 1 µs of client
# CPU per row where the unnest arrays take tens (psycopg quotes them in Python); a smaller
# batch takes the unnest statement, sparing the staging table's CREATE and DROP (a few ms;
# the two paths took the same time at 30 to 60 rows, benchmarks/schedule.py's machine).
COPY_AFTER_ROWS = 50
STAGING_TABLE = "pg_temp.taskshed_staging"
# The staging table takes kwargs as text (the validated JSON), cast to jsonb by the INSERT.
PG_STAGED_TYPES = tuple(
    "text" if column == "kwargs" else kind
    for column, kind in zip(INSERT_COLUMNS, PG_ARRAY_TYPES, strict=True)
)


# Built statements, per (vendor, kind, replace_existing, returning): a single add_task would
# otherwise spend more time quoting names than the database spends on the row.
_STATEMENTS: dict[tuple[str, str, bool, bool], str] = {}
_STAGING: dict[bool, tuple[str, ...]] = {}  # PostgreSQL only
# Whether the user of a PostgreSQL connection may create temporary tables, per driver connection.
_TEMPORARY_ALLOWED: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def insert_sql(connection: BaseDatabaseWrapper, replace_existing: bool, returning: bool) -> str:
    """``INSERT`` of one row of ``INSERT_COLUMNS`` that replaces or keeps an existing task_id."""
    key = (connection.vendor, "values", replace_existing, returning)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = _insert_sql(connection, replace_existing, returning)
    return _STATEMENTS[key]


def _insert_sql(connection: BaseDatabaseWrapper, replace_existing: bool, returning: bool) -> str:
    qn = connection.ops.quote_name
    columns = [*INSERT_COLUMNS, *CONSTANT_COLUMNS]
    placeholders = ["%s"] * len(INSERT_COLUMNS) + list(CONSTANT_COLUMNS.values())
    if connection.vendor == "postgresql":
        placeholders[INSERT_COLUMNS.index("kwargs")] = "%s::jsonb"
    statement = (
        f"INSERT INTO {qn(Task._meta.db_table)} ({', '.join(map(qn, columns))}) "
        f"VALUES ({', '.join(placeholders)}) {conflict_clause(connection, replace_existing)}"
    )
    if returning:
        statement += " RETURNING " + ", ".join(map(qn, KEPT_COLUMNS))
    return statement


def unnest_insert_sql(connection: BaseDatabaseWrapper, replace_existing: bool) -> str:
    """PostgreSQL: ``INSERT ... SELECT FROM unnest(array per column)``, one statement a batch."""
    key = (connection.vendor, "unnest", replace_existing, False)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = _unnest_insert_sql(connection, replace_existing)
    return _STATEMENTS[key]


def _unnest_insert_sql(connection: BaseDatabaseWrapper, replace_existing: bool) -> str:
    qn = connection.ops.quote_name
    columns = ", ".join(map(qn, [*INSERT_COLUMNS, *CONSTANT_COLUMNS]))
    arrays = ", ".join(f"%s::{kind}[]" for kind in PG_ARRAY_TYPES)
    return (
        f"INSERT INTO {qn(Task._meta.db_table)} ({columns}) "
        f"SELECT *, {', '.join(CONSTANT_COLUMNS.values())} FROM unnest({arrays}) "
        f"{conflict_clause(connection, replace_existing)}"
    )


def staging_sql(connection: BaseDatabaseWrapper, replace_existing: bool) -> tuple[str, ...]:
    """PostgreSQL: the staging table's CREATE, COPY, INSERT ... SELECT and DROP statements."""
    if replace_existing not in _STAGING:
        _STAGING[replace_existing] = _staging_sql(connection, replace_existing)
    return _STAGING[replace_existing]


def _staging_sql(connection: BaseDatabaseWrapper, replace_existing: bool) -> tuple[str, ...]:
    qn = connection.ops.quote_name
    names = ", ".join(map(qn, INSERT_COLUMNS))
    typed = ", ".join(f"{qn(c)} {t}" for c, t in zip(INSERT_COLUMNS, PG_STAGED_TYPES, strict=True))
    selected = [f"{qn(c)}::jsonb" if c == "kwargs" else qn(c) for c in INSERT_COLUMNS]
    columns = ", ".join(map(qn, [*INSERT_COLUMNS, *CONSTANT_COLUMNS]))
    return (
        # ON COMMIT DROP as well: a rollback or an error before the DROP leaves nothing behind.
        f"CREATE TEMPORARY TABLE {STAGING_TABLE} ({typed}) ON COMMIT DROP",
        f"COPY {STAGING_TABLE} ({names}) FROM STDIN (FORMAT BINARY)",
        f"INSERT INTO {qn(Task._meta.db_table)} ({columns}) "
        f"SELECT {', '.join(selected)}, {', '.join(CONSTANT_COLUMNS.values())} "
        f"FROM {STAGING_TABLE} {conflict_clause(connection, replace_existing)}",
        f"DROP TABLE {STAGING_TABLE}",
    )


def conflict_clause(connection: BaseDatabaseWrapper, replace_existing: bool) -> str:
    qn = connection.ops.quote_name
    if connection.vendor == "mysql":
        if not replace_existing:
            return f"ON DUPLICATE KEY UPDATE {qn('task_id')} = {qn('task_id')}"
        sets = [f"{qn(c)} = VALUES({qn(c)})" for c in REPLACED_COLUMNS]
        sets += [f"{qn(c)} = {v}" for c, v in RESET_ON_REPLACE.items()]
        return "ON DUPLICATE KEY UPDATE " + ", ".join(sets)
    if not replace_existing:
        return f"ON CONFLICT ({qn('task_id')}) DO NOTHING"
    sets = [f"{qn(c)} = EXCLUDED.{qn(c)}" for c in REPLACED_COLUMNS]
    sets += [f"{qn(c)} = {v}" for c, v in RESET_ON_REPLACE.items()]
    return f"ON CONFLICT ({qn('task_id')}) DO UPDATE SET " + ", ".join(sets)


def adapt_rows(connection: BaseDatabaseWrapper, rows: list[tuple[Any, ...]]) -> list[Any]:
    """Rows as the driver takes them: PostgreSQL takes them as they are."""
    if connection.vendor == "postgresql":
        return rows
    adapted_times: dict[Any, Any] = {None: None}  # a batch shares its "now" stamps
    adapt_datetime = connection.ops.adapt_datetimefield_value
    adapted = []
    for row in rows:
        values = list(row)
        for i in DATETIME_POSITIONS:
            value = values[i]
            if value not in adapted_times:
                adapted_times[value] = adapt_datetime(value)
            values[i] = adapted_times[value]
        for i in DURATION_POSITIONS:
            if values[i] is not None:
                values[i] = duration_microseconds(values[i])
        adapted.append(values)
    return adapted


def insert_tasks(
    connection: BaseDatabaseWrapper, rows: list[tuple[Any, ...]], replace_existing: bool
) -> None:
    """Insert many rows; the caller holds the transaction."""
    if len(rows) >= COPY_AFTER_ROWS and can_copy(connection):
        copy_tasks(connection, rows, replace_existing)
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                unnest_insert_sql(connection, replace_existing),
                [list(c) for c in zip(*rows, strict=True)],
            )
        else:
            statement = insert_sql(connection, replace_existing, returning=False)
            cursor.executemany(statement, adapt_rows(connection, rows))


def can_copy(connection: BaseDatabaseWrapper) -> bool:
    """PostgreSQL through psycopg 3 (whose cursors COPY from Python rows), for a user who may
    create temporary tables (PostgreSQL grants it by default; asked once per connection)."""
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return False
    connection.ensure_connection()
    allowed = _TEMPORARY_ALLOWED.get(connection.connection)
    if allowed is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
            allowed = _TEMPORARY_ALLOWED[connection.connection] = bool(cursor.fetchone()[0])
    return allowed


def copy_tasks(
    connection: BaseDatabaseWrapper, rows: list[tuple[Any, ...]], replace_existing: bool
) -> None:
    """PostgreSQL: insert many rows through a staging table; the caller holds the transaction.

    The rows go to a temporary table with a binary COPY, then into the task table with one
    ``INSERT ... SELECT ... ON CONFLICT``: the same upsert as the other paths, row for row.
    """
    create, copy, insert, drop = staging_sql(connection, replace_existing)
    with connection.cursor() as cursor:
        cursor.execute(create)
        with connection.wrap_database_errors, cursor.copy(copy) as stream:
            stream.set_types(PG_STAGED_TYPES)
            write_row = stream.write_row
            for row in rows:
                write_row(row)
        cursor.execute(insert)
        cursor.execute(drop)


def insert_task(
    connection: BaseDatabaseWrapper, row: tuple[Any, ...], replace_existing: bool
) -> dict[str, Any] | None:
    """Insert one row and return its ``KEPT_COLUMNS``, or None where that needs another read."""
    # MariaDB's RETURNING also answers for the row ON DUPLICATE KEY left alone: read it back.
    returning = connection.vendor != "mysql" and connection.features.can_return_columns_from_insert
    with connection.cursor() as cursor:
        cursor.execute(
            insert_sql(connection, replace_existing, returning), adapt_rows(connection, [row])[0]
        )
        found = cursor.fetchone() if returning else None
    if found is None:
        return None
    kept = dict(zip(KEPT_COLUMNS, found, strict=True))
    if connection.vendor != "postgresql":
        for name in KEPT_DATETIMES:
            convert = connection.ops.convert_datetimefield_value  # type: ignore[attr-defined]
            kept[name] = convert(kept[name], None, connection)
    return kept


def task_from_row(row: tuple[Any, ...], kept: dict[str, Any], using: str) -> Task:
    """The Task instance a freshly written row stands for (every field set, none deferred)."""
    values = dict(zip(INSERT_COLUMNS, row, strict=True))
    values["kwargs"] = json.loads(values["kwargs"])
    values.update(kept, attempts=0, failed_at=None)  # what an insert or a replace leaves
    names = _field_names()
    return Task.from_db(using, names, [values[name] for name in names])


@functools.cache
def _field_names() -> tuple[str, ...]:
    return tuple(field.attname for field in Task._meta.concrete_fields)


def refresh_statistics(connection: BaseDatabaseWrapper) -> None:
    """PostgreSQL: ANALYZE the task table, unless another ANALYZE or VACUUM holds it."""
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{ANALYZE_LOCK_TIMEOUT}'")
            cursor.execute(f"ANALYZE {connection.ops.quote_name(Task._meta.db_table)}")
    except DatabaseError:
        logger.debug("skipped ANALYZE of the task table", exc_info=True)
