"""The Django tasks this process has loaded whose backend is a ``TaskShedBackend``.

A ``@task`` is validated by its backend when its module is imported, so the backend records it
here. A worker serves the tasks recorded by the time it starts (the apps' ``tasks`` modules are
imported at start-up, as for ``@register_callback``): it never imports a module because a row
names it.
"""

from collections.abc import Callable
from typing import Any

_loaded: dict[str, Any] = {}  # module path -> the Task object its module defined


def record(task: Any) -> None:
    """Keep the first Task seen under its module path (``using()`` copies share it)."""
    _loaded.setdefault(task.module_path, task)


def loaded_task(module_path: str) -> Any | None:
    return _loaded.get(module_path)


def task_callbacks() -> dict[str, Callable[..., Any]]:
    """A worker callback per loaded task, named by its module path."""
    if not _loaded:
        return {}
    from .running import callback_for

    return {path: callback_for(task) for path, task in _loaded.items()}
