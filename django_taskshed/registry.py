"""The callback registry: names that workers may run, and nothing else."""

from collections.abc import Callable
from typing import Any, overload

from django.utils.module_loading import import_string

from .conf import taskshed_settings

_decorated: dict[str, Callable[..., Any]] = {}
_schedules: dict[str, dict[str, Any]] = {}  # declared next to their callbacks
_conflicts: list[str] = []


def _describe(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _add(name: str, func: Callable[..., Any]) -> None:
    existing = _decorated.get(name)
    if existing is not None and existing is not func:
        twice = f"{_describe(existing)} and {_describe(func)}"
        _conflicts.append(f"callback name {name!r} is registered twice: {twice}")
        return
    _decorated[name] = func


@overload
def register_callback(name: Callable[..., Any]) -> Callable[..., Any]: ...
@overload
def register_callback(
    name: str | None = None, *, schedule: dict[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...
def register_callback(name=None, *, schedule=None):  # type: ignore[no-untyped-def]
    """Register a function as a task callback.

    Use as ``@register_callback`` (the name is the function's ``__name__``) or
    ``@register_callback("name")``. A name registered twice is reported by
    ``manage.py check``. ``schedule`` declares a schedule named after the callback, as an
    entry of ``TASKSHED["SCHEDULES"]`` without its ``callback`` key, e.g.
    ``@register_callback(schedule={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})``.
    """
    if callable(name):
        _add(name.__name__, name)
        return name
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"register_callback() name must be a non-empty string, not {name!r}")
    if schedule is not None and not isinstance(schedule, dict):
        raise TypeError(f"register_callback() schedule must be a dict, not {schedule!r}")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        callback = name or func.__name__
        _add(callback, func)
        if schedule is not None:
            _schedules[callback] = {**schedule, "callback": callback}
        return func

    return decorator


def declared_in_decorators() -> dict[str, dict[str, Any]]:
    """Schedules declared with ``@register_callback(schedule=...)``, by callback name."""
    return dict(_schedules)


def registry_errors() -> list[str]:
    """Every problem with the registered callbacks, one message each."""
    errors = list(_conflicts)
    for name, path in _settings_callbacks().items():
        if not isinstance(path, str):
            errors.append(f"TASKSHED['CALLBACKS'][{name!r}] must be a dotted path, not {path!r}")
            continue
        try:
            func = import_string(path)
        except ImportError as exc:
            errors.append(f"TASKSHED['CALLBACKS'][{name!r}] = {path!r} cannot be imported: {exc}")
            continue
        if not callable(func):
            errors.append(f"TASKSHED['CALLBACKS'][{name!r}] = {path!r} is not callable")
        elif name in _decorated and _decorated[name] is not func:
            errors.append(
                f"callback name {name!r} is registered twice: TASKSHED['CALLBACKS'] "
                f"({path}) and {_describe(_decorated[name])}"
            )
    return errors


def get_callbacks() -> dict[str, Callable[..., Any]]:
    """Name -> callable for every registered callback (settings, then decorators)."""
    callbacks = {name: import_string(path) for name, path in _settings_callbacks().items()}
    for name, func in _decorated.items():
        callbacks.setdefault(name, func)
    return callbacks


def worker_callbacks() -> dict[str, Callable[..., Any]]:
    """What a worker serves: the registered callbacks, and the Django tasks of a
    ``TaskShedBackend`` loaded in this process (by module path; a registered callback of the
    same name wins)."""
    from .tasks_framework.loaded import task_callbacks

    return {**task_callbacks(), **get_callbacks()}


def _settings_callbacks() -> dict[str, Any]:
    value = taskshed_settings.CALLBACKS
    return value if isinstance(value, dict) else {}
