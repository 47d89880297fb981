"""The Django internals this app relies on where no public API does the job, one function each.

``tests/test_django_internals.py`` checks each against the installed Django, so that a change
in Django fails there, loudly, rather than somewhere in a worker.
"""

from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet


def delete_without_signals(queryset: QuerySet[Any]) -> int:
    """Delete ``queryset`` in one ``DELETE`` statement; returns how many rows went.

    ``QuerySet.delete()`` reads every row first whenever delete signals have receivers (the
    app's own notify workers), which a scheduler deleting a group of 100,000 tasks cannot
    afford; the scheduler sends its one notification itself.
    """
    count: int = queryset._raw_delete(queryset.db)
    return count


def on_commit_callbacks(connection: BaseDatabaseWrapper) -> list[Callable[[], Any]]:
    """The functions registered with ``transaction.on_commit`` in the open transaction."""
    return [entry[1] for entry in connection.run_on_commit]


def compiled_select(queryset: QuerySet[Any]) -> tuple[str, tuple[Any, ...]]:
    """The ``SELECT`` of ``queryset`` as SQL and parameters for its own database, to be used
    as a subquery of a hand-written statement."""
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    return sql, tuple(params)


def driver_cursor(cursor: Any) -> Any:
    """The database driver's own cursor under a Django cursor (for psycopg's ``COPY``)."""
    return cursor.cursor
