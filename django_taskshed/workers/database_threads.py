"""A thread with a database connection of its own, for one kind of worker step.

The worker claims on one and writes results on another, so that the claim of the next
batch does not wait behind the results of the last (on SQLite, which has one writer at a
time, both kinds share one).
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from django.db import connections

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseThread:
    """Runs sync database steps one at a time in a thread of its own, from async code."""

    def __init__(self, using: str, name: str):
        self.using = using
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` in this thread; its exception is raised here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._call, func, *args))

    def _call(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return func(*args)
        except Exception:
            # A broken connection (the server restarted, say) is replaced at the next step.
            try:
                connections[self.using].close_if_unusable_or_obsolete()
            except Exception:  # some drivers refuse to close what is already closed
                logger.debug("%s: closing a broken connection failed", self.name, exc_info=True)
            raise

    async def close(self) -> None:
        """Close this thread's connections and let the thread go; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.run(connections.close_all)
        except Exception:
            logger.warning("%s: could not close its database connection", self.name, exc_info=True)
        self._executor.shutdown(wait=False)


def worker_threads(using: str) -> tuple[DatabaseThread, DatabaseThread]:
    """A worker's threads for claims and for results; on SQLite, which has one writer at a
    time, one thread serves both."""
    claims = DatabaseThread(using, "taskshed-claim")
    if connections[using].vendor == "sqlite":
        return claims, claims
    return claims, DatabaseThread(using, "taskshed-settle")
