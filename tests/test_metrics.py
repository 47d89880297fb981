"""A worker's Prometheus metrics: what WorkerMetrics records, what a worker records in it, that
a worker without metrics imports and starts nothing, and a real ``runtaskworker
--metrics-port`` scraped over HTTP."""

import os
import socket
import subprocess
import sys
import urllib.request
from datetime import timedelta

import pytest
from django.core.management import CommandError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from django_taskshed.datastores import DjangoDataStore
from django_taskshed.management.commands.runtaskworker import serve_metrics
from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.metrics import WorkerMetrics
from tests.conftest import package_apps
from tests.test_workers import running, tasks_left
from tests.waiting import eventually
from tests.workerprocs import ROOT

FAST = {"poll_interval": 0.1}
NAMES = {
    "taskshed_runs_total": {"callback", "outcome"},
    "taskshed_run_lateness_seconds_bucket": {"callback", "le"},
    "taskshed_run_lateness_seconds_sum": {"callback"},
    "taskshed_run_duration_seconds_count": {"callback"},
    "taskshed_tasks_running": set(),
    "taskshed_claims_total": set(),
    "taskshed_claim_duration_seconds_count": set(),
    "taskshed_notifications_received_total": set(),
    "taskshed_polls_total": set(),
    "taskshed_polls_with_work_total": set(),
    "process_resident_memory_bytes": set(),
}


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- WorkerMetrics -----------------------------------------------------------------------------


def test_runs_are_counted_by_callback_and_outcome_with_lateness_and_duration():
    metrics = WorkerMetrics()
    metrics.run_started("report", timedelta(seconds=3))
    metrics.run_finished("report", "failed", timedelta(seconds=0.5))
    metrics.run_started("report", timedelta(seconds=-0.001))  # a timer firing a hair early
    metrics.run_finished("report", "succeeded", timedelta(seconds=0.25))

    assert value(metrics, "taskshed_runs_total", callback="report", outcome="failed") == 1
    assert value(metrics, "taskshed_runs_total", callback="report", outcome="succeeded") == 1
    assert value(metrics, "taskshed_run_lateness_seconds_sum", callback="report") == 3
    assert value(metrics, "taskshed_run_lateness_seconds_bucket", callback="report", le="0.005")
    assert value(metrics, "taskshed_run_duration_seconds_sum", callback="report") == 0.75


def test_claims_polls_and_notifications_are_counted():
    metrics = WorkerMetrics()
    metrics.claimed(3, 0.002, polled=False)
    metrics.claimed(0, 0.001, polled=True)
    metrics.claimed(2, 0.001, polled=True)
    metrics.notification_received()

    assert value(metrics, "taskshed_claims_total") == 5
    assert value(metrics, "taskshed_claim_duration_seconds_count") == 3
    assert value(metrics, "taskshed_polls_total") == 2
    assert value(metrics, "taskshed_polls_with_work_total") == 1
    assert value(metrics, "taskshed_notifications_received_total") == 1


def test_each_worker_has_a_registry_of_its_own():
    first, second = WorkerMetrics(), WorkerMetrics()  # the same names twice: no clash
    first.claimed(1, 0.001, polled=False)
    assert value(second, "taskshed_claims_total") == 0


# --- a worker's metrics ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_a_worker_records_its_runs_claims_and_notifications():
    async def note():
        pass

    async def explode():
        raise ZeroDivisionError

    metrics = WorkerMetrics()
    worker = EventDrivenWorker({"note": note, "explode": explode}, metrics=metrics, **FAST)
    late = timezone.now() - timedelta(seconds=30)
    async with running(worker):
        await AsyncScheduler().add_task("note", run_at=late)
        await AsyncScheduler().add_task("explode", task_id="x")
        await eventually(lambda: tasks_left(1), what="the note to run")
        await eventually(
            lambda: value(metrics, "taskshed_runs_total", callback="explode", outcome="failed"),
            what="the failure to be counted",
        )
        assert value(metrics, "taskshed_tasks_running") == 0

    assert value(metrics, "taskshed_runs_total", callback="note", outcome="succeeded") == 1
    assert value(metrics, "taskshed_run_lateness_seconds_sum", callback="note") >= 30
    assert value(metrics, "taskshed_run_duration_seconds_count", callback="explode") == 1
    assert value(metrics, "taskshed_claims_total") == 2
    assert value(metrics, "taskshed_claim_duration_seconds_count") >= 2
    assert value(metrics, "taskshed_notifications_received_total") >= 1


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_a_task_only_the_safety_poll_finds_counts_as_a_poll_with_work(settings):
    settings.TASKSHED = {"CHANNEL_LAYER": None}
    ran = []
    metrics = WorkerMetrics()
    worker = EventDrivenWorker({"note": lambda: ran.append(1)}, metrics=metrics, poll_interval=0.3)
    async with running(worker):
        await eventually(lambda: value(metrics, "taskshed_polls_total"), what="a first poll")
        assert value(metrics, "taskshed_polls_with_work_total") == 0
        # Asleep again (it found no free task): a task stored now is the poll's to find.
        await eventually(lambda: worker._alarm.deadline is not None, what="the worker asleep")
        await DjangoDataStore().add_tasks([Task(callback="note")])  # stored, not notified
        await eventually(lambda: ran, what="the poll to find the task")
    assert value(metrics, "taskshed_polls_with_work_total") == 1


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_the_running_gauge_counts_runs_under_way():
    import asyncio

    release = asyncio.Event()

    async def wait():
        await release.wait()

    metrics = WorkerMetrics()
    worker = EventDrivenWorker({"wait": wait}, metrics=metrics, **FAST)
    async with running(worker):
        await AsyncScheduler(worker=worker).add_tasks([Task(callback="wait") for _ in range(2)])
        await eventually(lambda: value(metrics, "taskshed_tasks_running") == 2, what="2 running")
        release.set()
        await eventually(lambda: tasks_left(0), what="both to end")
    assert value(metrics, "taskshed_tasks_running") == 0


# --- off by default, and errors ----------------------------------------------------------------


def test_without_metrics_nothing_imports_prometheus_client():
    """A worker and its command, imported and built, leave prometheus_client unimported."""
    code = (
        "import sys, django; django.setup()\n"
        "from django_taskshed.management.commands import runtaskworker\n"
        "from django_taskshed.workers import EventDrivenWorker\n"
        "EventDrivenWorker({}, max_tasks=1)\n"
        "assert runtaskworker.serve_metrics(None) is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('prometheus'))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


@pytest.mark.django_db(transaction=True, available_apps=package_apps())
@pytest.mark.timeout(30)
async def test_a_worker_runs_without_prometheus_client_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # any import of it fails
    ran = []
    worker = EventDrivenWorker({"note": lambda: ran.append(1)}, **FAST)
    async with running(worker):
        await AsyncScheduler(worker=worker).add_task("note")
        await eventually(lambda: ran, what="the task to run")


def test_metrics_port_without_prometheus_client_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(CommandError, match=r"pip install 'django-taskshed\[metrics\]'"):
        serve_metrics(free_port())


def test_a_metrics_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 (where the server would listen)
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=rf"--metrics-port {port}: cannot serve metrics"):
            serve_metrics(port)


@pytest.mark.parametrize("port", [0, 70000])
def test_a_metrics_port_out_of_range_is_refused(port):
    with pytest.raises(CommandError, match="a port is 1 to 65535"):
        serve_metrics(port)


# --- a real worker, scraped --------------------------------------------------------------------


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name, from ``/metrics`` of the worker on ``port``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a fixed local URL)
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, available_apps=package_apps())
def test_runtaskworker_serves_metrics_over_http(worker_procs):
    port = free_port()
    lateness = 42.0
    SyncScheduler().add_task(
        "record", kwargs={"key": "late"}, run_at=timezone.now() - timedelta(seconds=lateness)
    )
    worker = worker_procs.start(
        "metrics", "--metrics-port", str(port), "--poll-interval", "0.2", "--lease", "3"
    )
    worker_procs.wait_until(lambda: not Task.objects.exists(), 30, "the late task to run")
    samples = worker_procs.wait_until(
        lambda: (s := scrape(port)).get("taskshed_runs_total") and s, 10, "the run counted"
    )

    for name, labels in NAMES.items():
        assert name in samples, name
        assert all(set(found) == labels for found, _ in samples[name]), (name, samples[name])
    assert samples["taskshed_runs_total"] == [({"callback": "record", "outcome": "succeeded"}, 1)]
    ((labels, observed),) = samples["taskshed_run_lateness_seconds_sum"]
    assert labels == {"callback": "record"} and observed >= lateness
    buckets = dict((found["le"], count) for found, count in samples[
        "taskshed_run_lateness_seconds_bucket"
    ])  # fmt: skip
    assert buckets["30.0"] == 0 and buckets["60.0"] == 1
    assert samples["taskshed_claims_total"] == [({}, 1)]
    worker.stop()


def test_the_readme_lists_each_metric_with_its_type_and_labels():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Prometheus metrics")
    section = text[start : text.index("\n### ", start + 1)]
    listed = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `taskshed_"):
            labels = {label.strip("` ") for label in cells[2].split(",") if label.strip()}
            listed[cells[0].strip("`")] = (cells[1], labels)
    metrics = WorkerMetrics()
    metrics.run_started("report", timedelta(0))  # labelled series appear once observed
    metrics.run_finished("report", "succeeded", timedelta(0))
    registered = {}
    for family in metrics.registry.collect():
        if family.name.startswith("taskshed_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {label for sample in family.samples for label in sample.labels} - {"le"}
            registered[name] = (family.type, labels)
    assert listed == registered
