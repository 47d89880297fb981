"""What an enqueued Django task keeps in its row's ``kwargs`` (and so in its run history):
the call's arguments, and the task's options as enqueued where they are not the usual ones.

Every byte of the row is copied by each claim and each history row, so a row keeps
``{"args": [...], "kwargs": {...}}`` and adds ``task_options`` only for what has not its usual
value (backend and queue ``"default"``, priority 0, no ``run_after``). The time of the
``enqueue()`` is not stored at all: the result's id (``new_result_id``) is a version 7 UUID that
holds it to the microsecond. Rows written by earlier versions (every option, and
``enqueued_at`` among them) read the same.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from secrets import randbits
from typing import Any

from django.conf import settings

# An option left out of a row's ``task_options`` has this value.
USUAL: dict[str, Any] = {"backend": "default", "queue_name": "default", "priority": 0}
KEYS = frozenset({"args", "kwargs"})
UTC = timezone.utc  # datetime.UTC is Python 3.11+
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def is_payload(stored: Any) -> bool:
    """Whether a row's ``kwargs`` are a Django task's (``Payload.stored``)."""
    return isinstance(stored, dict) and (stored.keys() - {"task_options"}) == KEYS


def new_result_id(enqueued_at: datetime) -> str:
    """A new result id: a UUID of version 7 (RFC 9562) whose 48-bit Unix time in milliseconds
    is ``enqueued_at``'s, with the microseconds within that millisecond (0-999) in its 12
    ``rand_a`` bits and 62 random bits; so ids sort by enqueue time, and each tells its
    ``enqueued_at`` exactly (``enqueued_at_of``)."""
    micros = (_utc(enqueued_at) - EPOCH) // MICROSECOND
    millis, rest = divmod(micros, 1000)
    value = (millis << 80) | (0x7 << 76) | (rest << 64) | (0b10 << 62) | randbits(62)
    return str(uuid.UUID(int=value))


def enqueued_at_of(result_id: str) -> datetime | None:
    """The time ``result_id`` was made for (``new_result_id``); None for an id that is not one of
    those (a row written by another program)."""
    try:
        value = uuid.UUID(result_id)
    except ValueError:
        return None
    rest = (value.int >> 64) & 0xFFF
    if value.version != 7 or rest > 999:
        return None
    moment = EPOCH + timedelta(microseconds=(value.int >> 80) * 1000 + rest)
    return moment if settings.USE_TZ else moment.replace(tzinfo=None)


def _utc(moment: datetime) -> datetime:
    """An aware moment as UTC; a naive one (``USE_TZ = False``) as the same wall time in UTC,
    which ``enqueued_at_of`` gives back naive."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Payload:
    args: list[Any]
    kwargs: dict[str, Any]
    task_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, stored: dict[str, Any]) -> "Payload":
        return cls(stored["args"], stored["kwargs"], stored.get("task_options") or {})

    @staticmethod
    def stored(args: list[Any], kwargs: dict[str, Any], task: Any) -> dict[str, Any]:
        """The row's ``kwargs`` for a call of ``task`` (a Django ``Task``)."""
        options: dict[str, Any] = {}
        if task.backend != USUAL["backend"]:
            options["backend"] = task.backend
        if task.queue_name != USUAL["queue_name"]:
            options["queue_name"] = task.queue_name
        if task.priority != USUAL["priority"]:
            options["priority"] = task.priority
        if task.run_after is not None:
            options["run_after"] = task.run_after.isoformat()
        if options:
            return {"args": args, "kwargs": kwargs, "task_options": options}
        return {"args": args, "kwargs": kwargs}

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

    def enqueued_at(self, result_id: str) -> datetime | None:
        """When the task was enqueued: told by its id, or stored by an earlier version."""
        stored = self.task_options.get("enqueued_at")
        return datetime.fromisoformat(stored) if stored else enqueued_at_of(result_id)
