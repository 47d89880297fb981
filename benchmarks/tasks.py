"""Django tasks (``@task`` of Django's Tasks framework) for ``tasks_backend.py``.

This is the ``tasks`` module of the app ``benchmarks`` (installed only when the settings enable
the Tasks framework), so django_taskshed imports it at start-up as it does a project's: a worker
serves these tasks. Their bodies are ``bench_callbacks``' (same counters, same ledger).
"""

from importlib import import_module

from benchmarks import bench_callbacks
from django_taskshed.tasks_framework.compat import ROOT

task = import_module(ROOT).task


@task
async def noop() -> None:
    """The callback ``noop``'s body, as a Django task."""
    await bench_callbacks.noop()


@task
async def stamp(run_at: str, kind: str) -> None:
    """The callback ``lag``'s body: records its start minus ``run_at`` (ISO text)."""
    await bench_callbacks.lag(run_at, kind)
