"""Saves and deletes of Task rows (admin, ``Task.objects``) notify workers after commit."""

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Task
from .notifications import notify_on_commit


@receiver(post_save, sender=Task, dispatch_uid="django_taskshed.task_saved")
def task_saved(
    sender: type[Task], instance: Task, raw: bool = False, using: str = "default", **kwargs: Any
) -> None:
    if not raw:
        notify_on_commit(None if instance.paused else instance.run_at, using)


@receiver(post_delete, sender=Task, dispatch_uid="django_taskshed.task_deleted")
def task_deleted(sender: type[Task], instance: Task, using: str = "default", **kwargs: Any) -> None:
    notify_on_commit(None, using)
