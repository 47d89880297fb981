"""The ledger the test callbacks write: one row per execution, committed by the worker process."""

from django.db import models


class Execution(models.Model):
    """One run of a test callback: who ran it, when it started and (if it got there) finished.

    Callbacks receive only their kwargs, so each test task passes its own id as ``key``.
    """

    key = models.CharField(max_length=255, db_index=True)
    callback = models.CharField(max_length=100)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_pid = models.PositiveIntegerField()
    value = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.callback}({self.key}) pid {self.worker_pid} at {self.started_at}"
