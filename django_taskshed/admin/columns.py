"""The task admin's computed columns and read-only fields, in words and colours."""

import contextvars
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from ..cron import CronError, cron_schedule, describe
from ..models import RunType, Task, TaskRun, TaskStatus
from ..occurrences import upcoming_runs
from .display import in_words, local_time, relative
from .runs import detail, duration

UPCOMING = 10
RECENT_RUNS = 20
DST_NOTES = {
    "moved": " [{local}: moved out of a daylight-saving gap]",
    "twice": " [{local}: a repeated hour, run in both passes]",
}
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
served: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "taskshed_served", default=None
)


def _dst_note(task: Task, run: datetime) -> str:
    """Why a cron run is not where its expression alone puts it, in the task's time zone."""
    if task.run_type != RunType.CRON:
        return ""
    schedule = cron_schedule(task.cron, task.timezone, task.on_nonexistent, task.on_ambiguous)
    note = DST_NOTES.get(schedule.note(run), "")
    return note.format(local=run.astimezone(schedule.zone).strftime("%H:%M %Z"))


def _stored(task: Task) -> bool:
    """Whether ``task`` is a row with a schedule (the add form shows an empty one)."""
    run_at: Any = task.run_at
    return bool(task.pk) and run_at is not None


def _attempts_in_words(task: Task, now: datetime) -> str:
    """The badge's tooltip: what the changelist has no column for."""
    attempts = "no attempts" if not task.attempts else f"attempts: {task.attempts}"
    return f"{attempts}; last run: {local_time(task.last_run_at, now)}"


def _run_line(run: TaskRun, now: datetime) -> tuple[str, str, str, str]:
    """A run on its task's page: when, outcome, (how long), and its error or what it missed."""
    took, said = duration(run), detail(run)
    return (
        local_time(run.started_at or run.scheduled_for, now),
        run.get_outcome_display(),
        "" if took == "-" else f" ({took})",
        f": {said}" if said else "",
    )


class TaskColumns:
    """Columns of the changelist and read-only fields of the change form."""

    @admin.display(description="callback", ordering="callback")
    def callback_served(self, task: Task) -> str:
        names = served.get()
        if names is None or task.callback in names:
            return task.callback
        return format_html("{} {}", task.callback, NO_LIVE_WORKER)

    @admin.display(description="task", ordering="task_id")
    def task_summary(self, task: Task) -> str:
        """The id (the link to the task), and below it what it runs and its group."""
        group = format_html(" &middot; {}", task.group_id) if task.group_id else ""
        return format_html(
            '{}<span class="quiet taskshed-what">{}{}</span>',
            task.task_id,
            self.callback_served(task),
            group,
        )

    @admin.display(description="served by")
    def served_by(self, task: Task) -> str:
        if not _stored(task):
            return "-"
        names = served.get()
        if names is not None and task.callback not in names:
            return NO_LIVE_WORKER
        return "a live worker serves this callback"

    @admin.display(description="schedule", ordering="run_type")
    def schedule(self, task: Task) -> str:
        if task.run_type == RunType.CRON:
            try:
                return describe(task.cron, task.timezone)
            except (CronError, ValueError, KeyError):
                return f"cron {task.cron!r} (invalid), {task.timezone}"
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
        now = timezone.now()
        status = task.status_at(now)
        return format_html(
            '<span class="taskshed-status taskshed-status-{}" title="{}" style="color:#fff;'
            'background:{};padding:1px 6px;border-radius:8px;white-space:nowrap">{}</span>',
            status.value,
            _attempts_in_words(task, now),
            STATUS_COLOURS[status],
            status.label,
        )

    @admin.display(description="last error")
    def error_line(self, task: Task) -> str:
        if not task.last_error:
            return ""
        line = task.last_error.partition("\n")[0]
        return format_html('<span title="{}">{}</span>', line, Truncator(line).chars(160))

    @admin.display(description="last traceback")
    def traceback(self, task: Task) -> str:
        if not task.last_traceback:
            return "-"
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', task.last_traceback)

    @admin.display(description=f"last {RECENT_RUNS} runs")
    def recent_runs(self, task: Task) -> str:
        if not _stored(task):
            return "-"
        runs = TaskRun.objects.filter(task_id=task.task_id).defer("traceback", "return_value")
        now = timezone.now()
        rows = [_run_line(run, now) for run in runs.order_by("-started_at", "-id")[:RECENT_RUNS]]
        if not rows:
            return "no runs recorded"
        link = (
            reverse("admin:django_taskshed_taskrun_changelist")
            + "?"
            + urlencode({"q": task.task_id})
        )
        return format_html(
            '<ol>{}</ol><a href="{}">all runs of this task</a>',
            format_html_join("", "<li>{} {}{}{}</li>", rows),
            link,
        )

    @admin.display(description=f"next {UPCOMING} runs")
    def upcoming(self, task: Task) -> str:
        if not _stored(task):
            return "-"
        now = timezone.now()
        try:
            runs = upcoming_runs(task, task.coalesce, now, UPCOMING)
        except CronError as exc:
            return f"cannot compute: {exc}"
        flag = " (paused: will not run until resumed)" if task.paused else ""
        rows = [
            (
                timezone.localtime(run).strftime("%Y-%m-%d %H:%M:%S"),
                relative(run, now),
                _dst_note(task, run) + flag,
            )
            for run in runs
        ]
        return format_html("<ol>{}</ol>", format_html_join("", "<li>{} ({}){}</li>", rows))
