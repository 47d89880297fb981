"""``manage.py runtaskworker``: run one EventDrivenWorker in this process until stopped."""

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_taskshed import notifications
from django_taskshed.exceptions import WorkerIdInUseError
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.metrics import MetricsUnavailableError, WorkerMetrics
from django_taskshed.workers.options import describe_queues, queue_names

logger = logging.getLogger("django_taskshed")

VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def serve_metrics(port: int | None) -> WorkerMetrics | None:
    """Metrics served on ``port``; None (nothing imported or started) without a port."""
    if port is None:
        return None
    if not 0 < port < 65536:
        raise CommandError(f"--metrics-port {port}: a port is 1 to 65535")
    try:
        metrics = WorkerMetrics()
        metrics.serve(port)
    except MetricsUnavailableError as exc:
        raise CommandError(f"--metrics-port: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"--metrics-port {port}: cannot serve metrics there: {exc}") from exc
    logger.info("serving Prometheus metrics at http://0.0.0.0:%d/metrics", port)
    return metrics


class Command(BaseCommand):
    help = "Run a django-taskshed worker: claim due tasks and run their callbacks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=positive(int), help="callbacks at once")
        parser.add_argument("--poll-interval", type=positive(float), help="safety poll, s")
        parser.add_argument("--batch-size", type=positive(int), help="tasks per claim")
        parser.add_argument("--lease", type=positive(float), help="lease length, s")
        parser.add_argument("--worker-id", help="this worker's id (default host:pid:random)")
        parser.add_argument("--max-tasks", type=positive(int), help="exit after N tasks")
        parser.add_argument("--burst", action="store_true", help="run what is due, then exit")
        parser.add_argument(
            "--shutdown-timeout", type=positive(float), default=30.0, help="grace period, s"
        )
        parser.add_argument(
            "--queue",
            action="append",
            type=queue_names,
            dest="queues",
            metavar="NAME",
            help="claim only from this queue (repeat, or a,b,c); default: every queue",
        )
        parser.add_argument(
            "--max-memory",
            type=positive(float),
            metavar="MB",
            help="past this resident memory, stop claiming, drain and exit 0 (to be restarted)",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics (extra 'metrics')",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._configure_logging(options["verbosity"])
        worker = EventDrivenWorker(
            concurrency=options["concurrency"],
            poll_interval=options["poll_interval"],
            batch_size=options["batch_size"],
            lease=options["lease"],
            worker_id=options["worker_id"],
            max_tasks=options["max_tasks"],
            burst=options["burst"],
            shutdown_timeout=options["shutdown_timeout"],
            queues=None if options["queues"] is None else sum(options["queues"], ()),
            max_memory=options["max_memory"],
            metrics=serve_metrics(options["metrics_port"]),
        )
        asyncio.run(self._serve(worker))
        connections.close_all()

    async def _serve(self, worker: EventDrivenWorker) -> None:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                self.stderr.write(f"second {signal.Signals(signum).name}: exiting now")
                os._exit(1)
            logger.info("%s: stopping; running callbacks may finish", signal.Signals(signum).name)
            loop.create_task(worker.shutdown())

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        # Counted before the worker starts: once it runs, it leases what is due at once.
        due_now = await worker.count_due()
        try:
            await worker.start()
        except WorkerIdInUseError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self._banner(worker, due_now))
        self.stdout.flush()
        await worker.wait_stopped()
        if worker.stuck_sync_callbacks:
            # A sync callback's thread cannot be stopped, and waiting for it would overrun the
            # shutdown timeout: exit now. Its task stays leased until the lease lapses (the
            # heartbeat dies with the process), then another worker runs it; never both.
            logger.warning(
                "exiting with sync callback(s) still running: %s", worker.stuck_sync_callbacks
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def _banner(self, worker: EventDrivenWorker, due_now: int) -> str:
        using = worker.datastore.using
        layer = notifications.channel_layer()
        return (
            f"taskshed worker {worker.worker_id} started: database {connections[using].vendor} "
            f"({using}), channel layer {type(layer).__name__ if layer else 'off'}, "
            f"callbacks [{', '.join(sorted(worker.callbacks or {}))}], "
            f"{describe_queues(worker.options.queues)}, {due_now} task(s) due"
        )

    def _configure_logging(self, verbosity: int) -> None:
        """Map --verbosity onto our logger, unless the project's LOGGING already set it."""
        package_logger = logging.getLogger("django_taskshed")
        if package_logger.level == logging.NOTSET:
            package_logger.setLevel(VERBOSITY_LEVELS.get(verbosity, logging.INFO))
        if not package_logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(self.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            package_logger.addHandler(handler)
