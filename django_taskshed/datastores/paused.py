"""Resuming a recurring or cron task skips the occurrences that fell due while it was paused
(they are not run late), and records them in the run history as one ``skipped_paused`` row."""

import logging
from dataclasses import replace
from datetime import datetime

from django.db import DatabaseError, connections, transaction

from ..conf import taskshed_settings
from ..models import RunOutcome, RunType, TaskQuerySet
from ..occurrences import Missed, missed_between, schedule_of
from . import runs

logger = logging.getLogger(__name__)

SCHEDULE_FIELDS = (
    "task_id", "callback", "group_id", "run_type", "run_at", "interval", "cron", "timezone",
    "on_nonexistent", "on_ambiguous",
)  # fmt: skip


def skip_paused_occurrences(paused: TaskQuerySet, now: datetime) -> int:
    """Move each recurring or cron task of ``paused`` whose ``run_at`` has passed to its first
    occurrence after ``now``, in the caller's transaction. Returns how many moved."""
    overdue = paused.filter(run_type__in=(RunType.RECURRING, RunType.CRON), run_at__lt=now)
    moved, rows = [], []
    for task in overdue.only(*SCHEDULE_FIELDS).select_for_update():  # no settle in between
        following = schedule_of(task).next_after(now)
        if following is None:
            continue
        # The occurrence at run_at did not run either: it is the first skipped.
        skipped = Missed(1, task.run_at, task.run_at)
        if (between := missed_between(task, task.run_at, following)) is not None:
            skipped = replace(between, count=between.count + 1, first=task.run_at)
        rows.append(runs.missed_row(task, RunOutcome.SKIPPED_PAUSED, skipped, now))
        task.run_at = following
        moved.append(task)
    if not moved:
        return 0
    paused.bulk_update(moved, ["run_at"], batch_size=500)
    if taskshed_settings.HISTORY:
        try:
            with transaction.atomic(using=paused.db):
                runs.insert_runs(connections[paused.db], rows)
        except DatabaseError:
            logger.exception("could not record %d skipped_paused row(s) in the history", len(rows))
    return len(moved)
