"""Admin for tasks and live workers; every action goes through the scheduler API."""

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from . import admin_filters
from .admin_filters import (
    BoundedCountPaginator,
    CallbackFilter,
    GroupFilter,
    StatusFilter,
)
from .display import in_words, local_time, relative
from .forms import TaskAdminForm
from .models import RunType, Task, TaskStatus, WorkerRecord
from .schedulers import SyncScheduler
from .scheduling import upcoming_runs

UPCOMING = 10
NO_LIVE_WORKER = mark_safe(  # noqa: S308  (a constant)
    '<span title="no live worker serves this callback" style="color:#ba2121">'
    "&#9888; no live worker</span>"
)
STATUS_COLOURS = {
    TaskStatus.SCHEDULED: "#417690",
    TaskStatus.PAUSED: "#777",
    TaskStatus.RUNNING: "#2e7d32",
    TaskStatus.RETRYING: "#c77c00",
    TaskStatus.FAILED: "#ba2121",
}
# Callback names served by live workers, read once per changelist or change view request.
_served: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "taskshed_served", default=None
)


def live_workers() -> QuerySet[WorkerRecord]:
    return WorkerRecord.objects.filter(expires_at__gte=timezone.now())


def served_callbacks() -> frozenset[str]:
    names: set[str] = set()
    for callbacks in live_workers().values_list("callbacks", flat=True):
        names.update(callbacks or ())
    return frozenset(names)


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


def _stored(task: Task) -> bool:
    """Whether ``task`` is a row with a schedule (the add form shows an empty one)."""
    run_at: Any = task.run_at
    return bool(task.pk) and run_at is not None


if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    TaskModelAdmin = admin.ModelAdmin[Task]
    WorkerModelAdmin = admin.ModelAdmin[WorkerRecord]
else:
    TaskModelAdmin = WorkerModelAdmin = admin.ModelAdmin


@admin.register(Task)
class TaskAdmin(TaskModelAdmin):
    form = TaskAdminForm
    paginator = BoundedCountPaginator
    show_full_result_count = False
    list_per_page = 50

    class Media:
        css = {"all": ["django_taskshed/admin.css"]}

    ordering = ["run_at", "task_id"]
    search_fields = ["task_id", "group_id", "callback"]
    list_filter = [StatusFilter, "run_type", CallbackFilter, GroupFilter, "paused"]
    list_display = [
        "task_id", "callback_served", "group_id", "schedule", "next_run", "status_badge",
        "attempts", "last_run", "error_line",
    ]  # fmt: skip
    actions = [pause, resume, run_now, retry_failed, "delete_selected"]
    readonly_fields = [
        "status_badge", "served_by", "upcoming", "lease_owner", "lease_expires_at", "attempts",
        "last_run_at", "failed_at", "last_error", "traceback", "paused_at", "created_at",
        "updated_at",
    ]  # fmt: skip
    fieldsets = [
        (
            None,
            {"fields": ["status_badge", "task_id", "callback", "served_by", "kwargs", "group_id"]},
        ),
        (
            "Schedule",
            {"fields": ["run_at", "run_type", "interval", "coalesce", "paused", "upcoming"]},
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

    @property
    def count_cap(self) -> int:
        """The most rows the changelist counts (read by its pagination template)."""
        return admin_filters.COUNT_CAP

    def get_readonly_fields(self, request: HttpRequest, obj: Task | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "task_id"] if obj is not None else fields

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self._refuse_forbidden_action(request)
        return self._with_served(super().changelist_view, request, extra_context)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._with_served(super().changeform_view, request, *args, **kwargs)

    def _with_served(self, view: Callable[..., HttpResponse], *args: Any) -> HttpResponse:
        """Run ``view`` and render its page while the served callback names are known."""
        token = _served.set(served_callbacks())
        try:
            response = view(*args)
            if isinstance(response, SimpleTemplateResponse) and not response.is_rendered:
                response.render()
            return response
        finally:
            _served.reset(token)

    def _refuse_forbidden_action(self, request: HttpRequest) -> None:
        """A POSTed action the user may not run is a 403, not a silent no-op."""
        name = request.POST.get("action") if request.method == "POST" else None
        if name and name not in self.get_actions(request):
            raise PermissionDenied(f"not allowed to run the action {name!r}")

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        SyncScheduler().remove_tasks(task_ids=list(queryset.values_list("pk", flat=True)))

    # -- columns --------------------------------------------------------------------------

    @admin.display(description="callback", ordering="callback")
    def callback_served(self, task: Task) -> str:
        served = _served.get()
        if served is None or task.callback in served:
            return task.callback
        return format_html("{} {}", task.callback, NO_LIVE_WORKER)

    @admin.display(description="served by")
    def served_by(self, task: Task) -> str:
        if not _stored(task):
            return "-"
        served = _served.get()
        if served is not None and task.callback not in served:
            return NO_LIVE_WORKER
        return "a live worker serves this callback"

    @admin.display(description="schedule", ordering="run_type")
    def schedule(self, task: Task) -> str:
        return in_words(task.interval if task.run_type == RunType.RECURRING else None)

    @admin.display(description="next run", ordering="run_at")
    def next_run(self, task: Task) -> str:
        if task.failed_at is not None:
            return format_html('<span title="{}">-</span>', "failed: it runs again once retried")
        now = timezone.now()
        hint = relative(task.run_at, now) + (", paused" if task.paused else "")
        return format_html(
            '<span style="white-space:nowrap">{}</span> <span class="quiet">({})</span>',
            local_time(task.run_at, now),
            hint,
        )

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, task: Task) -> str:
        return local_time(task.last_run_at, timezone.now())

    @admin.display(description="status")
    def status_badge(self, task: Task) -> str:
        if not _stored(task):
            return "-"
        status = task.status_at(timezone.now())
        return format_html(
            '<span class="taskshed-status taskshed-status-{}" style="color:#fff;background:{};'
            'padding:1px 6px;border-radius:8px;white-space:nowrap">{}</span>',
            status.value,
            STATUS_COLOURS[status],
            status.label,
        )

    @admin.display(description="last error")
    def error_line(self, task: Task) -> str:
        if not task.last_error:
            return ""
        line = task.last_error.partition("\n")[0]
        return format_html('<span title="{}">{}</span>', line, Truncator(line).chars(80))

    @admin.display(description="last traceback")
    def traceback(self, task: Task) -> str:
        if not task.last_traceback:
            return "-"
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', task.last_traceback)

    @admin.display(description=f"next {UPCOMING} runs")
    def upcoming(self, task: Task) -> str:
        if not _stored(task):
            return "-"
        now = timezone.now()
        runs = upcoming_runs(task.run_at, task.interval, task.coalesce, now, UPCOMING)
        flag = " (paused: will not run until resumed)" if task.paused else ""
        rows = [
            (timezone.localtime(run).strftime("%Y-%m-%d %H:%M:%S"), relative(run, now), flag)
            for run in runs
        ]
        return format_html("<ol>{}</ol>", format_html_join("", "<li>{} ({}){}</li>", rows))


@admin.register(WorkerRecord)
class WorkerRecordAdmin(WorkerModelAdmin):
    list_display = [
        "worker_id",
        "hostname",
        "pid",
        "started_at",
        "heartbeat_at",
        "served",
        "running",
    ]
    search_fields = ["worker_id", "hostname"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkerRecord]:
        return live_workers()

    @admin.display(description="callbacks served")
    def served(self, record: WorkerRecord) -> str:
        return ", ".join(record.callbacks or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
