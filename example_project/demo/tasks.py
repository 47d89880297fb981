"""The demo's callbacks. django_taskshed finds them here (each app's ``tasks`` module).

A task names its callback by the registered name; only these names can ever run.
"""

import asyncio
import logging
from collections import Counter

from django_taskshed.registry import register_callback

logger = logging.getLogger(__name__)

# Calls of flaky() per kwargs, counted in this worker process only (a restart forgets them).
_flaky_calls: Counter[int] = Counter()


@register_callback
async def add(a: int, b: int) -> int:
    """Adds two numbers, as in TaskShed's examples (a coroutine)."""
    await asyncio.sleep(0)
    logger.info("add(%s, %s) = %s", a, b, a + b)
    return a + b


@register_callback
def send_report(recipient: str) -> None:
    """Pretends to e-mail a report (a plain function: the worker runs it in a thread)."""
    logger.info("report sent to %s", recipient)


@register_callback
async def heartbeat() -> None:
    """Logs a line; scheduled as a recurring task."""
    logger.info("heartbeat")


@register_callback
def flaky(fail_times: int) -> str:
    """Fails on its first ``fail_times`` calls in this process, then succeeds.

    Shows retries: with ``max_retries`` >= ``fail_times`` the task ends well; with fewer it
    ends failed, its last error shown in the admin.

    Raises:
        RuntimeError: on each of the first ``fail_times`` calls.
    """
    _flaky_calls[fail_times] += 1
    call = _flaky_calls[fail_times]
    if call <= fail_times:
        raise RuntimeError(f"flaky: failure {call} of {fail_times}")
    logger.info("flaky succeeded on call %s", call)
    return "ok"
