"""The worker's heartbeat thread: renews leases and the worker's row, whatever the loop is doing.

It runs in its own thread with its own database connection, so a callback that blocks the
event loop cannot starve it and leases of running tasks never lapse while the process lives.
The connection is kept from beat to beat, whatever ``CONN_MAX_AGE`` says, and replaced once
it is found broken.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import IntegrityError, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..conf import taskshed_settings
from ..datastores import DjangoDataStore
from ..datastores.runs import prune_runs, retention
from ..models import WorkerRecord
from .database_threads import call_reconnecting
from .registration import own_row

logger = logging.getLogger(__name__)

PRUNE_EVERY = 60.0  # seconds between two prunes of the run history by one worker
PRUNE_BATCHES = 10  # statements of at most 1,000 rows each per prune: the heartbeat stays short
BEAT_FIELDS = ("heartbeat_at", "expires_at", "running")


class Heartbeat:
    """Every ``interval`` seconds: renew leases for ``held_tokens()`` and refresh the worker row."""

    def __init__(
        self,
        record: WorkerRecord,
        datastore: DjangoDataStore,
        lease_seconds: float,
        held_tokens: Callable[[], list[str]],
        running: Callable[[], int],
    ):
        self.record = record
        self.datastore = datastore
        self.using = datastore.using
        self.lease_seconds = lease_seconds
        self.interval = lease_seconds / 3
        self.held_tokens = held_tokens
        self.running = running
        self._pruned_at: float | None = None  # monotonic time of this worker's last prune
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskshed-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    call_reconnecting(self.using, self.beat)
                except Exception:
                    logger.warning("heartbeat of worker %s failed", self.record.pk, exc_info=True)
        finally:
            connections.close_all()

    def beat(self) -> None:
        """Renew leases, refresh this worker's row, and drop rows of workers long silent."""
        self.datastore.renew_leases(self.record.pk, self.held_tokens(), self.lease_seconds)
        now = timezone.now()
        self.record.heartbeat_at = now
        # Three missed beats (one lease) and this worker's row may be dropped by any other.
        self.record.expires_at = now + timedelta(seconds=self.lease_seconds)
        self.record.running = self.running()
        # Only the heartbeat's own fields (the worker's loop publishes ``rereads_at``), and only
        # of this worker's own row: not of one that took the id over while this process was
        # stopped (SIGSTOP, a frozen VM) past its lease.
        beat = {name: getattr(self.record, name) for name in BEAT_FIELDS}
        rows = WorkerRecord.objects.using(self.using)
        if not rows.filter(**own_row(self.record)).update(**beat):
            self.register_again(rows)
        rows.filter(expires_at__lt=now).delete()
        self.prune_history(now)

    def register_again(self, rows: "QuerySet[WorkerRecord]") -> None:
        """This worker's row is gone (dropped as expired after missed beats): insert it again,
        with no re-read time (every hint is sent). If another worker holds the id now, say so:
        this one goes on running what it holds, its writes fenced by its claims."""
        try:
            with transaction.atomic(using=self.using):
                self.record.save(using=self.using, force_insert=True)
        except IntegrityError:
            holder = rows.filter(pk=self.record.pk).first()
            if holder is not None:
                logger.error(
                    "worker %s: the id was taken over by host %s, pid %s while this process "
                    "(pid %s) missed its heartbeats; stop this one", self.record.pk,
                    holder.hostname, holder.pid, self.record.pid,
                )  # fmt: skip

    def prune_history(self, now: datetime) -> None:
        """At most once a minute: delete a few batches of runs past ``HISTORY_RETENTION``."""
        if self._pruned_at is not None and time.monotonic() - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = time.monotonic()
        if taskshed_settings.HISTORY:
            prune_runs(self.using, now - retention(), max_batches=PRUNE_BATCHES)
