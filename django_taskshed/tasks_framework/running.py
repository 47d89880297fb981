"""A Django task as a worker callback: its row's kwargs are the task's arguments, and the
worker's run is reported with Django's ``task_started`` and ``task_finished`` signals.

Django's receivers of those signals are called directly, in the callback's thread for a sync
task and on the worker's event loop for an async one (as Django's own backends do). While
nothing would see them (no receivers but the framework's own, which log at INFO, and its logger
not logging INFO) a run that succeeds builds no ``TaskResult`` and sends neither: that is most
of what a Django task costs a worker beyond a callback task. A failure always sends
``task_finished`` with its result.
"""

import asyncio
import logging
import traceback
import weakref
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from functools import lru_cache
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import sync_to_async

from ..workers.current import current_run
from ..workers.inflight import cancelled_by_worker
from . import compat
from .payload import Payload


def callback_for(task: Any) -> Callable[..., Any]:
    """The callable a worker runs for ``task``: a coroutine function for an async task."""
    if iscoroutinefunction(task.func):

        async def run_async(
            args: list[Any], kwargs: dict[str, Any], task_options: Any = None
        ) -> Any:
            if not task.takes_context and unobserved():
                try:
                    return _json(await task.func(*args, **kwargs))
                except BaseException as exc:
                    if not released(exc):
                        payload = Payload(args, kwargs, task_options or {})
                        _failed(await aresult_of(task, payload), exc)
                    raise
            result = await aresult_of(task, Payload(args, kwargs, task_options or {}))
            _started(result)
            try:
                value = compat.normalize_json(
                    await task.func(*_arguments(task, result), **result.kwargs)
                )
            except BaseException as exc:
                if not released(exc):
                    _failed(result, exc)
                raise
            return _finished(result, value)

        return run_async

    def run(args: list[Any], kwargs: dict[str, Any], task_options: Any = None) -> Any:
        if not task.takes_context and unobserved():
            try:
                return _json(task.func(*args, **kwargs))
            except BaseException as exc:
                _failed(result_of(task, Payload(args, kwargs, task_options or {})), exc)
                raise
        result = result_of(task, Payload(args, kwargs, task_options or {}))
        _started(result)
        try:
            value = compat.normalize_json(task.func(*_arguments(task, result), **result.kwargs))
        except BaseException as exc:
            _failed(result, exc)
            raise
        return _finished(result, value)

    return run


def _json(value: Any) -> Any:
    """``value`` through Django's ``normalize_json`` (which fails the run with ``TypeError``
    if JSON cannot hold it); most tasks return None."""
    return None if value is None else compat.normalize_json(value)


def released(exc: BaseException) -> bool:
    """Whether ``exc`` is the worker's cancellation of the run at shutdown: the task is then
    released, to run again, not finished (a callback's own ``CancelledError`` is a failure)."""
    return isinstance(exc, asyncio.CancelledError) and cancelled_by_worker()


def unobserved() -> bool:
    """Whether a run that succeeds has no one to tell: ``task_started`` and ``task_finished``
    have no receivers but the framework's own, and its logger does not log INFO (what they
    log a success at). Checked at each run: receivers may be connected at any time."""
    logger = compat.tasks_logger
    if logger is None or logger.isEnabledFor(logging.INFO):
        return False
    return _only(compat.task_started, compat.log_task_started) and _only(
        compat.task_finished, compat.log_task_finished
    )


def _only(signal: Any, known: Any) -> bool:
    """Whether every receiver of ``signal`` is ``known`` (a dead weak one is not)."""
    for entry in signal.receivers:
        receiver = entry[1]  # (lookup_key, receiver, ...) on every supported Django
        if isinstance(receiver, weakref.ReferenceType):
            receiver = receiver()
        if known is None or receiver is not known:
            return False
    return True


def result_of(task: Any, payload: Payload) -> Any:
    """The ``TaskResult`` of the run under way (a retry reads its earlier workers)."""
    attempts = current_run.get().claim.attempts
    earlier = earlier_workers(attempts, _database(payload)) if attempts else []
    return running_result(task, payload, earlier)


async def aresult_of(task: Any, payload: Payload) -> Any:
    """``result_of`` from async code: only a retry, which reads the history, leaves the loop."""
    if current_run.get().claim.attempts:
        return await sync_to_async(result_of)(task, payload)
    return running_result(task, payload, [])


def _database(payload: Payload) -> str:
    """The database of the backend the task was enqueued on (its ``OPTIONS["DATABASE"]``)."""
    database: str = compat.task_backends[payload.backend].database
    return database


def _arguments(task: Any, result: Any) -> list[Any]:
    if task.takes_context:
        return [compat.TaskContext(task_result=result), *result.args]
    return list(result.args)


def running_result(task: Any, payload: Payload, earlier_worker_ids: list[str]) -> Any:
    """The ``TaskResult`` of the run under way, as Django's signals and ``TaskContext`` see it."""
    run = current_run.get()
    return compat.TaskResult(
        task=bound_task(
            task, payload.backend, payload.queue_name, payload.priority, payload.run_after
        ),
        id=run.claim.task_id,
        status=compat.TaskResultStatus.RUNNING,
        enqueued_at=payload.enqueued_at(run.claim.task_id),
        started_at=run.started_at,
        finished_at=None,
        last_attempted_at=run.started_at,
        args=payload.args,
        kwargs=payload.kwargs,
        backend=payload.backend,
        errors=[],
        worker_ids=[*earlier_worker_ids, run.worker_id],
    )


def earlier_workers(attempts: int, using: str = "default") -> list[str]:
    """The workers of the run's earlier attempts, oldest first, from the run history (only a
    retry reads it); "" for an attempt the history does not have."""
    from .results import attempt_rows

    known = [row.worker_id for row in attempt_rows(current_run.get().claim.task_id, using)]
    known = known[-attempts:]
    return [""] * (attempts - len(known)) + known


def bound_task(
    task: Any, backend: str, queue_name: str, priority: int, run_after: datetime | None
) -> Any:
    """``task`` as it was enqueued. Copies that differ in backend, queue or priority are kept
    (``Task.using()`` validates); ``run_after`` differs from task to task, so it is set on a
    copy of those, each time."""
    base = _bound(task, backend, queue_name, priority)
    if run_after == base.run_after:
        return base
    # ``replace()`` would validate again (run_after was, at enqueue): a plain copy.
    clone = object.__new__(type(base))
    for name in _field_names(type(base)):
        object.__setattr__(clone, name, getattr(base, name))
    object.__setattr__(clone, "run_after", run_after)
    return clone


def _field_names(kind: Any) -> tuple[str, ...]:
    names = _fields_of.get(kind)
    if names is None:
        names = _fields_of[kind] = tuple(f.name for f in fields(kind))
    return names


_fields_of: dict[Any, tuple[str, ...]] = {}


@lru_cache(maxsize=1024)
def _bound(task: Any, backend: str, queue_name: str, priority: int) -> Any:
    if (task.backend, task.queue_name, task.priority) == (backend, queue_name, priority):
        return task
    return task.using(backend=backend, queue_name=queue_name, priority=priority)


def _started(result: Any) -> None:
    compat.task_started.send(sender=_sender(result), task_result=result)


def _finished(result: Any, value: Any) -> Any:
    """``value`` has been through ``normalize_json`` (Django's rule: a value JSON cannot hold
    fails the run with ``TypeError``)."""
    object.__setattr__(result, "status", compat.TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)
    compat.task_finished.send(sender=_sender(result), task_result=result)
    return value


def _failed(result: Any, exc: BaseException) -> None:
    """Called while ``exc`` is handled: Django's receiver logs ``sys.exc_info()``."""
    object.__setattr__(result, "status", compat.TaskResultStatus.FAILED)
    error = compat.TaskError(
        exception_class_path=class_path(type(exc)),
        traceback="".join(traceback.format_exception(exc)),
    )
    result.errors.append(error)
    compat.task_finished.send(sender=_sender(result), task_result=result)


def class_path(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _sender(result: Any) -> type:
    """The backend's class, Django's sender of these signals (looked up once per alias:
    ``get_backend()`` goes through the framework's thread-local connection handler)."""
    alias = result.task.backend
    sender = _senders.get(alias)
    if sender is None:
        sender = _senders[alias] = type(result.task.get_backend())
    return sender


_senders: dict[str, type] = {}
