"""Recycling: a worker whose resident memory passes ``max_memory`` drains and stops, so that
its supervisor starts a fresh one (``runtaskworker --max-memory``)."""

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between two reads of the resident memory
STATM = "/proc/self/statm"  # Linux: sizes in pages, the resident set second
MB = 1024 * 1024


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux: ``/proc/self/statm``); elsewhere its peak
    (``getrusage``), which never shrinks; None where neither is available."""
    try:
        with open(STATM, "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB


class MemoryLimit:
    """Every ``CHECK_EVERY`` seconds, compares the resident memory with ``limit_mb``; once it
    is over, logs why and calls ``stop`` (the worker's ``shutdown``), once."""

    def __init__(
        self, worker_id: str, limit_mb: float, stop: Callable[[], Awaitable[None]]
    ) -> None:
        self.worker_id = worker_id
        self.limit_mb = limit_mb
        self.stop = stop
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if resident_bytes() is None:
            logger.warning("worker %s: cannot read resident memory here", self.worker_id)
            return
        self._task = asyncio.create_task(self._watch(), name="taskshed-memory-limit")

    async def close(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def over(self) -> float | None:
        """The resident memory in MB if it is over the limit, else None."""
        used = (resident_bytes() or 0) / MB
        return used if used > self.limit_mb else None

    async def _watch(self) -> None:
        used = None
        while used is None:  # the first look a moment in: the worker's loop runs by then
            await asyncio.sleep(CHECK_EVERY)
            used = self.over()
        logger.warning(
            "worker %s: resident memory %.1f MB is over --max-memory %g MB: stops claiming, "
            "lets running callbacks finish and exits, for its supervisor to start a fresh one",
            self.worker_id,
            used,
            self.limit_mb,
        )
        await self.stop()
