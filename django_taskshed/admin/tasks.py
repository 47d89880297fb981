"""The task admin: list, search, filter, edit; every action goes through the scheduler API."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse

from ..exceptions import StaleTaskError
from ..models import Task
from ..schedulers import SyncScheduler
from ..tasks_framework.loaded import loaded_task
from ..tasks_framework.payload import is_payload
from .actions import pause, resume, retry_failed, run_now
from .columns import TaskColumns, served
from .filters import BoundedCount, CallbackFilter, GroupFilter, QueueFilter, StatusFilter
from .forms import TaskAdminForm
from .workers import served_callbacks

# What TASKSHED["SCHEDULES"] defines; the admin shows it read-only on rows it declared.
DECLARED_DEFINITION = [
    "callback", "kwargs", "group_id", "run_type", "interval", "cron", "timezone",
    "on_nonexistent", "on_ambiguous", "coalesce", "max_retries", "timeout", "queue", "priority",
]  # fmt: skip

if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    TaskModelAdmin = admin.ModelAdmin[Task]
else:
    TaskModelAdmin = admin.ModelAdmin


@admin.register(Task)
class TaskAdmin(BoundedCount, TaskColumns, TaskModelAdmin):
    form = TaskAdminForm
    list_per_page = 50

    class Media:
        css = {"all": ["django_taskshed/admin.css"]}

    ordering = ["run_at", "task_id"]
    search_fields = ["task_id", "group_id", "callback"]
    list_filter = [
        StatusFilter, "run_type", CallbackFilter, GroupFilter, QueueFilter, "paused",
        "declared_in_code",
    ]  # fmt: skip
    # Fits a 1,366-pixel window beside Django's two sidebars: attempts and the last run are in
    # the status badge's tooltip, the whole error on the change view.
    list_display = ["task_summary", "schedule", "next_run", "status_badge", "error_line"]
    actions = [pause, resume, run_now, retry_failed, "delete_selected"]
    readonly_fields = [
        "status_badge", "served_by", "upcoming", "lease_owner", "lease_expires_at", "attempts",
        "last_run_at", "failed_at", "last_error", "traceback", "paused_at", "created_at",
        "updated_at", "declared_in_code", "recent_runs",
    ]  # fmt: skip
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "opened_version",
                    "status_badge",
                    "task_id",
                    "declared_in_code",
                    "callback",
                    "served_by",
                    "kwargs",
                    "group_id",
                    "queue",
                    "priority",
                ]  # fmt: skip
            },
        ),
        (
            "Schedule",
            {
                "fields": [
                    "run_at",
                    "run_type",
                    "interval",
                    "cron",
                    "timezone",
                    "on_nonexistent",
                    "on_ambiguous",
                    "coalesce",
                    "paused",
                    "upcoming",
                ]  # fmt: skip
            },
        ),
        (
            "Failures",
            {
                "fields": [
                    "max_retries",
                    "timeout",
                    "attempts",
                    "failed_at",
                    "last_error",
                    "traceback",
                ]  # fmt: skip
            },
        ),
        ("Runs", {"fields": ["recent_runs"]}),
        (
            "Lease and history",
            {
                "fields": [
                    "lease_owner",
                    "lease_expires_at",
                    "last_run_at",
                    "paused_at",
                    "created_at",
                    "updated_at",
                ]  # fmt: skip
            },
        ),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Task | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        # A schedule declared in code, or a task enqueued through Django's Tasks framework (a
        # loaded @task's row, arguments as it stores them): its definition lives in the code.
        if obj is not None and (obj.declared_in_code or _enqueued_django_task(obj)):
            return [*fields, "task_id", *DECLARED_DEFINITION]
        return [*fields, "task_id"] if obj is not None else fields

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self._refuse_forbidden_action(request)
        return self._with_served(super().changelist_view, request, extra_context)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return self._with_served(super().changeform_view, request, *args, **kwargs)
        except StaleTaskError:
            # Changed between the form's check and the save (SQLite does not lock the row):
            # the view again, whose check now shows the form with the user's input.
            return self._with_served(super().changeform_view, request, *args, **kwargs)

    def _with_served(self, view: Callable[..., HttpResponse], *args: Any) -> HttpResponse:
        """Run ``view`` and render its page while the served callback names are known."""
        token = served.set(served_callbacks())
        try:
            response = view(*args)
            if isinstance(response, SimpleTemplateResponse) and not response.is_rendered:
                response.render()
            return response
        finally:
            served.reset(token)

    def _refuse_forbidden_action(self, request: HttpRequest) -> None:
        """A POSTed action the user may not run is a 403, not a silent no-op."""
        name = request.POST.get("action") if request.method == "POST" else None
        if name and name not in self.get_actions(request):
            raise PermissionDenied(f"not allowed to run the action {name!r}")

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        SyncScheduler().remove_tasks(task_ids=list(queryset.values_list("pk", flat=True)))


def _enqueued_django_task(task: Task) -> bool:
    """Whether ``task`` is a row of a Django ``@task`` loaded here (a TaskShed-style callback
    whose own arguments happen to be named ``args`` and ``kwargs`` is not)."""
    return is_payload(task.kwargs) and loaded_task(task.callback) is not None
