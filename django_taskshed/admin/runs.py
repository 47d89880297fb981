"""The run history in the admin: a read-only list of task runs, newest first."""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from ..models import RunOutcome, TaskRun, WorkerRecord
from .dates import RunQuerySet
from .display import local_time, seconds
from .filters import BoundedCount, CallbackFilter, GroupFilter, with_selected

# The outcomes of a callback that ran: only they have a lateness and a duration.
ATTEMPTED = {RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.TIMED_OUT}
NOT_RUN = {RunOutcome.COALESCED, RunOutcome.SKIPPED_PAUSED}

if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    RunModelAdmin = admin.ModelAdmin[TaskRun]
else:
    RunModelAdmin = admin.ModelAdmin


def lateness(run: TaskRun) -> str:
    """How long after its due time the callback started; ``"-"`` if it did not run."""
    if run.outcome not in ATTEMPTED or run.started_at is None:
        return "-"
    return seconds(run.started_at - run.scheduled_for)


def duration(run: TaskRun) -> str:
    """How long the callback ran; ``"-"`` if it did not run."""
    if run.outcome not in ATTEMPTED or run.started_at is None or run.finished_at is None:
        return "-"
    return seconds(run.finished_at - run.started_at)


def detail(run: TaskRun) -> str:
    """``"3 missed (from 12:00:00 to 12:30:00)"`` for runs that did not happen, else the error."""
    if run.outcome in NOT_RUN:
        now = timezone.now()
        span = f"from {local_time(run.missed_from, now)} to {local_time(run.missed_until, now)}"
        return f"{run.missed} missed ({span})"
    return run.error.partition("\n")[0]


class WorkerFilter(admin.SimpleListFilter):
    """Workers with a record, first 50 by id, and the one selected (a gone worker's runs)."""

    title = "worker"
    parameter_name = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = WorkerRecord.objects.order_by("worker_id").values_list("worker_id", flat=True)
        return with_selected(list(names[:50]), self.value())

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(worker_id=self.value()) if self.value() else queryset


@admin.register(TaskRun)
class TaskRunAdmin(BoundedCount, RunModelAdmin):
    # Fits a 1,366-pixel window beside Django's two sidebars: the worker, the attempt and the
    # due time are in the outcome's tooltip, everything on the run's own page.
    list_display = ["task_run", "outcome_line", "started", "lateness", "duration"]
    list_filter = ["outcome", CallbackFilter, GroupFilter, WorkerFilter]
    search_fields = ["task_id"]  # exactly, see get_search_results
    date_hierarchy = "started_at"
    list_per_page = 50

    class Media:
        css = {"all": ["django_taskshed/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRun]:
        rows = super().get_queryset(request).defer("traceback", "return_value")
        return RunQuerySet(model=TaskRun, query=rows.query, using=rows.db)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[TaskRun], search_term: str
    ) -> tuple[QuerySet[TaskRun], bool]:
        """A task id, matched exactly, so that ``taskshed_run_task_idx`` serves it."""
        term = search_term.strip()
        return (queryset.filter(task_id=term) if term else queryset), False

    @admin.display(description="task", ordering="task_id")
    def task_run(self, run: TaskRun) -> str:
        return format_html(
            '{}<span class="quiet taskshed-what">{}</span>', run.task_id, run.callback
        )

    @admin.display(description="outcome", ordering="outcome")
    def outcome_line(self, run: TaskRun) -> str:
        tooltip = f"attempt {run.attempt}; due {local_time(run.scheduled_for, timezone.now())}" + (
            f"; worker {run.worker_id}" if run.worker_id else ""
        )
        text = detail(run)
        return format_html(
            '<span class="taskshed-outcome-{}" title="{}">{}</span>'
            '<span class="quiet taskshed-detail" title="{}">{}</span>',
            run.outcome,
            tooltip,
            run.get_outcome_display(),
            text,
            text,
        )

    @admin.display(description="started", ordering="started_at")
    def started(self, run: TaskRun) -> str:
        return local_time(run.started_at, timezone.now())

    @admin.display(description="late")
    def lateness(self, run: TaskRun) -> str:
        return lateness(run)

    @admin.display(description="took")
    def duration(self, run: TaskRun) -> str:
        return duration(run)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
