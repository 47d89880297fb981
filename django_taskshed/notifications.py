"""The "task changed" transport: one message type sent to a Channels group after each commit."""

import asyncio
import logging
from datetime import datetime
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from django.conf import settings

from .conf import taskshed_settings

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "taskshed.changed"
SEND_TIMEOUT = 0.5  # seconds a failing layer may hold up the caller


class Wakeable(Protocol):
    def update_schedule(self, run_at: datetime | None = None) -> None: ...


def channel_layer() -> Any:
    """The configured channel layer, or None when notifications are off."""
    alias = taskshed_settings.CHANNEL_LAYER
    if alias is None or alias not in getattr(settings, "CHANNEL_LAYERS", {}):
        return None
    from channels.layers import get_channel_layer

    return get_channel_layer(alias)


def changed_message(run_at: datetime | None) -> dict[str, Any]:
    """The message for a change whose earliest affected occurrence is ``run_at``."""
    return {"type": MESSAGE_TYPE, "run_at": run_at.isoformat() if run_at else None}


def parse_changed(message: Any) -> datetime | None:
    """The hinted run_at of a ``taskshed.changed`` message; ValueError if malformed."""
    if not isinstance(message, dict) or message.get("type") != MESSAGE_TYPE:
        raise ValueError(f"not a {MESSAGE_TYPE} message")
    hint = message.get("run_at")
    if hint is None:
        return None
    if not isinstance(hint, str) or len(hint) > 64:
        raise ValueError("run_at must be an ISO datetime string")
    parsed = datetime.fromisoformat(hint)
    if parsed.tzinfo is None:
        raise ValueError("run_at must carry a UTC offset")
    return parsed


async def asend_changed(run_at: datetime | None) -> None:
    """Tell every worker in the group; a failure is logged, never raised."""
    layer = channel_layer()
    if layer is None:
        return
    try:
        await asyncio.wait_for(
            layer.group_send(taskshed_settings.GROUP, changed_message(run_at)), SEND_TIMEOUT
        )
    except Exception:
        logger.warning("could not notify workers through the channel layer", exc_info=True)


def notify(run_at: datetime | None, worker: Wakeable | None = None) -> None:
    """After a commit: wake the in-process worker directly, then the group."""
    if worker is not None:
        worker.update_schedule(run_at)
    if channel_layer() is not None:
        async_to_sync(asend_changed)(run_at)
