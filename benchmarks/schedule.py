"""Benchmark: the time to add tasks through the schedulers, against what the database allows.

Run from the repository root with the dev virtualenv::

    .venv/bin/python benchmarks/schedule.py [--database sqlite|postgres|both] [--runs 5] [--quick]

For each database it times ``AsyncScheduler.add_task`` (one await at a time) and
``AsyncScheduler.add_tasks`` (one call), and, in the same run and for the same rows, their floors:
``Task.objects.create()`` per row for single adds, and a raw driver ``executemany`` in one
transaction (sqlite3 / psycopg, their own connection) for batches. Every figure is the median of
``--runs`` runs, each on an emptied table. It configures Django itself (no settings module).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # measure this checkout, whatever is installed

from benchmarks.bench_common import filesystem_of, versions  # noqa: E402

TABLE = "django_taskshed_task"
CALLBACK = "bench.noop"
PG_DATABASE = "taskshed_bench"
WARM_UP_ROWS = 5
# Columns the floors write: the same values the scheduler stores; constants are SQL literals.
RAW_COLUMNS = (
    "task_id", "callback", "kwargs", "run_at", "run_type", "group_id", "paused", "coalesce",
    "created_at", "updated_at",
)  # fmt: skip
RAW_LITERALS = {"attempts": "0", "last_error": "''", "last_traceback": "''"}
TARGETS = (  # (measured key, floor key, limit): the acceptance targets, PostgreSQL only
    ("add_tasks_large", "raw_large", 2.0),
    ("add_task", "create", 1.5),
)


@dataclass(frozen=True)
class Sizes:
    single: int  # add_task / create() / acreate() calls
    small: int  # rows in the small add_tasks batch
    large: int  # rows in the large add_tasks batch


@dataclass(frozen=True)
class Spec:
    """One task's values, shared by every way of writing it."""

    task_id: str
    kwargs: dict[str, int]
    run_at: datetime
    group_id: str

    def fields(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "callback": CALLBACK,
            "kwargs": self.kwargs,
            "run_at": self.run_at,
            "run_type": "once",
            "group_id": self.group_id,
        }


def make_specs(count: int) -> list[Spec]:
    """``count`` fresh tasks, run_at spread over the next minutes, in ten groups."""
    start = datetime.now(dt_timezone.utc) + timedelta(minutes=1)
    return [
        Spec(
            uuid.uuid4().hex, {"a": i, "b": 2}, start + timedelta(milliseconds=30 * i), f"g{i % 10}"
        )
        for i in range(count)
    ]


def insert_statement(placeholder: str, kwargs_placeholder: str) -> str:
    """The floors' INSERT of ``RAW_COLUMNS`` (all quoted: ``coalesce`` is a keyword)."""
    columns = ", ".join(f'"{c}"' for c in (*RAW_COLUMNS, *RAW_LITERALS))
    marks = [placeholder] * len(RAW_COLUMNS)
    marks[RAW_COLUMNS.index("kwargs")] = kwargs_placeholder
    values = ", ".join(marks + list(RAW_LITERALS.values()))
    return f"INSERT INTO {TABLE} ({columns}) VALUES ({values})"


# --- the databases -------------------------------------------------------------------------


class SqliteTarget:
    """A fresh SQLite file in a temporary directory, with Django's default pragmas."""

    alias = "sqlite"
    title = "SQLite"
    driver = "sqlite3"

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="taskshed-bench-")
        self.path = os.path.join(self.directory, "bench.sqlite3")
        self.raw: sqlite3.Connection | None = None

    def django_settings(self) -> dict[str, Any]:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": self.path}

    def server_version(self) -> str | None:
        return None

    def open(self) -> None:
        # Autocommit; the floor opens its transaction itself.
        self.raw = sqlite3.connect(self.path, isolation_level=None)

    def notes(self, connection: Any) -> list[str]:
        with connection.cursor() as cursor:
            journal = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            synchronous = cursor.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return [
            f"file {self.path} on {filesystem_of(self.directory)}, new for this invocation",
            f"Django's defaults, not tuned: journal_mode={journal}, "
            f"synchronous={synchronous} ({names.get(synchronous, '?')})",
        ]

    def clear(self) -> None:
        self.raw.execute(f"DELETE FROM {TABLE}")

    def count(self) -> int:
        return self.raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]

    def raw_rows(self, specs: list[Spec]) -> list[tuple[Any, ...]]:
        """Driver-ready parameters; datetimes as Django stores them in SQLite (naive UTC text)."""
        now = sqlite_datetime(datetime.now(dt_timezone.utc))
        return [
            (s.task_id, CALLBACK, json.dumps(s.kwargs), sqlite_datetime(s.run_at), "once",
             s.group_id, False, True, now, now)
            for s in specs
        ]  # fmt: skip

    def raw_executemany(self, rows: list[tuple[Any, ...]]) -> float:
        statement = insert_statement("?", "?")
        start = time.perf_counter()
        self.raw.execute("BEGIN")
        self.raw.executemany(statement, rows)
        self.raw.execute("COMMIT")
        return time.perf_counter() - start

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


def sqlite_datetime(value: datetime) -> str:
    return str(value.astimezone(dt_timezone.utc).replace(tzinfo=None))


class PostgresTarget:
    """The dedicated ``taskshed_bench`` database, created if missing, its task table remade."""

    alias = "postgres"
    title = "PostgreSQL"
    driver = "psycopg"

    def __init__(self, host: str, port: int, user: str) -> None:
        self.params = {"host": host, "port": port, "user": user}
        self.raw: psycopg.Connection[Any] | None = None
        with psycopg.connect(dbname="postgres", autocommit=True, **self.params) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [PG_DATABASE]
            ).fetchone()
            if not exists:
                admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
            self.version = admin.execute("SHOW server_version").fetchone()[0]
            self.server_settings = {
                name: admin.execute(f"SHOW {name}").fetchone()[0]
                for name in ("fsync", "synchronous_commit", "shared_buffers")
            }

    def django_settings(self) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_DATABASE,
            "HOST": self.params["host"],
            "PORT": str(self.params["port"]),
            "USER": self.params["user"],
        }

    def server_version(self) -> str | None:
        return self.version

    def open(self) -> None:
        # Autocommit; the floor opens its transaction itself.
        self.raw = psycopg.connect(dbname=PG_DATABASE, autocommit=True, **self.params)

    def notes(self, connection: Any) -> list[str]:
        server = ", ".join(f"{k}={v}" for k, v in self.server_settings.items())
        where = f"{self.params['user']}@{self.params['host']}:{self.params['port']}/{PG_DATABASE}"
        return [
            f"database {where}; task table dropped and re-migrated for this invocation",
            f"server settings as found: {server}",
            "Django's psycopg backend with its defaults (client-side binding cursors); the floor"
            " uses a plain psycopg cursor (executemany runs in pipeline mode)",
        ]

    def clear(self) -> None:
        self.raw.execute(f"TRUNCATE {TABLE}")

    def count(self) -> int:
        return self.raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]

    def raw_rows(self, specs: list[Spec]) -> list[tuple[Any, ...]]:
        """Driver-ready parameters: aware datetimes, kwargs as JSON text (cast to jsonb)."""
        now = datetime.now(dt_timezone.utc)
        return [
            (s.task_id, CALLBACK, json.dumps(s.kwargs), s.run_at, "once", s.group_id, False,
             True, now, now)
            for s in specs
        ]  # fmt: skip

    def raw_executemany(self, rows: list[tuple[Any, ...]]) -> float:
        statement = insert_statement("%s", "%s::jsonb")
        start = time.perf_counter()
        with self.raw.transaction(), self.raw.cursor() as cursor:
            cursor.executemany(statement, rows)
        return time.perf_counter() - start

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


Target = SqliteTarget | PostgresTarget


def configure_django(targets: list[Target]) -> None:
    """Settings for this script alone: one alias per database under test, no default database."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        SECRET_KEY=uuid.uuid4().hex,  # nothing is signed
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "channels",
            "django_taskshed",
        ],
        DATABASES={"default": {}, **{t.alias: t.django_settings() for t in targets}},
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def migrate(alias: str) -> None:
    """Remake the task table from the checkout's migrations, then migrate everything."""
    from django.core.management import call_command

    call_command("migrate", "django_taskshed", "zero", database=alias, verbosity=0)
    call_command("migrate", database=alias, verbosity=0)


def run_timed(body: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``body()`` takes inside a fresh event loop (the loop's set-up is not timed)."""

    async def main() -> float:
        start = time.perf_counter()
        await body()
        return time.perf_counter() - start

    return asyncio.run(main())


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


# --- the measurements ------------------------------------------------------------------------


class Bench:
    """Every operation on one database; each ``time_*`` builds its inputs, then times the work."""

    def __init__(self, target: Target, sizes: Sizes) -> None:
        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.models import Task
        from django_taskshed.schedulers import AsyncScheduler

        self.target = target
        self.Task = Task
        self.manager = Task.objects.using(target.alias)
        self.scheduler = AsyncScheduler(DjangoDataStore(using=target.alias))
        # (key, rows, timer, writes rows): the order of one run.
        self.operations = [
            ("add_task", sizes.single, self.time_add_task, True),
            ("create", sizes.single, self.time_create, True),
            ("acreate", sizes.single, self.time_acreate, True),
            ("add_tasks_small", sizes.small, self.time_add_tasks, True),
            ("raw_small", sizes.small, self.time_raw, True),
            ("add_tasks_large", sizes.large, self.time_add_tasks, True),
            ("raw_large", sizes.large, self.time_raw, True),
            ("bulk_create", sizes.large, self.time_bulk_create, True),
            ("create_signals", sizes.single, self.time_create_with_signals, True),
            ("build", sizes.large, self.time_build, False),
        ]
        self.times: dict[str, list[float]] = {key: [] for key, *_ in self.operations}

    def warm_up(self) -> None:
        """Each operation once on a few rows, untimed: opens every connection and thread."""
        for _key, _rows, timer, writes in self.operations:
            self.measure(timer, WARM_UP_ROWS, writes)

    def run(self, runs: int) -> None:
        for number in range(1, runs + 1):
            print(f"  {self.target.title}: run {number}/{runs}", file=sys.stderr, flush=True)
            # Rotate the order by one each run, so that no operation always comes first or
            # always follows the same neighbour when the machine is busier at some moments.
            shift = (number - 1) % len(self.operations)
            for key, rows, timer, writes in self.operations[shift:] + self.operations[:shift]:
                self.times[key].append(self.measure(timer, rows, writes))

    def measure(self, timer: Callable[[int], float], rows: int, writes: bool) -> float:
        if writes:
            self.target.clear()
        gc.collect()
        seconds = timer(rows)
        if writes and (found := self.target.count()) != rows:
            raise RuntimeError(f"{timer.__name__}({rows}) left {found} rows, expected {rows}")
        return seconds

    def time_add_task(self, count: int) -> float:
        specs = make_specs(count)
        add_task = self.scheduler.add_task

        async def body() -> None:
            for s in specs:
                await add_task(
                    CALLBACK, run_at=s.run_at, kwargs=s.kwargs, task_id=s.task_id,
                    group_id=s.group_id,
                )  # fmt: skip

        return run_timed(body)

    def time_create(self, count: int) -> float:
        with receivers_muted(self.Task):
            return self.time_create_with_signals(count)

    def time_create_with_signals(self, count: int) -> float:
        rows = [s.fields() for s in make_specs(count)]
        create = self.manager.create
        start = time.perf_counter()
        for values in rows:
            create(**values)
        return time.perf_counter() - start

    def time_acreate(self, count: int) -> float:
        rows = [s.fields() for s in make_specs(count)]
        acreate = self.manager.acreate

        async def body() -> None:
            for values in rows:
                await acreate(**values)

        with receivers_muted(self.Task):
            return run_timed(body)

    def time_add_tasks(self, count: int) -> float:
        tasks = [self.Task(**s.fields()) for s in make_specs(count)]
        return run_timed(lambda: self.scheduler.add_tasks(tasks))

    def time_raw(self, count: int) -> float:
        return self.target.raw_executemany(self.target.raw_rows(make_specs(count)))

    def time_bulk_create(self, count: int) -> float:
        tasks = [self.Task(**s.fields()) for s in make_specs(count)]
        start = time.perf_counter()
        self.manager.bulk_create(tasks)  # sends no signals
        return time.perf_counter() - start

    def time_build(self, count: int) -> float:
        rows = [s.fields() for s in make_specs(count)]
        task = self.Task
        start = time.perf_counter()
        for values in rows:
            task(**values)
        return time.perf_counter() - start

    def median(self, key: str) -> float:
        return statistics.median(self.times[key])

    def rows(self, key: str) -> int:
        return next(rows for k, rows, *_ in self.operations if k == key)


# --- the report ------------------------------------------------------------------------------


def print_header(targets: list[Target], runs: int, sizes: Sizes, quick: bool) -> None:
    print(f"django-taskshed: adding tasks, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(versions(targets))  # its first field names the commit and any uncommitted changes
    quick_note = " (--quick: small sizes, indicative only)" if quick else ""
    lines = [
        f"Medians of {runs} run(s){quick_note}. A run measures each operation once, in this",
        "order, rotated by one each run: add_task, create, acreate, add_tasks and executemany",
        "(small), the same (large), bulk_create, Task(). Each write starts on an emptied table",
        "(DELETE on SQLite, TRUNCATE on PostgreSQL; not timed) and must leave exactly its rows.",
        "Task instances (add_tasks, bulk_create) and the drivers' parameters (executemany) are",
        "built outside the timed region.",
        "Async operations: asyncio.run() per run, only the awaits are timed; the ORM runs on",
        "asgiref's one sync thread.",
        "Channel layer: channels InMemoryChannelLayer; each AsyncScheduler call sends one",
        "taskshed.changed notification to it (nobody listens).",
        f"Django: USE_TZ=True, DEBUG=False. One untimed warm-up pass ({WARM_UP_ROWS} rows per",
        "operation) first on each database.",
        f"Rows: uuid4-hex task_id, callback {CALLBACK!r}, kwargs {{'a': i, 'b': 2}}, run_at spread",
        "over the next minutes, run_type 'once', group_id one of 10.",
    ]
    print("\n".join(lines))
    print(f"Sizes: single adds {sizes.single:,}, batches {sizes.small:,} and {sizes.large:,}.")


def table_rows(bench: Bench) -> list[list[str]]:
    driver = bench.target.driver
    n = {key: f"{bench.rows(key):,}" for key in bench.times}
    labels = {
        "add_task": "AsyncScheduler.add_task, 1 await each",
        "add_tasks_small": "AsyncScheduler.add_tasks, 1 call",
        "add_tasks_large": "AsyncScheduler.add_tasks, 1 call",
        "create": "Task.objects.create(), sync *",
        "acreate": "await Task.objects.acreate() *",
        "create_signals": "Task.objects.create(), sync, receivers on",
        "raw_small": f"raw {driver} executemany, 1 transaction",
        "raw_large": f"raw {driver} executemany, 1 transaction",
        "bulk_create": "Task.objects.bulk_create(), sync",
        "build": "Task(...) x rows, no database",
    }
    floors = {
        "create": f"create() x{n['create']}",
        "acreate": f"acreate() x{n['acreate']}",
        "raw_small": f"{driver} executemany({n['raw_small']})",
        "raw_large": f"{driver} executemany({n['raw_large']})",
    }
    layout = [
        ("measured", [("add_task", "create"), ("", "acreate"), ("add_tasks_small", "raw_small"),
                      ("add_tasks_large", "raw_large")]),
        ("floors", [("create", None), ("acreate", None), ("raw_small", None),
                    ("raw_large", None)]),
        ("informational", [("bulk_create", "raw_large"), ("create_signals", "create"),
                           ("build", None)]),
    ]  # fmt: skip
    out = []
    for section, lines in layout:
        out.append([f"-- {section}"] + [""] * 6)
        for key, floor in lines:
            cells = measured_cells(bench, key, labels, n) if key else ["", "", "", "", ""]
            cells.insert(4, floors[floor] if floor else "")
            subject = key or "add_task"
            ratio = bench.median(subject) / bench.median(floor) if floor else None
            cells.insert(5, f"{ratio:.2f}x" if ratio is not None else "")
            out.append(cells)
    return out


def measured_cells(bench: Bench, key: str, labels: dict[str, str], n: dict[str, str]) -> list[str]:
    median = bench.median(key)
    times = bench.times[key]
    return [
        labels[key],
        n[key],
        f"{median:.4f}",
        f"{median / bench.rows(key) * 1e6:.1f}",
        f"{min(times):.4f}-{max(times):.4f}",
    ]


def print_table(bench: Bench, notes: list[str]) -> None:
    target = bench.target
    version = f" {target.server_version()}" if target.server_version() else ""
    print(f"\n== {target.title}{version} ==")
    for note in notes:
        print(f"   {note}")
    print(
        "   * floors with django_taskshed's post_save/post_delete receivers on Task disconnected"
        " (Django's own insert);\n     'receivers on' is the same create() as users' code runs it"
    )
    header = ["operation", "rows", "median s", "per row µs", "floor", "ratio to floor", "min-max s"]
    rows = [header, *table_rows(bench)]
    widths = [max(len(r[i]) for r in rows if not r[0].startswith("--")) for i in range(7)]
    right = {1, 2, 3, 5}
    for row in rows:
        if row[0].startswith("--"):
            print(row[0])
            continue
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def print_targets(benches: dict[str, Bench], quick: bool) -> None:
    print("\nTargets (issue #2, Acceptance; PostgreSQL, same run), from the medians above:")
    bench = benches.get("postgres")
    if bench is None:
        print("  PostgreSQL was not measured (--database postgres or both): no verdict.")
        return
    for key, floor, limit in TARGETS:
        ratio = bench.median(key) / bench.median(floor)
        verdict = "PASS" if ratio <= limit else "MISS"
        what = {
            "add_tasks_large": f"add_tasks({bench.rows(key):,})",
            "add_task": f"add_task x{bench.rows(key):,}",
        }[key]
        base = {
            "raw_large": f"raw psycopg executemany({bench.rows(floor):,})",
            "create": f"create() x{bench.rows(floor):,}",
        }[floor]
        print(f"  {what} <= {limit}x {base}: {ratio:.2f}x  {verdict}")
    ratio = bench.median("add_task") / bench.median("acreate")
    print(f"  (no target) add_task x{bench.rows('add_task'):,} vs acreate() x"
          f"{bench.rows('acreate'):,}, the async reference: {ratio:.2f}x")  # fmt: skip
    if quick:
        print("  (--quick: sizes are not the issue's; these verdicts are indicative only)")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=None, help="runs per median (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="one run, sizes 50/50/500: a smoke run"
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres", help="password, if any: PGPASSWORD")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def make_targets(args: argparse.Namespace) -> list[Target]:
    targets: list[Target] = []
    if args.database in ("postgres", "both"):
        try:
            targets.append(PostgresTarget(args.pg_host, args.pg_port, args.pg_user))
        except psycopg.OperationalError as exc:
            sys.exit(
                f"PostgreSQL on {args.pg_host}:{args.pg_port} (user {args.pg_user}) cannot be "
                f"used: {exc}\nStart it (scripts/test does) or pass --database sqlite."
            )
    if args.database in ("sqlite", "both"):
        targets.insert(0, SqliteTarget())
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # keep the report in order with the progress
    sizes = Sizes(50, 50, 500) if args.quick else Sizes(500, 500, 10_000)
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    targets = make_targets(args)
    configure_django(targets)
    from django.db import connections

    print_header(targets, runs, sizes, args.quick)
    benches: dict[str, Bench] = {}
    try:
        for target in targets:
            migrate(target.alias)
            target.open()
            bench = Bench(target, sizes)
            bench.warm_up()
            bench.run(runs)
            benches[target.alias] = bench
            print_table(bench, target.notes(connections[target.alias]))
        print_targets(benches, args.quick)
        print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for target in targets:
            target.close()
        connections.close_all()
        for target in targets:
            if isinstance(target, SqliteTarget):
                shutil.rmtree(target.directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
