"""Runs one claimed task's callback, and turns how the run ended into an Outcome."""

import asyncio
import concurrent.futures
import importlib
import inspect
import logging
import os
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import asgiref
from asgiref.sync import sync_to_async
from django.db import Error as DatabaseError
from django.db import close_old_connections
from django.utils import timezone

from .. import signals
from ..conf import taskshed_settings
from ..datastores import ClaimedTask, Outcome
from ..exceptions import BadTaskError, TaskTimeoutError, WorkerDiedError
from ..models import RunOutcome, RunType, TaskRun
from ..occurrences import next_run, retry_delay
from .current import CurrentRun, current_run
from .database_threads import close_broken
from .history import recorded
from .inflight import cancel_requested

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

REPEATING = (RunType.RECURRING, RunType.CRON)

logger = logging.getLogger(__name__)

ERROR_MAX_CHARS = 1000
SYNC_THREADS = 32  # sync callbacks run in at most this many threads (each may hold a connection)
# Frames from these directories (this package's among them) are cut from a stored traceback.
INTERNAL_DIRS = tuple(
    os.path.dirname(str(module.__file__)) + os.sep
    for module in (asyncio, asgiref, concurrent.futures, importlib.import_module("django_taskshed"))
)
TRACEBACK_MAX_CHARS = 20000
ATTEMPT_OUTCOMES = (
    RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.TIMED_OUT, RunOutcome.ABANDONED,
)  # fmt: skip


class CallbackRaised(Exception):  # noqa: N818  # it carries the error, it is not one
    """What a callback raised that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``...), carried out of the thread or asyncio task it
    ran in: there asyncio would stop the worker's event loop with it."""

    def __init__(self, raised: BaseException):
        super().__init__(raised)
        self.raised = raised


def callback_threads(concurrency: int) -> ThreadPoolExecutor:
    """Threads for sync callbacks; they start on first use, so a worker that never starts or
    runs only coroutines costs none."""
    return ThreadPoolExecutor(min(concurrency, SYNC_THREADS), "taskshed-callback")


async def run_claim(
    claim: ClaimedTask,
    callbacks: Mapping[str, Callable[..., Any]],
    executor: ThreadPoolExecutor,
    sync_running: set[str],
    worker_id: str,
    metrics: "WorkerMetrics | None" = None,
    using: str | None = None,
) -> Outcome:
    """Run ``claim`` at its ``run_at`` (it may be claimed a moment early) and say how it ended.

    While a sync callback runs, its task id is in ``sync_running``: its thread cannot be
    cancelled, so the worker keeps its lease at shutdown until it returns. ``task_started``
    and ``task_finished`` go to their receivers in this process; ``metrics``, when given,
    record the run's lateness, duration and outcome.

    Whatever the callback raises (``SystemExit`` and ``CancelledError`` included) is a
    failure; only the worker's own cancellation of this run (at shutdown) goes through, and
    the worker then releases the claim. A task whose worker died holding it, past its
    retries, fails without running (``given_up``); ``using`` is the database of its history.
    """
    if claim.abandoned_by and claim.attempts > retry_limit(claim):
        return await given_up(claim, executor, using or taskshed_settings.DATABASE)
    started = timezone.now()
    early = (claim.run_at - started).total_seconds()
    if early > 0:
        await asyncio.sleep(early)
        started = timezone.now()
    about = {
        "task_id": claim.task_id, "callback": claim.callback, "scheduled_for": claim.run_at,
        "started_at": started, "attempt": claim.attempts + 1, "worker_id": worker_id,
    }  # fmt: skip
    current_run.set(CurrentRun(claim, started, worker_id))
    if metrics is not None:
        metrics.run_started(claim.callback, started - claim.run_at)
    if signals.task_started.receivers:
        await signals.asend(signals.task_started, **about)
    try:
        func = resolve(callbacks, claim)
        if not is_coroutine_function(func):
            sync_running.add(claim.task_id)
        value = await invoke(func, claim, timeout_of(claim), executor)
    except asyncio.CancelledError as exc:
        if cancel_requested():
            raise  # the worker's shutdown: the claim is released
        return await _failure(claim, exc, about, worker_id, metrics)  # the callback's own
    except Exception as exc:
        raised = exc.raised if isinstance(exc, CallbackRaised) else exc
        return await _failure(claim, raised, about, worker_id, metrics)
    finally:
        sync_running.discard(claim.task_id)
    finished = await _finish(about, "succeeded", None, metrics)
    outcome = succeeded(claim, started, finished)
    return await recorded(outcome, "succeeded", started, finished, worker_id, value)


async def _failure(
    claim: ClaimedTask,
    exc: BaseException,
    about: dict[str, Any],
    worker_id: str,
    metrics: "WorkerMetrics | None",
) -> Outcome:
    logger.error("task %s (%s) failed: %s", claim.task_id, claim.callback, exc, exc_info=exc)
    kind = "timed_out" if isinstance(exc, TaskTimeoutError) else "failed"
    started = about["started_at"]
    finished = await _finish(about, kind, exc, metrics)
    retries, backoff = taskshed_settings.MAX_RETRIES, taskshed_settings.RETRY_BACKOFF
    outcome = failed(claim, exc, started, finished, max_retries=retries, backoff=backoff)
    return await recorded(outcome, kind, started, finished, worker_id)


def retry_limit(claim: ClaimedTask) -> int:
    """The task's ``max_retries``, else ``TASKSHED["MAX_RETRIES"]``."""
    if claim.max_retries is not None:
        return claim.max_retries
    limit: int = taskshed_settings.MAX_RETRIES
    return limit


async def given_up(claim: ClaimedTask, executor: ThreadPoolExecutor, using: str) -> Outcome:
    """The outcome of a task whose worker died holding it once more than its retries allow:
    failed (a recurring or cron task moves to its next occurrence, as after a failure) without
    running it again, so that a task that kills its worker cannot crash-loop the fleet. The
    claim has counted that death already."""
    count = sync_to_async(
        partial(_call_sync, deaths_of, {"claim": claim, "using": using}),
        thread_sensitive=False,
        executor=executor,
    )
    exc = WorkerDiedError(claim.task_id, await count(), claim.attempts)
    logger.error("task %s (%s) failed: %s", claim.task_id, claim.callback, exc)
    changes: dict[str, Any] = {
        "attempts": claim.attempts,
        "last_error": error_line(exc),
        "last_traceback": "",
        **next_step(claim, exc, claim.attempts, timezone.now(), 0, 0.0),
    }
    return Outcome(claim, changes=changes)


def deaths_of(claim: ClaimedTask, using: str) -> int | None:
    """How many of the task's last ``claim.attempts`` attempts ended with their worker's
    death (``abandoned`` in the run history); None when the history is off."""
    if not taskshed_settings.HISTORY:
        return None
    runs = TaskRun.objects.using(using).filter(task_id=claim.task_id, outcome__in=ATTEMPT_OUTCOMES)
    last = runs.order_by("-id").values_list("outcome", flat=True)[: claim.attempts]
    return sum(outcome == RunOutcome.ABANDONED for outcome in last)


async def _finish(
    about: dict[str, Any], kind: str, exc: BaseException | None, metrics: "WorkerMetrics | None"
) -> datetime:
    """The end of a run, recorded in ``metrics`` and sent as ``task_finished``; after a database
    error, the connections of asgiref's sync thread are checked (``from_database``)."""
    finished = timezone.now()
    if exc is not None and from_database(exc):
        await sync_to_async(close_broken)()
    if metrics is not None:
        metrics.run_finished(about["callback"], kind, finished - about["started_at"])
    if signals.task_finished.receivers:
        await signals.asend(
            signals.task_finished, finished_at=finished, outcome=kind, exception=exc, **about
        )
    return finished


def from_database(exc: BaseException) -> bool:
    """Whether a database error raised ``exc`` (or is it). An async callback that failed so
    may have left asgiref's sync thread, where ORM calls from coroutines run, with a broken
    connection: closing it there (``close_broken``) lets the next run open a new one."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        if isinstance(error, DatabaseError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def timeout_of(claim: ClaimedTask) -> float | None:
    """The task's own timeout in seconds, else ``TASKSHED["TIMEOUT"]``."""
    if claim.timeout is not None:
        return claim.timeout.total_seconds()
    default: float | None = taskshed_settings.TIMEOUT
    return default


def resolve(callbacks: Mapping[str, Callable[..., Any]], claim: ClaimedTask) -> Callable[..., Any]:
    """The registered callable for ``claim``, checked against its kwargs; else BadTaskError."""
    func = callbacks.get(claim.callback)
    if func is None:
        raise BadTaskError(claim.task_id, f"no callback named {claim.callback!r} is registered")
    if not isinstance(claim.kwargs, dict):
        raise BadTaskError(claim.task_id, f"kwargs is {type(claim.kwargs).__name__}, not an object")
    misfit = _misfit(func, tuple(claim.kwargs))
    if misfit is not None:
        raise BadTaskError(claim.task_id, f"kwargs do not fit {claim.callback}{misfit}")
    return func


@lru_cache(maxsize=4096)
def _misfit(func: Callable[..., Any], names: tuple[str, ...]) -> str | None:
    """Why ``func`` cannot be called with keyword arguments ``names``; None if it can.

    Binding depends on the names alone, so the answer is kept per (callable, names).
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have none
        return None
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        return f"{signature}: {exc}"
    return None


@lru_cache(maxsize=4096)
def is_coroutine_function(func: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction``, kept per callable (asked twice a run)."""
    return inspect.iscoroutinefunction(func)


def _call_sync(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    close_old_connections()
    try:
        return func(**kwargs)
    except Exception:
        raise
    except BaseException as exc:  # SystemExit in a thread would stop the worker's loop
        raise CallbackRaised(exc) from None
    finally:
        close_old_connections()


async def _guarded(awaitable: Awaitable[Any]) -> Any:
    """``await awaitable``, with what it raises that is not an ``Exception`` carried in a
    ``CallbackRaised``; but a ``CancelledError``, which ``run_claim`` tells apart (the
    worker's own cancellation, a timeout's, or the callback's)."""
    try:
        return await awaitable
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        raise CallbackRaised(exc) from None


async def invoke(
    func: Callable[..., Any],
    claim: ClaimedTask,
    timeout: float | None,
    executor: ThreadPoolExecutor,
) -> Any:
    """Run ``func(**kwargs)``: a coroutine function on this loop, anything else in a thread;
    its return value.

    A sync callback cannot be interrupted: past its timeout it is reported as timed out
    once its thread has returned, so the task is never run twice at once.
    """
    if is_coroutine_function(func):
        if timeout is None:
            return await _guarded(func(**claim.kwargs))
        try:
            return await asyncio.wait_for(_guarded(func(**claim.kwargs)), timeout)
        except asyncio.TimeoutError:
            raise TaskTimeoutError(claim.task_id, timeout or 0) from None
    call = sync_to_async(
        partial(_call_sync, func, claim.kwargs), thread_sensitive=False, executor=executor
    )
    future = asyncio.ensure_future(call())
    try:
        result = await asyncio.wait_for(asyncio.shield(future), timeout)
    except asyncio.TimeoutError:
        await asyncio.gather(future, return_exceptions=True)
        raise TaskTimeoutError(claim.task_id, timeout or 0) from None
    if inspect.isawaitable(result):
        return await asyncio.wait_for(_guarded(result), timeout)
    return result


def error_line(exc: BaseException) -> str:
    """``Type: message``, the first line, as a traceback ends: the type named with its module,
    but for built-in exceptions and this app's own."""
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__", "django_taskshed.exceptions"):
        name = f"{kind.__module__}.{name}"
    return storable_text(f"{name}: {exc}".splitlines()[0])[:ERROR_MAX_CHARS]


def storable_text(text: str) -> str:
    """``text`` with its NUL characters written as ``\\x00``: PostgreSQL's text holds none,
    and one in an error would keep the run's result from being written at all."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def user_traceback(exc: BaseException) -> str:
    """The traceback from the callback's own frames on: the worker's and asyncio's are noise."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return storable_text("".join(traceback.format_exception(type(exc), exc, tb)))


def _internal(filename: str) -> bool:
    return filename.startswith(INTERNAL_DIRS)


def succeeded(claim: ClaimedTask, started: datetime, now: datetime) -> Outcome:
    """A one-off task is deleted; a recurring or cron one moves to its next occurrence (and
    is deleted when its schedule has none)."""
    following = next_run(claim, now, claim.coalesce) if claim.run_type in REPEATING else None
    if following is None:
        return Outcome(claim, delete=True)
    return Outcome(claim, changes={"run_at": following, "attempts": 0, "last_run_at": started})


def failed(
    claim: ClaimedTask,
    exc: BaseException,
    started: datetime,
    now: datetime,
    *,
    max_retries: int,
    backoff: float,
) -> Outcome:
    """Record the error; retry a one-off task with backoff, else mark it failed.

    A recurring or cron task's next occurrence is its retry. A BadTaskError is never retried.
    """
    attempts = claim.attempts + 1
    changes: dict[str, Any] = {
        "attempts": attempts,
        "last_run_at": started,
        "last_error": error_line(exc),
        "last_traceback": user_traceback(exc)[-TRACEBACK_MAX_CHARS:],
    }
    limit = claim.max_retries if claim.max_retries is not None else max_retries
    changes.update(next_step(claim, exc, attempts, now, limit, backoff))
    return Outcome(claim, changes=changes)


def next_step(
    claim: ClaimedTask, exc: BaseException, attempts: int, now: datetime, limit: int, backoff: float
) -> dict[str, Any]:
    """After a failure that makes ``attempts``: the next occurrence of a recurring or cron
    task, else a retry (``run_at``) while within ``limit``, else ``failed_at``."""
    if isinstance(exc, BadTaskError):
        return {"failed_at": now}
    if claim.run_type in REPEATING and (following := next_run(claim, now, claim.coalesce)):
        return {"run_at": following}
    if attempts <= limit:
        return {"run_at": now + retry_delay(attempts, backoff)}
    return {"failed_at": now}
