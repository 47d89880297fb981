"""App configuration: registers system checks, signals and discovers callbacks."""

from django.apps import AppConfig


class TaskshedConfig(AppConfig):
    name = "django_taskshed"
    verbose_name = "Task scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks, signals  # noqa: F401  (registers checks and signal handlers)

        autodiscover_modules("tasks")
