"""DjangoDataStore: the data access object over the ORM that schedulers and workers share."""

from .leases import ClaimedTask, LeaseOperations, Outcome, SettleReport
from .taskshed import TaskShedMethods


class DjangoDataStore(TaskShedMethods, LeaseOperations):
    """Stores tasks in the ``Task`` table of one database, for schedulers and workers alike.

    Its sync steps (``write_tasks``, ``pause_tasks``, ``claim_due_tasks``, ``settle``, ...)
    each run one transaction; TaskShed's datastore methods (``add_tasks``,
    ``fetch_due_tasks``, ``fetch_next_wakeup``, ...) are coroutines over them. Every step
    starts from ``get_queryset()``: override it and both the schedulers and the workers that
    use this datastore see only those tasks.

    Args:
        using: The database alias; defaults to ``TASKSHED["DATABASE"]``.
    """


__all__ = ["ClaimedTask", "DjangoDataStore", "Outcome", "SettleReport"]
