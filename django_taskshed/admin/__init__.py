"""The admin: tasks (with scheduler actions, filters and a validated form) and live workers."""

from .tasks import TaskAdmin
from .workers import WorkerRecordAdmin

__all__ = ["TaskAdmin", "WorkerRecordAdmin"]
