"""Benchmark: Django's Tasks framework on ``TaskShedBackend``, against this app's own API and
against django-tasks-db, on PostgreSQL, in one run.

Run from the repository root with the dev virtualenv (PostgreSQL and Redis on localhost)::

    .venv/bin/python benchmarks/tasks_backend.py [--quick] [--parts 1234]

1. enqueue: ``--enqueues`` (500) single ``noop.enqueue()`` calls (a no-op async ``@task`` of
   ``benchmarks/tasks.py``) against as many ``Task.objects.create()`` calls of the rows
   ``enqueue()`` writes (built beforehand, post_save receivers disconnected, as in schedule.py);
   medians of ``--runs`` (5) runs, each on an emptied table.
2. drain: one ``runtaskworker`` process drains ``--tasks`` (20,000) no-op Django tasks, and as
   many ``noop`` callback tasks, with throughput.py's method and code (``Bench``); the Django
   tasks are ``enqueue()``d with ``run_after`` spread over ``--spread`` s from T0, in one
   transaction (not timed), then ANALYZEd (as ``add_tasks`` does the callback tasks' table).
   Runs alternate, each on emptied task and history tables (TRUNCATE, as drain.py); medians of
   ``--drain-runs`` (5).
   ``--profile`` adds one drain of each kind under py-spy (throughput.py's report).
3. django-tasks-db: its ``db_worker --batch`` on ``--tdb-tasks`` (5,000) no-op tasks, in a
   virtualenv of its own (``--tdb-venv``, created if missing) with a settings module written
   into a scratch directory; its database is ``taskshed_bench_tdb``.
4. start latency: ``--probe`` (200) ``stamp.enqueue()`` calls with no ``run_after``, ~50 ms apart,
   from this process to an idle ``runtaskworker`` with the Redis channel layer (``POLL_INTERVAL``
   60 s): the task's start minus the start of the ``enqueue()`` call.
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_callbacks import ledger_entries  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    TABLE,
    PostgresTarget,
    Target,
    WorkerProcess,
    clear_tasks,
    epoch_datetime,
    fill_defaults,
    fmt,
    load_average,
    make_parser,
    median,
    percentiles,
    print_end,
    print_section,
    print_table,
    progress,
    receivers_muted,
    session,
    timed,
    timed_each,
    truncate_drain_tables,
    verdict,
    wait_for,
    wait_quiet,
)
from benchmarks.bench_tdb import (  # noqa: E402
    TDB_CONFIGS,
    TDB_DATABASE,
    TDB_LATENCY_WORKER,
    TDB_VENV,
    TDB_WORKER,
    TdbBench,
)
from benchmarks.lag import redis_layer  # noqa: E402
from benchmarks.throughput import Bench, Config, print_results  # noqa: E402

PG_DATABASE = "taskshed_bench_tasks"
TARGET_ENQUEUE = 1.5  # enqueue() x N <= 1.5 x create() x N
TARGET_SHARE = 0.90  # Django tasks drain at >= 90 % of callback tasks
TARGET_VS_TDB = 20.0  # ours (Django tasks) >= 20 x django-tasks-db's db_worker
TARGET_LATENCY_MS = 15.0  # start latency p50


# --- 1. enqueue() against create() -----------------------------------------------------------


class EnqueueBench:
    """``noop.enqueue()`` x N against ``Task.objects.create()`` x N of the rows it writes."""

    def __init__(self, target: PostgresTarget, count: int) -> None:
        from django_taskshed.models import Task

        self.target, self.count = target, count
        self.raw = target.connect()
        self.manager = Task.objects.using(target.alias)
        self.fields = [f.attname for f in Task._meta.concrete_fields]
        self.operations: dict[str, Callable[[int], float]] = {
            "enqueue": self.time_enqueue,
            "create": self.time_create,
            "create_signals": self.time_create_with_signals,
        }
        self.times: dict[str, list[float]] = {key: [] for key in self.operations}

    def run(self, runs: int, args: Any) -> None:
        for timer in self.operations.values():  # warm-up: connections, caches
            self.measure(timer, 5)
        keys = list(self.operations)
        for number in range(1, runs + 1):
            busy = wait_quiet(args.quiet_below, args.max_wait)
            progress(f"enqueue: run {number}/{runs} (busy before {busy:.2f} cores)")
            shift = (number - 1) % len(keys)  # order rotated each run
            for key in keys[shift:] + keys[:shift]:
                self.times[key].append(self.measure(self.operations[key], self.count))
        self.raw.close()

    def measure(self, timer: Callable[[int], float], count: int) -> float:
        self.raw.execute(f"TRUNCATE {TABLE}")
        seconds = timer(count)
        found = self.raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        if found != count:
            raise RuntimeError(f"{timer.__name__}({count}) left {found} rows")
        return seconds

    def time_enqueue(self, count: int) -> float:
        from benchmarks.tasks import noop

        enqueue = noop.enqueue

        def body() -> None:
            for _ in range(count):
                enqueue()

        return timed(body)

    def rows(self, count: int) -> list[dict[str, Any]]:
        """The rows ``noop.enqueue()`` would write now (the backend's own preparation)."""
        from benchmarks.tasks import noop

        backend = noop.get_backend()
        rows = [backend._prepare(noop, (), {})[0] for _ in range(count)]  # noqa: SLF001
        return [{name: getattr(row, name) for name in self.fields} for row in rows]

    def time_create(self, count: int) -> float:
        from django_taskshed.models import Task

        with receivers_muted(Task):
            return self.time_create_with_signals(count)

    def time_create_with_signals(self, count: int) -> float:
        return timed_each(self.manager.create, self.rows(count))

    def median(self, key: str) -> float:
        return median(self.times[key]) or 0.0

    def print(self) -> None:
        labels = {
            "enqueue": "noop.enqueue(), sync",
            "create": "Task.objects.create(), sync, receivers off (floor)",
            "create_signals": "Task.objects.create(), sync, receivers on",
        }
        floor = self.median("create")
        rows = [
            [labels[key], f"{self.count:,}", f"{self.median(key):.4f}",
             f"{self.median(key) / self.count * 1e6:.0f}", f"{self.median(key) / floor:.2f}x",
             f"{min(times):.4f}-{max(times):.4f}"]
            for key, times in self.times.items()
        ]  # fmt: skip
        header = ["operation", "calls", "median s", "per call µs", "to floor", "min-max s"]
        print_table(header, rows, left={0})


# --- 2. the drain: Django tasks against callback tasks ---------------------------------------


class DrainBench(Bench):
    """throughput.py's runs; kind ``django`` enqueues no-op Django tasks, and every worker
    loads them (``benchmarks/tasks.py``), whichever kind it drains."""

    def insert(self, count: int, t0: float, spread: float, kind: str = "once") -> None:
        self.empty_tables()
        if kind != "django":
            super().insert(count, t0, spread, kind)
            return
        from django.db import connections, transaction

        from benchmarks.tasks import noop

        alias = self.target.alias
        clear_tasks(alias)
        started = time.perf_counter()
        with transaction.atomic(using=alias):
            for i in range(count):
                noop.using(run_after=epoch_datetime(t0 + spread * i / count)).enqueue()
        self.enqueue_seconds.append(time.perf_counter() - started)
        # The callback kind's rows come from add_tasks(), which ANALYZEs the table after a
        # batch of 5,000 rows or more; 20,000 single enqueue()s leave the truncated table with
        # no statistics until autovacuum's next round (up to a minute, longer than the lead),
        # and in about half the runs without them the drain ran ~25 % slower (worker and
        # server alike). Both kinds start with statistics.
        with connections[alias].cursor() as cursor:
            cursor.execute(f"ANALYZE {TABLE}")
        connections[alias].close()

    def run(
        self, flags: list[str], count: int, wrapper: list[str] | None = None,
        extra_env: dict[str, str] | None = None, kind: str = "once",
        taskshed: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        env = {bench_settings.ENV_TASKS: "1", **(extra_env or {})}
        return super().run(flags, count, wrapper, env, self.profiled_kind or kind, taskshed)

    def empty_tables(self) -> None:
        """Each drain, of either kind, starts from a task table with no dead rows and an empty
        run history (as drain.py's runs do): otherwise a run inherits the dead rows of the run
        before it, of the other kind, and the history grows from run to run, and the kind that
        comes second in each pair pays more for them."""
        from django.db import connections

        with connections[self.target.alias].cursor() as cursor:
            truncate_drain_tables(cursor)
        connections[self.target.alias].close()

    enqueue_seconds: list[float]
    profiled_kind: str | None = None  # the kind ``profile()`` (throughput.py's) drains


class NamedConfig(Config):
    """A drain's runs, shown in throughput.py's tables by their label (both use no flags)."""

    @property
    def name(self) -> str:
        return self.label


def profile_drain(target: Target, args: Any, log_dir: str) -> None:
    """throughput.py's py-spy run and report, for each kind of task."""
    bench = DrainBench(target, args, log_dir)
    bench.enqueue_seconds = []
    for label, kind in (("callback noop", "once"), ("Django task noop", "django")):
        bench.profiled_kind = kind
        bench.profile(label, [], args.tasks)


def measure_drain(target: Target, args: Any, log_dir: str) -> list[Config]:
    bench = DrainBench(target, args, log_dir)
    bench.enqueue_seconds = []
    variants = [("callback noop", {"kind": "once"}), ("Django task noop", {"kind": "django"})]
    measured = bench.measure_pair(args.tasks, args.drain_runs, variants)
    configs = [NamedConfig(c.label, c.flags, c.runs) for c in measured]
    print_results(target, configs, args.tasks)
    print("   both: default worker flags, no channel layer; runs alternating, on truncated tables")
    callbacks, django = configs
    pairs = [d["rate"] / c["rate"] for c, d in zip(callbacks.runs, django.runs, strict=True)]
    print(
        "   Django tasks/s over callback tasks/s, per pair of runs (the machine's speed drifts"
        f" between pairs): {', '.join(f'{100 * r:.0f} %' for r in pairs)};"
        f" median {100 * median(pairs):.0f} %"
    )
    seconds = median(bench.enqueue_seconds)
    print(
        f"   (not timed) {args.tasks:,} noop.using(run_after=...).enqueue() in one transaction:"
        f" median {fmt(seconds, 2)} s, {args.tasks / seconds:,.0f} enqueues/s"
    )
    return configs


# --- 3. django-tasks-db ----------------------------------------------------------------------


def measure_tdb(bench: TdbBench, args: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    results = []
    for label, conn_max_age in TDB_CONFIGS:
        runs = []
        for number in range(1, args.tdb_runs + 1):
            runs.append(bench.run(args.tdb_tasks, conn_max_age))
            progress(
                f"django-tasks-db, {label}: run {number}/{args.tdb_runs}:"
                f" {runs[-1]['rate']:,.0f} tasks/s, load {load_average()}"
            )
        results.append((label, runs))
    target = bench.target
    print(f"\n== {target.title} {target.version}: django-tasks-db, {args.tdb_tasks:,} no-op tasks,"
          " one db_worker process ==")  # fmt: skip
    for note in (
        f"database {target.params['user']}@{target.params['host']}:{target.params['port']}"
        f"/{TDB_DATABASE}, migrated by django-tasks-db, emptied before each run",
        f"its own virtualenv {args.tdb_venv}: {bench.versions()}",
        f"python {' '.join(TDB_WORKER)}; settings written to a scratch directory; the task is a"
        " sync no-op (its worker runs one task at a time)",
        "wall = first task's start -> atexit stamp (start-up excluded, as ours);"
        " process = db_worker start -> exit",
    ):
        print(f"   {note}")
    header = ["configuration", "runs", "wall s", "tasks/s", "process s", "enqueue s",
              "busy before", "load 1/5/15"]  # fmt: skip
    rows = [
        [label, str(len(runs)), fmt(median([r["wall"] for r in runs]), 2),
         fmt(median([r["rate"] for r in runs]), 0), fmt(median([r["process"] for r in runs]), 2),
         fmt(median([r["enqueue"] for r in runs]), 2), fmt(max(r["busy"] for r in runs), 2),
         runs[-1]["load"]]
        for label, runs in results
    ]  # fmt: skip
    print_table(header, rows, left={0, 7})
    return results


# --- 4. start latency ------------------------------------------------------------------------


def measure_latency(target: Target, args: Any, log_dir: str, prefix: str) -> dict[str, Any]:
    from django.conf import settings

    from benchmarks.tasks import stamp

    count = args.probe
    busy = wait_quiet(args.quiet_below, args.max_wait)
    clear_tasks(target.alias)
    ledger = os.path.join(log_dir, "latency.ledger")
    layer = redis_layer(args.redis, prefix)
    env = bench_settings.environment(
        target.django_settings(), layer, {"POLL_INTERVAL": 60}, tasks=True
    )
    env[bench_callbacks.LEDGER_ENV] = ledger
    worker = WorkerProcess(env, ["--max-tasks", str(count + 1)], log_dir, "latency")
    settings.TASKSHED["CHANNEL_LAYER"] = "redis"
    calls: list[float] = []
    try:
        worker.wait_ready()
        stamp.enqueue(run_at=epoch_datetime(time.time()).isoformat(), kind="warmup")
        wait_for(lambda: ledger_entries(ledger, "warmup"), 1, 15.0)
        time.sleep(0.5)
        for _ in range(count):
            called = time.time()
            stamp.enqueue(run_at=epoch_datetime(called).isoformat(), kind="now")
            calls.append(time.time() - called)
            time.sleep(random.uniform(0.04, 0.06))
        wait_for(lambda: ledger_entries(ledger, "now"), count, 10.0)
        load = load_average()
    finally:
        settings.TASKSHED["CHANNEL_LAYER"] = None
        try:
            worker.wait4(15.0)
        except TimeoutError:
            worker.terminate()
    latency = [started - due for _, due, started in ledger_entries(ledger, "now")]
    return {"latency": latency, "calls": calls, "count": count, "busy": busy, "load": load}


def print_latency(result: dict[str, Any], what: str, notes: list[str]) -> None:
    print(f"\n== {what}: start latency, {result['count']} enqueue() ~50 ms apart, no run_after ==")
    for note in notes:
        print(f"   {note}")
    ms = [value * 1000 for value in result["latency"]]
    p50, p90, p99 = percentiles(ms, (50, 90, 99)) if ms else [float("nan")] * 3
    call_p50 = median([c * 1000 for c in result["calls"]])
    header = ["", "ran", "p50", "p90", "p99", "max", "enqueue() call p50", "busy before", "load"]
    row = ["enqueue() call start -> task start", f"{len(ms)}/{result['count']}", f"{p50:.2f}",
           f"{p90:.2f}", f"{p99:.2f}", f"{max(ms, default=float('nan')):.2f}", fmt(call_p50, 2),
           f"{result['busy']:.2f}", result["load"]]  # fmt: skip
    print_table(header, [row], left={0, 8})
    result["p50_ms"] = p50


# --- the acceptance table --------------------------------------------------------------------


def print_acceptance(results: dict[str, Any], args: Any) -> None:
    print("\nAcceptance (PostgreSQL, this run; medians):")
    rows = []
    if (bench := results.get("enqueue")) is not None:
        ratio = bench.median("enqueue") / bench.median("create")
        rows.append(
            [f"1. {bench.count} x enqueue() vs {bench.count} x create() of its rows, s",
             f"{bench.median('enqueue'):.3f}", f"{bench.median('create'):.3f}",
             f"{ratio:.2f}x", f"<= {TARGET_ENQUEUE}x", verdict(ratio <= TARGET_ENQUEUE)]
        )  # fmt: skip
    ours = None
    if (drain := results.get("drain")) is not None:
        callback, django = (args.tasks / c.median("wall") for c in drain)
        ours, share = django, django / callback
        rows.append(
            [f"2. drain {args.tasks:,}: Django tasks vs callback tasks, tasks/s",
             f"{django:,.0f}", f"{callback:,.0f}", f"{share:.0%}", f">= {TARGET_SHARE:.0%}",
             verdict(share >= TARGET_SHARE)]
        )  # fmt: skip
    for label, runs in results.get("tdb", []):
        theirs = median([r["rate"] for r in runs]) or 0.0
        ratio = ours / theirs if ours else None
        shown = f"{ratio:.1f}x" if ratio else "n/a"
        rows.append(
            [f"3. ours (Django tasks) vs db_worker, {label}, tasks/s*",
             fmt(ours, 0), f"{theirs:,.0f}", shown, f">= {TARGET_VS_TDB:g}x",
             verdict(ratio is not None and ratio >= TARGET_VS_TDB)]
        )  # fmt: skip
    if (latency := results.get("latency")) is not None:
        p50 = latency["p50_ms"]
        rows.append(
            [f"4. start latency p50, {latency['count']} enqueue() -> task start, ms",
             f"{p50:.2f}", "", "", f"<= {TARGET_LATENCY_MS:g} ms",
             verdict(p50 <= TARGET_LATENCY_MS)]
        )  # fmt: skip
    if (theirs := results.get("tdb_latency")) is not None and latency is not None:
        rows.append(
            ["   (no target) start latency p50, django-tasks-db db_worker (--interval 1), ms",
             f"{latency['p50_ms']:.2f}", f"{theirs['p50_ms']:.1f}", "", "", ""]
        )  # fmt: skip
    print_table(["", "ours", "reference", "ratio", "target", "verdict"], rows)
    if results.get("tdb"):
        print(
            f"   * ours on {args.tasks:,} tasks, django-tasks-db on {args.tdb_tasks:,}"
            " (tasks/s is the comparable figure)"
        )
    if args.quick:
        print("   (--quick: small sizes; the verdicts are indicative only)")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Any:
    quick = "50 enqueues, 2,000 tasks, 300 for django-tasks-db, probe 20, 1 run: a smoke run"
    parser = make_parser(__doc__, "postgres", quick)
    parser.add_argument("--parts", default="1234", help="which of the measurements 1-4 (1234)")
    parser.add_argument("--enqueues", type=int, help="1: enqueue() calls per run (500)")
    parser.add_argument("--runs", type=int, help="1: runs per median (5)")
    parser.add_argument("--tasks", type=int, help="2: tasks per drain (20,000)")
    parser.add_argument("--drain-runs", type=int, help="2: runs per median (5)")
    parser.add_argument("--spread", type=float, help="2: run_at spread, s (1; --quick 0.1)")
    parser.add_argument("--lead", type=float, help="2: s from planning to T0 (5 + tasks/1,000)")
    parser.add_argument("--tdb-tasks", type=int, help="3: django-tasks-db's tasks (5,000)")
    parser.add_argument("--tdb-runs", type=int, help="3: runs per configuration (1)")
    parser.add_argument("--tdb-venv", default=TDB_VENV, help=f"3: its virtualenv ({TDB_VENV})")
    parser.add_argument("--probe", type=int, help="4: enqueue() calls (200)")
    what = "4: the same for django-tasks-db, its db_worker at its default --interval (50; 0: no)"
    parser.add_argument("--tdb-probe", type=int, help=what)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    what = "2: then one drain of each kind under py-spy, and where the worker's time goes"
    parser.add_argument("--profile", action="store_true", help=what)
    args = parser.parse_args(argv)
    fill_defaults(
        args, enqueues=(500, 50), runs=(5, 1), tasks=(20_000, 2000), drain_runs=(5, 1),
        spread=(1.0, 0.1), tdb_tasks=(5000, 300), tdb_runs=(1, 1), probe=(200, 20),
        tdb_probe=(50, 10),
    )  # fmt: skip
    if args.lead is None:
        args.lead = 5.0 + args.tasks / 1000
    args.analyze = False  # throughput.Bench's option
    if args.database != "postgres":
        parser.error("this benchmark runs on PostgreSQL only")
    if set(args.parts) - set("1234") or not args.parts:
        parser.error("--parts takes digits among 1, 2, 3, 4")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prefix = f"taskshed-bench-tasks-{uuid.uuid4().hex[:8]}"
    layers = {
        "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        "redis": redis_layer(args.redis, prefix),
    }
    from importlib.metadata import version

    extra = [
        f"django-tasks {version('django-tasks')}",
        f"channels_redis {version('channels_redis')}",
    ]
    frame = session(
        "Django's Tasks framework on TaskShedBackend", args, PG_DATABASE, layers,
        {"CHANNEL_LAYER": None}, extra_versions=extra, django_tasks=True,
    )  # fmt: skip
    with frame as (targets, log_dir):
        from django.conf import settings

        target = targets[0]
        print(
            "Tasks: benchmarks/tasks.py (async no-ops on TaskShedBackend, TASKS['default']);"
            " callbacks: bench_callbacks (the same bodies).\nBefore each run the script waits"
            f" (up to {args.max_wait:g} s) until the machine uses < {args.quiet_below:g} cores"
            " for 2 s; 'busy before' = cores busy then."
        )
        results: dict[str, Any] = {}
        if "1" in args.parts:
            settings.TASKSHED["CHANNEL_LAYER"] = "memory"  # as schedule.py: nobody listens
            results["enqueue"] = bench = EnqueueBench(target, args.enqueues)
            bench.run(args.runs, args)
            settings.TASKSHED["CHANNEL_LAYER"] = None
            print_section(
                target,
                f": {args.enqueues} single enqueue() calls, medians of {args.runs} run(s)",
                ["in-memory channel layer (each enqueue() notifies it; nobody listens);"
                 " every run on an emptied table; rows built before timing"],
            )  # fmt: skip
            bench.print()
        if "2" in args.parts:
            results["drain"] = measure_drain(target, args, log_dir)
        tdb = TdbBench(args, log_dir) if "3" in args.parts or args.tdb_probe else None
        if "3" in args.parts:
            results["tdb"] = measure_tdb(tdb, args)
        if "4" in args.parts:
            results["latency"] = latency = measure_latency(target, args, log_dir, prefix)
            print_latency(latency, "TaskShedBackend", [
                "stamp.enqueue() (benchmarks/tasks.py) from this process to an idle runtaskworker"
                f" (Redis channel layer {args.redis}, POLL_INTERVAL 60 s; one warm-up task)",
                "latency = task start (time.time() at its entry) - start of the enqueue() call, ms",
            ])  # fmt: skip
        if args.tdb_probe:
            results["tdb_latency"] = latency = tdb.latency(args.tdb_probe)
            print_latency(latency, "django-tasks-db", [
                f"python {' '.join(TDB_LATENCY_WORKER)} (its default --interval 1 s, persistent"
                " connection); the tasks enqueued by another process of its virtualenv",
                "latency as above; no target (for comparison)",
            ])  # fmt: skip
        print_acceptance(results, args)
        print_end()
        if args.profile:
            profile_drain(target, args, log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
