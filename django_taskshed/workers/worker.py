"""EventDrivenWorker: the loop that claims due tasks through the datastore and runs them."""

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..datastores import ClaimedTask, DjangoDataStore
from ..eager import eager
from ..exceptions import DuplicateCallbackError
from ..registry import worker_callbacks
from .alarm import Alarm
from .claiming import Claims
from .database_threads import worker_threads
from .inflight import InFlight, Run
from .options import WorkerOptions, default_worker_id
from .resources import WorkerResources
from .runner import callback_threads, run_claim
from .settlement import Settlement

logger = logging.getLogger(__name__)

ERROR_BACKOFF = 1.0  # seconds to wait after a failed database step


class EventDrivenWorker:
    """Runs due tasks: sleeps until the earliest ``run_at``, wakes early on a hint.

    It claims due tasks through its datastore in batches, under a lease a heartbeat thread
    renews; runs at most ``concurrency`` callbacks at once; and writes how each run ended,
    fenced by the claim, so that a worker that lost its lease changes nothing.

    Args:
        callback_map: Name -> callable (async or sync); None uses the registry.
        datastore: Where tasks live; defaults to ``DjangoDataStore()``.
        **options: The fields of ``WorkerOptions`` (``concurrency``, ``lease``, ``queues``...).
    """

    def __init__(
        self,
        callback_map: dict[str, Callable[..., Any]] | None = None,
        datastore: DjangoDataStore | None = None,
        **options: Any,
    ):
        self.datastore = datastore or DjangoDataStore()
        self.options = WorkerOptions.from_kwargs(options)
        self.worker_id = self.options.worker_id or default_worker_id()
        self.callbacks = dict(callback_map) if callback_map is not None else None
        self.claimed_count = 0
        self._main: asyncio.Task[None] | None = None
        self._alarm = Alarm()
        self._stopping = False
        self._nothing_due = False
        self._threads = worker_threads(self.datastore.using)
        self._claims = Claims(
            self.datastore, self.worker_id, self.options, self._threads[0], self._alarm
        )
        self._settlement = Settlement(
            self.datastore, self.worker_id, self._threads[1], self._alarm.hint, self._alarm.ring
        )
        self._inflight = InFlight(on_outcome=self._settlement.add, on_end=self._alarm.ring)
        self._executor = callback_threads(self.options.concurrency)
        self._resources = AsyncExitStack()
        self._closing: asyncio.Task[None] | None = None

    def add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        """Serve ``callback`` under ``name``; a name already taken raises ValueError."""
        if self.callbacks is None:
            self.callbacks = worker_callbacks()
        if name in self.callbacks:
            raise DuplicateCallbackError(name, repr(self.callbacks[name]), repr(callback))
        self.callbacks[name] = callback

    async def start(self) -> None:
        """Register, join the group, start claiming; calling it again does nothing."""
        if self._alarm.loop is not None:
            return
        self._alarm.loop = asyncio.get_running_loop()
        if self.callbacks is None:
            self.callbacks = worker_callbacks()
        await self._resources.enter_async_context(
            WorkerResources(self, self._threads, self._executor, self._settlement.held_tokens)
        )
        self._main = asyncio.create_task(self._run(), name=f"taskshed-worker:{self.worker_id}")
        logger.info("worker %s started", self.worker_id)

    async def shutdown(self) -> None:
        """Stop claiming, let running callbacks finish within ``shutdown_timeout``, release
        the rest, and unregister. Calling it again does nothing."""
        if self._main is None:
            return
        self._stopping = True
        self._alarm.ring()
        await asyncio.shield(self._main)

    async def wait_stopped(self) -> None:
        """Return once the worker has stopped (after shutdown(), ``max_tasks`` or ``burst``)."""
        if self._main is not None:
            await asyncio.shield(self._main)

    @eager
    def update_schedule(self, run_at: datetime | None = None) -> None:
        """A hint that a task changed: wake now if ``run_at`` (or unknown) is earlier than
        the current deadline. Safe to call from any thread; may be awaited, as in TaskShed."""
        self._alarm.hint_from_anywhere(run_at)

    async def count_due(self) -> int:
        """How many tasks of this worker's queues are due now (read on the claim thread)."""
        return await self._threads[0].run(self._count_due)

    def _count_due(self) -> int:
        due = self.datastore.get_queryset().due(timezone.now())
        return due.in_queues(self.options.queues).count()

    def running_count(self) -> int:
        return len(self._inflight)

    @property
    def stuck_sync_callbacks(self) -> set[str]:
        """Task ids whose sync callbacks were still running when the worker stopped."""
        return set(self._inflight.sync_running)

    async def _run(self) -> None:
        try:
            while not self._stopping and not self._finished():
                try:
                    if not await self._claim_batch():
                        await self._claims.sleep(self._claim_limit())
                except Exception:
                    logger.exception("worker %s: database step failed", self.worker_id)
                    await self._alarm.nap(ERROR_BACKOFF)
        finally:
            await self._drain()

    async def _claim_batch(self) -> bool:
        """Claim and start what is due; True if a full batch came (more may be due)."""
        self._alarm.reset()  # a hint from here on wakes the next sleep
        limit = self._claim_limit()
        if limit <= 0:
            return False
        claims = await self._claims.claim(limit)
        self._nothing_due = not claims
        for claim in claims:
            self._begin(claim)
        return len(claims) == limit and len(self._inflight) < self.options.concurrency

    def _claim_limit(self) -> int:
        return self.options.claim_limit(len(self._inflight), self.claimed_count)

    def _finished(self) -> bool:
        idle = not self._inflight and not self._settlement.pending
        if self.options.done_claiming(self.claimed_count):
            return idle
        return self.options.burst and self._nothing_due and idle

    def _begin(self, claim: ClaimedTask) -> None:
        self.claimed_count += 1
        self._settlement.hold(claim)
        args = (self.callbacks or {}, self._executor, self._inflight.sync_running, self.worker_id)
        run = run_claim(claim, *args, self.options.metrics, self.datastore.using)
        self._inflight.start(claim, run)

    async def _drain(self) -> None:
        """Finish in-flight work within the shutdown timeout, release the rest, unregister
        (after the sync callbacks still running, which keep their leases, have returned)."""
        timeout = self.options.shutdown_timeout if self._stopping else None
        stuck = await self._inflight.finish(timeout, self.worker_id)
        await self._settle_all(keep=self._inflight.sync_running)
        if stuck:
            self._closing = asyncio.create_task(self._close(stuck))
        else:
            await self._close([])

    async def _close(self, stuck: list[Run]) -> None:
        if stuck:
            await asyncio.gather(*stuck, return_exceptions=True)
            await self._settle_all()
        await self._resources.aclose()
        logger.info("worker %s stopped", self.worker_id)

    async def _settle_all(self, keep: Iterable[str] = ()) -> None:
        """Write the results and release the rest; a failure is logged and the shutdown goes on
        (what was not released is freed when its lease lapses)."""
        try:
            await self._settlement.finish(keep=keep)
        except Exception:
            logger.exception("worker %s: could not release its unfinished tasks", self.worker_id)
