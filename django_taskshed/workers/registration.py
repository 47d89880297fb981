"""One live worker per worker id: a starting worker takes its id's row, or is refused.

The row is taken in single statements, so that of two workers starting at once with one id,
exactly one wins: an ``INSERT`` (the primary key lets one through), or an ``UPDATE`` of the
row of a worker that is gone, conditional on that row being unchanged.
"""

import logging
import os
import socket
import threading
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..exceptions import WorkerIdInUseError
from ..models import WorkerRecord

logger = logging.getLogger(__name__)

ATTEMPTS = 3  # a row that comes and goes while we look is looked at again, this many times

_registered_here: set[str] = set()  # worker ids this process registered and has not released
_lock = threading.Lock()


def register(record: WorkerRecord, using: str) -> None:
    """Write ``record`` as its worker's row, over the row of a worker that is gone, if any.

    Raises:
        WorkerIdInUseError: Another live worker holds the id (named in the message).
    """
    rows = WorkerRecord.objects.using(using)
    for _ in range(ATTEMPTS):
        try:
            with transaction.atomic(using=using):
                record.save(using=using, force_insert=True)
        except IntegrityError:
            holder = rows.filter(pk=record.pk).first()
        else:
            return _registered(record)
        if holder is None:
            continue  # unregistered while we looked: insert again
        if not is_gone(holder):
            raise WorkerIdInUseError(
                holder.worker_id, holder.hostname, holder.pid, holder.heartbeat_at,
                holder.expires_at,
            )  # fmt: skip
        if _take_over(record, holder, using):
            return _registered(record)
    raise WorkerIdInUseError(
        record.worker_id, "(unknown: rows kept changing)", 0, record.started_at, record.expires_at
    )


def release(record: WorkerRecord, using: str) -> None:
    """Delete this worker's row (not that of a worker that took the id over since)."""
    with _lock:
        _registered_here.discard(record.worker_id)
    WorkerRecord.objects.using(using).filter(**own_row(record)).delete()


def own_row(record: WorkerRecord) -> dict[str, Any]:
    """The lookup of ``record``'s own row: its id, as registered by its process."""
    return {
        "pk": record.pk, "hostname": record.hostname, "pid": record.pid,
        "started_at": record.started_at,
    }  # fmt: skip


def is_gone(holder: WorkerRecord) -> bool:
    """Whether the worker of a row is gone: its heartbeats stopped for a lease, or it ran on
    this host in a process that no longer runs (or in this one, before a restart that reused
    its pid, as a container's first process does)."""
    if holder.expires_at < timezone.now():
        return True
    if holder.hostname != socket.gethostname():
        return False
    if holder.pid == os.getpid():
        with _lock:
            return holder.worker_id not in _registered_here
    return not _process_runs(holder.pid)


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


def _take_over(record: WorkerRecord, holder: WorkerRecord, using: str) -> bool:
    """Replace the row of a gone worker, unless it changed since it was read."""
    fields = {
        field.attname: getattr(record, field.attname)
        for field in WorkerRecord._meta.concrete_fields
        if not field.primary_key
    }
    taken = (
        WorkerRecord.objects.using(using)
        .filter(
            pk=holder.pk,
            hostname=holder.hostname,
            pid=holder.pid,
            started_at=holder.started_at,
            heartbeat_at=holder.heartbeat_at,
        )
        .update(**fields)
    )
    if taken:
        logger.warning(
            "worker %s: took over the row of a worker that is gone (host %s, pid %s, last "
            "heartbeat %s)",
            record.worker_id,
            holder.hostname,
            holder.pid,
            holder.heartbeat_at.isoformat(timespec="seconds"),
        )
    return bool(taken)


def _registered(record: WorkerRecord) -> None:
    with _lock:
        _registered_here.add(record.worker_id)
