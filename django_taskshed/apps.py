"""App configuration: registers system checks and receivers, discovers callbacks, and syncs the
schedules declared in code after ``migrate``."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TaskshedConfig(AppConfig):
    name = "django_taskshed"
    verbose_name = "Task scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks, receivers  # noqa: F401  (registers checks and model receivers)

        autodiscover_modules("tasks")
        post_migrate.connect(receivers.sync_declared_schedules, sender=self)
