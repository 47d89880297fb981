"""When each worker reads the schedule again anyway, and whether a hint can still matter.

A worker publishes in its row (``WorkerRecord.rereads_at``) a time P and keeps a promise: it
never sleeps past P, and before its first read of the schedule at or after P it replaces P
(with its next time). So a sender that, after its commit, still sees P knows that the
worker's next read after P's replacement starts after that commit, and comes by P: a task
due at P or later is found without a hint. The sender skips the hint when there are worker
rows and every one promises so; no row at all, a row without a time (a worker not publishing,
or not yet), a hint without a time, or any doubt sends it.
"""

import logging
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from .models import WorkerRecord

logger = logging.getLogger(__name__)

# A worker publishes only if it polls at least this often apart (seconds): shorter polls
# would cost a write per poll for hints that hardly reach beyond it. A sender asks the
# database only for hints at least this far ahead: nearer ones are sent unasked (rarely
# could every worker promise a read that soon).
MIN_HORIZON = 1.0
REREADS_AT = WorkerRecord._meta.get_field("rereads_at")


@lru_cache(maxsize=8)
def _statements(using: str) -> tuple[str, str]:
    """(the senders' test, the workers' publish) on the database ``using``."""
    quote = connections[using].ops.quote_name
    table, rereads = quote(WorkerRecord._meta.db_table), quote("rereads_at")
    needed = (
        f"SELECT CASE WHEN EXISTS (SELECT 1 FROM {table} WHERE {rereads} IS NULL OR {rereads} "
        f"> %s) OR NOT EXISTS (SELECT 1 FROM {table}) THEN 1 ELSE 0 END"
    )
    publish = f"UPDATE {table} SET {rereads} = %s WHERE {quote('worker_id')} = %s"
    return needed, publish


def _db_value(value: datetime | None, connection: BaseDatabaseWrapper) -> Any:
    """``value`` as the ORM binds it to ``rereads_at`` (time zone handling included)."""
    return REREADS_AT.get_db_prep_value(value, connection)


def worth_asking(run_at: datetime | None) -> bool:
    """Whether ``hint_needed`` would ask the database about a hint of ``run_at``: it has a
    time, at least ``MIN_HORIZON`` ahead (any other hint is sent unasked)."""
    return run_at is not None and run_at >= timezone.now() + timedelta(seconds=MIN_HORIZON)


def hint_needed(run_at: datetime | None, using: str) -> bool:
    """Whether a hint of a change committed on ``using`` may reach a worker that needs it.

    Call it after the commit: a worker row read then that promises a read by ``run_at``
    makes the hint useless to that worker. No row at all: sent (nothing promises anything;
    a listener on the group that is not a worker gets every hint then). Any error: True.
    """
    if not worth_asking(run_at):
        return True
    connection = connections[using]
    try:
        with connection.cursor() as cursor:
            cursor.execute(_statements(using)[0], [_db_value(run_at, connection)])
            (needed,) = cursor.fetchone()
            return bool(needed)
    except DatabaseError:
        logger.debug("could not read the workers' re-read times; sending", exc_info=True)
        return True


def publish(using: str, worker_id: str, rereads_at: datetime | None) -> int:
    """Write a worker's ``rereads_at`` (sync); returns the rows written (0: no row)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_statements(using)[1], [_db_value(rereads_at, connection), worker_id])
        return int(cursor.rowcount)
