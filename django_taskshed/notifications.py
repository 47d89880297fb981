"""The "task changed" transport: one message type sent to a Channels group after each commit."""

import asyncio
import atexit
import concurrent.futures
import concurrent.futures.thread  # its exit hook registers before HINTS' (runs after it)
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any, Protocol

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from .conf import taskshed_settings
from .django_internals import on_commit_callbacks
from .rereads import hint_needed, worth_asking

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "taskshed.changed"
SEND_TIMEOUT = 0.5  # seconds a failing layer may hold up the caller
RETRY_MIN, RETRY_MAX = 0.2, 5.0  # seconds between attempts to rejoin the layer


def idle_timeout(exc: BaseException) -> bool:
    """Whether a layer's receive raised ``exc`` because it simply found nothing in time: a
    timeout, Python's or redis' (channels_redis). redis is not imported for the question (a
    process with another layer, or none, would carry its ~60 modules, ~6 MB): an error of
    redis' can only come once redis is loaded."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return True
    redis_errors = sys.modules.get("redis.exceptions")
    return redis_errors is not None and isinstance(exc, redis_errors.TimeoutError)


CLOSE_ATTEMPTS = 5


class Wakeable(Protocol):
    def update_schedule(self, run_at: datetime | None = None) -> object: ...


def channel_layer() -> Any:
    """The configured channel layer, or None when notifications are off."""
    alias = taskshed_settings.CHANNEL_LAYER
    if alias is None or alias not in getattr(settings, "CHANNEL_LAYERS", {}):
        return None
    return get_channel_layer(alias)


def as_hint(value: Any) -> datetime | None:
    """An aware datetime, or None (no hint); a naive time is read in the current time zone."""
    if not isinstance(value, datetime):
        return None
    aware = timezone.make_aware(value) if timezone.is_naive(value) else value
    return aware.astimezone(dt_timezone.utc)


def changed_message(run_at: datetime | None) -> dict[str, Any]:
    """The message for a change whose earliest affected occurrence is ``run_at``."""
    hint = as_hint(run_at)
    return {"type": MESSAGE_TYPE, "run_at": hint.isoformat() if hint else None}


def parse_changed(message: Any) -> datetime | None:
    """The hinted run_at of a ``taskshed.changed`` message; ValueError if malformed."""
    if not isinstance(message, dict) or message.get("type") != MESSAGE_TYPE:
        raise ValueError(f"not a {MESSAGE_TYPE} message")
    hint = message.get("run_at")
    if hint is None:
        return None
    if not isinstance(hint, str) or len(hint) > 64:
        raise ValueError("run_at must be an ISO datetime string")
    parsed = datetime.fromisoformat(hint)
    if parsed.tzinfo is None:
        raise ValueError("run_at must carry a UTC offset")
    return parsed


class _SendFailures:
    """Log the first failed send of an outage with its traceback, the rest briefly."""

    failing = False

    @classmethod
    def failed(cls) -> None:
        logger.warning(
            "could not notify workers through the channel layer", exc_info=not cls.failing
        )
        cls.failing = True

    @classmethod
    def succeeded(cls) -> None:
        if cls.failing:
            logger.info("notifying workers through the channel layer works again")
        cls.failing = False


class _OneSend:
    """One send's failure, logged once: by the send when its own timeout ends it, or by the sync
    caller that stopped waiting for it first (on a loaded machine the sender thread can be late
    past the caller's margin, and both would log)."""

    __slots__ = ("_lock", "_reported")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reported = False

    def failed(self) -> None:
        with self._lock:
            if self._reported:
                return
            self._reported = True
        _SendFailures.failed()


async def asend_changed(
    run_at: datetime | None,
    send: _OneSend | None = None,
    layer: Any = None,
    group: str | None = None,
) -> None:
    """Tell every worker in the group (by default the configured layer and group); a failure
    is logged, never raised."""
    if layer is None:
        layer = channel_layer()
        if layer is None:
            return
    try:
        await _within(layer.group_send(group or taskshed_settings.GROUP, changed_message(run_at)))
    except Exception:
        (send or _OneSend()).failed()
    else:
        _SendFailures.succeeded()


async def _within(send: Coroutine[Any, Any, Any]) -> None:
    """Await ``send`` for at most SEND_TIMEOUT. ``asyncio.timeout`` (3.11+) runs it in the
    caller's task, so a send that does not wait (the in-memory layer) costs no loop turn."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(SEND_TIMEOUT):
            await send
    else:
        await asyncio.wait_for(send, SEND_TIMEOUT)


def hint_wanted(run_at: datetime | None, using: str) -> bool:
    """Whether the caller is to send the hint of a change committed on ``using`` itself, at
    once (sync, after the commit): on the in-memory layer, and across processes when the hint
    has no time or is due within ``rereads.MIN_HORIZON``. A hint that the workers' re-read
    times may make useless is handed to ``HINTS`` instead (looked up and sent off the caller's
    thread): False."""
    layer = channel_layer()
    return layer is not None and not _handed_off(layer, run_at, using)


def _handed_off(layer: Any, run_at: datetime | None, using: str | None) -> bool:
    """Hand the hint to ``HINTS`` if the workers' re-read times decide it (a layer across
    processes, a change committed on ``using``, at least ``rereads.MIN_HORIZON`` ahead);
    whether it was."""
    if isinstance(layer, InMemoryChannelLayer) or using is None or run_at is None:
        return False
    if not worth_asking(run_at):
        return False
    HINTS.put(layer, taskshed_settings.GROUP, using, run_at)
    return True


def notify(
    run_at: datetime | None, worker: Wakeable | None = None, using: str | None = None
) -> None:
    """Wake the in-process worker directly, then the group (sync code, after a commit on
    ``using``: given, a hint that the workers' re-read times may make useless goes to
    ``HINTS``, which sends it only if a worker may need it, see ``rereads``).

    The message goes out from a long-lived sender thread, waiting at most a moment. The
    in-memory layer's queues belong to the receiving worker's event loop, which a send from
    another thread may not wake: workers of this process are also woken directly.
    """
    if worker is not None:
        worker.update_schedule(run_at)
    layer = channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        for local in list(LOCAL_WORKERS):
            if local is not worker:
                local.update_schedule(run_at)
    elif _handed_off(layer, run_at, using):
        return
    _send_waiting(run_at, layer, taskshed_settings.GROUP)


def _send_waiting(run_at: datetime | None, layer: Any, group: str) -> None:
    """Send from the sender thread, waiting for it at most a moment; failures are logged."""
    send = _OneSend()
    try:
        SENDER.submit(asend_changed(run_at, send, layer, group)).result(SEND_TIMEOUT + 0.1)
    except Exception:
        send.failed()


class _SenderThread:
    """An event loop on a daemon thread, kept for sends from sync code: a channel layer's
    connections live per event loop, so one long-lived loop reuses them.

    It starts with one thread in its loop's default executor, in which asyncio resolves host
    names: a send at interpreter exit (``HINTS``) can start no thread (Python 3.12 refuses,
    even from another thread, as soon as the main thread has ended)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def start(self) -> None:
        """Start the thread now, if it does not run in this process."""
        self._running_loop()

    def submit(self, coroutine: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # new, or a forked child
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                thread = threading.Thread(
                    target=self._loop.run_forever, name="taskshed-notify", daemon=True
                )
                thread.start()
                started = asyncio.run_coroutine_threadsafe(_executor_thread(), self._loop)
                try:
                    started.result(SEND_TIMEOUT)
                except Exception:  # it starts later, or a send at exit resolves no host name
                    logger.debug("the sender's executor thread did not start", exc_info=True)
            return self._loop


async def _executor_thread() -> None:
    """Start the running loop's default executor's first thread (it stays, idle)."""
    await asyncio.get_running_loop().run_in_executor(None, int)


SENDER = _SenderThread()


class _Hints:
    """Hints whose fate hangs on the workers' re-read times (``rereads``), each looked up and
    sent (if a worker may need it) on a thread of this process's own, so that the change's
    caller waits for neither the query nor the send.

    Pending hints for one layer, group and database merge into one, of their earliest run_at:
    a worker that reads the schedule again by it finds them all, and a hint sent for it makes
    every worker read again. The thread gathers hints for ``GATHER`` seconds before it looks
    (these are at least ``rereads.MIN_HORIZON`` ahead), so that a burst of changes costs one
    query and at most one send, not one each. It closes its database connections once idle
    for ``LINGER`` seconds; at exit, the pending hints are sent first (``flush``, at most
    ``EXIT_WAIT`` seconds). A hint lost all the same (the process killed) is a lost message:
    the workers' polls find its task.
    """

    GATHER = 0.01
    LINGER = 1.0
    EXIT_WAIT = 3.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[tuple[Any, str, str], datetime] = {}
        self._busy = False  # a batch taken and not yet delivered
        self._close = False  # asked to close the thread's connections now
        self._flushers = 0  # callers of flush() waiting: no gathering then
        self._pid = 0

    def put(self, layer: Any, group: str, using: str, run_at: datetime) -> None:
        key = (layer, group, using)
        with self._cond:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="taskshed-hints", daemon=True).start()
                SENDER.start()  # no thread can start at exit, when the last hints may go
            earlier = self._pending.get(key)
            self._pending[key] = run_at if earlier is None else min(earlier, run_at)
            if earlier is None and len(self._pending) == 1:
                self._cond.notify_all()  # the thread waits for a first hint (not while gathering)

    def flush(self, timeout: float, close_connections: bool = False) -> bool:
        """Wait until every pending hint is delivered (and, asked to, the thread's database
        connections closed); False if ``timeout`` seconds were not enough."""
        with self._cond:
            if self._pid != os.getpid():
                return True
            self._close = self._close or close_connections
            self._flushers += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(
                    lambda: not (self._pending or self._busy or self._close), timeout
                )
            finally:
                self._flushers -= 1

    def _run(self) -> None:
        connected = False
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                waiting = self.LINGER if connected else None
                if not self._cond.wait_for(lambda: self._pending or self._close, waiting):
                    self._close = True  # idle for LINGER
                if self._pending:
                    self._cond.wait_for(lambda: self._flushers > 0, self.GATHER)
                batch, self._pending = self._pending, {}
                close, self._busy = self._close and not batch, bool(batch) or self._close
            for (layer, group, using), run_at in batch.items():
                connected = True
                self._deliver(layer, group, using, run_at)
            if close:
                connections.close_all()
                connected = False
                with self._cond:
                    self._close = False

    @staticmethod
    def _deliver(layer: Any, group: str, using: str, run_at: datetime) -> None:
        try:
            needed = hint_needed(run_at, using)
            connection = connections[using]
            if connection.errors_occurred and connection.connection is not None:
                if connection.is_usable():  # an error of the query's own
                    connection.errors_occurred = False
                else:
                    connection.close()  # a broken connection: the next check connects anew
        except Exception:  # not a database error (hint_needed answers those): a setting, say
            logger.debug("could not read the workers' re-read times; sending", exc_info=True)
            needed = True
        if needed:
            _send_waiting(run_at, layer, group)


HINTS = _Hints()
os.register_at_fork(after_in_child=HINTS._reset)
# At exit, the hints on their way go first: before the thread pools shut down (threading's
# exit hooks run in reverse order of registration, concurrent.futures' registered above), so
# that asyncio can still resolve a host name; ``atexit`` where threading has no such hook.
getattr(threading, "_register_atexit", atexit.register)(HINTS.flush, _Hints.EXIT_WAIT)
# Workers running in this process, woken directly by sync code when the layer is in-memory.
LOCAL_WORKERS: "weakref.WeakSet[Any]" = weakref.WeakSet()


class PendingNotice:
    """The one notification a transaction sends; later changes in it only merge their hint."""

    def __init__(self, run_at: datetime | None, worker: Wakeable | None, using: str):
        self.run_at = run_at
        self.worker = worker
        self.using = using

    def merge(self, run_at: datetime | None) -> None:
        # No hint means "re-read the schedule", which covers any hint.
        if self.run_at is not None:
            self.run_at = None if run_at is None else min(self.run_at, run_at)

    def __call__(self) -> None:
        notify(self.run_at, self.worker, self.using)


def notify_on_commit(run_at: datetime | None, using: str, worker: Wakeable | None = None) -> None:
    """Notify once the current transaction commits (now, in autocommit); once per transaction."""
    run_at = as_hint(run_at)
    connection = connections[using]
    if connection.in_atomic_block:
        # Any pending notice of this transaction will do: one registered in a savepoint that
        # rolls back is dropped by Django with it, and a merge only makes a hint earlier.
        for func in on_commit_callbacks(connection):
            if isinstance(func, PendingNotice) and func.worker is worker:
                func.merge(run_at)
                return
    transaction.on_commit(PendingNotice(run_at, worker, using), using=using, robust=True)


class GroupListener:
    """Keeps a worker in the group: passes hints on, renews membership, rejoins after errors.

    Nothing in a message is trusted beyond its hint; a malformed one is logged and dropped.
    """

    def __init__(self, layer: Any, group: str, on_hint: Callable[[datetime | None], object]):
        self.layer = layer
        self.group = group
        self.on_hint = on_hint
        self.channel: str | None = None
        self.renew_every = max(getattr(layer, "group_expiry", 86400) / 3, 0.05)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.joined = asyncio.Event()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._receive(), name="taskshed-listener"),
            asyncio.create_task(self._renew(), name="taskshed-group-renewal"),
        ]

    async def close(self) -> None:
        """Stop listening and leave the group. A layer call may swallow a cancellation
        (seen with channels_redis mid-join), so cancel again until the tasks end."""
        self._closing = True
        for _ in range(CLOSE_ATTEMPTS):
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=SEND_TIMEOUT)
        else:
            logger.warning("the listener of group %s did not stop; leaving it", self.group)
        if self.channel is not None:
            try:
                await asyncio.wait_for(
                    self.layer.group_discard(self.group, self.channel), SEND_TIMEOUT
                )
            except Exception:
                logger.debug("could not leave group %s", self.group, exc_info=True)

    async def _join(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        self.joined.set()

    async def _receive(self) -> None:
        backoff = RETRY_MIN
        while not self._closing:
            try:
                if not self.joined.is_set():
                    await self._join()
                message = await self.layer.receive(self.channel)
                backoff = RETRY_MIN
            except asyncio.CancelledError:
                raise
            except (ValueError, TypeError) as exc:  # a message the layer could not decode
                logger.warning("dropped an undecodable message on group %s: %s", self.group, exc)
                continue
            except Exception as exc:
                if idle_timeout(exc):
                    # Nothing came within the layer's own read timeout (channels_redis: 5 s,
                    # raised as redis' TimeoutError): an idle layer, not an outage. Listen
                    # again at once, still a member: backing off here made idle workers late.
                    backoff = RETRY_MIN
                    continue
                self.joined.clear()
                logger.warning("channel layer unavailable (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            self._handle(message)

    async def _renew(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.renew_every)
            try:
                await self._join()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.joined.clear()
                logger.debug("could not renew membership of group %s", self.group, exc_info=True)

    def _handle(self, message: Any) -> None:
        try:
            run_at = parse_changed(message)
        except (ValueError, TypeError) as exc:
            logger.warning("dropped a malformed message on group %s: %s", self.group, exc)
            return
        self.on_hint(run_at)
