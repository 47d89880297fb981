"""Django settings for the benchmarks and the ``runtaskworker`` processes they start.

A benchmark process calls ``build()`` and passes the result to ``settings.configure()``; a
worker subprocess gets ``DJANGO_SETTINGS_MODULE=benchmarks.bench_settings`` and reads its
configuration from the environment (``environment()`` writes it):

- ``TASKSHED_BENCH_DATABASE``: JSON, the ``DATABASES["default"]`` entry (required).
- ``TASKSHED_BENCH_LAYER``: JSON, the ``CHANNEL_LAYERS["default"]`` entry; absent means no
  channel layer at all (notifications off, polling only).
- ``TASKSHED_BENCH_TASKSHED``: JSON, merged into ``TASKSHED`` (e.g. ``POLL_INTERVAL``).
- ``TASKSHED_BENCH_TASKS``: present: Django's Tasks framework on, ``TASKS["default"]`` a
  ``TaskShedBackend`` on the default database, and the app ``benchmarks`` installed, whose
  ``tasks`` module (``benchmarks/tasks.py``) a worker then loads.

Callbacks are registered by name through ``TASKSHED["CALLBACKS"]`` (``bench_callbacks``).
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV_DATABASE = "TASKSHED_BENCH_DATABASE"
ENV_LAYER = "TASKSHED_BENCH_LAYER"
ENV_TASKSHED = "TASKSHED_BENCH_TASKSHED"
ENV_TASKS = "TASKSHED_BENCH_TASKS"
CALLBACKS = {
    "noop": "benchmarks.bench_callbacks.noop",
    "lag": "benchmarks.bench_callbacks.lag",
}


def build(
    databases: dict[str, dict[str, Any]],
    channel_layers: dict[str, dict[str, Any]] | None,
    taskshed: dict[str, Any] | None = None,
    tasks_database: str | None = None,
) -> dict[str, Any]:
    """Every setting a benchmark needs, as keyword arguments for ``settings.configure()``;
    with ``tasks_database`` (an alias), Django's Tasks framework on ``TaskShedBackend``."""
    values: dict[str, Any] = {
        "DEBUG": False,
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "SECRET_KEY": "taskshed-benchmarks-nothing-is-signed",  # noqa: S105
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "channels",
            "django_taskshed",
        ],
        "DATABASES": databases,
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "TASKSHED": {"CALLBACKS": dict(CALLBACKS), **(taskshed or {})},
    }
    if channel_layers:
        values["CHANNEL_LAYERS"] = channel_layers
    if tasks_database:
        values["INSTALLED_APPS"] += [*_backport_app(), "benchmarks"]
        backend = "django_taskshed.backends.TaskShedBackend"
        options = {"DATABASE": tasks_database}
        values["TASKS"] = {"default": {"BACKEND": backend, "OPTIONS": options}}
    return values


def _backport_app() -> list[str]:
    """Django 5.2: the ``django-tasks`` backport's app (Django 6 has the framework built in)."""
    from importlib.util import find_spec

    return ["django_tasks"] if find_spec("django.tasks") is None else []


def environment(
    database: dict[str, Any],
    layer: dict[str, Any] | None,
    taskshed: dict[str, Any] | None = None,
    tasks: bool = False,
) -> dict[str, str]:
    """The environment variables that make a subprocess load these settings (``tasks``: with
    Django's Tasks framework, see ``build``)."""
    env = {
        "DJANGO_SETTINGS_MODULE": "benchmarks.bench_settings",
        ENV_DATABASE: json.dumps(database),
        ENV_TASKSHED: json.dumps(taskshed or {}),
    }
    if layer is not None:
        env[ENV_LAYER] = json.dumps(layer)
    if tasks:
        env[ENV_TASKS] = "1"
    return env


def _from_environment() -> dict[str, Any]:
    layer = os.environ.get(ENV_LAYER)
    return build(
        {"default": json.loads(os.environ[ENV_DATABASE])},
        {"default": json.loads(layer)} if layer else None,
        json.loads(os.environ.get(ENV_TASKSHED) or "{}"),
        "default" if os.environ.get(ENV_TASKS) else None,
    )


if os.environ.get(ENV_DATABASE):
    globals().update(_from_environment())
