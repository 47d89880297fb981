"""The run history's rows of each run a worker makes (written later, with the run's result).

A row is a plain tuple in ``datastores.runs.RUN_COLUMNS`` order: building model instances
for every run would cost the worker more than the run itself.
"""

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from ..conf import taskshed_settings
from ..datastores import ClaimedTask, Outcome
from ..datastores.runs import missed_row
from ..models import RunOutcome, RunType
from ..occurrences import missed_between

# A cron schedule's missed occurrences are walked one by one: over a longer span than this,
# in a thread, so that a long downtime does not hold up the worker's event loop.
INLINE_CRON_SPAN = timedelta(hours=6)


def storable(value: Any) -> tuple[str | None, bool]:
    """``value`` as JSON text the history keeps, and whether it was left out: only JSON
    within ``HISTORY_MAX_RESULT_BYTES`` is kept, and none with a NUL character in a string
    (PostgreSQL's ``jsonb`` refuses ``\\u0000``; a string holding that escape as text is left
    out too)."""
    if value is None:
        return None, False
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None, True
    if len(text) > taskshed_settings.HISTORY_MAX_RESULT_BYTES:  # ASCII: one byte a character
        return None, True
    if "\\u0000" in text:
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
) -> tuple[Any, ...]:
    """The row of this run."""
    kept, omitted = storable(value)
    changes = outcome.changes
    return (
        claim.task_id, claim.callback, claim.group_id, claim.run_at, started, finished, kind,
        claim.attempts + 1, worker_id, changes.get("last_error", ""),
        changes.get("last_traceback", ""), kept, omitted, 0, None, None, claim.stored_kwargs,
    )  # fmt: skip


async def recorded(
    outcome: Outcome,
    kind: str,
    started: datetime,
    finished: datetime,
    worker_id: str,
    value: Any = None,
) -> Outcome:
    """``outcome`` with its history rows, none when ``TASKSHED["HISTORY"]`` is off: the run's,
    and a ``coalesced`` row when a recurring or cron task's next run skips occurrences that
    fell due by the time this one ended."""
    if not taskshed_settings.HISTORY:
        return outcome
    claim = outcome.claim
    rows = [run_row(claim, outcome, kind, started, finished, worker_id, value)]
    following = outcome.changes.get("run_at")
    if claim.coalesce and claim.run_type in (RunType.RECURRING, RunType.CRON) and following:
        if claim.run_type == RunType.CRON and following - claim.run_at > INLINE_CRON_SPAN:
            missed = await asyncio.to_thread(missed_between, claim, claim.run_at, following)
        else:
            missed = missed_between(claim, claim.run_at, following)
        if missed is not None:
            attempt = claim.attempts + 1
            rows.append(
                missed_row(claim, RunOutcome.COALESCED, missed, finished, worker_id, attempt)
            )
    return Outcome(outcome.claim, outcome.delete, outcome.changes, tuple(rows))
