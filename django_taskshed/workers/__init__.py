"""EventDrivenWorker: pulls due tasks from its datastore and runs them on the event loop."""

from .options import WorkerOptions
from .worker import EventDrivenWorker

__all__ = ["EventDrivenWorker", "WorkerOptions"]
