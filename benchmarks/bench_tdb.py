"""django-tasks-db (the ORM backend of Django's Tasks framework) for ``tasks_backend.py``: a
virtualenv of its own, the settings and task modules written into a scratch directory, and its
``db_worker`` run as a user runs it. Nothing here imports it: it runs in its own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_callbacks import ledger_entries
from benchmarks.bench_common import PostgresTarget, load_average, progress, wait_for, wait_quiet

TDB_DATABASE = "taskshed_bench_tdb"
TDB_TABLE = "django_tasks_database_dbtaskresult"
TDB_VENV = "/var/tmp/taskshed-bench-tdb/venv"  # noqa: S108
TDB_REQUIREMENTS = ("Django>=5.2,<6", "django-tasks>=0.12", "django-tasks-db", "psycopg[binary]")
TDB_WORKER = ["-m", "django", "db_worker", "--batch", "--no-startup-delay", "--no-reload"]
TDB_WORKER += ["--interval", "0", "-v0"]
TDB_CONFIGS = (  # (label, CONN_MAX_AGE)
    ("Django's default CONN_MAX_AGE 0 (as ours)", 0),
    ("persistent connection, CONN_MAX_AGE None", None),
)

TDB_SETTINGS = '''
"""Settings of the django-tasks-db run (written by django_taskshed's tasks_backend.py)."""
import json, os
SECRET_KEY = "taskshed-benchmarks-nothing-is-signed"
DEBUG, USE_TZ, TIME_ZONE = False, True, "UTC"
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
DATABASES = {"default": json.loads(os.environ["TDB_BENCH_DATABASE"])}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
'''
TDB_TASKS = '''
"""The no-op task of the django-tasks-db run: counts its calls; the stamps go to a JSON file at
exit, as benchmarks/bench_callbacks.py does for ours."""
import atexit, json, os, time
from django_tasks import task
CALLS = {"calls": 0, "first_call": None, "last_call": None}

@task
def noop():
    now = time.time()
    CALLS["first_call"] = CALLS["first_call"] or now
    CALLS["last_call"] = now
    CALLS["calls"] += 1

@task
def stamp(called, kind):
    with open(os.environ["TDB_BENCH_LEDGER"], "a") as ledger:
        ledger.write(f"{kind} {called} {time.time()}\\n")

@atexit.register
def _write():
    if os.environ.get("TDB_BENCH_STATS"):
        with open(os.environ["TDB_BENCH_STATS"], "w") as handle:
            json.dump({**CALLS, "exit": time.time()}, handle)
'''
TDB_PREPARE = '''
"""Migrate, empty the table, enqueue N no-op tasks in one transaction; print the seconds."""
import sys, time
import django
django.setup()
from django.core.management import call_command
from django.db import transaction
from django_tasks_db.models import DBTaskResult
from tdb_tasks import noop
call_command("migrate", verbosity=0)
DBTaskResult.objects.all().delete()
started = time.perf_counter()
with transaction.atomic():
    for _ in range(int(sys.argv[1])):
        noop.enqueue()
print(time.perf_counter() - started)
'''

TDB_PROBE = '''
"""One warm-up task, then N tasks ~50 ms apart, each given the time its enqueue() call began."""
import random, sys, time
import django
django.setup()
from tdb_tasks import stamp
stamp.enqueue(time.time(), "warmup")
time.sleep(2.0)
for _ in range(int(sys.argv[1])):
    stamp.enqueue(time.time(), "now")
    time.sleep(random.uniform(0.04, 0.06))
'''
TDB_LATENCY_WORKER = ["-m", "django", "db_worker", "--no-startup-delay", "--no-reload", "-v0"]


class TdbBench:
    """django-tasks-db's ``db_worker`` in its own virtualenv and scratch directory."""

    def __init__(self, args: Any, log_dir: str) -> None:
        self.args, self.log_dir = args, log_dir
        self.python = ensure_venv(args.tdb_venv)
        self.target = PostgresTarget(TDB_DATABASE, args.pg_host, args.pg_port, args.pg_user)
        self.directory = Path(log_dir) / "tdb"
        self.directory.mkdir()
        for name, text in (("tdb_settings", TDB_SETTINGS), ("tdb_tasks", TDB_TASKS),
                           ("tdb_prepare", TDB_PREPARE), ("tdb_probe", TDB_PROBE)):  # fmt: skip
            (self.directory / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
        self.counter = 0

    def versions(self) -> str:
        code = (
            "from importlib.metadata import version as v; import sys;"
            " print(f'Python {sys.version.split()[0]}', *(f'{p} {v(p)}' for p in"
            " ('Django', 'django-tasks', 'django-tasks-db', 'psycopg')), sep=' | ')"
        )
        return subprocess.run(
            [self.python, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()

    def env(self, conn_max_age: int | None, stats: str = "") -> dict[str, str]:
        database = {**self.target.django_settings(), "CONN_MAX_AGE": conn_max_age}
        return {
            **os.environ, "DJANGO_SETTINGS_MODULE": "tdb_settings",
            "PYTHONPATH": str(self.directory), "TDB_BENCH_DATABASE": json.dumps(database),
            "TDB_BENCH_STATS": stats, "TDB_BENCH_LEDGER": str(self.directory / "ledger"),
        }  # fmt: skip

    def run(self, count: int, conn_max_age: int | None) -> dict[str, Any]:
        self.counter += 1
        stats_path = str(self.directory / f"stats-{self.counter}.json")
        busy = wait_quiet(self.args.quiet_below, self.args.max_wait)
        prepare = [self.python, "tdb_prepare.py", str(count)]
        enqueue = subprocess.run(
            prepare, cwd=self.directory, env=self.env(conn_max_age), capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        started = time.time()
        worker = subprocess.run(
            [self.python, *TDB_WORKER], cwd=self.directory, env=self.env(conn_max_age, stats_path),
            capture_output=True, text=True, timeout=max(600.0, count / 5),
        )  # fmt: skip
        exited = time.time()
        if worker.returncode != 0:
            raise RuntimeError(f"db_worker exited with {worker.returncode}:\n{worker.stderr}")
        stats = json.loads(Path(stats_path).read_text())
        with self.target.connect() as conn:
            statuses = dict(conn.execute(f"SELECT status, count(*) FROM {TDB_TABLE} GROUP BY 1"))
        if stats["calls"] != count or statuses != {"SUCCESSFUL": count}:
            raise RuntimeError(f"db_worker lost work: {stats['calls']} calls, {statuses}")
        wall = stats["exit"] - stats["first_call"]
        return {
            "wall": wall, "rate": count / wall, "process": exited - started,
            "enqueue": float(enqueue.stdout.split()[-1]), "busy": busy, "load": load_average(),
        }  # fmt: skip

    def latency(self, count: int) -> dict[str, Any]:
        """Its db_worker with its default ``--interval`` (1 s), persistent connection; the
        tasks enqueued by a process of its own (its virtualenv)."""
        busy = wait_quiet(self.args.quiet_below, self.args.max_wait)
        env, ledger = self.env(None), self.directory / "ledger"
        ledger.unlink(missing_ok=True)
        empty = [self.python, "tdb_prepare.py", "0"]
        subprocess.run(empty, cwd=self.directory, env=env, check=True, capture_output=True)
        worker = subprocess.Popen([self.python, *TDB_LATENCY_WORKER], cwd=self.directory, env=env)
        try:
            time.sleep(2.0)  # start-up
            probe = [self.python, "tdb_probe.py", str(count)]
            subprocess.run(probe, cwd=self.directory, env=env, check=True)
            found = lambda: ledger_entries(str(ledger), "now")  # noqa: E731
            wait_for(found, count, 5.0)
            load = load_average()
        finally:
            worker.terminate()
            worker.wait(30)
        latency = [started - called for _, called, started in found()]
        return {"latency": latency, "calls": [], "count": count, "busy": busy, "load": load}


def ensure_venv(venv: str) -> str:
    """The virtualenv's python; the virtualenv is made (pip, this machine's index) if missing."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        progress(f"django-tasks-db: creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = [python, "-m", "pip", "install", "--quiet", *TDB_REQUIREMENTS]
        subprocess.run(pip, check=True)
    return python
