"""Benchmark: how much ``manage.py prunetaskruns`` of 1,000,000 old runs stalls a worker's claims.

Run from the repository root with the dev virtualenv::

    .venv/bin/python benchmarks/prune.py [--rows 1000000] [--baseline 30] [--rate 200] [--quick]

PostgreSQL only. The run history table is filled with ``--rows`` runs that started 60 days
ago and later (one ``INSERT ... SELECT generate_series``), then vacuumed and analyzed; the
plan of the prune's batch SELECT is printed (``EXPLAIN (ANALYZE, BUFFERS)``). Then an
``EventDrivenWorker`` in this process drains a steady stream of no-op tasks (``--rate`` a
second, added two seconds ahead), and the time of every ``claim_due_tasks`` call is recorded.
After a warm-up, ``--baseline`` seconds without pruning, then ``python -m django
prunetaskruns --older-than 30 days`` (what ``manage.py`` runs) in a process of its own; the
second phase lasts as long as it does. Reported: claim time p50/p99/max in both phases, the
p99 difference against the issue's 100 ms, and the prune's duration and rows/s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    REPO_ROOT,
    RUN_TABLE,
    PostgresTarget,
    epoch_datetime,
    fill_defaults,
    fmt,
    machine_cpu,
    make_parser,
    percentiles,
    print_end,
    print_section,
    print_table,
    progress,
    session,
    verdict,
    wait_quiet,
)

PG_DATABASE = "taskshed_bench_prune"
TARGET_P99_STALL_MS = 100.0  # issue #10: pruning adds at most this to the claims' p99
ROWS_AGE_DAYS = 60  # the filled runs started this long ago, one second apart, and later
KEEP_AGE_DAYS = 5  # the recent runs (--keep), which the prune leaves, started this long ago
PRUNE_OLDER_THAN = timedelta(days=30)
# The worker's own retention: longer than the rows' age, so its heartbeat prunes nothing.
WORKER_TASKSHED = {"CHANNEL_LAYER": None, "HISTORY_RETENTION": timedelta(days=365)}
OLD, NONE = f"older than {PRUNE_OLDER_THAN.days} days", f"older than {ROWS_AGE_DAYS + 1} days"
PLANS_BEFORE = {
    f"{OLD} (the old ones: prunetaskruns' first batch)": PRUNE_OLDER_THAN,
    f"{NONE} (none: a heartbeat with nothing to prune)": timedelta(days=ROWS_AGE_DAYS + 1),
}
PLANS_AFTER = {f"{OLD} (none left: its last batch, or the next heartbeat)": PRUNE_OLDER_THAN}
WARM_UP = 3.0  # s of claims before the baseline starts, not counted
FEED_LEAD = 2.0  # s between adding a second's worth of tasks and their run_at

FILL_SQL = f"""
INSERT INTO {RUN_TABLE} (task_id, callback, group_id, scheduled_for, started_at, finished_at,
    outcome, attempt, worker_id, error, traceback, return_value, return_value_omitted, missed,
    missed_from, missed_until)
SELECT %s || i, 'noop', NULL, t, t, t + interval '5 milliseconds', 'succeeded', 1,
    'bench', '', '', NULL, false, 0, NULL, NULL
FROM (SELECT i, now() - %s * interval '1 day' + i * interval '1 second' AS t
      FROM generate_series(1, %s) AS i) AS runs
"""  # noqa: S608 (constants only)


def fill_runs(target: PostgresTarget, rows: int, keep: int) -> float:
    """Replace the run history with ``rows`` old runs and ``keep`` recent ones (started
    ``KEEP_AGE_DAYS`` ago and later, one a second); vacuumed and analyzed. Seconds taken."""
    started = time.perf_counter()
    with target.connect() as conn:
        conn.execute(f"TRUNCATE {RUN_TABLE}")
        conn.execute(FILL_SQL, ["old-", ROWS_AGE_DAYS, rows])
        conn.execute(FILL_SQL, ["recent-", KEEP_AGE_DAYS, keep])
        conn.execute(f"VACUUM (ANALYZE) {RUN_TABLE}")
    return time.perf_counter() - started


def print_plans(alias: str, when: str, cutoffs: dict[str, timedelta]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the prune's batch SELECT, for runs older than each age."""
    from django.db import connections
    from django.utils import timezone

    from django_taskshed.datastores.runs import prune_batch

    try:
        for label, age in cutoffs.items():
            plan = prune_batch(alias, timezone.now() - age).explain(analyze=True, buffers=True)
            print(f"-- plan of the prune's batch SELECT {when}, runs {label}:")
            print("\n".join(f"   {line}" for line in plan.splitlines()))
    finally:
        connections[alias].close()


def autovacuum_note(target: PostgresTarget) -> str:
    """When autovacuum last analyzed the run table: before that, the planner still counts
    the deleted runs."""
    with target.connect() as conn:
        row = conn.execute(
            "SELECT last_autoanalyze, now() FROM pg_stat_user_tables WHERE relname = %s",
            [RUN_TABLE],
        ).fetchone()
    last = f"{(row[1] - row[0]).total_seconds():.0f} s ago" if row and row[0] else "not yet"
    return f"autovacuum's last ANALYZE of {RUN_TABLE}: {last}"


def timed_datastore(alias: str, claims: list[tuple[float, float, int]]) -> Any:
    """A DjangoDataStore that appends (start, seconds, tasks) of each claim to ``claims``."""
    from django_taskshed.datastores import DjangoDataStore

    class TimedDataStore(DjangoDataStore):
        def claim_due_tasks(self, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            claimed = super().claim_due_tasks(*args, **kwargs)
            claims.append((start, time.perf_counter() - start, len(claimed)))
            return claimed

    return TimedDataStore(using=alias)


async def feed(scheduler: Any, rate: int, stop: asyncio.Event) -> int:
    """Each second, add the tasks due in the second ``FEED_LEAD`` s ahead; returns how many."""
    from django_taskshed.models import Task

    added, second = 0, time.time() + FEED_LEAD
    while not stop.is_set():
        due = [epoch_datetime(second + i / rate) for i in range(rate)]
        await scheduler.add_tasks([Task(callback="noop", run_at=at, kwargs={}) for at in due])
        added, second = added + rate, second + 1.0
        await asyncio.sleep(max(0.0, second - FEED_LEAD - time.time()))
    return added


async def prune(target: PostgresTarget) -> tuple[float, str]:
    """Run ``prunetaskruns`` in a process of its own: (seconds, its last line of output)."""
    env = bench_settings.environment(target.django_settings(), None, {"CHANNEL_LAYER": None})
    env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    seconds = str(int(PRUNE_OLDER_THAN.total_seconds()))
    command = [sys.executable, "-m", "django", "prunetaskruns", "--older-than", seconds]
    pipe = asyncio.subprocess.PIPE
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=REPO_ROOT, env=env, stdout=pipe, stderr=pipe
    )
    out, err = await proc.communicate()
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"prunetaskruns failed:\n{err.decode()[-3000:]}")
    return took, out.decode().strip().splitlines()[-1]


class Phase:
    """A span of the run: its claims, and the machine's busy cores over it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.perf_counter()
        self.cpu_start = machine_cpu()
        self.end = self.cores = 0.0

    def close(self) -> None:
        self.end = time.perf_counter()
        self.cores = (machine_cpu() - self.cpu_start) / (self.end - self.start)

    def claims(self, claims: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
        return [c for c in claims if self.start <= c[0] < self.end]


async def measure(target: PostgresTarget, args: Any) -> tuple[list[Phase], Any]:
    """Warm-up, baseline, then the prune; the claims of each phase and the prune's figures."""
    from django_taskshed.schedulers import AsyncScheduler
    from django_taskshed.workers import EventDrivenWorker

    claims: list[tuple[float, float, int]] = []
    datastore = timed_datastore(target.alias, claims)
    worker = EventDrivenWorker({"noop": bench_callbacks.noop}, datastore=datastore)
    await worker.start()
    stop = asyncio.Event()
    feeder = asyncio.create_task(feed(AsyncScheduler(datastore, worker=worker), args.rate, stop))
    try:
        await asyncio.sleep(FEED_LEAD + WARM_UP)
        baseline = Phase("no pruning (baseline)")
        progress(f"baseline: {args.baseline:g} s of claims")
        await asyncio.sleep(args.baseline)
        baseline.close()
        pruning = Phase("during prunetaskruns")
        progress(f"prunetaskruns of {args.rows:,} rows")
        pruned = await prune(target)
        pruning.close()
    finally:
        stop.set()
        await feeder
        await worker.shutdown()
    return [baseline, pruning], (pruned, claims)


def print_report(
    phases: list[Phase], claims: list[Any], pruned: tuple[float, str], args: Any
) -> None:
    took, said = pruned
    print(f"\nprunetaskruns: {took:.1f} s, {args.rows / took:,.0f} rows/s ({said})")
    header = ["phase", "s", "claims", "tasks", "p50 ms", "p99 ms", "max ms", "cores busy"]
    rows, p99s = [], []
    for phase in phases:
        mine = phase.claims(claims)
        ms = [c[1] * 1000 for c in mine]
        p50, p99 = percentiles(ms, (50, 99))
        p99s.append(p99)
        rows.append(
            [phase.label, f"{phase.end - phase.start:.1f}", f"{len(mine):,}",
             f"{sum(c[2] for c in mine):,}", fmt(p50, 2), fmt(p99, 2),
             fmt(max(ms, default=None), 2), f"{phase.cores:.2f}"]
        )  # fmt: skip
    print("-- claim_due_tasks calls of the worker (time in its database thread, statement only)")
    print_table(header, rows)
    stall = p99s[1] - p99s[0]
    print(
        f"\nTarget (issue #10): pruning {args.rows:,} rows stalls the claims' p99 by <="
        f" {TARGET_P99_STALL_MS:.0f} ms: {stall:+.2f} ms: {verdict(stall <= TARGET_P99_STALL_MS)}"
    )
    if args.quick:
        print("  (--quick: not the issue's size; indicative only)")


def parse_args(argv: list[str] | None) -> Any:
    parser = make_parser(__doc__, "postgres", "20,000 rows, 3 s baseline: a smoke run")
    parser.add_argument("--rows", type=int, help="old runs to fill and prune (1,000,000)")
    parser.add_argument("--keep", type=int, help="recent runs the prune leaves (200,000)")
    parser.add_argument("--baseline", type=float, help="s of claims without pruning (30)")
    parser.add_argument("--rate", type=int, help="tasks a second fed to the worker (200)")
    args = parser.parse_args(argv)
    fill_defaults(
        args, rows=(1_000_000, 20_000), keep=(200_000, 2_000), baseline=(30.0, 3.0), rate=(200, 100)
    )
    if args.database != "postgres":
        parser.error("prune.py measures PostgreSQL only: --database postgres")
    if args.rows < 1 or args.keep < 0 or args.baseline <= 0 or args.rate < 1:
        parser.error("--rows, --baseline and --rate must be positive, --keep not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with session("pruning the run history", args, PG_DATABASE, None, WORKER_TASKSHED) as (
        targets,
        _log_dir,
    ):
        target = targets[0]
        assert isinstance(target, PostgresTarget)  # noqa: S101
        print_section(target, f": prunetaskruns of {args.rows:,} old runs under a claiming worker")
        progress(f"filling {args.rows:,} runs")
        took = fill_runs(target, args.rows, args.keep)
        print(
            f"   filled {args.rows:,} runs started {ROWS_AGE_DAYS} days ago and later, and"
            f" {args.keep:,} started {KEEP_AGE_DAYS} days ago and later, in {took:.1f} s (then"
            " VACUUM ANALYZE); EXPLAIN (ANALYZE, BUFFERS):"
        )
        print_plans(target.alias, "after the fill", PLANS_BEFORE)
        busy = wait_quiet(args.quiet_below, args.max_wait)
        print(
            f"   worker: EventDrivenWorker in this process, no channel layer, {args.rate} no-op"
            f" tasks/s added {FEED_LEAD:g} s ahead; {WARM_UP:g} s warm-up not counted;"
            f" cores busy before: {busy:.2f}"
        )
        phases, (pruned, claims) = asyncio.run(measure(target, args))
        print_report(phases, claims, pruned, args)
        print(f"\n{autovacuum_note(target)}")
        print_plans(target.alias, "right after the prune", PLANS_AFTER)
        print_end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
