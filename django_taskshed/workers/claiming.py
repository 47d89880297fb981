"""The worker's claim step and its sleep between claims (timed, when it has metrics)."""

import logging
import time
from datetime import datetime, timedelta

from django.utils import timezone

from .. import rereads
from ..datastores import ClaimedTask, DjangoDataStore
from .alarm import Alarm
from .database_threads import DatabaseThread
from .options import WorkerOptions

# Tasks due this soon are claimed early and started by the event loop's timer at their
# run_at, so the claim's round trips do not make them late.
CLAIM_AHEAD = 0.05

logger = logging.getLogger(__name__)


class Claims:
    """Claims due tasks through the datastore in the claim thread, and sleeps until the next
    is due, a hint or the safety poll.

    With metrics, each claim is timed and counted, and a claim made because the safety poll
    woke the worker (no hint, no known due time) counts as a poll: one that finds tasks is the
    fallback catching what no notification announced.

    With a poll interval of ``rereads.MIN_HORIZON`` or more, the worker keeps the promise its
    row publishes (``rereads``): it never sleeps past it, and before its first claim at or
    after it, it publishes the next one (one write per poll interval, none per wake-up).
    """

    def __init__(
        self,
        datastore: DjangoDataStore,
        worker_id: str,
        options: WorkerOptions,
        thread: DatabaseThread,
        alarm: Alarm,
    ):
        self.datastore = datastore
        self.worker_id = worker_id
        self.options = options
        self.thread = thread
        self.alarm = alarm
        self.polled = False  # the last sleep ended at the safety poll's deadline
        self.publishes = options.poll_interval >= rereads.MIN_HORIZON
        self.promise: datetime | None = None  # the rereads_at last published

    async def keep_promise(self) -> None:
        """Before a claim: publish the next re-read time once the last one has come."""
        now = timezone.now()
        if not self.publishes or (self.promise is not None and now < self._renew_at()):
            return
        promise = now + timedelta(seconds=self.options.poll_interval)
        step = (rereads.publish, self.datastore.using, self.worker_id, promise)
        if not await self.thread.run(*step):
            logger.debug("worker %s: no row to publish its re-read time in", self.worker_id)
        self.promise = promise

    def _renew_at(self) -> datetime:
        # Early by the claim's look-ahead: the claim that follows the renewal starts the
        # tasks due at the promise on time.
        assert self.promise is not None  # noqa: S101
        return self.promise - timedelta(seconds=CLAIM_AHEAD)

    async def claim(self, limit: int) -> list[ClaimedTask]:
        """Claim up to ``limit`` due tasks under this worker's lease."""
        step = (self.datastore.claim_due_tasks, self.worker_id, limit, self.options.lease)
        await self.keep_promise()
        polled, self.polled = self.polled, False
        metrics = self.options.metrics
        if metrics is None:
            return await self.thread.run(*step, CLAIM_AHEAD, self.options.queues)
        begun = time.perf_counter()
        claims = await self.thread.run(*step, CLAIM_AHEAD, self.options.queues)
        metrics.claimed(len(claims), time.perf_counter() - begun, polled)
        return claims

    async def sleep(self, free_slots: int) -> None:
        """Sleep until the earliest free task is due (when a slot is free), a hint or the poll."""
        now = timezone.now()
        poll_at = now + timedelta(seconds=self.options.poll_interval)
        # Not past the promise; one already come is renewed by the next claim (a worker with
        # no free slot claims nothing: it waits for a slot, without spinning).
        if self.promise is not None and (renew_at := self._renew_at()) > now:
            poll_at = min(poll_at, renew_at)
        deadline = poll_at
        if free_slots > 0:
            free_at = self.datastore.next_free_run_at  # of a task in this worker's queues
            next_run = await self.thread.run(free_at, self.options.queues)
            if next_run is not None:
                deadline = min(deadline, next_run - timedelta(seconds=CLAIM_AHEAD))
        rung = await self.alarm.sleep_until(deadline)
        self.polled = not rung and deadline == poll_at
