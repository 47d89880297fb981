"""The run history's row of each run a worker makes (written later, with the run's result).

A row is a plain tuple in ``datastores.runs.RUN_COLUMNS`` order: building model instances
for every run would cost the worker more than the run itself.
"""

import json
from datetime import datetime
from typing import Any

from ..conf import taskshed_settings
from ..datastores import ClaimedTask, Outcome


def storable(value: Any) -> tuple[str | None, bool]:
    """``value`` as JSON text the history keeps, and whether it was left out: only JSON
    within ``HISTORY_MAX_RESULT_BYTES`` is kept."""
    if value is None:
        return None, False
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None, True
    if len(text) > taskshed_settings.HISTORY_MAX_RESULT_BYTES:  # ASCII: one byte a character
        return None, True
    return text, False


def run_row(
    claim: ClaimedTask,
    outcome: Outcome,
    kind: str,
    started: datetime,
    finished: datetime,
    worker_id: str,
    value: Any = None,
) -> tuple[Any, ...] | None:
    """The row of this run, or None when ``TASKSHED["HISTORY"]`` is off."""
    if not taskshed_settings.HISTORY:
        return None
    kept, omitted = storable(value)
    changes = outcome.changes
    return (
        claim.task_id, claim.callback, claim.group_id, claim.run_at, started, finished, kind,
        claim.attempts + 1, worker_id, changes.get("last_error", ""),
        changes.get("last_traceback", ""), kept, omitted,
    )  # fmt: skip
