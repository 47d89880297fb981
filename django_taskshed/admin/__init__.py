"""The admin: tasks (with scheduler actions, filters and a validated form), their runs, and
live workers."""

from .runs import TaskRunAdmin
from .tasks import TaskAdmin
from .workers import WorkerRecordAdmin

__all__ = ["TaskAdmin", "TaskRunAdmin", "WorkerRecordAdmin"]
