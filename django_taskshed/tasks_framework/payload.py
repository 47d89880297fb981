"""What an enqueued Django task keeps in its row's ``kwargs`` (and so in its run history):
the call's arguments and the task's options as enqueued."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
        run_after = task.run_after.isoformat() if task.run_after is not None else None
        options = {
            "backend": task.backend, "queue_name": task.queue_name, "priority": task.priority,
            "run_after": run_after, "enqueued_at": enqueued_at.isoformat(),
        }  # fmt: skip
        return {"args": args, "kwargs": kwargs, "task_options": options}

    @property
    def backend(self) -> str:
        return str(self.task_options["backend"])

    @property
    def queue_name(self) -> str:
        return str(self.task_options["queue_name"])

    @property
    def priority(self) -> int:
        return int(self.task_options["priority"])

    @property
    def run_after(self) -> datetime | None:
        value = self.task_options.get("run_after")
        return datetime.fromisoformat(value) if value else None

    @property
    def enqueued_at(self) -> datetime:
        return datetime.fromisoformat(self.task_options["enqueued_at"])
