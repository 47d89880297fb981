"""The run history in the admin: a read-only list of task runs, newest first."""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from ..models import TaskRun
from .display import seconds

if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    RunModelAdmin = admin.ModelAdmin[TaskRun]
else:
    RunModelAdmin = admin.ModelAdmin


@admin.register(TaskRun)
class TaskRunAdmin(RunModelAdmin):
    list_display = [
        "task_id", "callback", "outcome", "scheduled_for", "started_at", "lateness", "duration",
        "attempt", "worker_id",
    ]  # fmt: skip
    list_filter = ["outcome", "callback", "group_id", "worker_id"]
    search_fields = ["task_id"]
    date_hierarchy = "started_at"
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="late")
    def lateness(self, run: TaskRun) -> str:
        if run.started_at is None:
            return "-"
        return seconds(run.started_at - run.scheduled_for)

    @admin.display(description="took")
    def duration(self, run: TaskRun) -> str:
        if run.started_at is None or run.finished_at is None:
            return "-"
        return seconds(run.finished_at - run.started_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
