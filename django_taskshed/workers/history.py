"""The run history's row of each run a worker makes (written later, with the run's result)."""

import json
from datetime import datetime
from typing import Any

from ..conf import taskshed_settings
from ..datastores import ClaimedTask, Outcome
from ..models import TaskRun


def storable(value: Any) -> tuple[Any, bool]:
    """``value`` as the history keeps it, and whether it was left out: only JSON within
    ``HISTORY_MAX_RESULT_BYTES`` is kept."""
    if value is None:
        return None, False
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None, True
    if len(text.encode()) > taskshed_settings.HISTORY_MAX_RESULT_BYTES:
        return None, True
    return json.loads(text), False  # as it will read back (tuples as lists, ...)


def run_row(
    claim: ClaimedTask,
    outcome: Outcome,
    kind: str,
    started: datetime,
    finished: datetime,
    worker_id: str,
    value: Any = None,
) -> TaskRun | None:
    """The row of this run, or None when ``TASKSHED["HISTORY"]`` is off."""
    if not taskshed_settings.HISTORY:
        return None
    kept, omitted = storable(value)
    return TaskRun(
        task_id=claim.task_id,
        callback=claim.callback,
        group_id=claim.group_id,
        scheduled_for=claim.run_at,
        started_at=started,
        finished_at=finished,
        outcome=kind,
        attempt=claim.attempts + 1,
        worker_id=worker_id,
        error=outcome.changes.get("last_error", ""),
        traceback=outcome.changes.get("last_traceback", ""),
        return_value=kept,
        return_value_omitted=omitted,
    )
