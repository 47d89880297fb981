"""Faults the chaos tests inject, and what they read back: PostgreSQL backends by application
name, a Redis server of the test's own, ledger counts.

Each worker process gets its own ``application_name`` (``worker_database``), so that its
backends can be counted and terminated in ``pg_stat_activity`` without touching anyone else's.
"""

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

from tests.testapp.models import Execution
from tests.workerprocs import database_url

POLL = 0.02  # seconds between two looks at a condition

T = TypeVar("T")


def worker_database(application_name: str) -> dict[str, str]:
    """The environment that gives a worker's connections ``application_name``."""
    return {"DATABASE_URL": f"{database_url()}?application_name={application_name}"}


def backends(application_name: str) -> list[int]:
    """The pids of the backends with ``application_name`` on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s ORDER BY pid",
            [application_name],
        )
        return [pid for (pid,) in cursor.fetchall()]


def terminate(application_name: str) -> int:
    """``pg_terminate_backend`` every backend with ``application_name``; how many ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [application_name],
        )
        return int(cursor.fetchone()[0])


def runs_per_key(prefix: str) -> Counter[str]:
    """Ledger rows per key starting with ``prefix`` (one per run of a ``record*`` callback)."""
    keys = Execution.objects.filter(key__startswith=prefix).values_list("key", flat=True)
    return Counter(keys)


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``condition`` until truthy; its value, or AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the test's own on a free port, without persistence, that the test
    stops and starts again (on the same port) to stage an outage."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.binary is None:
            raise AssertionError("redis-server is not installed: the Redis outage test needs it")
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self.answers, 5, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)
        self.process = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
