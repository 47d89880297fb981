"""Benchmark: the time to add tasks through the schedulers, against what the database allows.

Run from the repository root with the dev virtualenv::

    .venv/bin/python benchmarks/schedule.py [--database sqlite|postgres|both] [--runs 5] [--quick]

For each database it times ``AsyncScheduler.add_task`` (one await at a time) and
``AsyncScheduler.add_tasks`` (one call), and, in the same run and for the same rows, their floors:
``Task.objects.create()`` per row for single adds, and a raw driver ``executemany`` in one
transaction (sqlite3 / psycopg, their own connection) for batches; on PostgreSQL also psycopg's
binary ``COPY`` of the same rows, the driver's fastest path. Every figure is the median of
``--runs`` runs, each on an emptied table. It configures Django itself (no settings module).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_common import (  # noqa: E402  # noqa: E402
    TABLE,
    Target,
    fill_defaults,
    make_parser,
    print_end,
    print_section,
    print_table,
    progress,
    receivers_muted,
    session,
    timed,
    timed_async,
    timed_each,
    verdict,
)

CALLBACK = "bench.noop"
PG_DATABASE = "taskshed_bench"
WARM_UP_ROWS = 5
# Columns the floors write: the same values the scheduler stores; constants are SQL literals.
RAW_COLUMNS = (
    "task_id", "callback", "kwargs", "run_at", "run_type", "group_id", "paused", "coalesce",
    "created_at", "updated_at",
)  # fmt: skip
RAW_LITERALS = {
    "attempts": "0", "last_error": "''", "last_traceback": "''", "cron": "''", "timezone": "''",
    "on_nonexistent": "'shift'", "on_ambiguous": "'first'", "declared_in_code": "FALSE",
    "queue": "'default'", "priority": "0",
}  # fmt: skip
# (issue, measured key, floor key, limit): the issues' acceptance targets, PostgreSQL only.
TARGETS = (
    ("#13", "add_task", "create", 1.2),
    ("#13", "add_tasks_large", "raw_large", 1.2),
    ("#2", "add_tasks_large", "raw_large", 2.0),
    ("#2", "add_task", "create", 1.5),
)
# The COPY floor's columns (COPY takes no literals): RAW_COLUMNS' PostgreSQL types, then
# RAW_LITERALS' as Python values with their types.
COPY_TYPES = (
    "text", "text", "jsonb", "timestamptz", "text", "text", "bool", "bool", "timestamptz",
    "timestamptz",
)  # fmt: skip
COPY_CONSTANTS = {
    "attempts": (0, "int4"), "last_error": ("", "text"), "last_traceback": ("", "text"),
    "cron": ("", "text"), "timezone": ("", "text"), "on_nonexistent": ("shift", "text"),
    "on_ambiguous": ("first", "text"), "declared_in_code": (False, "bool"),
    "queue": ("default", "text"), "priority": (0, "int2"),
}  # fmt: skip


def make_rows(count: int) -> list[dict[str, Any]]:
    """``count`` fresh tasks' fields, run_at spread over the next minutes, in ten groups."""
    start = datetime.now(dt_timezone.utc) + timedelta(minutes=1)
    return [
        {"task_id": uuid.uuid4().hex, "callback": CALLBACK, "kwargs": {"a": i, "b": 2},
         "run_at": start + timedelta(milliseconds=30 * i), "run_type": "once",
         "group_id": f"g{i % 10}"}
        for i in range(count)
    ]  # fmt: skip


def insert_statement(placeholder: str, kwargs_placeholder: str) -> str:
    """The floors' INSERT of ``RAW_COLUMNS`` (all quoted: ``coalesce`` is a keyword)."""
    columns = ", ".join(f'"{c}"' for c in (*RAW_COLUMNS, *RAW_LITERALS))
    marks = [placeholder] * len(RAW_COLUMNS)
    marks[RAW_COLUMNS.index("kwargs")] = kwargs_placeholder
    values = ", ".join(marks + list(RAW_LITERALS.values()))
    return f"INSERT INTO {TABLE} ({columns}) VALUES ({values})"


def sqlite_datetime(value: datetime) -> str:
    """A datetime as Django stores it in SQLite: naive UTC text."""
    return str(value.astimezone(dt_timezone.utc).replace(tzinfo=None))


# --- the measurements ------------------------------------------------------------------------


class Bench:
    """Every operation on one database; each ``time_*`` builds its inputs, then times the work."""

    def __init__(self, target: Target, single: int, small: int, large: int) -> None:
        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.models import Task
        from django_taskshed.schedulers import AsyncScheduler, SyncScheduler

        self.target = target
        self.sqlite = target.alias == "sqlite"
        self.raw: Any = target.connect()  # the floors' own connection, autocommit
        self.Task = Task
        self.manager = Task.objects.using(target.alias)
        self.scheduler = AsyncScheduler(DjangoDataStore(using=target.alias))
        self.sync_scheduler = SyncScheduler(DjangoDataStore(using=target.alias))
        d = target.driver
        # (key, rows, timer, label), in the order of one run; all but Task() write rows.
        self.operations: list[tuple[str, int, Callable[[int], float], str]] = [
            ("add_task", single, self.time_add_task, "AsyncScheduler.add_task, 1 await each"),
            ("create", single, self.time_create, "Task.objects.create(), sync *"),
            ("acreate", single, self.time_acreate, "await Task.objects.acreate() *"),
            ("add_tasks_small", small, self.time_add_tasks, "AsyncScheduler.add_tasks, 1 call"),
            ("raw_small", small, self.time_raw, f"raw {d} executemany, 1 transaction"),
            ("add_tasks_large", large, self.time_add_tasks, "AsyncScheduler.add_tasks, 1 call"),
            ("raw_large", large, self.time_raw, f"raw {d} executemany, 1 transaction"),
            *([] if self.sqlite else [
                ("copy_large", large, self.time_copy, "raw psycopg binary COPY, 1 transaction"),
            ]),
            ("bulk_create", large, self.time_bulk_create, "Task.objects.bulk_create(), sync"),
            ("create_signals", single, self.time_create_with_signals,
             "Task.objects.create(), sync, receivers on"),
            ("add_task_sync", single, self.time_add_task_sync,
             "SyncScheduler.add_task, 1 call each"),
            ("build", large, self.time_build, "Task(...) x rows, no database"),
        ]  # fmt: skip
        self.times: dict[str, list[float]] = {key: [] for key, *_ in self.operations}

    def run(self, runs: int) -> None:
        """An untimed warm-up pass on a few rows (opens every connection and thread), then
        ``runs`` timed passes."""
        for key, _rows, timer, _label in self.operations:
            self.measure(timer, WARM_UP_ROWS, writes=key != "build")
        for number in range(1, runs + 1):
            progress(f"{self.target.title}: run {number}/{runs}")
            # Rotate the order by one each run, so that no operation always comes first or
            # always follows the same neighbour when the machine is busier at some moments.
            shift = (number - 1) % len(self.operations)
            for key, rows, timer, _label in self.operations[shift:] + self.operations[:shift]:
                self.times[key].append(self.measure(timer, rows, writes=key != "build"))
        self.raw.close()

    def measure(self, timer: Callable[[int], float], rows: int, writes: bool) -> float:
        if writes:  # DELETE on SQLite, TRUNCATE on PostgreSQL
            self.raw.execute(f"DELETE FROM {TABLE}" if self.sqlite else f"TRUNCATE {TABLE}")
        gc.collect()
        seconds = timer(rows)
        count = f"SELECT count(*) FROM {TABLE}"
        if writes and (found := self.raw.execute(count).fetchone()[0]) != rows:
            raise RuntimeError(f"{timer.__name__}({rows}) left {found} rows, expected {rows}")
        return seconds

    def time_add_task(self, count: int) -> float:
        keys = ("run_at", "kwargs", "task_id", "group_id")
        calls = [{key: row[key] for key in keys} for row in make_rows(count)]
        add_task = self.scheduler.add_task

        async def body() -> None:
            for call in calls:
                await add_task(CALLBACK, **call)

        return timed_async(body)

    def time_add_task_sync(self, count: int) -> float:
        keys = ("run_at", "kwargs", "task_id", "group_id")
        calls = [
            {"callback": CALLBACK, **{key: row[key] for key in keys}} for row in make_rows(count)
        ]
        return timed_each(self.sync_scheduler.add_task, calls)

    def time_create(self, count: int) -> float:
        with receivers_muted(self.Task):
            return self.time_create_with_signals(count)

    def time_create_with_signals(self, count: int) -> float:
        return timed_each(self.manager.create, make_rows(count))

    def time_acreate(self, count: int) -> float:
        rows, acreate = make_rows(count), self.manager.acreate

        async def body() -> None:
            for values in rows:
                await acreate(**values)

        with receivers_muted(self.Task):
            return timed_async(body)

    def time_add_tasks(self, count: int) -> float:
        tasks = [self.Task(**values) for values in make_rows(count)]
        return timed_async(lambda: self.scheduler.add_tasks(tasks))

    def time_raw(self, count: int) -> float:
        """The driver's executemany in one transaction; parameters as Django would bind them
        (SQLite: naive UTC text; PostgreSQL: aware datetimes, kwargs as JSON cast to jsonb)."""
        stamp = sqlite_datetime if self.sqlite else (lambda value: value)
        now = stamp(datetime.now(dt_timezone.utc))
        rows = [
            (r["task_id"], CALLBACK, json.dumps(r["kwargs"]), stamp(r["run_at"]), "once",
             r["group_id"], False, True, now, now)
            for r in make_rows(count)
        ]  # fmt: skip
        raw = self.raw
        if self.sqlite:
            statement = insert_statement("?", "?")

            def body() -> None:
                raw.execute("BEGIN")
                raw.executemany(statement, rows)
                raw.execute("COMMIT")
        else:
            statement = insert_statement("%s", "%s::jsonb")

            def body() -> None:
                with raw.transaction(), raw.cursor() as cursor:
                    cursor.executemany(statement, rows)

        return timed(body)

    def time_copy(self, count: int) -> float:
        """PostgreSQL: psycopg's binary COPY of the same rows into the task table in one
        transaction (no conflict handling: COPY has none). Every column is sent, as COPY takes
        no SQL literals; kwargs go as the JSON text, wrapped as jsonb outside the timed region."""
        from psycopg.types.json import Jsonb

        def as_text(text: str) -> str:
            return text

        now = datetime.now(dt_timezone.utc)
        constants = tuple(value for value, _type in COPY_CONSTANTS.values())
        rows = [
            (r["task_id"], CALLBACK, Jsonb(json.dumps(r["kwargs"]), dumps=as_text), r["run_at"],
             "once", r["group_id"], False, True, now, now, *constants)
            for r in make_rows(count)
        ]  # fmt: skip
        columns = ", ".join(f'"{c}"' for c in (*RAW_COLUMNS, *COPY_CONSTANTS))
        statement = f"COPY {TABLE} ({columns}) FROM STDIN (FORMAT BINARY)"
        types = [*COPY_TYPES, *(kind for _value, kind in COPY_CONSTANTS.values())]
        raw = self.raw

        def body() -> None:
            with raw.transaction(), raw.cursor() as cursor, cursor.copy(statement) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)

        return timed(body)

    def time_bulk_create(self, count: int) -> float:
        tasks = [self.Task(**values) for values in make_rows(count)]
        return timed(lambda: self.manager.bulk_create(tasks))  # sends no signals

    def time_build(self, count: int) -> float:
        return timed_each(self.Task, make_rows(count))

    def median(self, key: str) -> float:
        return statistics.median(self.times[key])

    def rows(self, key: str) -> int:
        return next(rows for k, rows, *_ in self.operations if k == key)


# --- the report ------------------------------------------------------------------------------


def print_header(runs: int, sizes: tuple[int, int, int], quick: bool) -> None:
    quick_note = " (--quick: small sizes, indicative only)" if quick else ""
    print(
        f"Medians of {runs} run(s){quick_note}. A run measures each operation once, in this\n"
        "order, rotated by one each run: add_task, create, acreate, add_tasks and executemany\n"
        "(small), the same (large), COPY (large, PostgreSQL), bulk_create, create() with\n"
        "receivers, SyncScheduler.add_task, Task(). Each write starts on an emptied table\n"
        "(DELETE on SQLite, TRUNCATE on PostgreSQL; not timed) and must leave exactly its rows.\n"
        "Task instances (add_tasks, bulk_create) and the drivers' parameters (executemany,\n"
        "COPY) are built outside the timed region.\n"
        "Async operations: asyncio.run() per run, only the awaits are timed; the ORM runs on\n"
        "asgiref's one sync thread.\n"
        "Channel layer: channels InMemoryChannelLayer; each AsyncScheduler call sends one\n"
        "taskshed.changed notification to it (nobody listens).\n"
        f"Django: USE_TZ=True, DEBUG=False. One untimed warm-up pass ({WARM_UP_ROWS} rows per\n"
        "operation) first on each database.\n"
        f"Rows: uuid4-hex task_id, callback {CALLBACK!r}, kwargs {{'a': i, 'b': 2}}, run_at"
        " spread\nover the next minutes, run_type 'once', group_id one of 10.\n"
        f"Sizes: single adds {sizes[0]:,}, batches {sizes[1]:,} and {sizes[2]:,}."
    )


def print_results(bench: Bench) -> None:
    driver = bench.target.driver
    n = {key: f"{bench.rows(key):,}" for key in bench.times}
    labels = {key: label for key, _rows, _timer, label in bench.operations}
    floors = {
        "create": f"create() x{n['create']}",
        "acreate": f"acreate() x{n['acreate']}",
        "raw_small": f"{driver} executemany({n['raw_small']})",
        "raw_large": f"{driver} executemany({n['raw_large']})",
        "copy_large": f"psycopg COPY({n.get('copy_large', '')})",
    }
    copy = "copy_large" in bench.times  # PostgreSQL
    layout = [
        ("measured", [("add_task", "create"), ("", "acreate"), ("add_tasks_small", "raw_small"),
                      ("add_tasks_large", "raw_large"),
                      *([("", "copy_large")] if copy else [])]),
        ("floors", [("create", None), ("acreate", None), ("raw_small", None),
                    ("raw_large", None), *([("copy_large", "raw_large")] if copy else [])]),
        ("informational", [("add_task_sync", "create"), ("bulk_create", "raw_large"),
                           ("create_signals", "create"), ("build", None)]),
    ]  # fmt: skip
    rows: list[list[str]] = []
    for section, lines in layout:
        rows.append([f"-- {section}"])
        previous = ""
        for key, floor in lines:
            times = bench.times.get(key, [])
            cells = ["", "", "", ""] if not key else [
                labels[key], n[key], f"{bench.median(key):.4f}",
                f"{bench.median(key) / bench.rows(key) * 1e6:.1f}",
            ]  # fmt: skip
            previous = key or previous  # an empty key: the line above, against another floor
            ratio = bench.median(previous) / bench.median(floor) if floor else None
            cells += [floors[floor] if floor else "", f"{ratio:.2f}x" if floor else ""]
            rows.append(cells + [f"{min(times):.4f}-{max(times):.4f}" if key else ""])
    header = ["operation", "rows", "median s", "per row µs", "floor", "ratio to floor", "min-max s"]
    print_table(header, rows, left={0, 4, 6})


def print_targets(benches: dict[str, Bench], quick: bool) -> None:
    print("\nTargets (issues #13 and #2, Acceptance; PostgreSQL, same run), from the medians"
          " above:")  # fmt: skip
    bench = benches.get("postgres")
    if bench is None:
        print("  PostgreSQL was not measured (--database postgres or both): no verdict.")
        return
    names = {
        "add_tasks_large": f"add_tasks({bench.rows('add_tasks_large'):,})",
        "add_task": f"add_task x{bench.rows('add_task'):,} (AsyncScheduler, nobody listening)",
        "add_task_sync": f"SyncScheduler.add_task x{bench.rows('add_task_sync'):,}",
        "raw_large": f"raw psycopg executemany({bench.rows('raw_large'):,})",
        "copy_large": f"raw psycopg COPY({bench.rows('copy_large'):,})",
        "create": f"create() x{bench.rows('create'):,}",
        "acreate": f"acreate() x{bench.rows('acreate'):,}, the async reference",
    }
    for issue, key, floor, limit in TARGETS:
        ratio = bench.median(key) / bench.median(floor)
        print(f"  {issue}: {names[key]} <= {limit}x {names[floor]}: {ratio:.2f}x"
              f"  {verdict(ratio <= limit)}")  # fmt: skip
    for key, floor in (
        ("add_tasks_large", "copy_large"),
        ("add_task", "acreate"),
        ("add_task_sync", "create"),
    ):
        ratio = bench.median(key) / bench.median(floor)
        print(f"  (no target) {names[key]} vs {names[floor]}: {ratio:.2f}x")
    if quick:
        print("  (--quick: sizes are not the issue's; these verdicts are indicative only)")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, "both", "one run, sizes 50/50/500: a smoke run", quiet=False)
    parser.add_argument("--runs", type=int, help="runs per median (default 5)")
    parser.add_argument(
        "--pg-database", default=PG_DATABASE, help=f"PostgreSQL database (default {PG_DATABASE})"
    )
    args = parser.parse_args(argv)
    fill_defaults(args, runs=(5, 1))
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = (50, 50, 500) if args.quick else (500, 500, 10_000)
    memory = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with session("adding tasks", args, args.pg_database, memory, sqlite_options={}) as (
        targets,
        _,
    ):
        print_header(args.runs, sizes, args.quick)
        benches = {}
        for target in targets:
            benches[target.alias] = bench = Bench(target, *sizes)
            bench.run(args.runs)
            postgres_note = (
                "Django's psycopg backend with its defaults (client-side binding cursors); the"
                " floor uses a plain psycopg cursor (executemany runs in pipeline mode)"
            )
            print_section(target, notes=[
                *([postgres_note] if target.alias == "postgres" else []),
                "* floors with django_taskshed's post_save/post_delete receivers on Task"
                " disconnected (Django's own insert);\n     'receivers on' is the same create()"
                " as users' code runs it",
            ])  # fmt: skip
            print_results(bench)
        print_targets(benches, args.quick)
        print_end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
