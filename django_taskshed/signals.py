"""Signals a worker sends, in its own process, around each run of a task.

Connect receivers to feed error trackers, metrics or tracing without wrapping callbacks::

    from django.dispatch import receiver
    from django_taskshed.signals import task_finished


    @receiver(task_finished)
    def count(sender, outcome, callback, **kwargs): ...

``task_started`` and ``task_finished`` both pass ``task_id``, ``callback``, ``scheduled_for``
(the run's ``run_at``), ``started_at``, ``attempt`` (1 for a first attempt) and ``worker_id``;
``task_finished`` adds ``finished_at``, ``outcome`` (``"succeeded"``, ``"failed"`` or
``"timed_out"``) and ``exception`` (None on success). The sender is the ``Task`` model. Sync
receivers run on Django's sync thread (they may use the ORM), async ones on the worker's
loop. A receiver that raises is logged; the run and the worker go on.
"""

from typing import Any

from django.dispatch import Signal

from .models import Task

task_started = Signal()
task_finished = Signal()


async def asend(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` from ``Task`` (Django's ``asend_robust``: async receivers run on the
    worker's loop, sync ones on Django's sync thread, so they may use the ORM). A receiver
    that raises is logged by Django (logger ``django.dispatch``, with its traceback), never
    raised. Without receivers, nothing is awaited."""
    if signal.receivers:
        await signal.asend_robust(sender=Task, **kwargs)
