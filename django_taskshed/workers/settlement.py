"""What a worker holds until its results are written, and the writing of them, in batches."""

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from ..datastores import ClaimedTask, DjangoDataStore, Outcome
from .database_threads import DatabaseThread

logger = logging.getLogger(__name__)

ERROR_BACKOFF = 1.0  # seconds to wait after a failed write before trying again


class Settlement:
    """The claims a worker holds, and their results on their way to the database.

    Results that come in while one batch is written join the next. A failed write is
    retried; a result whose lease was lost is logged and dropped (``DjangoDataStore.settle``).

    Args:
        datastore: Where the results go.
        worker_id: Whose leases these are.
        db: The thread (and connection) that writes.
        hint: Called with the earliest new ``run_at`` a written batch set.
        idle: Called once nothing is left to write.
    """

    def __init__(
        self,
        datastore: DjangoDataStore,
        worker_id: str,
        db: DatabaseThread,
        hint: Callable[[datetime], None],
        idle: Callable[[], None],
    ):
        self.datastore = datastore
        self.worker_id = worker_id
        self.db = db
        self._hint = hint
        self._idle = idle
        self._held: dict[str, ClaimedTask] = {}  # claimed and not yet settled
        self._lock = threading.Lock()  # the heartbeat thread reads the held tokens
        self._outcomes: list[Outcome] = []
        self._flushing: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """Whether results are waiting to be written."""
        return bool(self._outcomes)

    def hold(self, claim: ClaimedTask) -> None:
        with self._lock:
            self._held[claim.task_id] = claim

    def held_tokens(self) -> list[str]:
        """The claim tokens of what is held (safe to call from any thread)."""
        with self._lock:
            return list({claim.claim_token for claim in self._held.values()})

    def add(self, outcome: Outcome) -> None:
        """Queue a result; a write starts unless one is under way."""
        self._outcomes.append(outcome)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def drain(self) -> None:
        """Return once every queued result is written."""
        if self._flushing is not None:
            await self._flushing
        await self._flush()

    async def finish(self, keep: Iterable[str] = ()) -> None:
        """Write every queued result, then give back the held claims whose results will not
        come (except those of ``keep``, sync callbacks still running)."""
        await self.drain()
        keep = set(keep)
        with self._lock:
            unfinished = [c for c in self._held.values() if c.task_id not in keep]
        if not unfinished:
            return
        released = await self.db.run(self.datastore.release_tasks, self.worker_id, unfinished)
        if released:
            logger.info("worker %s released %d unfinished task(s)", self.worker_id, released)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the results of this loop turn join the batch
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                report = await self.db.run(self.datastore.settle, self.worker_id, batch)
            except Exception:
                logger.exception(
                    "worker %s: could not record %d results", self.worker_id, len(batch)
                )
                self._outcomes[:0] = batch
                await asyncio.sleep(ERROR_BACKOFF)
                continue
            for task_id in report.lost:
                logger.warning("task %s: lease lost before its result was written", task_id)
            with self._lock:
                for outcome in batch:
                    self._held.pop(outcome.claim.task_id, None)
            upcoming = [o.changes["run_at"] for o in batch if "run_at" in o.changes]
            if upcoming:
                self._hint(min(upcoming))
        self._idle()  # the worker may be waiting for the results before it stops
