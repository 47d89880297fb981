"""Django tasks (``@task`` of Django's Tasks framework) for the backend's tests; imported by
``tasks.py``, so a worker loads them at start-up. Each writes to the ``Execution`` ledger."""

from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async

from django_taskshed.tasks_framework.compat import ROOT

from .models import Execution

task = import_module(ROOT).task


def _record(key: str, callback: str, value: Any = None) -> None:
    from .tasks import _start

    _start(key, callback, value, finished=True)


@task
def add(a: int, b: int, key: str = "add") -> int:
    _record(key, "add", [a, b])
    return a + b


@task
async def add_async(a: int, b: int, key: str = "add_async") -> dict[str, int]:
    await sync_to_async(_record)(key, "add_async", [a, b])
    return {"sum": a + b}


@task
def fail_until(key: str, attempts: int) -> str:
    """Fail until the ledger holds ``attempts`` runs of ``key``."""
    _record(key, "fail_until")
    if Execution.objects.filter(key=key).count() < attempts:
        raise ValueError(f"attempt too early for {key}")
    return "done"


@task(takes_context=True)
def with_context(context: Any, key: str) -> dict[str, Any]:
    result = context.task_result
    _record(key, "with_context", [context.attempt, result.id])
    return {"attempt": context.attempt, "id": result.id, "workers": result.worker_ids}


@task
def returns_a_set(key: str) -> Any:
    _record(key, "returns_a_set")
    return {1, 2}


@task
def ordered(key: str) -> None:
    """Records the order in which a worker ran tasks."""
    _record(key, "ordered")


# What a task may raise besides an Exception (issue 14): the run fails, the worker goes on.
RAISED = {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}


@task
def raises_base(key: str, kind: str) -> None:
    _record(key, "raises_base")
    raise RAISED[kind](f"{kind} from {key}")


@task
async def raises_base_async(key: str, kind: str) -> None:
    import asyncio

    await sync_to_async(_record)(key, "raises_base_async")
    if kind == "CancelledError":
        raise asyncio.CancelledError(f"{kind} from {key}")
    raise RAISED[kind](f"{kind} from {key}")


@task
async def hang_async(key: str) -> None:
    """Wait for (almost) ever: only a timeout or the worker's shutdown ends it."""
    import asyncio

    await sync_to_async(_record)(key, "hang_async")
    await asyncio.sleep(3600)
