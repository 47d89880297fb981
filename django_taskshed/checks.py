"""System checks: the one place that validates configuration and the callback registry."""

import re
from collections.abc import Callable
from datetime import timedelta
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from .conf import DEFAULTS, TaskshedSettings
from .registry import get_callbacks, registry_errors

GROUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,99}")


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _positive_number(value: Any) -> bool:
    return _number(value) and value > 0


def _non_negative_number(value: Any) -> bool:
    return _number(value) and value >= 0


def _count(minimum: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and value >= minimum


def _callbacks(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    )


# key -> (valid?, what a valid value is)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "CALLBACKS": (_callbacks, "a dict of callback name -> dotted path of a callable"),
    "DATABASE": (lambda v: isinstance(v, str) and v in settings.DATABASES, "an alias in DATABASES"),
    "CHANNEL_LAYER": (
        lambda v: (
            v is None or (isinstance(v, str) and v in getattr(settings, "CHANNEL_LAYERS", {v: 0}))
        ),
        "None or an alias in CHANNEL_LAYERS",
    ),
    "GROUP": (
        lambda v: isinstance(v, str) and bool(GROUP_NAME.fullmatch(v)),
        "1-99 characters of A-Z a-z 0-9 . _ -",
    ),
    "POLL_INTERVAL": (_positive_number, "a positive number of seconds"),
    "LEASE_SECONDS": (_positive_number, "a positive number of seconds"),
    "BATCH_SIZE": (_count(1), "a positive integer"),
    "CONCURRENCY": (_count(1), "a positive integer"),
    "MAX_RETRIES": (_count(0), "a non-negative integer"),
    "RETRY_BACKOFF": (_non_negative_number, "a non-negative number of seconds"),
    "TIMEOUT": (lambda v: v is None or _positive_number(v), "None or a positive number of seconds"),
    "KWARGS_MAX_BYTES": (_count(1), "a positive integer"),
    "HISTORY": (lambda v: type(v) is bool, "True or False"),
    "HISTORY_RETENTION": (
        lambda v: _positive_number(v) or (isinstance(v, timedelta) and v > timedelta(0)),
        "a positive timedelta or number of seconds",
    ),
    "HISTORY_MAX_RESULT_BYTES": (_count(0), "a non-negative integer"),
    "SCHEDULES": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and k for k in v),
        "a dict of schedule name (the task_id) -> schedule dict",
    ),
}
assert RULES.keys() == DEFAULTS.keys()  # noqa: S101  (every setting has a rule)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Each TASKSHED key, type and value, and USE_TZ."""
    errors = []
    if not settings.USE_TZ:
        errors.append(
            Error(
                "django-taskshed stores times in UTC and needs USE_TZ = True.",
                id="django_taskshed.E001",
            )
        )
    raw = getattr(settings, "TASKSHED", {})
    if not isinstance(raw, dict):
        return [
            *errors,
            Error(f"TASKSHED must be a dict, not {type(raw).__name__}.", id="django_taskshed.E002"),
        ]
    for key in raw.keys() - RULES.keys():
        errors.append(
            Error(
                f"TASKSHED[{key!r}] is not a django-taskshed setting.",
                hint=f"Known keys: {', '.join(sorted(RULES))}.",
                id="django_taskshed.E003",
            )
        )
    user = TaskshedSettings.user_settings()
    for key, (valid, expected) in RULES.items():
        if key in user and not valid(user[key]):
            errors.append(
                Error(
                    f"TASKSHED[{key!r}] must be {expected}; got {user[key]!r}.",
                    id="django_taskshed.E004",
                )
            )
    return errors


@register(Tags.compatibility)
def check_callbacks(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Callback names registered twice, and settings paths that cannot be imported."""
    return [Error(message, id="django_taskshed.E005") for message in registry_errors()]


@register(Tags.compatibility)
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Each declared schedule (``TASKSHED["SCHEDULES"]``, ``register_callback(schedule=)``):
    its keys and values, and a callback that is registered."""
    from .declared import declared_schedules, schedule_errors

    if check_settings():  # checked against the settings, which must be valid first
        return []
    errors = [Error(message, id="django_taskshed.E006") for message in schedule_errors()]
    names = get_callbacks_or_none()
    for name, definition in declared_schedules().items():
        callback = definition.get("callback") if isinstance(definition, dict) else None
        if isinstance(callback, str) and names is not None and callback not in names:
            errors.append(
                Error(
                    f"TASKSHED['SCHEDULES'][{name!r}]: callback {callback!r} is not registered.",
                    hint=f"Registered: {', '.join(sorted(names)) or '(none)'}.",
                    id="django_taskshed.E006",
                )
            )
    return errors


def get_callbacks_or_none() -> dict[str, Any] | None:
    """The registered callbacks, or None when a settings path cannot be imported (E005)."""
    try:
        return get_callbacks()
    except ImportError:
        return None
