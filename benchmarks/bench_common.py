"""What the benchmarks share: the databases under test, Django, the command line, the worker
subprocess, CPU counters from /proc, timing, percentiles and the report's tables."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence, Sized
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLE = "django_taskshed_task"
RUN_TABLE = "django_taskshed_taskrun"
# What a drain starts without: the tasks, their run history and the worker rows.
DRAIN_TABLES = (TABLE, RUN_TABLE, "django_taskshed_workerrecord")
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKER_APP_NAME = "taskshed-bench-worker"  # application_name of the worker's PostgreSQL sessions
# Django OPTIONS of the example project for a worker sharing an SQLite file.
SHARED_SQLITE = {"timeout": 20, "transaction_mode": "IMMEDIATE"}


# --- databases -------------------------------------------------------------------------------


class SqliteTarget:
    """A new SQLite file in a scratch directory; synchronous is SQLite's default, and the
    journal mode too unless ``options`` set it (``--sqlite-wal``); Django's ``OPTIONS`` are
    ``options``."""

    alias, title, driver, version = "sqlite", "SQLite", "sqlite3", None

    def __init__(self, prefix: str, options: dict[str, Any]) -> None:
        self.options = options
        self.directory = tempfile.mkdtemp(prefix=f"{prefix}-sqlite-", dir=scratch_root())
        self.path = os.path.join(self.directory, "bench.sqlite3")

    def django_settings(self, application_name: str | None = None) -> dict[str, Any]:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": self.path, "OPTIONS": self.options}

    def connect(self) -> sqlite3.Connection:
        """A connection of the driver's own, in autocommit mode."""
        return sqlite3.connect(self.path, isolation_level=None)

    def notes(self) -> list[str]:
        with closing(self.connect()) as raw:
            journal = raw.execute("PRAGMA journal_mode").fetchone()[0]
            synchronous = raw.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        django = f"Django OPTIONS {options}" if options else "no OPTIONS"
        if self.options == SHARED_SQLITE:
            django += " (as the example project)"
        return [
            f"file {self.path} on {filesystem_of(self.directory)}, new for this invocation",
            f"journal_mode={journal}, synchronous={names.get(synchronous, synchronous)}; {django}",
        ]

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresTarget:
    """A dedicated database, created if missing; its task table is remade for each invocation."""

    alias, title, driver = "postgres", "PostgreSQL", "psycopg"

    def __init__(self, name: str, host: str, port: int, user: str) -> None:
        self.name = name
        self.params = {"host": host, "port": port, "user": user}
        with self.connect("postgres") as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if not exists.fetchone():
                admin.execute(f'CREATE DATABASE "{name}"')
            self.version = admin.execute("SHOW server_version").fetchone()[0]
            self.server_settings = {
                key: admin.execute(f"SHOW {key}").fetchone()[0]
                for key in ("fsync", "synchronous_commit", "shared_buffers")
            }

    def django_settings(self, application_name: str | None = None) -> dict[str, Any]:
        host, port, user = self.params.values()
        options = {"application_name": application_name} if application_name else {}
        return {"ENGINE": "django.db.backends.postgresql", "NAME": self.name, "HOST": host,
                "PORT": str(port), "USER": user, "OPTIONS": options}  # fmt: skip

    def connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """A connection of the driver's own, in autocommit mode."""
        return psycopg.connect(dbname=dbname or self.name, autocommit=True, **self.params)

    def notes(self) -> list[str]:
        server = ", ".join(f"{k}={v}" for k, v in self.server_settings.items())
        where = f"{self.params['user']}@{self.params['host']}:{self.params['port']}/{self.name}"
        return [
            f"database {where}; task table dropped and re-migrated for this invocation",
            f"server settings as found: {server}",
        ]

    def backend_pids(self, application_name: str) -> list[int]:
        """Server processes serving sessions with this application_name."""
        with self.connect("postgres") as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                [self.name, application_name],
            ).fetchall()
        return [row[0] for row in rows]

    def activity(self) -> dict[str, int]:
        """Cumulative server statistics of this database and its task table (for deltas)."""
        with self.connect() as conn:
            commits = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [self.name]
            ).fetchone()[0]
            row = conn.execute(
                "SELECT coalesce(seq_scan, 0), coalesce(seq_tup_read, 0), coalesce(idx_scan, 0),"
                " coalesce(idx_tup_fetch, 0), n_tup_upd, n_tup_hot_upd, n_tup_del"
                " FROM pg_stat_user_tables WHERE relname = %s",
                [TABLE],
            ).fetchone()
            due_index = conn.execute(
                "SELECT coalesce(idx_scan, 0), coalesce(idx_tup_read, 0)"
                " FROM pg_stat_user_indexes WHERE indexrelname = 'taskshed_due_idx'"
            ).fetchone()
        names = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_upd",
                 "n_tup_hot_upd", "n_tup_del")  # fmt: skip
        values = {"xact_commit": commits, **dict(zip(names, row, strict=True))}
        values["due_idx_scan"], values["due_idx_tup_read"] = due_index or (0, 0)
        return values

    def cleanup(self) -> None:
        pass


Target = SqliteTarget | PostgresTarget


def make_targets(args: Any, pg_name: str, sqlite_options: dict[str, Any]) -> list[Target]:
    """The databases of ``--database``; the SQLite file's directory is named after ``pg_name``."""
    targets: list[Target] = []
    if args.database in ("postgres", "both"):
        try:
            targets.append(PostgresTarget(pg_name, args.pg_host, args.pg_port, args.pg_user))
        except psycopg.OperationalError as exc:
            sys.exit(
                f"PostgreSQL on {args.pg_host}:{args.pg_port} (user {args.pg_user}) cannot be "
                f"used: {exc}\nStart it (scripts/test does) or pass --database sqlite."
            )
    if args.database in ("sqlite", "both"):  # made last, measured first
        if args.sqlite_wal:  # Django's init_command, on every connection
            sqlite_options = {**sqlite_options, "init_command": "PRAGMA journal_mode=WAL"}
        targets.insert(0, SqliteTarget(pg_name.replace("_", "-"), sqlite_options))
    return targets


def filesystem_of(path: str) -> str:
    """The file system type ``path`` lives on, from /proc/mounts where there is one."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "an unknown file system"
    real = os.path.realpath(path)
    matches = [(m, t) for m, t in mounts if real == m or real.startswith(m.rstrip("/") + "/")]
    mount, kind = max(matches, key=lambda mt: len(mt[0]), default=("?", "?"))
    return f"{kind} ({mount})"


def epoch_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def scratch_root() -> str | None:
    """Where scratch directories go: away from the shared temporary directory, which other
    sessions' test runs clean up. The directories themselves are made by mkdtemp (mode 0700)."""
    root = "/var/tmp"  # noqa: S108
    return root if os.path.isdir(root) else None


# --- Django ----------------------------------------------------------------------------------


def clear_tasks(alias: str) -> None:
    from django.db import connections

    from django_taskshed.django_internals import delete_without_signals
    from django_taskshed.models import Task, WorkerRecord

    delete_without_signals(Task.objects.using(alias))
    WorkerRecord.objects.using(alias).all().delete()
    connections[alias].close()


def count_tasks(alias: str, due_by: Any = None) -> int:
    """Tasks in the table (only those with ``run_at <= due_by``, if given)."""
    from django.db import connections

    from django_taskshed.models import Task

    tasks = Task.objects.using(alias)
    try:
        return (tasks.filter(run_at__lte=due_by) if due_by else tasks).count()
    finally:
        connections[alias].close()


@contextmanager
def receivers_muted(model: type) -> Iterator[None]:
    """Disconnect every ``post_save``/``post_delete`` receiver bound to ``model``, then restore.

    The floors are Django's own inserts: django_taskshed's receivers (which notify workers
    after each save) would put the package's cost into the floor it is compared with.
    Django's Signal has no public way to list receivers; ``receivers`` holds
    ``((receiver id, sender id), receiver, is_async)`` since Django 5.0.
    """
    from django.db.models.signals import post_delete, post_save

    saved = []
    for signal in (post_save, post_delete):
        with signal.lock:
            saved.append((signal, signal.receivers))
            signal.receivers = [r for r in signal.receivers if r[0][1] != id(model)]
            signal.sender_receivers_cache.clear()
    try:
        yield
    finally:
        for signal, receivers in saved:
            with signal.lock:
                signal.receivers = receivers
                signal.sender_receivers_cache.clear()


# --- the command line and the frame of a benchmark -------------------------------------------


def make_parser(doc: str, database: str, quick: str, quiet: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``quick`` describes its ``--quick``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default=database)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres", help="password, if any: PGPASSWORD")
    parser.add_argument("--quick", action="store_true", help=quick)
    what = "SQLite in write-ahead-log mode (PRAGMA journal_mode=WAL through init_command)"
    parser.add_argument("--sqlite-wal", action="store_true", help=what)
    if quiet:
        what = "before each run, wait until other processes use fewer cores than this (0.3)"
        parser.add_argument("--quiet-below", type=float, default=0.3, help=what)
        parser.add_argument("--max-wait", type=float, default=120.0, help="longest wait, s (120)")
    return parser


def fill_defaults(args: Any, **defaults: tuple[Any, Any]) -> None:
    """Give each option left unset its default: ``(full run, --quick)``. A quick run waits for
    no quiet machine."""
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.quick and hasattr(args, "max_wait"):
        args.max_wait = 0.0


@contextmanager
def session(
    what: str,
    args: Any,
    pg_name: str,
    channel_layers: dict[str, Any] | None = None,
    taskshed: dict[str, Any] | None = None,
    *,
    sqlite_options: dict[str, Any] = SHARED_SQLITE,
    extra_versions: Sequence[str] = (),
    django_tasks: bool = False,
) -> Iterator[tuple[list[Target], str]]:
    """A benchmark from start to end: its databases and Django settings, the report's header,
    every task table remade; it yields the targets and a directory for logs. At the end it
    closes this process's connections and removes what it made. ``django_tasks``: Django's
    Tasks framework on, its backend on the first target's database."""
    sys.stdout.reconfigure(line_buffering=True)  # keep the report in order with the progress
    sys.path.insert(0, str(REPO_ROOT))  # measure this checkout, whatever is installed
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from benchmarks import bench_settings

    targets = make_targets(args, pg_name, sqlite_options)
    # This process's settings: one alias per database under test, no default database.
    databases = {"default": {}, **{t.alias: t.django_settings() for t in targets}}
    tasks_database = targets[0].alias if django_tasks else None
    settings.configure(**bench_settings.build(databases, channel_layers, taskshed, tasks_database))
    django.setup()

    log_dir = tempfile.mkdtemp(prefix=f"{pg_name.replace('_', '-')}-logs-", dir=scratch_root())
    try:
        print(f"django-taskshed: {what}, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
        print(versions(targets, extra_versions))
        for target in targets:  # the task table remade from this checkout's migrations
            if TABLE.strip('"') in connections[target.alias].introspection.table_names():
                clear_tasks(target.alias)  # rows of a newer schema may not fit an older one
            call_command("migrate", "django_taskshed", "zero", database=target.alias, verbosity=0)
            call_command("migrate", database=target.alias, verbosity=0)
        connections.close_all()
        yield targets, log_dir
    finally:
        connections.close_all()
        for target in targets:
            target.cleanup()
        shutil.rmtree(log_dir, ignore_errors=True)


def print_end() -> None:
    print(f"\nload average at end {load_average()}")


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# --- the worker subprocess -------------------------------------------------------------------


class WorkerProcess:
    """``python -m django runtaskworker`` (what ``manage.py runtaskworker`` runs), started now.

    Its stdout is read by a thread that timestamps the start-up banner; its stderr goes to a
    file (shown if it fails).
    """

    def __init__(
        self, env: dict[str, str], flags: Sequence[str], log_dir: str, name: str,
        wrapper: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.command = [sys.executable, "-m", "django", "runtaskworker", *flags]
        self.stderr_path = os.path.join(log_dir, f"{name}.stderr")
        self.banner: str | None = None
        self.banner_at: float | None = None
        self.ready = threading.Event()
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*wrapper, *self.command], cwd=REPO_ROOT, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )  # fmt: skip
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101
        for line in self.proc.stdout:
            if self.banner is None and "taskshed worker" in line and "started" in line:
                self.banner_at = time.time()
                self.banner = line.strip()
                self.ready.set()
        self.ready.set()  # also when it exits without a banner

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.wait(timeout) or self.banner is None:
            self.kill()
            raise RuntimeError(f"worker did not start:\n{self.stderr_tail()}")

    def wait4(self, timeout: float | None = None) -> tuple[int, Any, float]:
        """Wait for the exit: (exit code, resource usage of the process, exit time)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                exited = time.time()
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.005)
        self._reader.join(timeout=5)
        self._stderr.close()
        return self.proc.returncode, usage, exited

    def terminate(self, grace: float = 10.0) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                return self.wait4(grace)[0]
            except TimeoutError:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.wait4()

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.stderr_path).read_text().splitlines()[-lines:])
        except OSError:
            return "(no stderr)"


# --- CPU counters from /proc -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_cpu(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu() -> float:
    """user + system time of this process, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_server_cpu() -> float | None:
    """CPU seconds of every ``postgres`` process, plus the exited backends the postmaster reaped
    (its cutime + cstime). None where /proc shows no PostgreSQL server."""
    processes = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            processes[int(entry.name)] = fields
    if not processes:
        return None
    total = 0.0
    for fields in processes.values():
        total += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in processes:  # the postmaster: its parent is not postgres
            total += int(fields[13]) + int(fields[14])
    return total / CLK_TCK


class BackendSampler:
    """Samples the CPU of some server processes until they exit; the last sample counts."""

    def __init__(self, pids: list[int], every: float = 0.05) -> None:
        self.start = {pid: process_cpu(pid) or 0.0 for pid in pids}
        self.last = dict(self.start)
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for pid in self.start:
                value = process_cpu(pid)
                if value is not None:
                    self.last[pid] = value

    def stop(self) -> float:
        """CPU seconds used by these processes since sampling started."""
        self._stop.set()
        self._thread.join()
        return sum(self.last[pid] - self.start[pid] for pid in self.start)


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait until the machine uses less than ``limit`` cores for two seconds running (this
    process idle meanwhile), at most ``max_wait`` s. Returns the cores busy in the last second."""
    started = time.monotonic()
    quiet = 0
    while True:
        before = machine_cpu()
        time.sleep(1.0)
        used = machine_cpu() - before
        quiet = quiet + 1 if used < limit else 0
        waited = time.monotonic() - started
        if quiet >= 2 or waited >= max_wait:
            return used
        if quiet == 0 and int(waited) % 15 == 0:
            progress(f"waiting for a quiet machine: {used:.2f} cores busy (limit {limit})")


# --- timing ----------------------------------------------------------------------------------


def timed(body: Callable[[], object]) -> float:
    """Seconds ``body()`` takes."""
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def wait_for(found: Callable[[], Sized], count: int, timeout: float) -> None:
    """Poll until ``found()`` holds ``count`` items or ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while len(found()) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def timed_each(call: Callable[..., object], rows: list[dict[str, Any]]) -> float:
    """Seconds of ``call(**values)`` for each row, one after the other."""

    def body() -> None:
        for values in rows:
            call(**values)

    return timed(body)


def timed_async(body: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``await body()`` takes inside a fresh event loop (the loop's set-up not timed)."""

    async def main() -> float:
        start = time.perf_counter()
        await body()
        return time.perf_counter() - start

    return asyncio.run(main())


# --- statistics and the report ---------------------------------------------------------------


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> list[float]:
    """The ``qs``-th percentiles (1-99) of ``values``, interpolated between closest ranks."""
    if len(values) < 2:
        return [values[0] if values else float("nan")] * len(qs)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[q - 1] for q in qs]


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None; None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def package_revision() -> str:
    """The checkout measured: its commit, and whether django_taskshed/ has uncommitted changes."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "django_taskshed")
    except (OSError, subprocess.CalledProcessError):
        return "django_taskshed (not a git checkout)"
    return f"django_taskshed at {head}{' + uncommitted changes' if dirty else ''}"


def versions(targets: list[Target], extra: Sequence[str] = ()) -> str:
    import asgiref
    import channels
    import django

    libpq = psycopg.pq.version()
    parts = [
        package_revision(),
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"Django {django.get_version()}",
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} impl.)",
        f"libpq {libpq // 10000}.{libpq % 100}",
        f"sqlite {sqlite3.sqlite_version}",
        *(f"PostgreSQL {t.version}" for t in targets if t.version),
        f"channels {channels.__version__}",
        f"asgiref {asgiref.__version__}",
        *extra,
    ]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return " | ".join(parts) + f"\nnproc {cpus} | load average at start {load_average()}"


def print_section(target: Target, what: str = "", notes: Sequence[str] = ()) -> None:
    """A database's part of the report: its title line and notes."""
    print(f"\n== {target.title}{f' {target.version}' if target.version else ''}{what} ==")
    for note in [*target.notes(), *notes]:
        print(f"   {note}")


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[int] = (0,)
) -> None:
    """Columns padded to their widest cell, aligned right but for the ``left`` ones; a row of one
    cell is printed as a section line."""
    widths = [
        max(len(str(r[i])) for r in [header, *rows] if len(r) > 1) for i in range(len(header))
    ]
    for row in [header, *rows]:
        if len(row) == 1:
            print(row[0])
            continue
        cells = [
            str(c).ljust(w) if i in left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def truncate_drain_tables(cursor: Any) -> None:
    """PostgreSQL: empty ``DRAIN_TABLES`` with ``TRUNCATE``, so that a drain starts from tables
    with no dead rows and no free space (as after a fresh bulk insert)."""
    cursor.execute(f"TRUNCATE {', '.join(DRAIN_TABLES)}")
