"""The app's receivers: saves and deletes of Task rows (admin, ``Task.objects``) notify
workers after commit; after ``migrate``, the schedules declared in code are synced."""

from typing import Any

from django.db import connections
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


def sync_declared_schedules(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After ``migrate`` of the task table's database: write the declared schedules."""
    from .datastores import DjangoDataStore
    from .declared import sync_schedules

    datastore = DjangoDataStore()
    if using != datastore.using:
        return
    if Task._meta.db_table not in connections[using].introspection.table_names():
        return  # migrated back to before the table
    sync_schedules(datastore)
