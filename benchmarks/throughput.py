"""Benchmark: how fast one ``runtaskworker`` process drains a burst of due no-op tasks.

Run from the repository root with the dev virtualenv::

    .venv/bin/python benchmarks/throughput.py [--database sqlite|postgres|both] [--tasks 20000]
        [--runs 3] [--quick] [--flags "--concurrency 500 --batch-size 500"] [--profile]

Each run: empty the task table; insert ``--tasks`` one-off tasks for the no-op async callback
with ``SyncScheduler.add_tasks`` (one call), their ``run_at`` spread evenly over one second
starting at T0, a few seconds ahead; then start one real worker process
(``python -m django runtaskworker --max-tasks N``, the command ``manage.py`` runs, with
``benchmarks.bench_settings``), check it is up and idle before T0, and wait for it to exit.

Measured: the wall time from T0 (the first task's ``run_at``) until the worker has stopped
(its ``atexit`` stamp: every result written, leases released, worker unregistered), tasks per
second over that time, the worker's CPU seconds from just before T0 to its exit (its own
``/proc/<pid>/stat`` then, its ``wait4`` rusage at exit: all threads, start-up excluded), and
the database server's CPU over the same span (PostgreSQL only: the worker's own sessions,
sampled from /proc every 50 ms, and every postgres process plus exited backends; SQLite runs
inside the worker process). Each figure is the median of ``--runs`` runs, for the default
flags and for tuned ones. ``--profile`` adds one run per configuration under py-spy and prints
where the worker's time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    TABLE,
    WORKER_APP_NAME,
    BackendSampler,
    PostgresTarget,
    WorkerProcess,
    add_database_arguments,
    add_quiet_arguments,
    clean_up,
    clear_tasks,
    configure_django,
    count_tasks,
    load_average,
    machine_cpu,
    make_targets,
    migrate,
    postgres_server_cpu,
    print_table,
    process_cpu,
    scratch_root,
    versions,
    wait_quiet,
)

PG_DATABASE = "taskshed_bench_tp"
TARGET_RATE = {"postgres": 5000.0, "sqlite": 3000.0}  # tasks/s, issue #3
TARGET_CPU_US = 200.0  # worker CPU µs per task, issue #3
DEFAULT_CONFIGS = [
    ("default flags", []),
    ("tuned", ["--concurrency", "200", "--batch-size", "200"]),
]
PROFILE_RATE = 250  # py-spy samples per second


@dataclass
class RunResult:
    tasks: int
    wall: float  # T0 -> worker stopped (atexit stamp)
    to_last_call: float  # T0 -> last callback started
    to_exit: float  # T0 -> process reaped
    worker_cpu: float | None  # T0 - 0.25 s -> exit
    startup_cpu: float | None  # process start -> T0 - 0.25 s
    db_sessions_cpu: float | None
    db_server_cpu: float | None
    ready_margin: float  # T0 - banner time; positive: idle before T0
    calls: int
    left: int
    exit_code: int
    activity: dict[str, int] = field(default_factory=dict)  # PostgreSQL statistics, deltas
    busy_before: float = 0.0  # cores busy on the machine just before the run
    others: float | None = None  # cores used during the run by everything else on the machine

    @property
    def rate(self) -> float:
        return self.tasks / self.wall

    @property
    def cpu_per_task_us(self) -> float | None:
        return None if self.worker_cpu is None else self.worker_cpu / self.tasks * 1e6


@dataclass
class ConfigResult:
    label: str
    flags: list[str]
    runs: list[RunResult] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.runs]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=dt_timezone.utc)


class Bench:
    def __init__(self, target: Any, args: argparse.Namespace, log_dir: str) -> None:
        self.target = target
        self.args = args
        self.log_dir = log_dir
        self.is_postgres = isinstance(target, PostgresTarget)
        self.counter = 0

    def worker_env(self, stats_path: str) -> dict[str, str]:
        if self.is_postgres:
            database = self.target.django_settings(application_name=WORKER_APP_NAME)
        else:
            database = self.target.django_settings()
        env = bench_settings.environment(database, None, {"CHANNEL_LAYER": None})
        env[bench_callbacks.STATS_ENV] = stats_path
        return env

    def insert(self, count: int, t0: float, spread: float) -> None:
        from django.db import connections

        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.models import Task
        from django_taskshed.schedulers import SyncScheduler

        alias = self.target.alias
        clear_tasks(alias)
        tasks = [
            Task(callback="noop", run_at=to_datetime(t0 + spread * i / count), kwargs={})
            for i in range(count)
        ]
        SyncScheduler(DjangoDataStore(using=alias)).add_tasks(tasks)
        if self.args.analyze and self.is_postgres:
            with connections[alias].cursor() as cursor:
                cursor.execute(f"ANALYZE {TABLE}")
        connections[alias].close()

    def run(
        self,
        flags: list[str],
        count: int,
        wrapper: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> RunResult:
        self.counter += 1
        name = f"{self.target.alias}-{self.counter}"
        stats_path = os.path.join(self.log_dir, f"{name}.stats.json")
        busy_before, _ = wait_quiet(self.args.quiet_below, self.args.max_wait)
        t0 = time.time() + self.args.lead
        self.insert(count, t0, self.args.spread)
        if time.time() > t0 - 2.0:
            raise RuntimeError("inserting took too long for --lead; raise --lead")
        worker = WorkerProcess(
            {**self.worker_env(stats_path), **(extra_env or {})},
            [*flags, "--max-tasks", str(count)],
            self.log_dir,
            name,
            wrapper=wrapper or [],
        )
        try:
            worker.wait_ready()
            ready_margin = t0 - worker.banner_at
            time.sleep(max(0.0, t0 - 0.25 - time.time()))
            sessions = None
            if self.is_postgres:
                sessions = BackendSampler(self.target.backend_pids(WORKER_APP_NAME))
            activity_before = self.target.activity() if self.is_postgres else {}
            server_before = postgres_server_cpu() if self.is_postgres else None
            cpu_before = None if wrapper else process_cpu(worker.pid)
            machine_before, own_before = machine_cpu(), own_cpu()
            exit_code, usage, exited = worker.wait4(timeout=max(300.0, count / 100))
            machine_used, own_used = machine_cpu() - machine_before, own_cpu() - own_before
        except BaseException:
            worker.kill()
            raise
        sessions_cpu = sessions.stop() if sessions is not None else None
        server_cpu = None
        if server_before is not None:
            time.sleep(0.2)  # let the postmaster reap the worker's backends
            server_cpu = postgres_server_cpu() - server_before
            time.sleep(0.5)  # statistics of exited backends reach the shared counters
            after = self.target.activity()
            activity = {key: after[key] - activity_before[key] for key in after}
        else:
            activity = {}
        if exit_code != 0:
            raise RuntimeError(f"worker exited with {exit_code}:\n{worker.stderr_tail()}")
        with open(stats_path) as handle:
            stats = json.load(handle)
        total_cpu = usage.ru_utime + usage.ru_stime
        others = None
        if cpu_before is not None:
            span = exited - (t0 - 0.25)
            used = (total_cpu - cpu_before) + own_used + (server_cpu or 0.0)
            others = max(machine_used - used, 0.0) / span
        return RunResult(
            tasks=count,
            wall=stats["exit"] - t0,
            to_last_call=(stats["last_call"] or t0) - t0,
            to_exit=exited - t0,
            worker_cpu=None if cpu_before is None else total_cpu - cpu_before,
            startup_cpu=cpu_before,
            db_sessions_cpu=sessions_cpu,
            db_server_cpu=server_cpu,
            ready_margin=ready_margin,
            calls=stats["calls"],
            left=count_tasks(self.target.alias),
            exit_code=exit_code,
            activity=activity,
            busy_before=busy_before,
            others=others,
        )

    def measure(self, label: str, flags: list[str], count: int, runs: int) -> ConfigResult:
        result = ConfigResult(label, flags)
        for number in range(1, runs + 1):
            run = self.run(flags, count)
            result.runs.append(run)
            print(
                f"  {self.target.title} {label}: run {number}/{runs}: {run.rate:,.0f} tasks/s,"
                f" wall {run.wall:.3f} s, worker CPU {fmt(run.worker_cpu, 2)} s,"
                f" load {load_average()}",
                file=sys.stderr,
                flush=True,
            )
            if run.calls != count or run.left != 0:
                raise RuntimeError(f"run lost work: {run.calls} calls, {run.left} tasks left")
        return result

    def profile(self, label: str, flags: list[str], count: int) -> None:
        py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(py_spy):
            print(f"\n(--profile: py-spy not found; pip install py-spy) [{label}]")
            return
        self.counter += 1
        out = os.path.join(self.log_dir, f"profile-{self.target.alias}-{self.counter}.txt")
        sql_path = os.path.join(self.log_dir, f"sql-{self.target.alias}-{self.counter}.json")
        wrapper = [py_spy, "record", "--nonblocking", "--threads", "--format", "raw"]
        wrapper += ["--rate", str(PROFILE_RATE), "--output", out, "--"]
        run = self.run(flags, count, wrapper, {bench_callbacks.SQL_ENV: sql_path})
        print_profile(self.target.title, label, flags, run, out, count)
        print_sql(sql_path, count)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


# --- profile ---------------------------------------------------------------------------------


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; the line is dropped."""
    if " (" not in frame:
        return frame
    func, where = frame.rsplit(" (", 1)
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.replace("\\", "/").split("/")
    for anchor in ("site-packages", "django_taskshed", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{func} ({'/'.join(parts[-3:])})"


AREAS = (  # (label, substring of a frame's file): the first matching frame from the leaf wins
    ("psycopg (driver)", "psycopg/"),
    ("sqlite3 (driver)", "sqlite3/"),
    ("django/db (ORM, SQL compiler, backends)", "django/db/"),
    ("django_taskshed", "django_taskshed/"),
    ("asgiref (sync_to_async)", "asgiref/"),
    ("asyncio (event loop)", "asyncio/"),
    ("concurrent/threading", "concurrent/"),
    ("concurrent/threading", "threading.py"),
    ("benchmarks (callback)", "benchmarks/"),
)


def area_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for label, needle in AREAS:
            if needle in frame:
                return label
    return "other"


def print_profile(
    title: str, label: str, flags: list[str], run: RunResult, path: str, count: int
) -> None:
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    with open(path) as handle:
        for line in handle:
            stack_text, _, number = line.rstrip("\n").rpartition(" ")
            samples = int(number)
            frames = stack_text.split(";")
            thread = ""
            if frames[0].startswith("thread"):
                thread, frames = frames[0], frames[1:]
            total += samples
            threads[thread] += samples
            leaf[frame_name(frames[-1]) if frames else "(no Python frame)"] += samples
            for name in {frame_name(f) for f in frames}:
                inclusive[name] += samples
            areas[area_of(frames)] += samples
    if not total:
        print(f"\n(profile of {label}: no samples)")
        return
    per_task = 1e6 / PROFILE_RATE / count  # µs of sampled (on-CPU) time per sample, per task

    def rows(counter: Counter[str], limit: int) -> list[list[str]]:
        return [
            [name[:110], f"{n:,}", f"{100 * n / total:.1f}", f"{n * per_task:.1f}"]
            for name, n in counter.most_common(limit)
        ]

    print(
        f"\n== Profile: {title}, {label} ({' '.join(flags) or 'no flags'}), {count:,} tasks,"
        f" py-spy --nonblocking at {PROFILE_RATE} Hz, idle threads not sampled =="
    )
    print(
        f"   under py-spy: {run.rate:,.0f} tasks/s (not comparable with the table);"
        f" {total:,} samples = {total / PROFILE_RATE:.2f} s on CPU, whole process life"
        " (start-up included)"
    )
    header = ["", "samples", "%", "µs/task"]
    print("-- by thread")
    print_table(header, rows(threads, 10), {1, 2, 3})
    print("-- by area (the innermost frame that belongs to one)")
    print_table(header, rows(areas, 12), {1, 2, 3})
    print("-- inclusive (function and its callees), top 30")
    print_table(header, rows(inclusive, 30), {1, 2, 3})
    print("-- self (innermost frame), top 20")
    print_table(header, rows(leaf, 20), {1, 2, 3})


def sql_label(shape: str) -> str:
    """A statement shape made short: select lists and SET lists elided."""
    shape = shape.replace('"django_taskshed_', '"').replace('"django_taskshed_task"."', '"')
    shape = re.sub(r"^SELECT .*? FROM", "SELECT … FROM", shape)
    shape = re.sub(r" SET .*? WHERE", " SET … WHERE", shape)
    shape = re.sub(r"^INSERT INTO (\S+) \(.*?\) (VALUES|SELECT)", r"INSERT INTO \1 (…) \2", shape)
    return shape if len(shape) <= 150 else f"{shape[:84]} … {shape[-63:]}"


def print_sql(path: str, count: int) -> None:
    try:
        with open(path) as handle:
            totals = json.load(handle)
    except OSError:
        print("(no SQL statistics were written)")
        return
    print("-- SQL statements of the worker process (all connections), client-side wall time")
    ordered = sorted(totals.items(), key=lambda item: -item[1][1])
    rows = [
        [
            sql_label(shape),
            f"{n:,}",
            f"{seconds * 1000:,.0f}",
            f"{seconds / n * 1e6:,.0f}",
            f"{seconds / count * 1e6:.1f}",
            f"{rows / n:,.1f}",
        ]
        for shape, (n, seconds, rows) in ordered[:15]
    ]
    calls = sum(n for n, _, _ in totals.values())
    seconds = sum(s for _, s, _ in totals.values())
    rows.append(
        ["(all)", f"{calls:,}", f"{seconds * 1000:,.0f}", "", f"{seconds / count * 1e6:.1f}", ""]
    )
    header = ["statement", "calls", "total ms", "µs/call", "µs/task", "rows/call"]
    print_table(header, rows, {1, 2, 3, 4, 5})


# --- report ----------------------------------------------------------------------------------


def print_results(target: Any, results: list[ConfigResult], count: int) -> None:
    version = f" {target.server_version()}" if target.server_version() else ""
    print(f"\n== {target.title}{version}: {count:,} no-op async tasks, one worker process ==")
    for note in target.notes():
        print(f"   {note}")
    postgres = isinstance(target, PostgresTarget)
    header = [
        "worker flags", "runs", "wall s", "tasks/s", "worker CPU s", "µs CPU/task",
        "DB CPU s (worker sessions)", "DB CPU s (whole server)", "tasks/s min-max",
    ]  # fmt: skip
    rows = []
    for result in results:
        rates = [r.rate for r in result.runs]
        db_sessions = fmt(result.median("db_sessions_cpu"), 2) if postgres else "in worker"
        db_server = fmt(result.median("db_server_cpu"), 2) if postgres else "in worker"
        rows.append(
            [
                " ".join(result.flags) or "(none)",
                str(len(result.runs)),
                fmt(result.median("wall"), 3),
                f"{count / result.median('wall'):,.0f}",
                fmt(result.median("worker_cpu"), 2),
                fmt(result.median("cpu_per_task_us"), 1),
                db_sessions,
                db_server,
                f"{min(rates):,.0f}-{max(rates):,.0f}",
            ]
        )
    print_table(header, rows, {1, 2, 3, 4, 5, 6, 7, 8})
    print("-- medians of the other clocks (s after T0), start-up and readiness")
    header = [
        "worker flags", "last callback start", "worker stopped", "process reaped",
        "start-up CPU s", "up before T0 s", "busy before (cores)", "others during (cores)",
    ]  # fmt: skip
    rows = [
        [
            " ".join(result.flags) or "(none)",
            fmt(result.median("to_last_call"), 3),
            fmt(result.median("wall"), 3),
            fmt(result.median("to_exit"), 3),
            fmt(result.median("startup_cpu"), 2),
            fmt(min(r.ready_margin for r in result.runs), 2),
            fmt(max(r.busy_before for r in result.runs), 2) + " max",
            fmt(result.median("others"), 2),
        ]
        for result in results
    ]
    print_table(header, rows, {1, 2, 3, 4, 5, 6, 7})
    if postgres:
        print_activity(results, count)


def print_activity(results: list[ConfigResult], count: int) -> None:
    """What the server saw (pg_stat_database / pg_stat_user_tables / _indexes deltas)."""
    print(
        "-- server statistics, medians (transactions include the heartbeat's; due index ="
        " taskshed_due_idx; reads = index entries visited, live or dead)"
    )
    header = [
        "worker flags", "transactions", "tasks/transaction", "due index scans",
        "due index entries read", "entries read/scan", "seq scans", "seq rows read",
    ]  # fmt: skip

    def med(result: ConfigResult, key: str) -> float:
        return statistics.median(r.activity.get(key, 0) for r in result.runs)

    rows = []
    for result in results:
        commits = med(result, "xact_commit")
        scans = med(result, "due_idx_scan")
        reads = med(result, "due_idx_tup_read")
        rows.append(
            [
                " ".join(result.flags) or "(none)",
                f"{commits:,.0f}",
                f"{count / commits:,.1f}" if commits else "n/a",
                f"{scans:,.0f}",
                f"{reads:,.0f}",
                f"{reads / scans:,.0f}" if scans else "n/a",
                f"{med(result, 'seq_scan'):,.0f}",
                f"{med(result, 'seq_tup_read'):,.0f}",
            ]
        )
    print_table(header, rows, {1, 2, 3, 4, 5, 6, 7})


def print_targets(all_results: dict[str, list[ConfigResult]], count: int, quick: bool) -> bool:
    print(
        "\nTargets (issue #3, one worker process, from the medians above): tasks/s >= 5,000 on"
        f" PostgreSQL, >= 3,000 on SQLite; worker CPU <= {TARGET_CPU_US:.0f} µs per task"
    )
    missed = False
    for alias, results in all_results.items():
        title = "PostgreSQL" if alias == "postgres" else "SQLite"
        for result in results:
            rate = count / result.median("wall")
            cpu = result.median("cpu_per_task_us")
            rate_ok = rate >= TARGET_RATE[alias]
            cpu_ok = cpu is not None and cpu <= TARGET_CPU_US
            missed |= not (rate_ok and cpu_ok)
            flags = " ".join(result.flags) or "default flags"
            print(
                f"  {title:<10} {flags:<34} {rate:>8,.0f} tasks/s >= {TARGET_RATE[alias]:,.0f}:"
                f" {'PASS' if rate_ok else 'MISS'}   {fmt(cpu, 1):>6} µs/task <="
                f" {TARGET_CPU_US:.0f}: {'PASS' if cpu_ok else 'MISS'}"
            )
    if quick:
        print("  (--quick: not the issue's size; indicative only)")
    return missed


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser, default="both")
    add_quiet_arguments(parser)
    parser.add_argument("--tasks", type=int, default=None, help="tasks per run (20,000)")
    parser.add_argument("--runs", type=int, default=None, help="runs per median (3)")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 tasks over 0.1 s, 1 run: a smoke run"
    )
    parser.add_argument(
        "--flags",
        action="append",
        default=[],
        help="another worker configuration to measure, e.g. '--concurrency 500 --batch-size 500'",
    )
    parser.add_argument(
        "--only-flags", action="store_true", help="measure only the --flags configurations"
    )
    parser.add_argument("--lead", type=float, default=None, help="s from planning to T0 (5)")
    parser.add_argument(
        "--spread", type=float, default=None, help="run_at spread, s (1; --quick 0.1)"
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="PostgreSQL: ANALYZE the task table after inserting (fresh planner statistics)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="one more run per configuration under py-spy"
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="only the py-spy runs, no measurement"
    )
    args = parser.parse_args(argv)
    args.tasks = args.tasks or (2000 if args.quick else 20_000)
    args.runs = args.runs or (1 if args.quick else 3)
    if args.quick:
        args.max_wait = 0.0
    args.lead = args.lead or (3.0 if args.quick else 5.0)
    args.spread = args.spread if args.spread is not None else (0.1 if args.quick else 1.0)
    if args.tasks < 1 or args.runs < 1:
        parser.error("--tasks and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    configs = [] if args.only_flags else [(label, list(f)) for label, f in DEFAULT_CONFIGS]
    configs += [(f"--flags {i + 1}", shlex.split(f)) for i, f in enumerate(args.flags)]
    targets = make_targets(args.database, PG_DATABASE, args)
    configure_django(targets, None, {"CHANNEL_LAYER": None})
    log_dir = tempfile.mkdtemp(prefix="taskshed-bench-tp-logs-", dir=scratch_root())

    print(f"django-taskshed: worker throughput, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(versions(targets))
    print(
        f"Each run: {args.tasks:,} one-off tasks (callback 'noop', async, kwargs {{}}), run_at"
        f" spread evenly over {args.spread:g} s from T0, inserted with one"
        " SyncScheduler.add_tasks call;\nthen one `python -m django runtaskworker --max-tasks N"
        " [flags]` process (settings benchmarks.bench_settings, no channel layer) starts and idles"
        " until T0.\nwall = T0 -> worker stopped (atexit stamp, after the last result was"
        " written); tasks/s = tasks / wall; worker CPU = its utime+stime\nfrom T0-0.25 s to exit"
        " (start-up excluded); DB CPU (PostgreSQL) over the same span: the worker's sessions, and"
        " all postgres processes\n(this includes other clients of the server, if any)."
        f" Medians of {args.runs} run(s) per configuration. Before each run the script waits"
        f" (up to {args.max_wait:g} s) until\nthe machine uses < {args.quiet_below:g} cores for"
        " 2 s; 'others during' = machine CPU during the run minus the worker, the database server"
        " and this script."
    )
    if args.analyze:
        print("--analyze: ANALYZE of the task table after each insert, before the worker starts.")
    all_results: dict[str, list[ConfigResult]] = {}
    try:
        for target in targets:
            migrate(target.alias)
            if args.profile_only:
                continue
            bench = Bench(target, args, log_dir)
            bench.run(configs[0][1], min(args.tasks, 500))  # warm-up: caches, first connections
            results = [bench.measure(label, f, args.tasks, args.runs) for label, f in configs]
            all_results[target.alias] = results
            print_results(target, results, args.tasks)
        if all_results:
            print_targets(all_results, args.tasks, args.quick)
        print(f"\nload average at end {load_average()}")
        if args.profile or args.profile_only:
            for target in targets:
                bench = Bench(target, args, log_dir)
                for label, flags in configs:
                    bench.profile(label, flags, args.tasks)
    finally:
        clean_up(targets, log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
