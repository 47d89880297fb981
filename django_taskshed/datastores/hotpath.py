"""Hand-written SQL for the worker's hot path in ``leases``: claims, and results.

The ORM path in ``leases`` costs a worker about as much CPU as the database spends on the
rows: a claim is a SELECT and an UPDATE with one parameter per task, and settling reads the
held rows back before writing them. Here a claim is one ``UPDATE ... RETURNING`` around the
ORM's subquery that picks the due rows in the claim's order (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite runs one writer at a time, so its single statement cannot double-claim).
On PostgreSQL a batch of results is one statement per kind of write, joined to one ``jsonb``
document of rows (task_id, claim_token, updated_at, then the values written, then the run
history's rows) so that the fence is in the statement itself, and the same statement inserts
the history rows of the results it wrote: no ``COPY``, and no transaction around a lone
statement. SQLite (3.35 and later, with its JSON functions) takes the same document in the
same fenced ``DELETE`` / ``UPDATE ... FROM`` (it has no ``WITH`` that writes: the history
rows are inserted next, in the same transaction). (One JSON text, made by the json module in
C, costs the worker a tenth of what psycopg's Python dumpers spend on the same values as
arrays; ``jsonb`` is parsed once, where each ``->>`` of a ``json`` value parses it again.)
Only the rows a statement did not write (edited while running, or lost) are read back, by
the ORM path's own rules.
"""

import json
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import DateTimeField, Field, QuerySet

from ..django_internals import compiled_select
from ..models import Task, TaskRun
from .runs import RUN_COLUMNS
from .times import parse_utc, utc_connection, utc_text

# The columns a result writes (runner.succeeded / runner.failed), with their types.
RESULT_TYPES = {
    "run_at": "timestamptz",
    "attempts": "int4",
    "last_run_at": "timestamptz",
    "last_error": "text",
    "last_traceback": "text",
    "failed_at": "timestamptz",
}
# Each row of the JSON document is [task_id, claim_token, updated_at, values written...].
FENCE_CONDITION = (
    """t."task_id" = o.row->>0 AND t."lease_owner" = %s AND t."claim_token" = o.row->>1 """
    """AND t."updated_at" = (o.row->>2)::timestamptz"""
)
ROWS = "jsonb_array_elements(%s::jsonb) AS o(row)"
# The history's column types that text is not assigned to without a cast.
RUN_CASTS = {
    "DateTimeField": "timestamptz",
    "PositiveIntegerField": "int4",
    "IntegerField": "int4",
    "BooleanField": "bool",
    "JSONField": "jsonb",
}


def _qn(name: str) -> str:
    """An identifier quoted as PostgreSQL and SQLite both read it (their ``quote_name``)."""
    return f'"{name}"'


def _table() -> str:
    return _qn(Task._meta.db_table)


def can_claim(connection: BaseDatabaseWrapper) -> bool:
    """PostgreSQL, and SQLite from 3.35 (``UPDATE ... RETURNING``)."""
    if connection.vendor == "postgresql":
        return True
    return connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert


def can_settle(connection: BaseDatabaseWrapper) -> bool:
    """PostgreSQL, and SQLite from 3.35 with its JSON functions (``json_each``)."""
    return can_claim(connection) and (
        connection.vendor == "postgresql" or connection.features.supports_json_field
    )


def utc_columns(connection: BaseDatabaseWrapper, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The time columns of ``columns`` that the claim returns as UTC wall time (``timestamp``
    without a zone): on PostgreSQL, when the connection's time zone is UTC (Django's with
    ``USE_TZ``). psycopg reads those in C; Django's loader for ``timestamptz`` is Python, about
    5 µs a value, two per claimed task. ``claim`` gives them back their UTC zone."""
    if connection.vendor != "postgresql" or not settings.USE_TZ:
        return ()
    if connection.timezone_name != "UTC":
        return ()
    return tuple(name for name in columns if isinstance(_field(name), DateTimeField))


@lru_cache(maxsize=8)
def claim_sql(vendor: str, columns: tuple[str, ...], utc: tuple[str, ...] = ()) -> tuple[str, str]:
    """The claim statement before and after its subquery: lease the tasks the subquery picks
    and return them (the ``utc`` columns as UTC wall time); on PostgreSQL the subquery skips
    rows another claim holds.

    A row still naming a lease owner was abandoned (its lease expired under a worker that
    died): the claim keeps that worker in ``abandoned_by`` and counts the attempt.
    """
    lock = " FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
    returned = [f"{_qn(c)} AT TIME ZONE 'UTC' AS {_qn(c)}" if c in utc else _qn(c) for c in columns]
    return (
        f'UPDATE {_table()} SET "abandoned_by" = "lease_owner", '
        f'"attempts" = CASE WHEN "lease_owner" IS NULL THEN "attempts" ELSE "attempts" + 1 END, '
        f'"lease_owner" = %s, "claim_token" = %s, "lease_expires_at" = %s '
        f'WHERE "task_id" IN (',
        f"{lock}) RETURNING {', '.join(returned)}",
    )


def claim_statement(
    picked: QuerySet[Any],
    columns: tuple[str, ...],
    worker_id: str,
    token: str,
    lease_expires_at: datetime,
) -> tuple[str, list[Any]]:
    """The one statement that leases the rows of ``picked`` (the due tasks' ids, ordered and
    limited) and returns their ``columns``, with its parameters.

    The subquery is the ORM's own SQL for ``picked``, so the datastore's ``get_queryset()``
    applies here too.
    """
    connection = connections[picked.db]
    subquery, subquery_params = compiled_select(picked)
    before, after = claim_sql(connection.vendor, columns, utc_columns(connection, columns))
    adapt = connection.ops.adapt_datetimefield_value
    return before + subquery + after, [worker_id, token, adapt(lease_expires_at), *subquery_params]


def claim(
    picked: QuerySet[Any],
    columns: tuple[str, ...],
    worker_id: str,
    token: str,
    lease_expires_at: datetime,
) -> list[list[Any]]:
    """Run ``claim_statement``: the claimed rows, each a list of the values of ``columns``
    converted as the ORM would, then the JSON text of ``kwargs`` as read (None without it),
    in the claim's order (highest priority, then earliest)."""
    connection = connections[picked.db]
    statement, params = claim_statement(picked, columns, worker_id, token, lease_expires_at)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    plan = _conversions(connection, columns)
    text_at = columns.index("kwargs") if "kwargs" in columns else None
    claimed = []
    for row in rows:
        values = list(row)
        for i, convert in plan:
            values[i] = convert(values[i])
        text = row[text_at] if text_at is not None else None
        values.append(text if isinstance(text, str) else None)
        claimed.append(values)
    priority, run_at = columns.index("priority"), columns.index("run_at")
    claimed.sort(key=lambda values: (-values[priority], values[run_at]))
    return claimed


def _conversions(
    connection: BaseDatabaseWrapper, columns: tuple[str, ...]
) -> list[tuple[int, Callable[[Any], Any]]]:
    """Per column that needs one, the function that turns a value read into the ORM's: the
    ``utc`` columns made aware, an empty JSON object decoded without the decoder, the rest
    through the ORM's own converters."""
    utc = utc_columns(connection, columns)
    utc_texts = _utc_text_columns(connection, columns)
    plan: list[tuple[int, Callable[[Any], Any]]] = []
    for i, (name, (fns, expression)) in enumerate(
        zip(columns, _converters(connection, columns), strict=True)
    ):
        if name in utc:
            plan.append((i, _as_utc))
        elif name in utc_texts:
            plan.append((i, parse_utc))
        elif fns:
            convert = partial(_convert, fns, expression, connection)
            plan.append((i, partial(_json_object, convert) if name == "kwargs" else convert))
    return plan


def _convert(fns: list[Any], expression: Any, connection: BaseDatabaseWrapper, value: Any) -> Any:
    for convert in fns:
        value = convert(value, expression, connection)
    return value


def _json_object(convert: Callable[[Any], Any], value: Any) -> Any:
    """``convert(value)``; but ``{}``, the kwargs of most tasks, costs no JSON decoding."""
    return {} if value == "{}" else convert(value)


def _as_utc(value: datetime | None) -> datetime | None:
    """UTC wall time read from the database, made aware again."""
    return None if value is None else value.replace(tzinfo=timezone.utc)


def _utc_text_columns(connection: BaseDatabaseWrapper, columns: tuple[str, ...]) -> tuple[str, ...]:
    """SQLite: the time columns of ``columns``, kept as UTC text when the connection's time
    zone is UTC (Django's with ``USE_TZ``). ``times.parse_utc`` reads them as the ORM's converter
    does (``fromisoformat``, then made aware in UTC) at a fifth of its cost."""
    if not (connection.vendor == "sqlite" and utc_connection(connection)):
        return ()
    return tuple(name for name in columns if isinstance(_field(name), DateTimeField))


def _field(name: str) -> "Field[Any, Any]":
    field = Task._meta.get_field(name)
    assert isinstance(field, Field)  # noqa: S101  (a column of the table, not a relation)
    return field


def _converters(
    connection: BaseDatabaseWrapper, columns: tuple[str, ...]
) -> list[tuple[list[Any], Any]]:
    """Per column, what the ORM's compiler applies to a value read from the database."""
    found = []
    for name in columns:
        expression = _field(name).get_col(Task._meta.db_table)
        fns = connection.ops.get_db_converters(expression) + expression.get_db_converters(
            connection
        )
        found.append((fns, expression))
    return found


@lru_cache(maxsize=2)
def delete_sql(history: bool = False) -> str:
    """Delete the fenced rows; with ``history``, insert the run rows of those deleted."""
    write = f"DELETE FROM {_table()} AS t USING {ROWS} WHERE {FENCE_CONDITION}"
    return _returning(write, 3 if history else None)


@lru_cache(maxsize=128)
def update_sql(columns: tuple[str, ...], history: bool = False) -> str:
    """Write ``columns`` (the rows' values after the fence's three) and clear the lease; with
    ``history``, insert the run rows (the document's element after the values) of those
    written."""
    sets = "".join(
        f"{_qn(c)} = (o.row->>{3 + i})::{RESULT_TYPES[c]}, " for i, c in enumerate(columns)
    )
    write = (
        f'UPDATE {_table()} AS t SET {sets}"lease_owner" = NULL, "lease_expires_at" = NULL, '
        f'"claim_token" = NULL FROM {ROWS} WHERE {FENCE_CONDITION}'
    )
    return _returning(write, 3 + len(columns) if history else None)


def _returning(write: str, runs_at: int | None) -> str:
    """``write`` returning the ids it wrote; with ``runs_at``, in a statement that also inserts
    the history rows of each row written: the JSON array at that position of its document row,
    one array of ``RUN_COLUMNS`` values per run."""
    if runs_at is None:
        return f'{write} RETURNING t."task_id"'
    values = ", ".join(
        f"(r.run->>{i})::{cast}" if cast else f"r.run->>{i}" for i, cast in enumerate(_run_casts())
    )
    columns = ", ".join(map(_qn, RUN_COLUMNS))
    return (
        f'WITH w AS ({write} RETURNING t."task_id", o.row), '
        f"h AS (INSERT INTO {_qn(TaskRun._meta.db_table)} ({columns}) SELECT {values} "
        f"FROM w CROSS JOIN LATERAL jsonb_array_elements(w.row->{runs_at}) AS r(run)) "
        f'SELECT "task_id" FROM w'
    )


def _run_casts() -> list[str]:
    """Per history column, the PostgreSQL type its text is cast to (none for text columns)."""
    casts = []
    for name in RUN_COLUMNS:
        internal = TaskRun._meta.get_field(name).get_internal_type()
        casts.append(RUN_CASTS.get(internal, ""))
    return casts


# SQLite: the document's rows read with json_extract (``->>`` needs 3.38), the fence matched
# as one row value, which the primary key's index serves.
SQLITE_FENCE = (
    """("task_id", "claim_token", "updated_at") IN (SELECT json_extract(o.value, '$[0]'), """
    """json_extract(o.value, '$[1]'), json_extract(o.value, '$[2]') FROM json_each(%s) AS o) """
    """AND "lease_owner" = %s"""
)


@lru_cache(maxsize=1)
def sqlite_delete_sql() -> str:
    """SQLite: delete the fenced rows, returning their ids."""
    return f'DELETE FROM {_table()} WHERE {SQLITE_FENCE} RETURNING "task_id"'


@lru_cache(maxsize=128)
def sqlite_update_sql(columns: tuple[str, ...]) -> str:
    """SQLite: write ``columns`` (the rows' values after the fence's three) to the fenced rows
    and clear their lease, returning their ids (one row of the document per task)."""
    table = _table()
    sets = "".join(
        f"{_qn(c)} = json_extract(o.value, '$[{3 + i}]'), " for i, c in enumerate(columns)
    )
    fence = " AND ".join(
        f"{table}.{_qn(c)} = json_extract(o.value, '$[{i}]')"
        for i, c in enumerate(("task_id", "claim_token", "updated_at"))
    )
    return (
        f'UPDATE {table} SET {sets}"lease_owner" = NULL, "lease_expires_at" = NULL, '
        f'"claim_token" = NULL FROM json_each(%s) AS o WHERE {fence} '
        f'AND {table}."lease_owner" = %s RETURNING {table}."task_id"'
    )


def delete_fenced(
    using: str, worker_id: str, outcomes: list[Any], history: bool = False
) -> set[str]:
    """Delete the rows still held under the outcomes' claims and not edited since; their ids.
    With ``history`` (PostgreSQL), the same statement records the runs of the rows it
    deleted."""
    rows = [_fence(outcome.claim) for outcome in outcomes]
    if history:
        for row, outcome in zip(rows, outcomes, strict=True):
            row.append(outcome.runs)
    sqlite = connections[using].vendor == "sqlite"
    return _execute(using, sqlite_delete_sql() if sqlite else delete_sql(history), rows, worker_id)


def update_fenced(
    using: str,
    worker_id: str,
    outcomes: list[Any],
    columns: tuple[str, ...],
    history: bool = False,
) -> set[str]:
    """Write the outcomes' ``changes`` of ``columns`` to the rows still held under their
    claims and not edited since, clearing their lease; their ids. With ``history``, the same
    statement records the runs of the rows it wrote."""
    rows = []
    for outcome in outcomes:
        row = _fence(outcome.claim)
        row.extend(outcome.changes[column] for column in columns)
        if history:
            row.append(outcome.runs)
        rows.append(row)
    sqlite = connections[using].vendor == "sqlite"
    statement = sqlite_update_sql(columns) if sqlite else update_sql(columns, history)
    return _execute(using, statement, rows, worker_id)


def _fence(claim: Any) -> list[Any]:
    return [claim.task_id, claim.claim_token, claim.updated_at]


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a result value of type {type(value).__name__} is not written here")


def _execute(using: str, statement: str, rows: list[list[Any]], worker_id: str) -> set[str]:
    """Run ``statement`` with the JSON document of ``rows``; the task ids it wrote. Times go
    into the document as the column holds them: ISO 8601 for PostgreSQL's casts, and on
    SQLite the ORM's text (compared with the stored ``updated_at`` as text)."""
    connection = connections[using]
    if connection.vendor == "sqlite":
        write = utc_text(connection)

        def default(value: Any) -> Any:
            if isinstance(value, datetime):
                return write(value)
            return _json_value(value)

        document = json.dumps(rows, default=default)
    else:
        document = json.dumps(rows, default=_json_value)
    with connection.cursor() as cursor:
        cursor.execute(statement, [document, worker_id])
        return {task_id for (task_id,) in cursor.fetchall()}
