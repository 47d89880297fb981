"""Real ``manage.py runtaskworker`` subprocesses for the tests, pointed at the test database.

pytest-django renames the database for the test run, so each subprocess gets a
``DATABASE_URL`` naming the test database (for SQLite, its absolute file path), plus the
test run's temporary directory and channel layer prefix. Output goes to files that the
``worker_procs`` fixture prints when a test fails.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"^taskshed worker (?P<worker_id>\S+) started: (?P<details>.*)$", re.MULTILINE)
OUTPUT_TAIL = 20_000  # characters of each stream shown when a test fails
POLL = 0.05  # seconds between two looks at a condition

T = TypeVar("T")


def database_url() -> str:
    """A URL for the database this test runs against (the renamed test database)."""
    from django.db import connection

    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(config['NAME']).resolve()}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    credentials = quote(config["USER"] or "", safe="")
    if config["PASSWORD"]:
        credentials += ":" + quote(config["PASSWORD"], safe="")
    port = f":{config['PORT']}" if config["PORT"] else ""
    return f"{scheme}://{credentials}@{config['HOST']}{port}/{quote(config['NAME'], safe='')}"


def worker_env(taskshed: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment of a worker subprocess: this test run's database, tmpdir and layer."""
    from django.conf import settings

    env = dict(os.environ)
    env.pop("TASKSHED_TEST_SETTINGS", None)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        TASKSHED_TEST_TMPDIR=str(settings.TEST_TMPDIR),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix")
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    if prefix:  # the same Redis groups as this test run (TASKSHED_TEST_LAYER is inherited)
        env["TASKSHED_TEST_LAYER_PREFIX"] = prefix
    if taskshed:
        env["TASKSHED_TEST_SETTINGS"] = json.dumps(taskshed)
    return env


class WorkerProcess:
    """One ``runtaskworker`` subprocess with its output captured to files."""

    def __init__(self, worker_id: str, args: list[str], env: dict[str, str], logdir: Path):
        self.worker_id = worker_id
        self.args = ["runtaskworker", "--worker-id", worker_id, *args]
        self.stdout_path = logdir / f"{worker_id}.stdout"
        self.stderr_path = logdir / f"{worker_id}.stderr"
        self.signaled = False  # set once the test signals it: its exit is then expected
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "django", *self.args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def banner(self) -> str | None:
        """The start-up line, once the worker has printed it."""
        for match in BANNER.finditer(self.stdout()):
            if match["worker_id"] == self.worker_id:
                return match[0]
        return None

    def send(self, signum: int) -> None:
        self.signaled = True
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code, or AssertionError with its output."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.worker_id} still running {timeout} s later\n{self.describe()}"
            ) from None

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
        if self.popen.poll() is not None:
            return
        self.send(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def describe(self) -> str:
        return (
            f"--- worker {self.worker_id} (pid {self.pid}, exit code {self.returncode}) "
            f"{' '.join(self.args)}\n"
            f"--- stdout:\n{self.stdout()[-OUTPUT_TAIL:]}\n"
            f"--- stderr:\n{self.stderr()[-OUTPUT_TAIL:]}"
        )


class WorkerFleet:
    """Starts worker subprocesses for one test and stops whatever is left at its end."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.processes: list[WorkerProcess] = []

    def start(
        self,
        worker_id: str,
        *args: str,
        taskshed: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """Start ``runtaskworker --worker-id worker_id *args``; by default wait for its banner.
        ``env`` adds to the worker's environment."""
        environment = {**worker_env(taskshed), **(env or {})}
        process = WorkerProcess(worker_id, list(args), environment, self.logdir)
        self.processes.append(process)
        if wait:
            self.wait_until(process.banner, timeout, f"the start-up line of {worker_id}")
        return process

    def start_many(self, worker_ids: list[str], *args: str, **options: Any) -> list[WorkerProcess]:
        """Start several workers at once, then wait for every banner."""
        timeout = options.pop("timeout", 30.0)
        started = [self.start(wid, *args, wait=False, **options) for wid in worker_ids]
        for process in started:
            self.wait_until(process.banner, timeout, f"the start-up line of {process.worker_id}")
        return started

    def check_alive(self) -> None:
        """Fail at once, with its output, if a worker the test did not signal has exited."""
        for process in self.processes:
            if not process.signaled and process.returncode is not None:
                raise AssertionError(
                    f"worker {process.worker_id} exited on its own\n{process.describe()}"
                )

    def wait_until(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(POLL)

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()

    def describe(self) -> str:
        return "\n".join(process.describe() for process in self.processes)
