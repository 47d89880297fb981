"""What an enqueued Django task keeps in its row's ``kwargs`` (and so in its run history):
the call's arguments and the task's options as enqueued.

The options leave out what has its usual value (backend and queue ``"default"``, priority 0,
no ``run_after``): every byte of the row is copied by each claim and each history row, and a
Django task's row is otherwise twice a callback task's. Rows written with every option (by
earlier versions) read the same.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# An option left out of a row's ``task_options`` has this value.
USUAL: dict[str, Any] = {"backend": "default", "queue_name": "default", "priority": 0}


def is_payload(stored: Any) -> bool:
    """Whether a row's ``kwargs`` are a Django task's (``Payload.stored``)."""
    return isinstance(stored, dict) and stored.keys() == {"args", "kwargs", "task_options"}


@dataclass(frozen=True, slots=True)
class Payload:
    args: list[Any]
    kwargs: dict[str, Any]
    task_options: dict[str, Any]

    @classmethod
    def of(cls, stored: dict[str, Any]) -> "Payload":
        return cls(stored["args"], stored["kwargs"], stored["task_options"])

    @staticmethod
    def stored(
        args: list[Any], kwargs: dict[str, Any], task: Any, enqueued_at: datetime
    ) -> dict[str, Any]:
        """The row's ``kwargs`` for a call of ``task`` (a Django ``Task``)."""
        options: dict[str, Any] = {"enqueued_at": enqueued_at.isoformat()}
        if task.backend != USUAL["backend"]:
            options["backend"] = task.backend
        if task.queue_name != USUAL["queue_name"]:
            options["queue_name"] = task.queue_name
        if task.priority != USUAL["priority"]:
            options["priority"] = task.priority
        if task.run_after is not None:
            options["run_after"] = task.run_after.isoformat()
        return {"args": args, "kwargs": kwargs, "task_options": options}

    @property
    def backend(self) -> str:
        return str(self.task_options.get("backend", USUAL["backend"]))

    @property
    def queue_name(self) -> str:
        return str(self.task_options.get("queue_name", USUAL["queue_name"]))

    @property
    def priority(self) -> int:
        return int(self.task_options.get("priority", USUAL["priority"]))

    @property
    def run_after(self) -> datetime | None:
        value = self.task_options.get("run_after")
        return datetime.fromisoformat(value) if value else None

    @property
    def enqueued_at(self) -> datetime:
        return datetime.fromisoformat(self.task_options["enqueued_at"])
