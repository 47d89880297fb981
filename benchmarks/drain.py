"""Benchmark: the saturated drain of issue #13, and a worker's peak memory.

Run from the repository root with the dev virtualenv::

    .venv/bin/python benchmarks/drain.py [--database postgres|sqlite|both] [--tasks 100000]
        [--workers 1,4] [--runs 3] [--flags "--concurrency 500 --batch-size 500"] [--quick]

Each run: empty the task and run tables; insert ``--tasks`` one-off tasks for the no-op async
callback, all with the same ``run_at`` T0 a few seconds ahead (copies of one row the ORM made,
in one ``INSERT ... SELECT``; then ``ANALYZE`` on PostgreSQL: a backlog the planner knows);
start ``W`` real worker processes (``python -m django runtaskworker --max-tasks N/W
[flags]``), check they are all up and idle before T0, and wait for them to exit. At T0 every
task is due at once: the workers are saturated from the first claim to the last.

Measured per run: wall = T0 to the last worker's stop (its ``atexit`` stamp, after its last
result was written); tasks/s = tasks / wall; the workers' CPU (utime + stime, all threads, from
just before T0 to exit); the CPU of the workers' own PostgreSQL sessions (sampled from /proc)
and of the whole server (other clients count there too); the task table's updates, how many of
them were HOT, and deletes; each worker's peak resident memory (``VmHWM``, see ``PeakMemory``).

No duplicate: the callback records the id of the task it runs (``current_run``), each worker
writes them out, and the run fails unless there are exactly ``--tasks`` callback runs of
``--tasks`` distinct ids and no task is left.

The peak memory part runs one worker with the default flags on ``--memory-small`` (1,000) and
on ``--tasks`` due tasks, alternating, and compares the medians of their peaks.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings, throughput  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    DRAIN_TABLES,
    TABLE,
    WORKER_APP_NAME,
    BackendSampler,
    PostgresTarget,
    Target,
    WorkerProcess,
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
    truncate_drain_tables,
    verdict,
    wait_quiet,
)

PG_DATABASE = "taskshed_bench_drain"
TARGET_RATE = {"postgres": 30_000.0, "sqlite": 25_000.0}  # one worker, tasks/s (issue #13)
TARGET_CPU_US = 40.0  # worker + its sessions' server CPU per task, PostgreSQL
TARGET_MEMORY_MB = 10.0  # peak RSS with --tasks due within this of the peak with 1,000


@dataclass
class Config:
    """Worker flags, a number of workers, and the figures of its runs."""

    flags: list[str]
    workers: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        return median([run[key] for run in self.runs])

    def extreme(self, pick: Any, key: str, digits: int) -> str:
        return fmt(pick(run[key] for run in self.runs), digits)

    @property
    def name(self) -> str:
        return " ".join(self.flags) or "(default flags)"


class Drain:
    def __init__(self, target: Target, args: Any, log_dir: str) -> None:
        self.target = target
        self.postgres = target if isinstance(target, PostgresTarget) else None
        self.args = args
        self.log_dir = log_dir
        self.counter = 0

    def empty_tables(self) -> None:
        """The task and run tables emptied; on PostgreSQL truncated, so that each run starts
        from a table with no dead rows and no free space (as after a fresh bulk insert)."""
        from django.db import connections

        with connections[self.target.alias].cursor() as cursor:
            if self.postgres:
                truncate_drain_tables(cursor)
                if self.args.fillfactor:
                    cursor.execute(f"ALTER TABLE {TABLE} SET (fillfactor = {self.args.fillfactor})")
            else:
                for table in DRAIN_TABLES:
                    cursor.execute(f"DELETE FROM {table}")  # noqa: S608
                cursor.execute("VACUUM")
        connections[self.target.alias].close()

    def insert(self, count: int, t0: float) -> None:
        """``count`` copies of one task made by the ORM (every default, ``run_at`` T0), in one
        ``INSERT ... SELECT`` over a series of ids: seconds for 100,000 even on a busy machine."""
        from django.db import connections

        from django_taskshed.models import Task

        alias = self.target.alias
        template = Task(task_id="template", callback="noop", run_at=epoch_datetime(t0))
        Task.objects.using(alias).bulk_create([template])
        columns = ", ".join(f'"{f.column}"' for f in Task._meta.concrete_fields[1:])
        if self.postgres:
            series = "generate_series(1, %s) AS s(n)"
            task_id = "md5(s.n::text)"
        else:
            series = (
                "(WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < %s)"
                " SELECT n FROM r) AS s"
            )
            task_id = "lower(hex(randomblob(16)))"
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f'INSERT INTO {TABLE} ("task_id", {columns}) SELECT {task_id}, {columns}'  # noqa: S608
                f" FROM {TABLE}, {series} WHERE task_id = 'template'",
                [count],
            )
            cursor.execute(f"DELETE FROM {TABLE} WHERE task_id = 'template'")  # noqa: S608
            if self.postgres:
                cursor.execute(f"ANALYZE {TABLE}")
        connections[alias].close()

    def run(
        self, flags: list[str], workers: int, count: int, extra_env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One drain by ``workers`` processes; figures in seconds from T0 and CPU seconds.
        ``wrapper``: a command the workers run under (py-spy)."""
        self.counter += 1
        name = f"{self.target.alias}-{self.counter}"
        busy_before = wait_quiet(self.args.quiet_below, self.args.max_wait)
        self.empty_tables()
        t0 = time.time() + self.args.lead + count * 60e-6 + workers * 0.5
        self.insert(count, t0)
        if time.time() > t0 - 1.5 - workers * 0.5:
            raise RuntimeError("inserting took too long for --lead; raise --lead")
        pg = self.postgres
        database = self.target.django_settings(application_name=WORKER_APP_NAME if pg else None)
        env = bench_settings.environment(database, None, {"CHANNEL_LAYER": None})
        shares = [count // workers + (i < count % workers) for i in range(workers)]
        paths = [os.path.join(self.log_dir, f"{name}-{i}") for i in range(workers)]
        procs: list[WorkerProcess] = []
        try:
            for i, (share, path) in enumerate(zip(shares, paths, strict=True)):
                worker_env = {
                    **env,
                    bench_callbacks.STATS_ENV: f"{path}.stats.json",
                    bench_callbacks.IDS_ENV: f"{path}.ids",
                    **(extra_env or {}),
                }
                worker_flags = [*flags, "--max-tasks", str(share)]
                procs.append(
                    WorkerProcess(
                        worker_env, worker_flags, self.log_dir, f"{name}-{i}", wrapper or []
                    )
                )
            for proc in procs:
                proc.wait_ready()
            ready_margin = t0 - max(proc.banner_at or t0 for proc in procs)
            time.sleep(max(0.0, t0 - 0.25 - time.time()))
            sessions = BackendSampler(pg.backend_pids(WORKER_APP_NAME)) if pg else None
            memory = PeakMemory([proc.pid for proc in procs])
            activity_before = pg.activity() if pg else {}
            server_before = postgres_server_cpu() if pg else None
            cpu_before = [process_cpu(proc.pid) or 0.0 for proc in procs]
            machine_before, own_before = machine_cpu(), own_cpu()
            ended = [proc.wait4(timeout=max(300.0, count / 100)) for proc in procs]
            peak_kb = memory.stop()
            machine_used, own_used = machine_cpu() - machine_before, own_cpu() - own_before
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
        figures: dict[str, Any] = {"db_sessions_cpu": sessions.stop() if sessions else None}
        figures["db_server_cpu"] = None
        if server_before is not None:
            time.sleep(0.2)  # let the postmaster reap the workers' backends
            figures["db_server_cpu"] = postgres_server_cpu() - server_before
            time.sleep(0.7)  # statistics of exited backends reach the shared counters
            figures |= {key: value - activity_before[key] for key, value in pg.activity().items()}
        for proc, (exit_code, _, _) in zip(procs, ended, strict=True):
            if exit_code != 0:
                raise RuntimeError(f"worker exited with {exit_code}:\n{proc.stderr_tail()}")
        stats = [_read_json(f"{path}.stats.json") for path in paths]
        ids = [_read_ids(f"{path}.ids") for path in paths]
        worker_cpu = sum(u.ru_utime + u.ru_stime for _, u, _ in ended) - sum(cpu_before)
        sessions_cpu = figures["db_sessions_cpu"]
        used = worker_cpu + own_used + (figures["db_server_cpu"] or 0.0)
        wall = max(s["exit"] for s in stats) - t0
        return figures | {
            "wall": wall,
            "rate": count / wall,
            "worker_cpu": worker_cpu,
            "worker_us": worker_cpu / count * 1e6,
            "sessions_us": None if sessions_cpu is None else sessions_cpu / count * 1e6,
            "total_us": (worker_cpu + (sessions_cpu or 0.0)) / count * 1e6,
            "calls": sum(s["calls"] for s in stats),
            "distinct": len(set().union(*ids)),
            "recorded": sum(len(i) for i in ids),
            "left": count_tasks(self.target.alias),
            "peak_rss_mb": peak_kb / 1024,
            "ready_margin": ready_margin,
            "busy_before": busy_before,
            "others": max(machine_used - used, 0.0) / (max(e for _, _, e in ended) - t0 + 0.25),
        }

    def measure(self, config: Config, count: int, what: str) -> dict[str, Any]:
        run = self.run(config.flags, config.workers, count)
        config.runs.append(run)
        progress(
            f"{self.target.title} {config.name}, {config.workers} worker(s): {what}:"
            f" {run['rate']:,.0f} tasks/s, wall {run['wall']:.3f} s, {run['total_us']:.1f} µs CPU"
            f"/task, peak RSS {run['peak_rss_mb']:.1f} MB, load {load_average()}"
        )
        if not run["calls"] == run["recorded"] == run["distinct"] == count or run["left"]:
            raise RuntimeError(
                f"the drain did not run each task once: {run['calls']} callback runs of"
                f" {run['distinct']} distinct tasks (of {count}), {run['left']} tasks left"
            )
        return run

    def profile(self, flags: list[str], count: int) -> None:
        """One drain by one worker under py-spy: throughput.py's profile and SQL tables."""
        py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(py_spy):
            print("\n(--profile: py-spy not found; pip install py-spy)")
            return
        out = os.path.join(self.log_dir, f"profile-{self.target.alias}-{self.counter}.txt")
        sql_path = os.path.join(self.log_dir, f"sql-{self.target.alias}-{self.counter}.json")
        wrapper = [py_spy, "record", "--nonblocking", "--threads", "--format", "raw"]
        wrapper += ["--rate", str(throughput.PROFILE_RATE), "--output", out, "--"]
        run = self.run(flags, 1, count, {bench_callbacks.SQL_ENV: sql_path}, wrapper)
        what = f"{self.target.title}, saturated drain, one worker"
        throughput.print_profile(what, flags, run["rate"], out, count)
        throughput.print_sql(sql_path, count)


class PeakMemory:
    """The largest resident memory high-water mark (``VmHWM`` of /proc/<pid>/status, in kB)
    of some processes, sampled until they exit: the last sample counts, as the mark only grows.

    Not ``ru_maxrss`` from ``wait4``: Linux carries the RSS the process had before ``exec``
    into it, so every worker would show at least this benchmark's own (~80 MB).
    """

    def __init__(self, pids: list[int], every: float = 0.02) -> None:
        self.peaks = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            for pid in self.peaks:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[pid] = max(self.peaks[pid], int(line.split()[1]))

    def stop(self) -> int:
        """The largest peak, kB."""
        self._stop.set()
        self._thread.join()
        return max(self.peaks.values())


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as handle:
        result: dict[str, Any] = json.load(handle)
    return result


def _read_ids(path: str) -> list[str]:
    try:
        with open(path) as handle:
            return handle.read().split()
    except FileNotFoundError:
        return []


# --- report ----------------------------------------------------------------------------------


def print_results(target: Target, configs: list[Config], count: int) -> None:
    pg = isinstance(target, PostgresTarget)
    print_section(target, f": saturated drain of {count:,} due no-op tasks")
    header = [
        "worker flags", "workers", "runs", "wall s", "tasks/s", "tasks/s min-max",
        "worker µs/task", "sessions µs/task", "worker+sessions µs/task", "server CPU s",
        "peak RSS MB", "others (cores)",
    ]  # fmt: skip
    rows = [
        [c.name, str(c.workers), str(len(c.runs)), fmt(c.median("wall"), 3),
         f"{count / c.median('wall'):,.0f}",
         f"{c.extreme(min, 'rate', 0)}-{c.extreme(max, 'rate', 0)}",
         fmt(c.median("worker_us"), 1), fmt(c.median("sessions_us"), 1) if pg else "in worker",
         fmt(c.median("total_us"), 1), fmt(c.median("db_server_cpu"), 2) if pg else "in worker",
         fmt(c.median("peak_rss_mb"), 1), fmt(c.median("others"), 2)]
        for c in configs
    ]  # fmt: skip
    print_table(header, rows)
    print(
        "   every run: callback runs = distinct task ids = tasks, none left (checked);"
        " readiness before T0 (min): "
        + ", ".join(f"{c.extreme(min, 'ready_margin', 2)} s" for c in configs)
    )
    if not pg:
        return
    print("-- server statistics of the task table, medians (HOT: heap-only tuple updates)")
    header = [
        "worker flags", "workers", "transactions", "tasks/transaction", "updates", "HOT updates",
        "HOT %", "deletes", "due index scans", "entries read/scan",
    ]  # fmt: skip
    rows = []
    for c in configs:
        commits, updates, hot = (c.median(k) for k in ("xact_commit", "n_tup_upd", "n_tup_hot_upd"))
        rows.append(
            [c.name, str(c.workers), f"{commits:,.0f}",
             f"{count / commits:,.1f}" if commits else "n/a", f"{updates:,.0f}", f"{hot:,.0f}",
             f"{100 * hot / updates:.1f}" if updates else "n/a", fmt(c.median("n_tup_del"), 0),
             fmt(c.median("due_idx_scan"), 0),
             _per(c.median("due_idx_tup_read"), c.median("due_idx_scan"))]
        )  # fmt: skip
    print_table(header, rows)


def _per(total: float | None, count: float | None) -> str:
    return f"{total / count:,.0f}" if total is not None and count else "n/a"


def print_targets(results: list[tuple[Target, list[Config]]], count: int) -> None:
    print(
        f"\nTargets (issue #13, saturated drain of {count:,} due tasks, medians): one worker"
        f" >= {TARGET_RATE['postgres']:,.0f} tasks/s on PostgreSQL, >="
        f" {TARGET_RATE['sqlite']:,.0f} on SQLite; <= {TARGET_CPU_US:.0f} µs of worker + server"
        " (its sessions) CPU per task on PostgreSQL; more workers at least the one-worker rate"
    )
    for target, configs in results:
        ones = {c.name: count / c.median("wall") for c in configs if c.workers == 1}
        for c in configs:
            rate = count / c.median("wall")
            line = f"  {target.title:<10} {c.name:<36} {c.workers} worker(s) {rate:>8,.0f} tasks/s"
            if c.workers == 1:
                limit = TARGET_RATE[target.alias]
                line += f" >= {limit:,.0f}: {verdict(rate >= limit)}"
                if isinstance(target, PostgresTarget):
                    cpu = c.median("total_us")
                    line += f"   {fmt(cpu, 1)} µs/task <= {TARGET_CPU_US:.0f}:"
                    line += f" {verdict(cpu is not None and cpu <= TARGET_CPU_US)}"
            elif c.name in ones:
                share = rate / ones[c.name]
                line += f" = {share:.2f}x one worker's, >= 1x: {verdict(share >= 1.0)}"
            print(line + "; no duplicate: PASS")


def print_memory(target: Target, small: Config, large: Config, counts: tuple[int, int]) -> None:
    low, high = small.median("peak_rss_mb"), large.median("peak_rss_mb")
    assert low is not None and high is not None  # noqa: S101
    lows = ", ".join(f"{run['peak_rss_mb']:.1f}" for run in small.runs)
    highs = ", ".join(f"{run['peak_rss_mb']:.1f}" for run in large.runs)
    ok = verdict(high - low <= TARGET_MEMORY_MB)
    print(
        f"\nPeak resident memory of one worker (default flags), {target.title}: {counts[0]:,} due"
        f" {low:.1f} MB ({lows}); {counts[1]:,} due {high:.1f} MB ({highs}); difference"
        f" {high - low:+.1f} MB <= {TARGET_MEMORY_MB:.0f} MB: {ok}"
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Any:
    parser = make_parser(__doc__, "both", "10,000 tasks, 1 run: a smoke run")
    parser.add_argument("--pg-database", default=PG_DATABASE, help=f"({PG_DATABASE})")
    parser.add_argument("--tasks", type=int, help="due tasks per drain (100,000)")
    parser.add_argument("--runs", type=int, help="runs per median (3)")
    parser.add_argument("--workers", default="1,4", help="worker counts, comma-separated (1,4)")
    what = "a worker configuration (repeatable); default: the default flags"
    parser.add_argument("--flags", action="append", help=what)
    what = "s from planning to T0 (3), plus 60 µs a task and 0.5 s a worker"
    parser.add_argument("--lead", type=float, default=3.0, help=what)
    what = "PostgreSQL: the task table's fillfactor for the runs (default: the migrations')"
    parser.add_argument("--fillfactor", type=int, help=what)
    what = "tasks of the small memory run (1,000); 0 skips the memory part"
    parser.add_argument("--memory-small", type=int, default=1000, help=what)
    what = "after the measurements, one more drain per configuration by one worker under py-spy"
    parser.add_argument("--profile", action="store_true", help=what)
    parser.add_argument("--profile-only", action="store_true", help="only the py-spy drains")
    args = parser.parse_args(argv)
    fill_defaults(args, tasks=(100_000, 10_000), runs=(3, 1))
    args.worker_counts = [int(n) for n in args.workers.split(",")]
    if args.tasks < 1 or args.runs < 1 or min(args.worker_counts) < 1:
        parser.error("--tasks, --runs and --workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flag_sets = [shlex.split(f) for f in args.flags or [""]]
    with session("saturated drain", args, args.pg_database, None, {"CHANNEL_LAYER": None}) as (
        targets,
        log_dir,
    ):
        print(
            f"Each run: {args.tasks:,} one-off tasks (callback 'noop', async, kwargs {{}}), all"
            " due at T0, copies of one ORM-made row in one INSERT ... SELECT (then ANALYZE on"
            " PostgreSQL);\nW `python -m django runtaskworker --max-tasks N/W [flags]` processes"
            " (no channel layer) start and idle until T0. wall = T0 -> the last worker stopped"
            " (atexit stamp);\nCPU from T0-0.25 s to exit: workers' utime+stime, their PostgreSQL"
            " sessions' (from /proc), the whole server's (other clients too). Medians of"
            f" {args.runs} run(s), configurations alternating;\nbefore each run the script waits"
            f" (up to {args.max_wait:g} s) until the machine uses < {args.quiet_below:g} cores."
        )
        results = []
        for target in [] if args.profile_only else targets:
            drain = Drain(target, args, log_dir)
            drain.run(flag_sets[0], 1, min(args.tasks, 2000))  # warm-up
            configs = [Config(f, w) for f in flag_sets for w in args.worker_counts]
            memory = [Config([], 1), Config([], 1)] if args.memory_small else []
            for number in range(1, args.runs + 1):
                for config in configs:
                    drain.measure(config, args.tasks, f"run {number}/{args.runs}")
                if memory:
                    drain.measure(memory[0], args.memory_small, f"memory {number}/{args.runs}")
                    if flag_sets[0] or 1 not in args.worker_counts:
                        drain.measure(memory[1], args.tasks, f"memory {number}/{args.runs}")
            results.append((target, configs))
            print_results(target, configs, args.tasks)
            if memory:
                large = memory[1] if memory[1].runs else configs[args.worker_counts.index(1)]
                print_memory(target, memory[0], large, (args.memory_small, args.tasks))
        if results:
            print_targets(results, args.tasks)
        print_end()
        for target in targets if args.profile or args.profile_only else []:
            for flags in flag_sets:
                Drain(target, args, log_dir).profile(flags, args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
