"""A thread with a database connection of its own, for one kind of worker step.

The worker claims on one and writes results on another, so that the claim of the next
batch does not wait behind the results of the last (on SQLite, which has one writer at a
time, both kinds share one). Each keeps its connection for the worker's life, whatever
``CONN_MAX_AGE`` says, and replaces it once it is found broken (``call_reconnecting``).

On SQLite's shared thread, claims and result writes that come while one of them runs join
its transaction (``run_grouped``): one commit for the results of a batch and the claim of
the next, where each commit costs a rollback journal's writes and fsyncs.
"""

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from django.db import Error, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.transaction import TransactionManagementError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseThread:
    """Runs sync database steps one at a time in a thread of its own, from async code.

    With ``group_commits``, the steps given to ``run_grouped`` while one of them runs share
    its transaction, each in a savepoint of its own (a failing step undoes only itself); each
    caller gets its result once that transaction is committed.
    """

    GROUP_MAX = 8  # steps in one transaction at most

    def __init__(self, using: str, name: str, group_commits: bool = False):
        self.using = using
        self.name = name
        self.group_commits = group_commits
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False
        self._lock = threading.Lock()
        self._waiting: list[_Step] = []  # steps for run_grouped not yet taken by the thread
        self._group_queued = False  # a _run_group is queued or taking steps

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` in this thread; its exception is raised here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._call, func, *args))

    async def run_grouped(self, func: Callable[..., T], *args: Any) -> T:
        """``run(func, *args)``; with ``group_commits``, in the transaction of the steps given
        here meanwhile. ``func`` must be safe in a transaction (it may not close connections)."""
        if not self.group_commits:
            return await self.run(func, *args)
        loop = asyncio.get_running_loop()
        step = _Step(func, args, loop, loop.create_future())
        with self._lock:
            self._waiting.append(step)
            queue, self._group_queued = not self._group_queued, True
        if queue:
            self._submit_group()
        result: T = await step.future
        return result

    def _take(self, room: int) -> list["_Step"]:
        with self._lock:
            taken, self._waiting = self._waiting[:room], self._waiting[room:]
        return taken

    def _run_group(self) -> None:
        """In this thread: the waiting steps, and those given while they run (up to
        ``GROUP_MAX``), in one transaction, each in a savepoint; then their results (or
        errors) go to their callers. A failed transaction fails every step in it."""
        steps = self._take(self.GROUP_MAX)
        done: list[tuple[_Step, Any, BaseException | None]] = []
        connection = connections[self.using]
        try:
            with transaction.atomic(using=self.using):
                while len(done) < len(steps):
                    step = steps[len(done)]
                    try:
                        with transaction.atomic(using=self.using):
                            result = self._call(step.func, *step.args)
                            _refuse_rollback(connection, "this step")
                        done.append((step, result, None))
                    except BaseException as exc:  # the step's own failure, for its caller
                        done.append((step, None, exc))
                    if len(done) == len(steps) < self.GROUP_MAX:
                        steps += self._take(self.GROUP_MAX - len(steps))
                _refuse_rollback(connection, "the transaction of these steps")
        except BaseException as exc:
            done = [(step, None, exc if failed is None else failed) for step, _, failed in done]
            done += [(step, None, exc) for step in steps[len(done) :]]
        for step, result, error in done:
            try:
                step.loop.call_soon_threadsafe(_settle_future, step.future, result, error)
            except RuntimeError:  # its event loop is closed: nobody waits for it
                logger.debug("%s: a step's caller is gone", self.name)
        with self._lock:
            again = self._group_queued = bool(self._waiting)
        if again:  # given after the last look: a transaction of their own
            self._submit_group()

    def _submit_group(self) -> None:
        try:
            self._executor.submit(self._run_group)
        except RuntimeError as exc:  # the thread was closed: the steps waiting fail
            with self._lock:
                failed, self._waiting, self._group_queued = self._waiting, [], False
            for step in failed:
                step.loop.call_soon_threadsafe(_settle_future, step.future, None, exc)

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


class _Step:
    __slots__ = ("func", "args", "loop", "future")

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: "asyncio.Future[Any]",
    ):
        self.func, self.args, self.loop, self.future = func, args, loop, future


def _refuse_rollback(connection: BaseDatabaseWrapper, what: str) -> None:
    """Raise if leaving the atomic block would roll back without an error (a query failed
    and was caught inside it), so that nobody takes a result that was not committed."""
    if connection.needs_rollback:
        raise TransactionManagementError(f"{what} was marked for rollback; nothing was kept")


def _settle_future(future: "asyncio.Future[Any]", result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


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
    time, one thread serves both, and groups their commits."""
    if connections[using].vendor == "sqlite":
        shared = DatabaseThread(using, "taskshed-claim", group_commits=True)
        return shared, shared
    return DatabaseThread(using, "taskshed-claim"), DatabaseThread(using, "taskshed-settle")
