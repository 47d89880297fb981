"""Django's Tasks framework as this Django has it: ``django.tasks`` (Django 6.0+) or the
``django-tasks`` backport (Django 5.2, ``pip install "django-taskshed[tasks]"``)."""

from importlib import import_module
from importlib.util import find_spec
from typing import Any


def _root() -> str:
    if find_spec("django.tasks") is not None:
        return "django.tasks"
    if find_spec("django_tasks") is not None:
        return "django_tasks"
    raise ImportError(
        "django_taskshed.backends needs Django's Tasks framework: Django 6.0 or later, or on "
        'Django 5.2 the django-tasks backport (pip install "django-taskshed[tasks]")'
    )


ROOT = _root()
BUILT_IN = ROOT == "django.tasks"
_base = import_module(f"{ROOT}.base")
_exceptions = import_module(f"{ROOT}.exceptions")
_signals = import_module(f"{ROOT}.signals")

BaseTaskBackend: Any = import_module(f"{ROOT}.backends.base").BaseTaskBackend
DjangoTask: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
task_backends: Any = import_module(ROOT).task_backends
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
# The framework's own receivers of those signals, which only log (at INFO for a run that
# succeeds), and their logger: a worker skips what only they would see while it logs nothing.
log_task_started: Any = getattr(_signals, "log_task_started", None)
log_task_finished: Any = getattr(_signals, "log_task_finished", None)
tasks_logger: Any = getattr(_signals, "logger", None)
normalize_json: Any = import_module(
    "django.utils.json" if BUILT_IN else "django_tasks.utils"
).normalize_json
