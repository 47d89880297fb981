"""A test clock for users' tests: "now" frozen for the whole app, and what falls due run at once.

``with taskshed_clock(start) as clock:`` freezes ``django.utils.timezone.now()`` (which the
schedulers, the occurrence function, the datastore and the worker all read) at ``start``.
``clock.advance(hours=1)`` then steps the clock from one due ``run_at`` to the next and runs
what is due at each, with the worker's own runner: retries, coalescing, the moves of recurring
and cron tasks and the run history are the real ones. Nothing sleeps, no channel layer or
worker process is involved. ``TaskshedClockMixin`` (for ``TestCase``) and the pytest fixture
``taskshed_clock`` (``django_taskshed.pytest_plugin``) wrap it.
"""

import functools
import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any
from unittest import mock

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.utils import timezone

from .conf import taskshed_settings
from .datastores import ClaimedTask, DjangoDataStore, Outcome
from .registry import worker_callbacks
from .workers.runner import run_claim

WORKER_ID = "taskshed-clock"
# One call of advance() or run_due() runs at most this many times: a task that keeps
# rescheduling itself at the clock's time would otherwise never let it move on.
MAX_RUNS = 10_000

__all__ = ["ClockRun", "TaskshedClock", "TaskshedClockMixin", "taskshed_clock"]


@dataclass(frozen=True)
class ClockRun:
    """One run the clock made: which task, the ``run_at`` it ran for, and how it ended.

    ``outcome`` is ``"succeeded"``, ``"failed"`` or ``"timed_out"``; ``error`` is the stored
    error line of a failed run ("" otherwise); ``attempt`` counts from 1; ``ran_at`` is the
    clock's time when it ran (later than ``scheduled_for`` only after ``jump()``).
    """

    task_id: str
    callback: str
    scheduled_for: datetime
    ran_at: datetime
    outcome: str
    attempt: int
    error: str = ""


class TaskshedClock:
    """A frozen "now", moved only by ``advance()`` and ``jump()``; see ``taskshed_clock``."""

    def __init__(
        self,
        start: datetime,
        *,
        datastore: DjangoDataStore | None = None,
        callbacks: Mapping[str, Callable[..., Any]] | None = None,
    ):
        if not settings.USE_TZ:
            raise ImproperlyConfigured("taskshed_clock needs USE_TZ = True, as django-taskshed")
        self._now = _aware(start).astimezone(dt_timezone.utc)
        self.datastore = datastore or DjangoDataStore()
        self.callbacks = dict(callbacks) if callbacks is not None else None
        self._patch = mock.patch.object(timezone, "now", self._read)
        self._executor: ThreadPoolExecutor | None = None
        self._wrapped: dict[Callable[..., Any], Callable[..., Any]] = {}

    @property
    def now(self) -> datetime:
        """The clock's time (aware, UTC): what ``django.utils.timezone.now()`` returns."""
        return self._now

    def __enter__(self) -> "TaskshedClock":
        self._patch.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._patch.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def advance(self, **timedelta_kwargs: float) -> list[ClockRun]:
        """Move the clock forward by ``timedelta(**timedelta_kwargs)``, running each
        occurrence that falls due on the way (up to and including the new time) at its own
        ``run_at``, once, in order. Returns the runs made. From async code: ``aadvance``."""
        return async_to_sync(self.aadvance)(**timedelta_kwargs)

    def run_due(self) -> list[ClockRun]:
        """Run what is due at the clock's time (until nothing is); the runs made."""
        return async_to_sync(self.arun_due)()

    def jump(self, **timedelta_kwargs: float) -> None:
        """Move the clock forward without running anything, as while no worker ran: the next
        ``run_due()`` or ``advance()`` then finds occurrences missed (and coalesces them)."""
        self._now += _forward(timedelta_kwargs)

    async def aadvance(self, **timedelta_kwargs: float) -> list[ClockRun]:
        """``advance()`` for async tests (which need ``django_db(transaction=True)``)."""
        target = self._now + _forward(timedelta_kwargs)
        runs = await self._run_until(target)
        self._now = target
        return runs

    async def arun_due(self) -> list[ClockRun]:
        """``run_due()`` for async tests."""
        return await self._run_until(self._now)

    def _read(self) -> datetime:
        return self._now

    async def _run_until(self, target: datetime) -> list[ClockRun]:
        """Step to each next due ``run_at`` up to ``target`` and run, one task at a time,
        what is due there, each result settled before the next claim."""
        runs: list[ClockRun] = []
        while (due_at := await _on_sync_thread(self._next_due, target)) is not None:
            self._now = max(self._now, due_at)
            claim = await _on_sync_thread(self._claim)
            if claim is None:
                break  # held by a live worker's lease: not the clock's to run
            runs.append(await self._run(claim))
            if len(runs) >= MAX_RUNS:
                raise RuntimeError(
                    f"taskshed_clock ran {MAX_RUNS} times in one call and tasks are still due "
                    f"at {self._now.isoformat()}: does a task keep rescheduling itself at now?"
                )
        return runs

    def _next_due(self, target: datetime) -> datetime | None:
        due = self.datastore.get_queryset().due(self._now, target)
        return due.order_by("run_at").values_list("run_at", flat=True).first()

    def _claim(self) -> ClaimedTask | None:
        """Claim the first due task. A task written at the clock's time is stamped one
        microsecond earlier: a write during the run (at the same frozen time) must still move
        its ``updated_at``, the fence that keeps edits made while a task runs."""
        claims = self.datastore.claim_due_tasks(WORKER_ID, 1, taskshed_settings.LEASE_SECONDS)
        if not claims or claims[0].updated_at < self._now:
            return claims[0] if claims else None
        earlier = self._now - timedelta(microseconds=1)
        held = self.datastore.get_queryset().filter(claim_token=claims[0].claim_token)
        held.update(updated_at=earlier)
        return replace(claims[0], updated_at=earlier)

    async def _run(self, claim: ClaimedTask) -> ClockRun:
        callbacks = {name: self._wrap(func) for name, func in self._callbacks().items()}
        outcome = await run_claim(claim, callbacks, self._threads(), set(), WORKER_ID)
        await _on_sync_thread(self.datastore.settle, WORKER_ID, [outcome])
        return _described(outcome, self._now)

    def _wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if func not in self._wrapped:
            self._wrapped[func] = _on_caller_thread(func)
        return self._wrapped[func]

    def _callbacks(self) -> Mapping[str, Callable[..., Any]]:
        return self.callbacks if self.callbacks is not None else worker_callbacks()

    def _threads(self) -> ThreadPoolExecutor:
        # Sync callbacks run on the caller's thread (_on_caller_thread); the runner wants an
        # executor all the same, and its threads start only on first use.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, "taskshed-clock")
        return self._executor


def taskshed_clock(
    start: datetime,
    *,
    datastore: DjangoDataStore | None = None,
    callbacks: Mapping[str, Callable[..., Any]] | None = None,
) -> TaskshedClock:
    """A clock frozen at ``start`` (aware, or naive in the current time zone) while in a
    ``with`` block: ``with taskshed_clock(start) as clock: clock.advance(hours=1)``.

    Args:
        start: The clock's time when the block starts.
        datastore: Where the tasks are; defaults to ``DjangoDataStore()``.
        callbacks: Name -> callable, as ``EventDrivenWorker``'s ``callback_map``; None (the
            default) reads the registry at each run.
    """
    return TaskshedClock(start, datastore=datastore, callbacks=callbacks)


if TYPE_CHECKING:
    from unittest import TestCase as _TestCase
else:
    _TestCase = object


class TaskshedClockMixin(_TestCase):
    """For ``TestCase`` classes: each test runs inside a ``taskshed_clock``, as ``self.clock``.

    The clock starts at ``taskshed_clock_start`` (a class attribute; None, the default, means
    the real time when the test starts, to the second).
    """

    taskshed_clock_start: datetime | None = None
    clock: TaskshedClock

    def setUp(self) -> None:
        super().setUp()
        self.clock = taskshed_clock(self.taskshed_clock_start or real_now()).__enter__()
        self.addCleanup(self.clock.__exit__, None, None, None)


def real_now() -> datetime:
    """The real time (not the clock's), to the second: a start for a clock."""
    return datetime.now(dt_timezone.utc).replace(microsecond=0)


def _aware(moment: datetime) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"taskshed_clock needs a datetime, not {moment!r}")
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def _forward(timedelta_kwargs: Mapping[str, float]) -> timedelta:
    step = timedelta(**timedelta_kwargs)
    if step < timedelta(0):
        raise ValueError(f"a taskshed_clock only moves forward, not by {step}")
    return step


async def _on_sync_thread(func: Callable[..., Any], *args: Any) -> Any:
    """A datastore step on Django's sync thread: the test's own thread (and its transaction)
    under ``advance()``, the shared sync thread in an async test."""
    return await sync_to_async(func, thread_sensitive=True)(*args)


def _on_caller_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as the runner runs it, but a sync callback on Django's sync thread (the test's
    thread under ``advance()``), so that it sees the test's transaction. ``functools.wraps``
    keeps its signature for the runner's kwargs check."""
    if inspect.iscoroutinefunction(func):
        return func

    @functools.wraps(func)
    async def call(**kwargs: Any) -> Any:
        result = await sync_to_async(_in_savepoints, thread_sensitive=True)(func, kwargs)
        return await result if inspect.isawaitable(result) else result

    return call


def _in_savepoints(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``func(**kwargs)``, in a savepoint of each database in a transaction (the test's): a
    callback that fails in the database then leaves that transaction usable, as a worker's
    own connection would leave it."""
    with ExitStack() as savepoints:
        for alias in connections:
            if connections[alias].in_atomic_block:
                savepoints.enter_context(transaction.atomic(using=alias))
        return func(**kwargs)


def _described(outcome: Outcome, ran_at: datetime) -> ClockRun:
    claim, error = outcome.claim, str(outcome.changes.get("last_error", ""))
    kind = "succeeded" if not error else "failed"
    if error.startswith("TaskTimeoutError:"):
        kind = "timed_out"
    return ClockRun(
        claim.task_id, claim.callback, claim.run_at, ran_at, kind, claim.attempts + 1, error
    )
