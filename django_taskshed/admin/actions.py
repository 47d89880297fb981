"""The task changelist's actions: each calls the scheduler, which notifies workers."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpRequest

from ..schedulers import SyncScheduler

if TYPE_CHECKING:
    from .tasks import TaskAdmin


def scheduler_action(
    description: str, permission: str
) -> Callable[[Callable[..., int]], Callable[..., None]]:
    """An admin action that calls the scheduler and reports "N tasks <done>"."""

    def decorate(call: Callable[..., int]) -> Callable[..., None]:
        def action(modeladmin: "TaskAdmin", request: HttpRequest, queryset: Any) -> None:
            ids = list(queryset.values_list("pk", flat=True))
            count = call(SyncScheduler(), ids)
            noun = "task" if count == 1 else "tasks"
            modeladmin.message_user(request, f"{count} {noun} {description}.", messages.SUCCESS)

        action.__name__ = call.__name__
        return admin.action(description=f"{call.__doc__}", permissions=[permission])(action)

    return decorate


@scheduler_action("paused", "change")
def pause(scheduler: SyncScheduler, ids: list[str]) -> int:
    """Pause selected tasks"""
    return scheduler.pause_tasks(task_ids=ids)


@scheduler_action("resumed", "change")
def resume(scheduler: SyncScheduler, ids: list[str]) -> int:
    """Resume selected tasks"""
    return scheduler.resume_tasks(task_ids=ids)


@scheduler_action("will run now", "change")
def run_now(scheduler: SyncScheduler, ids: list[str]) -> int:
    """Run selected tasks now"""
    return scheduler.run_tasks_now(task_ids=ids)


@scheduler_action("queued for a retry", "change")
def retry_failed(scheduler: SyncScheduler, ids: list[str]) -> int:
    """Retry selected failed tasks"""
    return scheduler.run_tasks_now(task_ids=ids, only_failed=True)
