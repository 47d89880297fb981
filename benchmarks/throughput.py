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

import json
import os
import re
import shlex
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    TABLE,
    WORKER_APP_NAME,
    BackendSampler,
    PostgresTarget,
    Target,
    WorkerProcess,
    clear_tasks,
    count_tasks,
    epoch_datetime,
    fill_defaults,
    fmt,
    load_average,
    machine_cpu,
    make_parser,
    median,
    own_cpu,
    postgres_server_cpu,
    print_end,
    print_section,
    print_table,
    process_cpu,
    progress,
    session,
    verdict,
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
# --schedules: recurring tasks that each run once in the drain (next occurrence a year on).
SCHEDULES = {
    "interval": {"run_type": "recurring", "interval": timedelta(days=365)},
    "cron": {"run_type": "cron", "cron": "0 0 1 1 *", "timezone": "UTC"},
}


@dataclass
class Config:
    """A worker configuration and its runs: each a dict of figures (see ``Bench.run``)."""

    label: str
    flags: list[str]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        return median([run[key] for run in self.runs])

    def extreme(self, pick: Any, key: str, digits: int) -> str:
        return fmt(pick(run[key] for run in self.runs), digits)

    @property
    def name(self) -> str:
        return " ".join(self.flags) or "(none)"


class Bench:
    def __init__(self, target: Target, args: Any, log_dir: str) -> None:
        self.target = target
        self.postgres = target if isinstance(target, PostgresTarget) else None
        self.args = args
        self.log_dir = log_dir
        self.counter = 0

    def insert(self, count: int, t0: float, spread: float, kind: str = "once") -> None:
        from django.db import connections

        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.models import Task
        from django_taskshed.schedulers import SyncScheduler

        alias = self.target.alias
        clear_tasks(alias)
        schedule = SCHEDULES.get(kind, {})
        tasks = [
            Task(
                callback="noop", run_at=epoch_datetime(t0 + spread * i / count), kwargs={},
                **schedule,
            )
            for i in range(count)
        ]  # fmt: skip
        SyncScheduler(DjangoDataStore(using=alias)).add_tasks(tasks)
        if self.args.analyze and self.postgres:
            with connections[alias].cursor() as cursor:
                cursor.execute(f"ANALYZE {TABLE}")
        connections[alias].close()

    def run(
        self, flags: list[str], count: int, wrapper: list[str] | None = None,
        extra_env: dict[str, str] | None = None, kind: str = "once",
        taskshed: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One run; its figures in seconds from T0, CPU seconds, and the server's statistics."""
        self.counter += 1
        name = f"{self.target.alias}-{self.counter}"
        stats_path = os.path.join(self.log_dir, f"{name}.stats.json")
        busy_before = wait_quiet(self.args.quiet_below, self.args.max_wait)
        t0 = time.time() + self.args.lead
        self.insert(count, t0, self.args.spread, kind)
        if time.time() > t0 - 2.0:
            raise RuntimeError("inserting took too long for --lead; raise --lead")
        pg = self.postgres
        database = self.target.django_settings(application_name=WORKER_APP_NAME if pg else None)
        env = bench_settings.environment(
            database, None, {"CHANNEL_LAYER": None, **(taskshed or {})}
        )
        env |= {bench_callbacks.STATS_ENV: stats_path, **(extra_env or {})}
        flags = [*flags, "--max-tasks", str(count)]
        worker = WorkerProcess(env, flags, self.log_dir, name, wrapper=wrapper or [])
        try:
            worker.wait_ready()
            ready_margin = t0 - worker.banner_at
            time.sleep(max(0.0, t0 - 0.25 - time.time()))
            sessions = BackendSampler(pg.backend_pids(WORKER_APP_NAME)) if pg else None
            activity_before = pg.activity() if pg else {}
            server_before = postgres_server_cpu() if pg else None
            cpu_before = None if wrapper else process_cpu(worker.pid)
            machine_before, own_before = machine_cpu(), own_cpu()
            exit_code, usage, exited = worker.wait4(timeout=max(300.0, count / 100))
            machine_used, own_used = (
                machine_cpu() - machine_before,
                own_cpu() - own_before,
            )
        except BaseException:
            worker.kill()
            raise
        figures = {"db_sessions_cpu": sessions.stop() if sessions else None, "db_server_cpu": None}
        if server_before is not None:
            time.sleep(0.2)  # let the postmaster reap the worker's backends
            figures["db_server_cpu"] = postgres_server_cpu() - server_before
            time.sleep(0.5)  # statistics of exited backends reach the shared counters
            figures |= {key: value - activity_before[key] for key, value in pg.activity().items()}
        if exit_code != 0:
            raise RuntimeError(f"worker exited with {exit_code}:\n{worker.stderr_tail()}")
        with open(stats_path) as handle:
            stats = json.load(handle)
        total_cpu = usage.ru_utime + usage.ru_stime
        worker_cpu = others = None
        if cpu_before is not None:
            worker_cpu = total_cpu - cpu_before
            used = worker_cpu + own_used + (figures["db_server_cpu"] or 0.0)
            others = max(machine_used - used, 0.0) / (exited - (t0 - 0.25))
        wall = stats["exit"] - t0  # T0 -> worker stopped (atexit stamp)
        return figures | {
            "wall": wall,
            "rate": count / wall,
            "to_last_call": (stats["last_call"] or t0) - t0,  # T0 -> last callback started
            "to_exit": exited - t0,  # T0 -> process reaped
            "worker_cpu": worker_cpu,  # T0 - 0.25 s -> exit
            "cpu_per_task_us": None if worker_cpu is None else worker_cpu / count * 1e6,
            "startup_cpu": cpu_before,  # process start -> T0 - 0.25 s
            "ready_margin": ready_margin,  # T0 - banner time; positive: idle before T0
            "calls": stats["calls"],
            # still due after the run (one-off tasks are deleted, recurring ones move on)
            "left": count_tasks(self.target.alias, epoch_datetime(t0 + self.args.spread)),
            "busy_before": busy_before,  # cores busy on the machine just before the run
            "others": others,  # cores used during the run by everything else on the machine
        }

    def measure(self, label: str, flags: list[str], count: int, runs: int) -> Config:
        config = Config(label, flags)
        for number in range(1, runs + 1):
            self.measure_one(config, count, f"run {number}/{runs}")
        return config

    def measure_one(
        self, config: Config, count: int, what: str, kind: str = "once",
        taskshed: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        run = self.run(config.flags, count, kind=kind, taskshed=taskshed)
        config.runs.append(run)
        progress(
            f"{self.target.title} {config.label}: {what}: {run['rate']:,.0f} tasks/s,"
            f" wall {run['wall']:.3f} s, worker CPU {fmt(run['worker_cpu'], 2)} s,"
            f" load {load_average()}"
        )
        if run["calls"] != count or run["left"] != 0:
            raise RuntimeError(f"run lost work: {run['calls']} calls, {run['left']} tasks left")

    def measure_pair(self, count: int, runs: int, variants: list[tuple[str, dict]]) -> list[Config]:
        """Two variants of a drain (``measure_one`` options), default flags, runs alternating so
        that the machine's noise falls on both; the first is the baseline."""
        configs = [Config(label, []) for label, _ in variants]
        self.run([], min(count, 500))  # warm-up: caches, first connections
        for number in range(1, runs + 1):
            for (_, options), config in zip(variants, configs, strict=True):
                self.measure_one(config, count, f"run {number}/{runs}", **options)
        return configs

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
        print_profile(f"{self.target.title}, {label}", flags, run["rate"], out, count)
        print_sql(sql_path, count)


# --- profile ---------------------------------------------------------------------------------

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


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; the line is dropped."""
    if " (" not in frame:
        return frame
    func, where = frame.rsplit(" (", 1)
    parts = where.rstrip(")").rsplit(":", 1)[0].replace("\\", "/").split("/")
    for anchor in ("site-packages", "django_taskshed", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{func} ({'/'.join(parts[-3:])})"


def area_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for label, needle in AREAS:
            if needle in frame:
                return label
    return "other"


def print_profile(what: str, flags: list[str], rate: float, path: str, count: int) -> None:
    threads, areas, inclusive, leaf = Counter(), Counter(), Counter(), Counter()
    with open(path) as handle:
        for line in handle:
            stack_text, _, number = line.rstrip("\n").rpartition(" ")
            samples, frames = int(number), stack_text.split(";")
            thread = ""
            if frames[0].startswith("thread"):
                thread, frames = frames[0], frames[1:]
            threads[thread] += samples
            areas[area_of(frames)] += samples
            for name in {frame_name(f) for f in frames}:
                inclusive[name] += samples
            leaf[frame_name(frames[-1]) if frames else "(no Python frame)"] += samples
    total = sum(threads.values())
    if not total:
        print(f"\n(profile of {what}: no samples)")
        return
    per_task = 1e6 / PROFILE_RATE / count  # µs of sampled (on-CPU) time per sample, per task
    print(
        f"\n== Profile: {what} ({' '.join(flags) or 'no flags'}), {count:,} tasks,"
        f" py-spy --nonblocking at {PROFILE_RATE} Hz, idle threads not sampled ==\n"
        f"   under py-spy: {rate:,.0f} tasks/s (not comparable with the table);"
        f" {total:,} samples = {total / PROFILE_RATE:.2f} s on CPU, whole process life"
        " (start-up included)"
    )
    for title, counter, limit in (
        ("by thread", threads, 10),
        ("by area (the innermost frame that belongs to one)", areas, 12),
        ("inclusive (function and its callees), top 30", inclusive, 30),
        ("self (innermost frame), top 20", leaf, 20),
    ):
        print(f"-- {title}")
        rows = [
            [name[:110], f"{n:,}", f"{100 * n / total:.1f}", f"{n * per_task:.1f}"]
            for name, n in counter.most_common(limit)
        ]
        print_table(["", "samples", "%", "µs/task"], rows)


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
    rows = [
        [sql_label(shape), f"{n:,}", f"{seconds * 1000:,.0f}", f"{seconds / n * 1e6:,.0f}",
         f"{seconds / count * 1e6:.1f}", f"{rows / n:,.1f}"]
        for shape, (n, seconds, rows) in sorted(totals.items(), key=lambda i: -i[1][1])[:15]
    ]  # fmt: skip
    calls = sum(n for n, _, _ in totals.values())
    seconds = sum(s for _, s, _ in totals.values())
    rows.append(
        ["(all)", f"{calls:,}", f"{seconds * 1000:,.0f}", "", f"{seconds / count * 1e6:.1f}", ""]
    )
    print_table(["statement", "calls", "total ms", "µs/call", "µs/task", "rows/call"], rows)


# --- report ----------------------------------------------------------------------------------


def print_results(target: Target, configs: list[Config], count: int) -> None:
    print_section(target, f": {count:,} no-op async tasks, one worker process")
    pg = isinstance(target, PostgresTarget)
    header = [
        "worker flags", "runs", "wall s", "tasks/s", "worker CPU s", "µs CPU/task",
        "DB CPU s (worker sessions)", "DB CPU s (whole server)", "tasks/s min-max",
    ]  # fmt: skip
    rows = [
        [c.name, str(len(c.runs)), fmt(c.median("wall"), 3), f"{count / c.median('wall'):,.0f}",
         fmt(c.median("worker_cpu"), 2), fmt(c.median("cpu_per_task_us"), 1),
         fmt(c.median("db_sessions_cpu"), 2) if pg else "in worker",
         fmt(c.median("db_server_cpu"), 2) if pg else "in worker",
         f"{c.extreme(min, 'rate', 0)}-{c.extreme(max, 'rate', 0)}"]
        for c in configs
    ]  # fmt: skip
    print_table(header, rows)
    print("-- medians of the other clocks (s after T0), start-up and readiness")
    header = [
        "worker flags", "last callback start", "worker stopped", "process reaped",
        "start-up CPU s", "up before T0 s", "busy before (cores)", "others during (cores)",
    ]  # fmt: skip
    rows = [
        [c.name, fmt(c.median("to_last_call"), 3), fmt(c.median("wall"), 3),
         fmt(c.median("to_exit"), 3), fmt(c.median("startup_cpu"), 2),
         c.extreme(min, "ready_margin", 2), c.extreme(max, "busy_before", 2) + " max",
         fmt(c.median("others"), 2)]
        for c in configs
    ]  # fmt: skip
    print_table(header, rows)
    if not pg:
        return
    print(
        "-- server statistics, medians (transactions include the heartbeat's; due index ="
        " taskshed_due_idx; reads = index entries visited, live or dead)"
    )
    header = [
        "worker flags", "transactions", "tasks/transaction", "due index scans",
        "due index entries read", "entries read/scan", "seq scans", "seq rows read",
    ]  # fmt: skip
    rows = []
    for c in configs:
        keys = ("xact_commit", "due_idx_scan", "due_idx_tup_read")
        commits, scans, reads = (c.median(key) for key in keys)
        rows.append(
            [c.name, f"{commits:,.0f}", f"{count / commits:,.1f}" if commits else "n/a",
             f"{scans:,.0f}", f"{reads:,.0f}", f"{reads / scans:,.0f}" if scans else "n/a",
             fmt(c.median("seq_scan"), 0), fmt(c.median("seq_tup_read"), 0)]
        )  # fmt: skip
    print_table(header, rows)


def print_targets(results: list[tuple[Target, list[Config]]], count: int, quick: bool) -> None:
    print(
        "\nTargets (issue #3, one worker process, from the medians above): tasks/s >= 5,000 on"
        f" PostgreSQL, >= 3,000 on SQLite; worker CPU <= {TARGET_CPU_US:.0f} µs per task"
    )
    for target, configs in results:
        for c in configs:
            rate, cpu = count / c.median("wall"), c.median("cpu_per_task_us")
            limit = TARGET_RATE[target.alias]
            cpu_ok = cpu is not None and cpu <= TARGET_CPU_US
            flags = " ".join(c.flags) or "default flags"
            print(
                f"  {target.title:<10} {flags:<34} {rate:>8,.0f} tasks/s >= {limit:,.0f}:"
                f" {verdict(rate >= limit)}   {fmt(cpu, 1):>6} µs/task <="
                f" {TARGET_CPU_US:.0f}: {verdict(cpu_ok)}"
            )
    if quick:
        print("  (--quick: not the issue's size; indicative only)")


# --flag: (the heading of its target, the two variants (baseline first), the least share)
COMPARISONS: dict[str, tuple[str, list[tuple[str, dict]], float]] = {
    "schedules": (
        "issue #9, --schedules: recurring cron tasks drain at >= {share} of the tasks/s of"
        " interval tasks",
        [("recurring: interval", {"kind": "interval"}), ("recurring: cron", {"kind": "cron"})],
        0.85,
    ),
    "history": (
        "issue #10, --history: one worker with the run history on drains at >= {share} of the"
        " tasks/s with it off",
        [("history off", {"taskshed": {"HISTORY": False}}), ("history on", {"taskshed": {}})],
        0.85,
    ),
}


def print_share(name: str, results: list[tuple[Target, list[Config]]], count: int) -> None:
    """The second variant's tasks/s median as a share of the first's, against the target."""
    heading, variants, least = COMPARISONS[name]
    print(f"\nTarget ({heading.format(share=f'{least:.0%}')}; same run, default flags)")
    for target, (base, other) in results:
        base_rate, other_rate = count / base.median("wall"), count / other.median("wall")
        share = other_rate / base_rate
        print(
            f"  {target.title:<10} {variants[0][0]} {base_rate:>8,.0f} tasks/s, {variants[1][0]}"
            f" {other_rate:>8,.0f} tasks/s: {share:.0%} >= {least:.0%}: {verdict(share >= least)}"
        )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Any:
    parser = make_parser(__doc__, "both", "2,000 tasks over 0.1 s, 1 run: a smoke run")
    parser.add_argument("--tasks", type=int, help="tasks per run (20,000)")
    parser.add_argument("--runs", type=int, help="runs per median (3)")
    what = "another worker configuration to measure, e.g. '--concurrency 500 --batch-size 500'"
    parser.add_argument("--flags", action="append", default=[], help=what)
    what = "measure only the --flags configurations"
    parser.add_argument("--only-flags", action="store_true", help=what)
    parser.add_argument("--lead", type=float, help="s from planning to T0 (5)")
    parser.add_argument("--spread", type=float, help="run_at spread, s (1; --quick 0.1)")
    what = "PostgreSQL: ANALYZE the task table after inserting (fresh planner statistics)"
    parser.add_argument("--analyze", action="store_true", help=what)
    what = "one more run per configuration under py-spy"
    parser.add_argument("--profile", action="store_true", help=what)
    what = "only the py-spy runs, no measurement"
    parser.add_argument("--profile-only", action="store_true", help=what)
    what = (
        "also drain recurring tasks, interval and cron (each due once), default flags, runs"
        " alternating; prints cron's tasks/s as a share of interval's"
    )
    parser.add_argument("--schedules", action="store_true", help=what)
    what = "also drain one-off tasks with the run history on and off (runs alternating)"
    parser.add_argument("--history", action="store_true", help=what)
    args = parser.parse_args(argv)
    fill_defaults(args, tasks=(20_000, 2000), runs=(3, 1), lead=(5.0, 3.0), spread=(1.0, 0.1))
    if args.tasks < 1 or args.runs < 1:
        parser.error("--tasks and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = [] if args.only_flags else [(label, list(f)) for label, f in DEFAULT_CONFIGS]
    configs += [(f"--flags {i + 1}", shlex.split(f)) for i, f in enumerate(args.flags)]
    no_layer = {"CHANNEL_LAYER": None}
    with session("worker throughput", args, PG_DATABASE, None, no_layer) as (
        targets,
        log_dir,
    ):
        print(
            f"Each run: {args.tasks:,} one-off tasks (callback 'noop', async, kwargs {{}}), run_at"
            f" spread evenly over {args.spread:g} s from T0, inserted with one"
            " SyncScheduler.add_tasks call;\nthen one `python -m django runtaskworker --max-tasks"
            " N [flags]` process (settings benchmarks.bench_settings, no channel layer) starts and"
            " idles until T0.\nwall = T0 -> worker stopped (atexit stamp, after the last result was"
            " written); tasks/s = tasks / wall; worker CPU = its utime+stime\nfrom T0-0.25 s to"
            " exit (start-up excluded); DB CPU (PostgreSQL) over the same span: the worker's"
            " sessions, and all postgres processes\n(this includes other clients of the server, if"
            f" any). Medians of {args.runs} run(s) per configuration. Before each run the script"
            f" waits (up to {args.max_wait:g} s) until\nthe machine uses < {args.quiet_below:g}"
            " cores for 2 s; 'others during' = machine CPU during the run minus the worker, the"
            " database server and this script."
        )
        if args.analyze:
            print(
                "--analyze: ANALYZE of the task table after each insert, before the worker starts."
            )
        results = []
        for target in [] if args.profile_only or not configs else targets:
            bench = Bench(target, args, log_dir)
            bench.run(configs[0][1], min(args.tasks, 500))  # warm-up: caches, first connections
            results.append((target, [bench.measure(*c, args.tasks, args.runs) for c in configs]))
            print_results(target, results[-1][1], args.tasks)
        if results:
            print_targets(results, args.tasks, args.quick)
        for name in [n for n in COMPARISONS if getattr(args, n)] if not args.profile_only else []:
            pairs = []
            for target in targets:
                bench = Bench(target, args, log_dir)
                pairs.append(
                    (target, bench.measure_pair(args.tasks, args.runs, COMPARISONS[name][1]))
                )
                print_results(target, pairs[-1][1], args.tasks)
            print_share(name, pairs, args.tasks)
        print_end()
        for target in targets if args.profile or args.profile_only else []:
            bench = Bench(target, args, log_dir)
            for label, flags in configs:
                bench.profile(label, flags, args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
