"""The ``TASKSHED`` settings dict, read lazily so ``override_settings`` works."""

from datetime import timedelta
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "CALLBACKS": {},
    "DATABASE": "default",
    "CHANNEL_LAYER": "default",
    "GROUP": "taskshed",
    "POLL_INTERVAL": 5.0,
    "LEASE_SECONDS": 60.0,
    "BATCH_SIZE": 100,
    "CONCURRENCY": 100,
    "MAX_RETRIES": 0,
    "RETRY_BACKOFF": 5.0,
    "TIMEOUT": None,
    "KWARGS_MAX_BYTES": 65536,
    "SCHEDULES": {},
    "HISTORY": True,
    "HISTORY_RETENTION": timedelta(days=7),
    "HISTORY_MAX_RESULT_BYTES": 65536,
}


class TaskshedSettings:
    """Attribute access to ``settings.TASKSHED`` with the defaults filled in."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown TASKSHED setting {name!r}")
        return self.user_settings().get(name, DEFAULTS[name])

    @staticmethod
    def user_settings() -> dict[str, Any]:
        value = getattr(settings, "TASKSHED", None)
        return value if isinstance(value, dict) else {}


taskshed_settings = TaskshedSettings()
