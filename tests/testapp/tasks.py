"""Callbacks for the tests, found by django_taskshed's autodiscovery of ``tasks`` modules.

Every callback takes ``key`` (the task's id: callbacks receive only their kwargs) and writes
to the ``Execution`` ledger, because worker subprocesses share nothing with the test but
the database.
"""

import asyncio
import os
import time
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from django_taskshed.models import Task
from django_taskshed.registry import register_callback

from .models import Execution


def _start(key: str, callback: str, value: Any = None, finished: bool = False) -> Execution:
    now = timezone.now()
    return Execution.objects.create(
        key=key,
        callback=callback,
        started_at=now,
        finished_at=now if finished else None,
        worker_pid=os.getpid(),
        value=value,
    )


def _finish(execution: Execution) -> None:
    execution.finished_at = timezone.now()
    execution.save(update_fields=["finished_at"])


def _attempts(key: str) -> int:
    return Execution.objects.filter(key=key).count()


@register_callback("record")
async def record(key: str, value: Any = None) -> None:
    """Append one finished ledger row (async, ORM through sync_to_async)."""
    await sync_to_async(_start)(key, "record", value, finished=True)


@register_callback("record_sync")
def record_sync(key: str, value: Any = None) -> None:
    """Append one finished ledger row (a sync callback, run in a thread)."""
    _start(key, "record_sync", value, finished=True)


@register_callback("sleep")
async def sleep(key: str, seconds: float) -> None:
    """Write a start row, sleep on the event loop, then mark the row finished."""
    execution = await sync_to_async(_start)(key, "sleep")
    await asyncio.sleep(seconds)
    await sync_to_async(_finish)(execution)


@register_callback("sleep_sync")
def sleep_sync(key: str, seconds: float) -> None:
    """Write a start row, block its thread for ``seconds``, then mark the row finished."""
    execution = _start(key, "sleep_sync")
    time.sleep(seconds)
    _finish(execution)


@register_callback("fail")
async def fail(key: str) -> None:
    """Write a finished row, then raise."""
    await sync_to_async(_start)(key, "fail", finished=True)
    raise RuntimeError(f"fail callback for {key} raised on purpose")


@register_callback("hang")
async def hang(key: str) -> None:
    """Write a start row, then wait for (almost) ever: only a timeout or a cancel ends it."""
    await sync_to_async(_start)(key, "hang")
    await asyncio.sleep(3600)


@register_callback("flaky")
async def flaky(key: str, failures: int) -> None:
    """Raise on the first ``failures`` attempts, then succeed (attempts counted in the ledger)."""
    earlier = await sync_to_async(_attempts)(key)
    await sync_to_async(_start)(key, "flaky", {"attempt": earlier + 1}, finished=True)
    if earlier < failures:
        raise RuntimeError(f"flaky attempt {earlier + 1} of {key} failed on purpose")


@register_callback("record_run_at")
def record_run_at(key: str, until: str) -> None:
    """Append one finished row holding the task's own ``run_at`` (the occurrence this run is
    for), and pause the task once that ``run_at`` reaches ``until`` (ISO 8601): a recurring or
    cron task then stops after the window a test looks at."""
    run_at = Task.objects.values_list("run_at", flat=True).get(pk=key)
    _start(key, "record_run_at", {"run_at": run_at.isoformat()}, finished=True)
    if run_at >= datetime.fromisoformat(until):
        Task.objects.filter(pk=key).update(paused=True)


def _not_an_exception(kind: str) -> BaseException:
    raised: dict[str, BaseException] = {
        "SystemExit": SystemExit(3),
        "KeyboardInterrupt": KeyboardInterrupt(),
        "CancelledError": asyncio.CancelledError(),
        "GeneratorExit": GeneratorExit(),
    }
    return raised[kind]


@register_callback("raise_base")
async def raise_base(key: str, kind: str) -> None:
    """Write a finished row, then raise ``kind`` (``SystemExit``, ``CancelledError``...)."""
    await sync_to_async(_start)(key, "raise_base", finished=True)
    raise _not_an_exception(kind)


@register_callback("raise_base_sync")
def raise_base_sync(key: str, kind: str) -> None:
    """``raise_base`` in a thread."""
    _start(key, "raise_base_sync", finished=True)
    raise _not_an_exception(kind)


@register_callback("exit_process")
def exit_process(key: str, code: int = 1) -> None:
    """Write a finished row, then end the worker's process at once, as a segfault or the OOM
    killer would (no cleanup, no release)."""
    _start(key, "exit_process", finished=True)
    os._exit(code)


# Django tasks, run by the same workers; a worker started with TASKSHED_TEST_NO_DJTASKS=1 does
# not load them (the test of a task the worker did not load).
if settings.TASKS_FRAMEWORK and os.environ.get("TASKSHED_TEST_NO_DJTASKS") != "1":
    from . import djtasks  # noqa: F401
