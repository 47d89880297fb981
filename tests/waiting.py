"""Waiting in async tests for something another thread or process brings about."""

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

POLL = 0.01  # seconds between two looks


async def eventually(condition: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``condition`` (sync or async) until it is truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(POLL)
