"""EventDrivenWorker: claims due tasks under a lease and runs their callbacks on the event loop."""

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from . import leases, notifications
from .conf import taskshed_settings
from .datastores import DjangoDataStore
from .dbthread import DatabaseThread
from .exceptions import DuplicateCallbackError
from .heartbeat import Heartbeat
from .leases import ClaimedTask
from .models import WorkerRecord
from .registry import get_callbacks
from .runner import failed, invoke, resolve, succeeded
from .settlement import Settlement

logger = logging.getLogger(__name__)

ERROR_BACKOFF = 1.0  # seconds to wait after a failed database step
# Tasks due this soon are claimed early and started by the event loop's timer at their
# run_at, so the claim's round trips do not make them late.
CLAIM_AHEAD = 0.05
MIN_NAP = 0.002
SYNC_THREADS = 32  # sync callbacks run in at most this many threads (each may hold a connection)
JOIN_TIMEOUT = 1.0  # seconds start() waits to join the group before going on without it


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs; each defaults to the TASKSHED setting of the same meaning."""

    concurrency: int
    poll_interval: float
    batch_size: int
    lease: float
    worker_id: str | None = None
    max_tasks: int | None = None
    burst: bool = False
    shutdown_timeout: float = 30.0

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> "WorkerOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(options.keys() - known)
        if unknown:
            raise TypeError(
                f"unknown worker option(s) {', '.join(unknown)}; known: {sorted(known)}"
            )
        values = {
            "concurrency": taskshed_settings.CONCURRENCY,
            "poll_interval": taskshed_settings.POLL_INTERVAL,
            "batch_size": taskshed_settings.BATCH_SIZE,
            "lease": taskshed_settings.LEASE_SECONDS,
        }
        values.update({key: value for key, value in options.items() if value is not None})
        return cls(**values)


def default_worker_id() -> str:
    """Unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EventDrivenWorker:
    """Runs due tasks: sleeps until the earliest ``run_at``, wakes early on a hint.

    It claims due tasks in batches under a lease (renewed by a heartbeat thread), runs at
    most ``concurrency`` callbacks at once, and writes how each run ended, fenced by the
    claim so a worker that lost its lease changes nothing.

    Args:
        callback_map: Name -> callable (async or sync); None uses the registry.
        datastore: Where tasks live; defaults to ``DjangoDataStore()``.
        **options: ``concurrency``, ``poll_interval``, ``batch_size``, ``lease`` (seconds),
            ``worker_id``, ``max_tasks``, ``burst``, ``shutdown_timeout`` (see WorkerOptions).
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
        self.callbacks: dict[str, Callable[..., Any]] | None = (
            dict(callback_map) if callback_map is not None else None
        )
        self.claimed_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # bound to the loop that first waits on it
        self._deadline: datetime | None = None
        self._stopping = False
        self._nothing_due = False
        self._running: dict[asyncio.Task[None], ClaimedTask] = {}
        self._sync_running: set[str] = set()
        # Threads start on first use: a worker that never starts costs none.
        self._executor = ThreadPoolExecutor(
            max_workers=min(self.options.concurrency, SYNC_THREADS),
            thread_name_prefix="taskshed-callback",
        )
        using = self.datastore.using
        self._claim_db = DatabaseThread(using, "taskshed-claim")
        one_writer = connections[using].vendor == "sqlite"
        self._settle_db = self._claim_db if one_writer else DatabaseThread(using, "taskshed-settle")
        self._settlement = Settlement(
            using, self.worker_id, self._settle_db, hint=self._hint, idle=self._poke
        )
        self._heartbeat: Heartbeat | None = None
        self._listener: notifications.GroupListener | None = None
        self._closing: asyncio.Task[None] | None = None

    # -- public API ---------------------------------------------------------------------

    def add_callback(self, name: str, callback: Callable[..., Any]) -> None:
        """Serve ``callback`` under ``name``; a name already taken raises ValueError."""
        if self.callbacks is None:
            self.callbacks = get_callbacks()
        if name in self.callbacks:
            raise DuplicateCallbackError(name, repr(self.callbacks[name]), repr(callback))
        self.callbacks[name] = callback

    async def start(self) -> None:
        """Register this worker and start claiming; calling it again does nothing."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.callbacks is None:
            self.callbacks = get_callbacks()
        now = timezone.now()
        record = WorkerRecord(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            expires_at=now + timedelta(seconds=self.options.lease),
            callbacks=sorted(self.callbacks),
        )
        self._heartbeat = Heartbeat(
            record,
            self.datastore.using,
            self.options.lease,
            self._settlement.held_tokens,
            self.running_count,
        )
        await sync_to_async(self._heartbeat.start)()
        notifications.LOCAL_WORKERS.add(self)
        layer = notifications.channel_layer()
        if layer is not None:
            self._listener = notifications.GroupListener(layer, taskshed_settings.GROUP, self._hint)
            self._listener.start()
            try:  # in the group before start() returns, so no notification falls in between
                await asyncio.wait_for(self._listener.joined.wait(), JOIN_TIMEOUT)
            except asyncio.TimeoutError:
                logger.warning(
                    "worker %s: the channel layer is not answering; polling", self.worker_id
                )
        self._main = asyncio.create_task(self._run(), name=f"taskshed-worker:{self.worker_id}")
        logger.info("worker %s started", self.worker_id)

    async def shutdown(self) -> None:
        """Stop claiming, let running callbacks finish within ``shutdown_timeout``, release
        the rest, and unregister. Calling it again does nothing."""
        if self._main is None:
            return
        self._stopping = True
        self._poke()
        await asyncio.shield(self._main)

    async def wait_stopped(self) -> None:
        """Return once the worker has stopped (after shutdown(), ``max_tasks`` or ``burst``)."""
        if self._main is not None:
            await asyncio.shield(self._main)

    def update_schedule(self, run_at: datetime | None = None) -> None:
        """A hint that a task changed: wake now if ``run_at`` (or unknown) is earlier than
        the current deadline. Safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._hint(run_at)
        else:
            loop.call_soon_threadsafe(self._hint, run_at)

    def running_count(self) -> int:
        return len(self._running)

    @property
    def stopped(self) -> bool:
        return self._main is not None and self._main.done()

    # -- the loop -----------------------------------------------------------------------

    def _hint(self, run_at: datetime | None) -> None:
        if run_at is None or self._deadline is None or run_at < self._deadline:
            self._poke()

    def _poke(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        try:
            while not self._stopping and not self._finished():
                try:
                    if not await self._claim_batch():
                        await self._sleep()
                except Exception:
                    logger.exception("worker %s: database step failed", self.worker_id)
                    await self._nap(ERROR_BACKOFF)
        finally:
            await self._drain()

    async def _claim_batch(self) -> bool:
        """Claim and start what is due; True if a full batch came (more may be due)."""
        self._wake.clear()  # what comes from here on wakes the next sleep
        limit = min(self.options.batch_size, self.options.concurrency - len(self._running))
        if self.options.max_tasks is not None:
            limit = min(limit, self.options.max_tasks - self.claimed_count)
        if limit <= 0:
            return False
        self._deadline = None  # until the next deadline is known, any hint wakes
        claims = await self._claim_db.run(
            leases.claim_due_tasks,
            self.datastore.using,
            self.worker_id,
            limit,
            self.options.lease,
            CLAIM_AHEAD,
        )
        self._nothing_due = not claims
        for claim in claims:
            self._begin(claim)
        return len(claims) == limit and len(self._running) < self.options.concurrency

    async def _sleep(self) -> None:
        """Sleep until the earliest free task is due, a hint, a free slot or the poll."""
        poll = timedelta(seconds=self.options.poll_interval)
        deadline = timezone.now() + poll
        if len(self._running) < self.options.concurrency and not self._done_claiming():
            next_run = await self._claim_db.run(leases.next_run_at, self.datastore.using)
            if next_run is not None:
                deadline = min(deadline, next_run - timedelta(seconds=CLAIM_AHEAD))
        self._deadline = deadline
        # A due task the claim did not get (locked by another worker's claim) must not make
        # this loop spin: nap at least a moment.
        await self._nap(max((deadline - timezone.now()).total_seconds(), MIN_NAP))

    async def _nap(self, seconds: float) -> None:
        """Wait for a wake-up or ``seconds``; always yields to the event loop."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0)  # an already-set event returns without yielding (Python 3.12)

    def _done_claiming(self) -> bool:
        limit = self.options.max_tasks
        return limit is not None and self.claimed_count >= limit

    def _finished(self) -> bool:
        idle = not self._running and not self._settlement.pending
        if self._done_claiming():
            return idle
        return self.options.burst and self._nothing_due and idle

    # -- running one task ---------------------------------------------------------------

    def _begin(self, claim: ClaimedTask) -> None:
        self.claimed_count += 1
        self._settlement.hold(claim)
        task = asyncio.create_task(self._execute(claim), name=f"taskshed:{claim.task_id}")
        self._running[task] = claim
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._poke()

    async def _execute(self, claim: ClaimedTask) -> None:
        early = (claim.run_at - timezone.now()).total_seconds()
        if early > 0:
            await asyncio.sleep(early)
        started = timezone.now()
        try:
            func = resolve(self.callbacks or {}, claim)
            if not asyncio.iscoroutinefunction(func):
                self._sync_running.add(claim.task_id)
            await invoke(func, claim, self._timeout(claim), self._executor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("task %s (%s) failed: %s", claim.task_id, claim.callback, exc)
            outcome = failed(
                claim,
                exc,
                started,
                timezone.now(),
                max_retries=taskshed_settings.MAX_RETRIES,
                backoff=taskshed_settings.RETRY_BACKOFF,
            )
        else:
            outcome = succeeded(claim, started, timezone.now())
        finally:
            self._sync_running.discard(claim.task_id)
        self._settlement.add(outcome)

    def _timeout(self, claim: ClaimedTask) -> float | None:
        if claim.timeout is not None:
            return claim.timeout.total_seconds()
        default: float | None = taskshed_settings.TIMEOUT
        return default

    # -- stopping -----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Finish in-flight work within the shutdown timeout, release the rest, unregister.

        A sync callback cannot be stopped: its task stays leased (the heartbeat goes on
        renewing it) until its thread returns; only then does the worker close.
        """
        timeout = self.options.shutdown_timeout if self._stopping else None
        stuck: list[asyncio.Task[None]] = []
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=timeout)
            for task in pending:
                if self._running[task].task_id in self._sync_running:
                    stuck.append(task)
                else:
                    task.cancel()
            await asyncio.gather(*(t for t in pending if t not in stuck), return_exceptions=True)
        await self._settle_and_release()
        if stuck:
            logger.warning(
                "worker %s: %d sync callback(s) outlived the shutdown timeout; their tasks stay "
                "leased until they return: %s",
                self.worker_id,
                len(stuck),
                ", ".join(sorted(self._sync_running)),
            )
            self._closing = asyncio.create_task(self._close_after(stuck))
        else:
            await self._close()

    async def _settle_and_release(self) -> None:
        await self._settlement.drain()
        released = await self._settlement.release(keep=self._sync_running)
        if released:
            logger.info("worker %s released %d unfinished task(s)", self.worker_id, released)

    async def _close_after(self, stuck: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*stuck, return_exceptions=True)
        await self._settle_and_release()
        await self._close()

    async def _close(self) -> None:
        notifications.LOCAL_WORKERS.discard(self)
        if self._listener is not None:
            await self._listener.close()
        if self._heartbeat is not None:
            await sync_to_async(self._heartbeat.stop)()
            await sync_to_async(self._heartbeat.unregister)()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for thread in (self._claim_db, self._settle_db):
            await thread.close()
        logger.info("worker %s stopped", self.worker_id)

    @property
    def stuck_sync_callbacks(self) -> set[str]:
        """Task ids whose sync callbacks were still running when the worker stopped."""
        return set(self._sync_running)
