"""A thread with a database connection of its own, for one kind of worker step.

The worker claims on one and writes results on another, so that the claim of the next
batch does not wait behind the results of the last (on SQLite, which has one writer at a
time, both kinds share one). Each keeps its connection for the worker's life, whatever
``CONN_MAX_AGE`` says, and replaces it once it is found broken (``call_reconnecting``).
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from django.db import Error, connections
from django.db.backends.base.base import BaseDatabaseWrapper

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
        return call_reconnecting(self.using, func, *args)

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


def call_reconnecting(using: str, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` on this thread's connection to ``using``; if it fails because that
    connection broke (the server restarted, the backend was terminated), once more at once on a
    new connection. Every step a worker takes this way is safe to repeat: claims and writes are
    fenced by the claim token, and the rest are idempotent."""
    connection = connections[using]
    before = connection.connection
    try:
        return func(*args)
    except Error:
        if not lost(connection, before):
            raise
        logger.info("database connection %r was lost; retrying on a new one", using)
        return func(*args)


def lost(connection: BaseDatabaseWrapper, before: Any) -> bool:
    """After a failed step: whether it failed because ``connection`` (``before``, its raw
    connection when the step began) broke; a broken one is closed, so that the next step opens
    a new one. A working connection is kept, even past ``CONN_MAX_AGE``.

    Django's own flag cannot tell: a failed ``atomic()`` closes a dead connection and at once
    opens another (to restore autocommit), which leaves no error behind.
    """
    if connection.connection is None:
        return before is not None  # closed by the failed step (not: it could not connect)
    if before is not None and connection.connection is not before:
        return True  # replaced by Django while the step failed
    if connection.in_atomic_block or _answers(connection):
        return False
    try:
        connection.close()
    except Exception:  # some drivers refuse to close what is already broken
        logger.debug("closing the broken connection %r failed", connection.alias, exc_info=True)
    return connection.connection is None


def close_broken() -> None:
    """Close this thread's connections that no longer answer (outside a transaction only), so
    that the next query opens a new one; working ones are kept."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.in_atomic_block:
            lost(connection, connection.connection)


def _answers(connection: BaseDatabaseWrapper) -> bool:
    if connection.vendor != "sqlite":
        return bool(connection.is_usable())
    try:  # Django's SQLite is_usable() says yes without asking
        connection.connection.execute("SELECT 1")
    except Exception:
        return False
    return True


def worker_threads(using: str) -> tuple[DatabaseThread, DatabaseThread]:
    """A worker's threads for claims and for results; on SQLite, which has one writer at a
    time, one thread serves both."""
    claims = DatabaseThread(using, "taskshed-claim")
    if connections[using].vendor == "sqlite":
        return claims, claims
    return claims, DatabaseThread(using, "taskshed-settle")
