"""The datastore's write transactions: on SQLite they take the write lock before anything else."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

from ..models import Task

# A write that changes nothing: SQLite takes the database's write lock for it, waiting for a
# busy writer (up to the connection's timeout) as for any write.
SQLITE_LOCK = f'UPDATE "{Task._meta.db_table}" SET "task_id" = "task_id" WHERE 1 = 0'


@contextmanager
def writing(using: str) -> Iterator[None]:
    """``transaction.atomic(using)`` for a step that writes.

    A SQLite transaction that has read and then writes must upgrade its lock, and that upgrade
    fails at once ("database is locked") while another connection writes, as an in-process
    worker's claim does; it does not wait. So an outermost write transaction on SQLite writes
    first. PostgreSQL and MySQL lock rows and need nothing.
    """
    connection = connections[using]
    outermost = not connection.in_atomic_block
    with transaction.atomic(using=using):
        if outermost and connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute(SQLITE_LOCK)
        yield
