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
    """Attribute access to ``settings.TASKSHED`` with the defaults filled in.

    Read at each access (``override_settings`` and changes made in place are seen), but
    cheaply: a worker reads some of these at every run. ``settings.TASKSHED`` is looked up in
    what ``django.conf.settings`` keeps of the values read from it (emptied by
    ``override_settings``, updated by an assignment); only the first read after a change
    goes through ``settings``.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown TASKSHED setting {name!r}")
        return self.user_settings().get(name, DEFAULTS[name])

    @staticmethod
    def user_settings() -> dict[str, Any]:
        value = _read.get("TASKSHED", _UNREAD)
        if value is _UNREAD:
            value = getattr(settings, "TASKSHED", None)
        return value if isinstance(value, dict) else {}


def _setting(name: str) -> property:
    return property(lambda self: self.user_settings().get(name, DEFAULTS[name]))


for _name in DEFAULTS:  # a property each: no failed attribute lookup before __getattr__
    setattr(TaskshedSettings, _name, _setting(_name))

# The values LazySettings has read, which it keeps in its own __dict__ (cleared in place when
# settings are overridden; an attribute set on it is dropped from it).
_read: dict[str, Any] = object.__getattribute__(settings, "__dict__")
_UNREAD = object()

taskshed_settings = TaskshedSettings()
