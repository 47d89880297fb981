"""The worker's alarm: it sleeps until a deadline, and a hint of an earlier task wakes it."""

import asyncio
from datetime import datetime

from django.utils import timezone

MIN_NAP = 0.002


class Alarm:
    """Wakes the worker's loop at its deadline, or at once on a hint earlier than that.

    A hint without a time ("something changed") always wakes; so does one while no deadline
    is known (the loop is claiming).
    """

    def __init__(self) -> None:
        self.deadline: datetime | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop the worker runs on
        self._event = asyncio.Event()  # bound to the loop that first waits on it

    def hint_from_anywhere(self, run_at: datetime | None) -> None:
        """``hint``, from any thread; nothing before the worker's loop runs or after it closed."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.hint(run_at)
        else:
            loop.call_soon_threadsafe(self.hint, run_at)

    def hint(self, run_at: datetime | None) -> None:
        if run_at is None or self.deadline is None or run_at < self.deadline:
            self.ring()

    def ring(self) -> None:
        self._event.set()

    def reset(self) -> None:
        """Forget earlier rings and the deadline: from now on, any hint wakes."""
        self._event.clear()
        self.deadline = None

    async def sleep_until(self, deadline: datetime) -> bool:
        """Sleep until ``deadline`` or a ring (then True); at least a moment, so that a due
        task another worker holds cannot make the loop spin."""
        self.deadline = deadline
        return await self.nap(max((deadline - timezone.now()).total_seconds(), MIN_NAP))

    async def nap(self, seconds: float) -> bool:
        """Wait for a ring (then True) or ``seconds``; always yields to the event loop."""
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except asyncio.TimeoutError:
            rung = False
        else:
            rung = True
        await asyncio.sleep(0)  # an already-set event returns without yielding (Python 3.12)
        return rung
