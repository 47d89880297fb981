"""Django settings for the benchmarks and the ``runtaskworker`` processes they start.

A benchmark process calls ``build()`` and passes the result to ``settings.configure()``; a
worker subprocess gets ``DJANGO_SETTINGS_MODULE=benchmarks.bench_settings`` and reads its
configuration from the environment (``environment()`` writes it):

- ``TASKSHED_BENCH_DATABASE``: JSON, the ``DATABASES["default"]`` entry (required).
- ``TASKSHED_BENCH_LAYER``: JSON, the ``CHANNEL_LAYERS["default"]`` entry; absent means no
  channel layer at all (notifications off, polling only).
- ``TASKSHED_BENCH_TASKSHED``: JSON, merged into ``TASKSHED`` (e.g. ``POLL_INTERVAL``).

Callbacks are registered by name through ``TASKSHED["CALLBACKS"]`` (``bench_callbacks``).
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV_DATABASE = "TASKSHED_BENCH_DATABASE"
ENV_LAYER = "TASKSHED_BENCH_LAYER"
ENV_TASKSHED = "TASKSHED_BENCH_TASKSHED"
CALLBACKS = {
    "noop": "benchmarks.bench_callbacks.noop",
    "lag": "benchmarks.bench_callbacks.lag",
}


def build(
    databases: dict[str, dict[str, Any]],
    channel_layers: dict[str, dict[str, Any]] | None,
    taskshed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every setting a benchmark needs, as keyword arguments for ``settings.configure()``."""
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
    return values


def environment(
    database: dict[str, Any], layer: dict[str, Any] | None, taskshed: dict[str, Any] | None = None
) -> dict[str, str]:
    """The environment variables that make a subprocess load these settings."""
    env = {
        "DJANGO_SETTINGS_MODULE": "benchmarks.bench_settings",
        ENV_DATABASE: json.dumps(database),
        ENV_TASKSHED: json.dumps(taskshed or {}),
    }
    if layer is not None:
        env[ENV_LAYER] = json.dumps(layer)
    return env


def _from_environment() -> dict[str, Any]:
    layer = os.environ.get(ENV_LAYER)
    return build(
        {"default": json.loads(os.environ[ENV_DATABASE])},
        {"default": json.loads(layer)} if layer else None,
        json.loads(os.environ.get(ENV_TASKSHED) or "{}"),
    )


if os.environ.get(ENV_DATABASE):
    globals().update(_from_environment())
