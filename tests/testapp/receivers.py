"""A ``task_finished`` receiver for the signal tests of real worker processes: with
``TASKSHED_TEST_SIGNALS=1`` in a worker's environment, it writes each finished run to the
``Execution`` ledger as ``signal:<task_id>``."""

import os
from typing import Any

from .models import Execution

ENV = "TASKSHED_TEST_SIGNALS"


def record_finished(sender: Any, task_id: str, outcome: str, **kwargs: Any) -> None:
    Execution.objects.create(
        key=f"signal:{task_id}",
        callback=outcome,
        started_at=kwargs["started_at"],
        finished_at=kwargs["finished_at"],
        worker_pid=os.getpid(),
        value={"attempt": kwargs["attempt"], "worker_id": kwargs["worker_id"]},
    )


def connect() -> None:
    if os.environ.get(ENV) == "1":
        from django_taskshed.signals import task_finished

        task_finished.connect(record_finished, dispatch_uid="testapp.record_finished")
