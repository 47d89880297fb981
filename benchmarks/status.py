"""How long ``manage.py taskshedstatus`` takes over 1,000,000 tasks (PostgreSQL by default).

The task table is filled with ``--tasks`` rows in one ``INSERT ... SELECT generate_series``:
five queues; of every 100 tasks, 2 due (run_at up to an hour ago), 1 paused, 1 failed, 1
running (a live lease), 1 retrying (attempts 1) and 94 in the future; one task in 1,000 is
recurring (hourly), half of those with a failed last run. The run history gets ``--runs`` rows:
200 hourly runs of each recurring task (the newest 50 of the failing half failed) and old
one-off runs for the rest. Both tables are vacuumed and analyzed; 8 live workers are registered.

Then ``collect_status`` runs ``--repeat`` times (the first one warms the cache and is reported
apart): each of its four queries is timed, and the whole ``taskshedstatus --json --check``
command through ``call_command``. The plans are printed (``EXPLAIN (ANALYZE, BUFFERS)``).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_common import (  # noqa: E402
    RUN_TABLE,
    PostgresTarget,
    fill_defaults,
    fmt,
    make_parser,
    print_end,
    print_section,
    print_table,
    progress,
    session,
    wait_quiet,
)
from benchmarks.bench_common import TABLE as TASK_TABLE  # noqa: E402

PG_DATABASE = "taskshed_bench_status"
TARGET_SECONDS = 1.0  # the issue: the command answers in under a second at 1,000,000 tasks
QUEUES = "ARRAY['default', 'mail', 'media', 'reports', 'bulk']"

FILL_TASKS = f"""
INSERT INTO {TASK_TABLE} (task_id, callback, kwargs, run_at, run_type, interval, cron, timezone,
    on_nonexistent, on_ambiguous, group_id, queue, priority, paused, paused_at, coalesce,
    max_retries, timeout, attempts, lease_owner, lease_expires_at, claim_token, abandoned_by,
    last_run_at, last_error, last_traceback, failed_at, declared_in_code, created_at, updated_at)
SELECT 't' || i, 'noop', '{{"n": 1}}'::jsonb,
    CASE WHEN i %% 100 < 2 THEN now() - (i %% 3600) * interval '1 second'
         ELSE now() + i * interval '1 second' END,
    CASE WHEN i %% 1000 = 0 THEN 'recurring' ELSE 'once' END,
    CASE WHEN i %% 1000 = 0 THEN interval '1 hour' END, '', '', 'shift', 'first', NULL,
    ({QUEUES})[1 + i %% 5], 0, i %% 100 = 2, CASE WHEN i %% 100 = 2 THEN now() END, true,
    NULL, NULL,
    CASE WHEN i %% 100 = 5 OR i %% 2000 = 1000 THEN 1 ELSE 0 END,
    CASE WHEN i %% 100 = 4 THEN 'bench' END,
    CASE WHEN i %% 100 = 4 THEN now() + interval '60 seconds' END,
    CASE WHEN i %% 100 = 4 THEN 'token' END, NULL,
    CASE WHEN i %% 1000 = 0 THEN now() - interval '1 hour' END, '', '',
    CASE WHEN i %% 100 = 3 THEN now() END, false, now() - interval '30 days', now()
FROM generate_series(1, %s) AS i
"""  # noqa: S608 (constants only)

FILL_RUNS = f"""
INSERT INTO {RUN_TABLE} (task_id, callback, group_id, scheduled_for, started_at, finished_at,
    outcome, attempt, worker_id, error, traceback, return_value, return_value_omitted, kwargs,
    missed, missed_from, missed_until)
SELECT task_id, 'noop', NULL, t, t, t + interval '5 milliseconds',
    CASE WHEN failing AND h <= 50 THEN 'failed' ELSE 'succeeded' END, 1, 'bench', '', '',
    NULL::jsonb, false, NULL::jsonb, 0, NULL::timestamptz, NULL::timestamptz
FROM (SELECT 't' || (k * 1000) AS task_id, k %% 2 = 1 AS failing, h,
             now() - h * interval '1 hour' AS t
      FROM generate_series(1, %s) AS k, generate_series(1, 200) AS h) AS recurring_runs
UNION ALL
SELECT 'old' || i, 'noop', NULL, t, t, t, 'succeeded', 1, 'bench', '', '', NULL, false, NULL,
    0, NULL, NULL
FROM (SELECT i, now() - interval '6 days' + i * interval '1 millisecond' AS t
      FROM generate_series(1, %s) AS i) AS one_off_runs
"""  # noqa: S608 (constants only)


def parse_args(argv: list[str] | None) -> Any:
    parser = make_parser(__doc__ or "", "postgres", "100,000 tasks, 3 repeats")
    parser.add_argument("--tasks", type=int, help="task rows (1,000,000)")
    parser.add_argument("--runs", type=int, help="run history rows (1,000,000)")
    parser.add_argument("--repeat", type=int, help="timed runs after the first (5)")
    args = parser.parse_args(argv)
    fill_defaults(args, tasks=(1_000_000, 100_000), runs=(1_000_000, 100_000), repeat=(5, 3))
    return args


def fill(target: PostgresTarget, tasks: int, runs: int) -> float:
    """The task table, the run history and the workers; seconds taken."""
    started = time.perf_counter()
    recurring = tasks // 1000
    with target.connect() as conn:
        conn.execute(f"TRUNCATE {TASK_TABLE}, {RUN_TABLE}")
        conn.execute(FILL_TASKS, [tasks])
        conn.execute(FILL_RUNS, [recurring, max(0, runs - recurring * 200)])
        conn.execute(
            "INSERT INTO django_taskshed_workerrecord (worker_id, hostname, pid, started_at,"
            " heartbeat_at, expires_at, callbacks, running)"
            " SELECT 'w' || i, 'host' || i, 1000 + i, now(), now(), now() + interval '1 minute',"
            " '[\"noop\"]'::jsonb, 1 FROM generate_series(1, 8) AS i"
        )
        conn.execute(f"VACUUM (ANALYZE) {TASK_TABLE}")
        conn.execute(f"VACUUM (ANALYZE) {RUN_TABLE}")
    return time.perf_counter() - started


def measure(alias: str, repeat: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The first (cold) run's query times, and those of the ``repeat`` runs after it; "total"
    is ``collect_status``, "command" the whole ``taskshedstatus --json --check``."""
    from django.core.management import call_command
    from django.utils import timezone

    from django_taskshed.status import collect_status

    def once() -> dict[str, float]:
        started = time.perf_counter()
        status = collect_status(alias, timezone.now(), 60.0)
        total = time.perf_counter() - started
        started = time.perf_counter()
        try:
            call_command(
                "taskshedstatus", "--json", "--check", "--max-failed", "100000000",
                database=alias, stdout=io.StringIO(),
            )  # fmt: skip
        except SystemExit:
            pass
        return {**status.query_seconds, "total": total, "command": time.perf_counter() - started}

    first = once()
    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, seconds in once().items():
            runs.setdefault(name, []).append(seconds)
    return first, runs


def print_plans(alias: str) -> None:
    from django.utils import timezone

    from django_taskshed.status import (
        RECURRING_LIMIT,
        counts_queryset,
        most_overdue_queryset,
        recurring_queryset,
    )

    now = timezone.now()
    querysets = {
        "counts": counts_queryset(alias, now, 60.0),
        "most_overdue": most_overdue_queryset(alias, now)[:1],
        "recurring": recurring_queryset(alias)[: RECURRING_LIMIT + 1],
    }
    for name, queryset in querysets.items():
        print(f"-- plan of {name}:")
        plan = queryset.explain(analyze=True, buffers=True)
        print("\n".join(f"   {line}" for line in plan.splitlines()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with session("taskshedstatus over a big task table", args, PG_DATABASE) as (targets, _):
        for target in targets:
            assert isinstance(target, PostgresTarget)  # noqa: S101
            print_section(target, f": taskshedstatus over {args.tasks:,} tasks")
            progress(f"filling {args.tasks:,} tasks and {args.runs:,} runs")
            took = fill(target, args.tasks, args.runs)
            print(f"   filled in {took:.1f} s, then VACUUM ANALYZE")
            busy = wait_quiet(args.quiet_below, args.max_wait)
            print(f"   cores busy before: {busy:.2f}")
            first, runs = measure(target.alias, args.repeat)
            rows = [
                [name, fmt(first[name] * 1000, 1), fmt(statistics.median(values) * 1000, 1),
                 fmt(max(values) * 1000, 1)]
                for name, values in runs.items()
            ]  # fmt: skip
            print_table(["query", "first ms", f"median of {args.repeat} ms", "max ms"], rows)
            worst = max(runs["command"])
            verdict = "PASS" if worst < TARGET_SECONDS else "MISS"
            target_text = f"target < {TARGET_SECONDS:g} s"
            print(f"   whole command, slowest: {worst:.3f} s ({target_text}): {verdict}")
            print_plans(target.alias)
        print_end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
