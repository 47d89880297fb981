"""The run that the code of a callback is part of (a context variable, set by the runner)."""

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from ..datastores import ClaimedTask


@dataclass(frozen=True, slots=True)
class CurrentRun:
    claim: ClaimedTask
    started_at: datetime
    worker_id: str


current_run: ContextVar[CurrentRun] = ContextVar("taskshed_current_run")
