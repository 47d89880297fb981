"""Signals a worker sends, in its own process, around each run of a task.

Connect receivers to feed error trackers, metrics or tracing without wrapping callbacks::

    from django.dispatch import receiver
    from django_taskshed.signals import task_finished


    @receiver(task_finished)
    def count(sender, outcome, callback, **kwargs): ...

``task_started`` and ``task_finished`` both pass ``task_id``, ``callback``, ``scheduled_for``
(the run's ``run_at``), ``started_at``, ``attempt`` (1 for a first attempt) and ``worker_id``;
``task_finished`` adds ``finished_at``, ``outcome`` (``"succeeded"``, ``"failed"`` or
``"timed_out"``) and ``exception`` (None on success). The sender is the ``Task`` model. A
receiver that raises is logged; the run and the worker go on.
"""

from typing import Any

from django.dispatch import Signal

from .models import Task

task_started = Signal()
task_finished = Signal()


def send(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` from ``Task``. A receiver that raises is logged by Django's
    ``Signal.send_robust`` (logger ``django.dispatch``, with its traceback), never raised."""
    if signal.receivers:
        signal.send_robust(sender=Task, **kwargs)
