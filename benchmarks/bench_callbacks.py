"""Task callbacks for the benchmarks (registered in ``bench_settings.CALLBACKS``).

``noop`` does nothing but count its calls and stamp the first and last; ``lag`` records how
late it started. A worker subprocess writes what they saw to files named by environment
variables; in the benchmark's own process they keep it in memory.

- ``TASKSHED_BENCH_STATS``: at exit, JSON ``{"calls", "first_call", "last_call", "exit"}``
  (``exit`` is ``time.time()`` when the interpreter starts shutting down, i.e. after the
  worker has stopped: results written, leases released, worker unregistered).
- ``TASKSHED_BENCH_LEDGER``: one line per ``lag`` call, ``kind due started`` (epoch seconds).
- ``TASKSHED_BENCH_IDS``: a path; ``noop`` writes there the id of each task it runs (the
  worker's ``current_run``), one a line, through a buffered file (nothing kept in memory, so
  that a worker's peak memory does not grow with the tasks it ran): a check that no task ran
  twice.
- ``TASKSHED_BENCH_SQL``: a path; every SQL statement of every database connection opened after
  this module is imported (the worker imports it at start) is counted and timed (client-side
  wall time), and at exit the totals per statement shape are written there as JSON.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

STATS_ENV = "TASKSHED_BENCH_STATS"
LEDGER_ENV = "TASKSHED_BENCH_LEDGER"
SQL_ENV = "TASKSHED_BENCH_SQL"
IDS_ENV = "TASKSHED_BENCH_IDS"


class Calls:
    count = 0
    first: float | None = None
    last: float | None = None


# Where ``noop`` writes the ids of the tasks it runs, when ``TASKSHED_BENCH_IDS`` is set.
RUN_IDS: IO[str] | None = open(os.environ[IDS_ENV], "w") if os.environ.get(IDS_ENV) else None  # noqa: SIM115

# (kind, due, started) of each ``lag`` call in this process, when no ledger file is set.
LEDGER: list[tuple[str, float, float]] = []
_ledger_file: IO[str] | None = None


async def noop(**kwargs: Any) -> None:
    """Does nothing (beyond two clock reads' worth of bookkeeping)."""
    now = time.time()
    if Calls.first is None:
        Calls.first = now
    Calls.last = now
    Calls.count += 1
    if RUN_IDS is not None:
        RUN_IDS.write(_running_task_id() + "\n")


def _running_task_id() -> str:
    from django_taskshed.workers.current import current_run  # after Django's set-up

    return current_run.get().claim.task_id


async def lag(run_at: str, kind: str = "lag") -> None:
    """Record ``time.time()`` at entry minus ``run_at`` (the task's own scheduled time)."""
    started = time.time()
    _record(kind, datetime.fromisoformat(run_at).timestamp(), started)


def _record(kind: str, due: float, started: float) -> None:
    global _ledger_file
    path = os.environ.get(LEDGER_ENV)
    if not path:
        LEDGER.append((kind, due, started))
        return
    if _ledger_file is None:
        _ledger_file = open(path, "a", buffering=1)  # noqa: SIM115  (kept open; line-buffered)
    _ledger_file.write(f"{kind} {due:.6f} {started:.6f}\n")


def read_ledger(path: str) -> list[tuple[str, float, float]]:
    """The entries a worker process wrote with ``lag``."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(kind, float(due), float(started)) for kind, due, started in map(str.split, lines)]


def ledger_entries(path: str, kind: str) -> list[tuple[str, float, float]]:
    """The entries of one ``kind`` in a ledger file."""
    return [entry for entry in read_ledger(path) if entry[0] == kind]


class SqlStats:
    """Counts and times statements by shape (``IN (%s, %s, ...)`` lists collapsed)."""

    _lists = re.compile(r"(%s|\?)(, (%s|\?))+")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, list[float]] = {}  # shape -> [count, seconds, rows]

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            rows = getattr(context.get("cursor"), "rowcount", -1) or 0
            shape = self._lists.sub(r"\1, ...", sql)
            with self.lock:
                entry = self.totals.setdefault(shape, [0, 0.0, 0])
                entry[0] += 1
                entry[1] += elapsed
                entry[2] += max(rows, 0)

    def install(self) -> None:
        from django.db import connections
        from django.db.backends.signals import connection_created

        def wrap(sender: Any, connection: Any, **kwargs: Any) -> None:
            if self not in connection.execute_wrappers:
                connection.execute_wrappers.append(self)

        connection_created.connect(wrap, weak=False)
        for connection in connections.all(initialized_only=True):
            wrap(None, connection)

    def write(self, path: str) -> None:
        with self.lock, open(path, "w") as handle:
            json.dump(self.totals, handle)


_sql_stats: SqlStats | None = None
if os.environ.get(SQL_ENV):
    _sql_stats = SqlStats()
    _sql_stats.install()


def _write_stats() -> None:
    if RUN_IDS is not None:
        RUN_IDS.close()
    if _sql_stats is not None:
        _sql_stats.write(os.environ[SQL_ENV])
    path = os.environ.get(STATS_ENV)
    if path:
        stats = {
            "calls": Calls.count,
            "first_call": Calls.first,
            "last_call": Calls.last,
            "exit": time.time(),
        }
        with open(path, "w") as handle:
            json.dump(stats, handle)


atexit.register(_write_stats)
