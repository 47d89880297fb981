"""What a worker starts and stops together: its row and heartbeat, its place in the group, and
its threads (database steps and sync callbacks)."""

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from django.utils import timezone

from .. import notifications
from ..conf import taskshed_settings
from ..declared import sync_schedules
from ..models import WorkerRecord
from . import registration
from .database_threads import DatabaseThread
from .heartbeat import Heartbeat
from .recycling import MemoryLimit

if TYPE_CHECKING:
    from .worker import EventDrivenWorker

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 1.0  # seconds start() waits to join the group before going on without it


class WorkerResources:
    """An async context manager: entered when a worker starts, exited once it has drained.

    Entering registers the worker (its row, renewed by the heartbeat thread with the leases it
    holds; refused while a live worker has its id), writes the schedules declared in code and
    joins the channel layer's group before returning, so that no notification sent after
    ``start()`` is missed. Exiting undoes each (a step that fails is logged and the rest still
    runs), and closes the threads' connections. A failed start undoes what it did.
    """

    def __init__(
        self,
        worker: "EventDrivenWorker",
        threads: tuple[DatabaseThread, ...],
        executor: ThreadPoolExecutor,
        held_tokens: Callable[[], list[str]],
    ):
        self.worker = worker
        self.threads = threads
        self.executor = executor
        self.held_tokens = held_tokens
        self.heartbeat: Heartbeat | None = None
        self.listener: notifications.GroupListener | None = None
        self.memory_limit: MemoryLimit | None = None

    async def __aenter__(self) -> "WorkerResources":
        try:
            await self._enter()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _enter(self) -> None:
        worker, db = self.worker, self.threads[0]
        heartbeat = Heartbeat(
            self._record(), worker.datastore, worker.options.lease, self.held_tokens,
            worker.running_count,
        )  # fmt: skip
        # Start-up steps run on the claim thread: the worker opens no other connection.
        await db.run(registration.register, heartbeat.record, worker.datastore.using)
        self.heartbeat = heartbeat
        await db.run(sync_schedules, worker.datastore)
        await db.run(heartbeat.start)
        metrics = worker.options.metrics
        if metrics is not None:
            metrics.watch_running(worker.running_count)
        notifications.LOCAL_WORKERS.add(worker)
        layer = notifications.channel_layer()
        if layer is not None:
            self.listener = notifications.GroupListener(
                layer, taskshed_settings.GROUP, self._hint_receiver()
            )
            self.listener.start()
            try:
                await asyncio.wait_for(self.listener.joined.wait(), JOIN_TIMEOUT)
            except asyncio.TimeoutError:
                logger.warning(
                    "worker %s: the channel layer is not answering; polling", worker.worker_id
                )
        if worker.options.max_memory is not None:
            self.memory_limit = MemoryLimit(
                worker.worker_id, worker.options.max_memory, worker.shutdown
            )
            self.memory_limit.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Undo what was done; a step that fails is logged and the next still runs."""
        notifications.LOCAL_WORKERS.discard(self.worker)
        if self.memory_limit is not None:
            await self._quietly("stopping the memory watch", self.memory_limit.close())
        if self.listener is not None:
            await self._quietly("leaving the group", self.listener.close())
        if self.heartbeat is not None:
            unregister = self.threads[0].run(self._unregister, self.heartbeat)
            await self._quietly("unregistering", unregister)
        self.executor.shutdown(wait=False, cancel_futures=True)
        for thread in self.threads:
            await thread.close()

    def _unregister(self, heartbeat: Heartbeat) -> None:
        """Stop the heartbeat, then delete the worker's row (in the claim thread)."""
        heartbeat.stop()
        registration.release(heartbeat.record, self.worker.datastore.using)

    async def _quietly(self, what: str, step: Awaitable[object]) -> None:
        try:
            await step
        except Exception:
            logger.exception("worker %s: %s failed; stopping anyway", self.worker.worker_id, what)

    def _hint_receiver(self) -> Callable[[datetime | None], object]:
        """The worker's wake-up, counting each notification when the worker has metrics."""
        wake, metrics = self.worker.update_schedule, self.worker.options.metrics
        if metrics is None:
            return wake

        def counted(run_at: datetime | None) -> object:
            metrics.notification_received()
            return wake(run_at)

        return counted

    def _record(self) -> WorkerRecord:
        now = timezone.now()
        return WorkerRecord(
            worker_id=self.worker.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            expires_at=now + timedelta(seconds=self.worker.options.lease),
            callbacks=sorted(self.worker.callbacks or ()),
        )
