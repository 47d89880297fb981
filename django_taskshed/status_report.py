"""What ``taskshedstatus`` makes of a ``Status``: the ``--check`` thresholds, the text report and
the JSON document."""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from .status import COUNTED, QueueCounts, RecurringStatus, Status


@dataclass(frozen=True)
class Failure:
    """A ``--check`` threshold that failed: its flag, its limit and the measured value."""

    threshold: str
    limit: float
    value: float
    message: str


def overdue_value(status: Status) -> tuple[float, str]:
    task = status.most_overdue
    if task is None:
        return 0.0, "no task is due"
    return task.overdue_seconds, f"task {task.task_id} is {task.overdue_seconds:,.0f} s overdue"


def failed_value(status: Status) -> tuple[float, str]:
    return status.totals.failed, f"{status.totals.failed:,} failed task(s)"


def workers_value(status: Status) -> tuple[float, str]:
    return len(status.workers), f"{len(status.workers)} live worker(s)"


def stale_value(status: Status) -> tuple[float, str]:
    """The stalest recurring task that is not paused."""
    active = [task for task in status.recurring if not task.paused]
    stalest = max(active, key=lambda task: task.stale_seconds, default=None)
    if stalest is None:
        return 0.0, "no active recurring task"
    since = "succeeded" if stalest.last_success_at else "succeeded since it was created"
    return stalest.stale_seconds, (
        f"recurring task {stalest.task_id} has not {since} for {stalest.stale_seconds:,.0f} s"
    )


# option name: (flag, whether the limit is a minimum, what is measured)
THRESHOLDS: dict[str, tuple[str, bool, Callable[[Status], tuple[float, str]]]] = {
    "max_overdue": ("max-overdue", False, overdue_value),
    "max_failed": ("max-failed", False, failed_value),
    "min_workers": ("min-workers", True, workers_value),
    "stale_after": ("stale-after", False, stale_value),
}


def check(status: Status, limits: dict[str, float | None]) -> list[Failure]:
    """The thresholds of ``limits`` (option name -> limit, None: not checked) that fail."""
    failures = []
    for option, (flag, minimum, measure) in THRESHOLDS.items():
        limit = limits.get(option)
        if limit is None:
            continue
        value, what = measure(status)
        if value < limit if minimum else value > limit:
            bound = "minimum" if minimum else "limit"
            failures.append(Failure(flag, limit, value, f"{flag}: {what} ({bound} {limit:,g})"))
    return failures


# --- JSON ------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Datetimes as ISO strings, in dicts and lists too."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return value


def counts_document(counts: QueueCounts, with_queue: bool = True) -> dict[str, Any]:
    document = asdict(counts)
    return document if with_queue else {k: v for k, v in document.items() if k != "queue"}


def status_document(status: Status, failures: list[Failure] | None) -> dict[str, Any]:
    """The ``--json`` document (its schema is in the README); ``failures`` None: no --check."""
    workers = [
        {**asdict(worker), "queues": None,
         "heartbeat_age_seconds": (status.now - worker.heartbeat_at).total_seconds()}
        for worker in status.workers
    ]  # fmt: skip
    overdue = status.most_overdue
    document: dict[str, Any] = jsonable({
        "now": status.now,
        "grace_seconds": status.grace,
        "workers": workers,
        "queues": [counts_document(counts) for counts in status.queues],
        "totals": counts_document(status.totals, with_queue=False),
        "most_overdue": None if overdue is None else asdict(overdue),
        "recurring": [asdict(task) for task in status.recurring],
        "recurring_truncated": status.recurring_truncated,
        "query_seconds": status.query_seconds,
        "check": None if failures is None else {
            "passed": not failures, "failures": [asdict(failure) for failure in failures],
        },
    })  # fmt: skip
    return document


# --- text ------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Columns padded to their widest cell, left-aligned but for the ``right`` ones."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]  # fmt: skip


def ago(seconds: float) -> str:
    return f"{seconds:,.0f} s ago"


def worker_lines(status: Status) -> list[str]:
    lines = [f"workers: {len(status.workers)} live"]
    rows = [
        [w.worker_id, w.hostname, str(w.pid), ", ".join(w.callbacks) or "-", str(w.running),
         ago((status.now - w.heartbeat_at).total_seconds())]
        for w in status.workers
    ]  # fmt: skip
    header = ["worker", "host", "pid", "callbacks (queues not recorded)", "running", "heartbeat"]
    return lines + (table(header, rows, right=(2, 4, 5)) if rows else [])


def count_lines(status: Status) -> list[str]:
    rows = [
        [c.queue or "", *(f"{getattr(c, n):,}" for n in ("tasks", *COUNTED))] for c in status.queues
    ]
    rows.append(["(all)", *(f"{getattr(status.totals, n):,}" for n in ("tasks", *COUNTED))])
    header = ["queue", "tasks", *COUNTED]
    note = f"tasks (overdue: due for more than {status.grace:g} s; exact counts):"
    return [note, *table(header, rows, right=tuple(range(1, len(header))))]


def overdue_line(status: Status) -> str:
    task = status.most_overdue
    if task is None:
        return "most overdue: none (no task is due)"
    return (
        f"most overdue: {task.task_id} ({task.callback}, queue {task.queue}), "
        f"due at {task.run_at.isoformat()}, {task.overdue_seconds:,.0f} s ago"
    )


def last_success(task: RecurringStatus) -> str:
    if task.last_success_at is None:
        return f"never (created {task.created_at.isoformat()})"
    return f"{task.last_success_at.isoformat()} ({task.last_success_from})"


def state(task: RecurringStatus) -> str:
    return "paused" if task.paused else ("failed" if task.failed else "active")


def recurring_lines(status: Status) -> list[str]:
    more = ", more not listed" if status.recurring_truncated else ""
    lines = [f"recurring tasks: {len(status.recurring)} (active first, the stalest first{more})"]
    rows = [
        [t.task_id, t.run_type, t.queue, state(t), last_success(t), f"{t.stale_seconds:,.0f} s"]
        for t in status.recurring
    ]
    header = ["task", "type", "queue", "state", "last success", "since"]
    return lines + (table(header, rows, right=(5,)) if rows else [])


def status_text(status: Status, failures: list[Failure] | None) -> str:
    lines = [f"taskshed status at {status.now.isoformat()}", *worker_lines(status)]
    lines += [*count_lines(status), overdue_line(status), *recurring_lines(status)]
    if failures is not None:
        lines.append("check: OK" if not failures else f"check: FAILED ({len(failures)})")
        lines += [f"FAILED {failure.message}" for failure in failures]
    return "\n".join(lines)
