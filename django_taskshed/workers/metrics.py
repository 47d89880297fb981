"""A worker's Prometheus metrics (``runtaskworker --metrics-port``; extra ``metrics``).

``prometheus_client`` is imported only when a ``WorkerMetrics`` is made: a worker without
one imports nothing and records nothing (every call site checks ``metrics is None``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Seconds. Lateness and durations span a timer's jitter to a backlog of hours.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class MetricsUnavailableError(ImportError):
    """Metrics were asked for, and ``prometheus_client`` is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "metrics need the prometheus-client library: pip install 'django-taskshed[metrics]'"
        )


class WorkerMetrics:
    """One worker's metrics, in a registry of their own (several workers in one process, or
    tests, do not clash in the global one), with the process's own (memory, CPU, files).

    Args:
        registry: Where the metrics go; default a new ``CollectorRegistry``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            import prometheus_client as prometheus
        except ImportError:
            raise MetricsUnavailableError() from None
        self.registry = reg = registry if registry is not None else prometheus.CollectorRegistry()
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: read at each scrape
        prometheus.ProcessCollector(registry=reg)
        self.runs = prometheus.Counter(
            "taskshed_runs", "Runs of tasks that ended.", ["callback", "outcome"], registry=reg
        )
        self.lateness = prometheus.Histogram(
            "taskshed_run_lateness_seconds", "Start of a run minus its scheduled time.",
            ["callback"], buckets=RUN_BUCKETS, registry=reg,
        )  # fmt: skip
        self.duration = prometheus.Histogram(
            "taskshed_run_duration_seconds", "Time from the start of a run to its end.",
            ["callback"], buckets=RUN_BUCKETS, registry=reg,
        )  # fmt: skip
        self.running = prometheus.Gauge(
            "taskshed_tasks_running", "Tasks claimed, not ended.", registry=reg
        )
        self.claims = prometheus.Counter("taskshed_claims", "Tasks claimed.", registry=reg)
        self.claim_duration = prometheus.Histogram(
            "taskshed_claim_duration_seconds", "Time of one claim, as the worker waits for it.",
            buckets=CLAIM_BUCKETS, registry=reg,
        )  # fmt: skip
        self.notifications = prometheus.Counter(
            "taskshed_notifications_received", "Task-changed messages from the group.", registry=reg
        )
        self.polls = prometheus.Counter(
            "taskshed_polls", "Claims made when the safety poll woke the worker.", registry=reg
        )
        self.polls_with_work = prometheus.Counter(
            "taskshed_polls_with_work", "Safety polls whose claim found due tasks.", registry=reg
        )

    def watch_running(self, running: Callable[[], int]) -> None:
        """Read ``tasks_running`` from ``running()`` at each scrape."""
        self.running.set_function(running)

    def run_started(self, callback: str, lateness: timedelta) -> None:
        self.lateness.labels(callback).observe(max(lateness.total_seconds(), 0.0))

    def run_finished(self, callback: str, outcome: str, duration: timedelta) -> None:
        self.runs.labels(callback, outcome).inc()
        self.duration.labels(callback).observe(max(duration.total_seconds(), 0.0))

    def claimed(self, count: int, seconds: float, polled: bool) -> None:
        """A claim statement took ``seconds`` and claimed ``count`` tasks; ``polled``: the
        safety poll woke the worker for it."""
        self.claim_duration.observe(seconds)
        self.claims.inc(count)
        if polled:
            self.polls.inc()
            if count:
                self.polls_with_work.inc()

    def notification_received(self) -> None:
        self.notifications.inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 (scraped remotely)
        """Serve ``/metrics`` over HTTP on ``port`` from a daemon thread; OSError if taken."""
        from prometheus_client import start_http_server

        start_http_server(port, addr, registry=self.registry)
