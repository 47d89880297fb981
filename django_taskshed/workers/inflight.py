"""The runs a worker has under way, and how they end when it stops."""

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from ..datastores import ClaimedTask, Outcome

logger = logging.getLogger(__name__)

Run = asyncio.Task[Outcome]

# Python 3.10 has no ``Task.cancelling()``: the runs the worker cancelled are kept here.
_cancelled_runs: "weakref.WeakSet[asyncio.Task[Any]]" = weakref.WeakSet()


def cancel_requested() -> bool:
    """Whether the current asyncio task was asked to cancel (by the worker at shutdown, or by
    a timeout), as opposed to a ``CancelledError`` that a callback raised by itself."""
    task = asyncio.current_task()
    if task is None:
        return False
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None:
        return bool(cancelling())
    return task in _cancelled_runs


def cancelled_by_worker() -> bool:
    """Whether the worker cancelled the current asyncio task, a run, at shutdown (not known
    inside the task a timeout runs a coroutine in on Python 3.11)."""
    return asyncio.current_task() in _cancelled_runs


def cancel_run(task: asyncio.Task[Any]) -> None:
    """Cancel a run, so that ``cancel_requested()`` says so on every Python version."""
    _cancelled_runs.add(task)
    task.cancel()


class InFlight:
    """The worker's running callbacks, one asyncio task per claim.

    Args:
        on_outcome: Called with how each run ended (a run that was cancelled has none).
        on_end: Called each time a run ends (a slot is free).
    """

    def __init__(self, on_outcome: Callable[[Outcome], None], on_end: Callable[[], None]):
        self.on_outcome = on_outcome
        self.on_end = on_end
        self.sync_running: set[str] = set()  # task ids whose sync callbacks are in a thread
        self._runs: dict[Run, ClaimedTask] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def start(self, claim: ClaimedTask, run: Coroutine[Any, Any, Outcome]) -> None:
        task = asyncio.create_task(run, name=f"taskshed:{claim.task_id}")
        self._runs[task] = claim
        task.add_done_callback(self._ended)

    def _ended(self, task: Run) -> None:
        self._runs.pop(task, None)
        if not task.cancelled():
            self.on_outcome(task.result())
        self.on_end()

    async def finish(self, timeout: float | None, worker_id: str) -> list[Run]:
        """Wait up to ``timeout`` for the runs, then cancel the async ones still going.

        Returns the runs of sync callbacks still going: a thread cannot be stopped, so their
        tasks stay leased (the heartbeat goes on renewing them) until they return.
        """
        if not self._runs:
            return []
        _, pending = await asyncio.wait(set(self._runs), timeout=timeout)
        stuck = [task for task in pending if self._runs[task].task_id in self.sync_running]
        cancelled = [task for task in pending if task not in stuck]
        for task in cancelled:
            cancel_run(task)
        await asyncio.gather(*cancelled, return_exceptions=True)
        if stuck:
            logger.warning(
                "worker %s: %d sync callback(s) outlived the shutdown timeout; their tasks stay "
                "leased until they return: %s",
                worker_id,
                len(stuck),
                ", ".join(sorted(self.sync_running)),
            )
        return stuck
