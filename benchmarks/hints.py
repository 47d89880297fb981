"""Benchmark: what "task changed" hints cost, and how fast an idle worker wakes (issue #13).

Run from the repository root with the dev virtualenv (PostgreSQL and Redis on localhost)::

    .venv/bin/python benchmarks/hints.py [--database postgres|sqlite|both] [--parts abc]
        [--adds 500] [--runs 3] [--hints 1000] [--idle 30] [--idle-rounds 4] [--quick]

Every worker is a ``runtaskworker`` process with the Redis layer (channels_redis, a key prefix
of this run's own) and the default settings unless said. Three parts:

(a) ``add_task`` with 0, 1 and 4 listening workers: ``--adds`` single ``await
    AsyncScheduler.add_task`` calls (and as many ``SyncScheduler.add_task`` calls) of tasks due
    1 to 16 minutes ahead, against as many ``Task.objects.create()`` (and ``await
    Task.objects.acreate()``, the async ORM's same hop to Django's sync thread) of the same rows
    (django_taskshed's receivers off: Django's own insert), medians of ``--runs``, order rotated,
    each on an emptied task table; the group sends of this process are counted. Hints that the
    workers' re-read times decide are looked up and sent on the package's hints thread, during
    the adds; what is still on its way after the last add is delivered, untimed, before the
    next operation.
(b) worker CPU per hint, with 1 and 4 listening workers (``POLL_INTERVAL`` 60 s, idle): user +
    system time of each worker (/proc) over ``--hints`` ``add_task`` calls of tasks an hour
    ahead (hints that cannot move a worker's deadline), minus its CPU over as long a window
    without hints. Twice: as the package sends them (workers publish when they re-read the
    schedule anyway, so these hints are not sent), and delivered to every worker anyway (a
    registered row that wants every hint: the listener's own cost; the package's hints thread
    merges a burst of hints into fewer messages, counted as group sends).
(c) lateness after idle periods: ``--idle-workers`` workers, each in a group and queue of its
    own (so that a probe wakes one), idle (nothing to run, default poll 5 s); every ``--idle``
    seconds, one task with ``run_at=now`` per worker, added from this process with ``await
    AsyncScheduler.add_task``, one worker after another 1 s apart; latency = callback start -
    start of the ``add_task`` call. ``--idle-rounds`` rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    Target,
    WorkerProcess,
    clear_tasks,
    fill_defaults,
    load_average,
    make_parser,
    percentiles,
    print_end,
    print_section,
    print_table,
    process_cpu,
    progress,
    receivers_muted,
    session,
    verdict,
    wait_quiet,
)
from benchmarks.lag import lag_kwargs, redis_layer  # noqa: E402

PG_DATABASE = "taskshed_bench_hints"
PARTS = {"a": "add_task with listeners", "b": "worker CPU per hint", "c": "lateness after idle"}
LISTENERS = (0, 1, 4)
CPU_LISTENERS = (1, 4)
IDLE_POLL = 60.0  # s: part (b)'s workers, so that nothing but a hint would wake them
TARGETS = {
    "adds_4": 1.5,  # add_task with 4 listening workers, within 1.5x of create()
    "adds_0": 1.2,  # with none listening (helper `adds`' target; printed here too)
    "cpu_us": 50.0,  # worker CPU per hint that does not move its deadline, µs
    "idle_p50_ms": 15.0,
    "idle_p99_ms": 30.0,
}


@dataclass
class Results:
    busy: dict[str, float] = field(default_factory=dict)  # part -> cores busy before it
    adds: dict[tuple[int, str], list[float]] = field(default_factory=dict)  # (listeners, op)
    sends: dict[int, int] = field(default_factory=dict)  # listeners -> group sends in (a)
    cpu: dict[tuple[int, str], list[float]] = field(default_factory=dict)  # s per hint, each worker
    cpu_sends: dict[tuple[int, str], int] = field(default_factory=dict)
    idle: list[float] = field(default_factory=list)  # s
    idle_missing: int = 0
    load: dict[str, str] = field(default_factory=dict)


class SendCounter:
    """Counts this process's channels_redis group sends."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        from channels_redis.core import RedisChannelLayer

        original = RedisChannelLayer.group_send

        async def counted(layer: Any, group: str, message: dict[str, Any]) -> None:
            self.count += 1
            await original(layer, group, message)

        RedisChannelLayer.group_send = counted  # type: ignore[method-assign]


SENDS = SendCounter()


class Bench:
    def __init__(self, target: Target, args: Any, log_dir: str, prefix: str) -> None:
        self.target = target
        self.args = args
        self.log_dir = log_dir
        self.prefix = prefix
        self.results = Results()
        self.workers: list[WorkerProcess] = []
        self.sends = SENDS
        self.counter = 0

    # --- workers -------------------------------------------------------------------------

    def start_workers(
        self,
        count: int,
        taskshed: Callable[[int], dict[str, Any]] = lambda n: {},
        flags: Callable[[int], list[str]] = lambda n: [],
    ) -> list[WorkerProcess]:
        """``count`` workers, the n-th with ``taskshed(n)`` settings and ``flags(n)``, ready and
        asleep (each has published its re-read time)."""
        layer = redis_layer(self.args.redis, self.prefix)
        database = self.target.django_settings()
        started = []
        for n in range(count):
            self.counter += 1
            name = f"hints-{self.target.alias}-{self.counter}"
            env = bench_settings.environment(database, layer, taskshed(n))
            env[bench_callbacks.LEDGER_ENV] = os.path.join(self.log_dir, f"{name}.ledger")
            started.append(WorkerProcess(env, flags(n), self.log_dir, name))
        for worker in started:
            worker.wait_ready()
        self.workers = started
        self.wait_published(count)
        return started

    def wait_published(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` workers have joined (their rows) and published a re-read time."""
        from django_taskshed.models import WorkerRecord

        rows = WorkerRecord.objects.using(self.target.alias)
        deadline = time.monotonic() + timeout
        while rows.filter(rereads_at__isnull=False).count() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not publish a re-read time")
            time.sleep(0.05)
        time.sleep(0.5)  # they are asleep now

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.terminate()
        self.workers = []

    def quiet(self, part: str) -> None:
        self.results.busy[part] = wait_quiet(self.args.quiet_below, self.args.max_wait)

    def scheduler(self) -> Any:
        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.schedulers import AsyncScheduler

        return AsyncScheduler(DjangoDataStore(using=self.target.alias))

    # --- (a) add_task with 0, 1, 4 listeners ---------------------------------------------

    def adds(self) -> None:
        for listeners in LISTENERS:
            progress(f"{self.target.title}: (a) {listeners} listening worker(s)")
            clear_tasks(self.target.alias)
            self.start_workers(listeners)
            try:
                self.quiet(f"a{listeners}")
                self.time_adds(listeners)
            finally:
                self.stop_workers()

    def time_adds(self, listeners: int) -> None:
        from django_taskshed.models import Task
        from django_taskshed.notifications import HINTS
        from django_taskshed.schedulers import SyncScheduler

        def delivered() -> None:
            if not HINTS.flush(30):
                raise RuntimeError("hints still on their way after 30 s")

        manager = Task.objects.using(self.target.alias)
        async_add = self.scheduler().add_task
        sync_add = SyncScheduler(self.scheduler().datastore).add_task

        def rows() -> list[dict[str, Any]]:
            start = datetime.now(dt_timezone.utc) + timedelta(minutes=1)
            return [
                {"task_id": uuid.uuid4().hex, "callback": "noop", "kwargs": {"a": i},
                 "run_at": start + timedelta(milliseconds=1800 * i % 900_000)}
                for i in range(self.args.adds)
            ]  # fmt: skip

        async def run_async(calls: list[dict[str, Any]]) -> None:
            for call in calls:
                await async_add(**call)

        def time_async() -> float:
            calls = rows()
            return asyncio.run(timed_coroutine(run_async, calls))

        def time_sync() -> float:
            calls = rows()
            started = time.perf_counter()
            for call in calls:
                sync_add(**call)
            return time.perf_counter() - started

        def time_create() -> float:
            calls = rows()
            with receivers_muted(Task):
                started = time.perf_counter()
                for call in calls:
                    manager.create(**call)
                return time.perf_counter() - started

        async def run_acreate(calls: list[dict[str, Any]]) -> None:
            for call in calls:
                await manager.acreate(**call)

        def time_acreate() -> float:
            calls = rows()
            with receivers_muted(Task):
                return asyncio.run(timed_coroutine(run_acreate, calls))

        operations = [
            ("async", time_async), ("sync", time_sync), ("create", time_create),
            ("acreate", time_acreate),
        ]  # fmt: skip
        for _key, timer in operations:  # warm-up, untimed
            timer()
            delivered()
            empty(self.target)
        sends_before = self.sends.count
        for run in range(self.args.runs):
            shift = run % len(operations)
            for key, timer in operations[shift:] + operations[:shift]:
                self.results.adds.setdefault((listeners, key), []).append(timer())
                delivered()
                empty(self.target)
        self.results.sends[listeners] = self.sends.count - sends_before
        self.results.load[f"a{listeners}"] = load_average()

    # --- (b) worker CPU per hint ---------------------------------------------------------

    def cpu(self) -> None:
        for listeners in CPU_LISTENERS:
            progress(f"{self.target.title}: (b) {listeners} listening worker(s)")
            clear_tasks(self.target.alias)
            workers = self.start_workers(listeners, lambda n: {"POLL_INTERVAL": IDLE_POLL})
            try:
                self.quiet(f"b{listeners}")
                for mode in ("as sent", "delivered"):
                    with hungry_row(self.target.alias, mode == "delivered"):
                        self.measure_cpu(listeners, mode, workers)
            finally:
                self.stop_workers()

    def measure_cpu(self, listeners: int, mode: str, workers: list[WorkerProcess]) -> None:
        count = self.args.hints
        add = self.scheduler().add_task
        run_at = datetime.now(dt_timezone.utc) + timedelta(hours=1)

        async def hints() -> None:
            for _ in range(count):
                await add("noop", run_at=run_at)

        from django_taskshed.notifications import HINTS

        sends_before = self.sends.count
        before = [process_cpu(w.pid) or 0.0 for w in workers]
        started = time.perf_counter()
        asyncio.run(hints())
        if not HINTS.flush(30):  # hints far ahead go out from the package's hints thread
            raise RuntimeError("hints still on their way after 30 s")
        time.sleep(0.3)  # the last messages are handled
        window = time.perf_counter() - started
        during = [(process_cpu(w.pid) or 0.0) - b for w, b in zip(workers, before, strict=True)]
        self.results.cpu_sends[(listeners, mode)] = self.sends.count - sends_before
        before = [process_cpu(w.pid) or 0.0 for w in workers]
        time.sleep(window)
        idle = [(process_cpu(w.pid) or 0.0) - b for w, b in zip(workers, before, strict=True)]
        per_hint = [(d - i) / count for d, i in zip(during, idle, strict=True)]
        self.results.cpu[(listeners, mode)] = per_hint
        self.results.load[f"b{listeners}"] = load_average()

    # --- (c) lateness after idle periods -------------------------------------------------

    def idle(self) -> None:
        from django.conf import settings

        args = self.args
        progress(f"{self.target.title}: (c) {args.idle_workers} idle workers, {args.idle} s idle")
        clear_tasks(self.target.alias)
        groups = [f"{self.prefix}-idle-{n}" for n in range(args.idle_workers)]
        # Each its own group and queue: a probe wakes and feeds only its worker.
        workers = self.start_workers(
            args.idle_workers, lambda n: {"GROUP": groups[n]}, lambda n: ["--queue", f"idle-{n}"]
        )
        ledgers = [w.stderr_path.replace(".stderr", ".ledger") for w in workers]
        self.quiet("c")
        scheduler = self.scheduler()

        async def rounds() -> None:
            for number in range(args.idle_rounds):
                progress(f"  round {number + 1}/{args.idle_rounds}: idle {args.idle:g} s")
                await asyncio.sleep(args.idle)
                for n, group in enumerate(groups):
                    settings.TASKSHED["GROUP"] = group
                    called = time.time()
                    kwargs = lag_kwargs(called, "idle")
                    await scheduler.add_task("lag", kwargs=kwargs, queue=f"idle-{n}")
                    await asyncio.sleep(1.0)

        try:
            asyncio.run(rounds())
            time.sleep(1.0)
        finally:
            self.stop_workers()
            settings.TASKSHED.pop("GROUP", None)
        for path in ledgers:
            entries = bench_callbacks.ledger_entries(path, "idle")
            self.results.idle += [started - due for _, due, started in entries]
        self.results.idle_missing = args.idle_rounds * args.idle_workers - len(self.results.idle)
        self.results.load["c"] = load_average()


async def timed_coroutine(body: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    await body(*args)
    return time.perf_counter() - started


def empty(target: Target) -> None:
    from django.db import connections

    from benchmarks.bench_common import TABLE

    statement = f"DELETE FROM {TABLE}" if target.alias == "sqlite" else f"TRUNCATE {TABLE}"
    with connections[target.alias].cursor() as cursor:
        cursor.execute(statement)


class hungry_row:  # noqa: N801  (a context manager, used as a statement)
    """With ``on``: a registered worker row that wants every hint (so all are sent)."""

    def __init__(self, alias: str, on: bool) -> None:
        self.alias, self.on = alias, on

    def __enter__(self) -> None:
        from django.utils import timezone

        from django_taskshed.models import WorkerRecord

        if self.on:
            now = timezone.now()
            WorkerRecord.objects.using(self.alias).create(
                worker_id="bench-hungry", hostname="bench", pid=os.getpid(), started_at=now,
                heartbeat_at=now, expires_at=now + timedelta(hours=1),
            )  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        from django_taskshed.models import WorkerRecord

        WorkerRecord.objects.using(self.alias).filter(worker_id="bench-hungry").delete()


# --- the report ------------------------------------------------------------------------------


def us(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:,.0f}"


def print_adds(bench: Bench) -> None:
    r, n = bench.results, bench.args.adds
    print(f"-- (a) {n} single adds of tasks due 1-16 min ahead; medians of {bench.args.runs}")
    header = [
        "listening workers", "add_task async µs", "add_task sync µs", "create() µs",
        "acreate() µs", "async/create", "sync/create", "async/acreate", "group sends",
        "busy before", "load 1/5/15",
    ]  # fmt: skip
    rows = []
    for listeners in LISTENERS:
        if (listeners, "create") not in r.adds:
            continue
        med = {
            key: statistics.median(r.adds[(listeners, key)])
            for key in ("async", "sync", "create", "acreate")
        }
        rows.append([
            str(listeners), us(med["async"], n), us(med["sync"], n), us(med["create"], n),
            us(med["acreate"], n), f"{med['async'] / med['create']:.2f}x",
            f"{med['sync'] / med['create']:.2f}x", f"{med['async'] / med['acreate']:.2f}x",
            str(r.sends.get(listeners, 0)), f"{r.busy.get(f'a{listeners}', 0):.2f}",
            r.load.get(f"a{listeners}", ""),
        ])  # fmt: skip
    print_table(header, rows, left={0, 10})


def print_cpu(bench: Bench) -> None:
    r = bench.results
    print(
        f"-- (b) worker CPU per hint: {bench.args.hints} add_task calls of tasks an hour ahead,"
        f" workers idle (POLL_INTERVAL {IDLE_POLL:g} s);\n   (CPU in the window - CPU in as long"
        " a window without hints) / hints, each worker; /proc resolution 10 ms"
    )
    header = [
        "listening workers", "hints", "group sends", "per worker µs", "max µs", "busy before",
    ]  # fmt: skip
    rows = []
    for (listeners, mode), values in r.cpu.items():
        rows.append([
            f"{listeners}, {mode}", str(bench.args.hints), str(r.cpu_sends[(listeners, mode)]),
            " ".join(f"{v * 1e6:.0f}" for v in values), f"{max(values) * 1e6:.0f}",
            f"{r.busy.get(f'b{listeners}', 0):.2f}",
        ])  # fmt: skip
    print_table(header, rows)


def print_idle(bench: Bench) -> None:
    r, args = bench.results, bench.args
    print(
        f"-- (c) run_at=now after {args.idle:g} s idle: {args.idle_workers} workers (own group and"
        f" queue each, default poll), {args.idle_rounds} rounds;\n   latency = callback start -"
        " start of the add_task call, ms"
    )
    values = r.idle or [float("nan")]
    p50, p95, p99 = (v * 1000 for v in percentiles(values))
    ran = f"{len(r.idle)}/{len(r.idle) + r.idle_missing}"
    row = [ran, f"{p50:.2f}", f"{p95:.2f}", f"{p99:.2f}", f"{max(values) * 1000:.2f}"]
    header = ["ran", "p50", "p95", "p99", "max", "busy before", "load 1/5/15"]
    print_table(header, [[*row, f"{r.busy.get('c', 0):.2f}", r.load.get("c", "")]], left={6})


def print_targets(benches: dict[str, Bench], quick: bool) -> None:
    print("\nTargets (issue #13, PostgreSQL, same run):")
    bench = benches.get("postgres")
    if bench is None:
        print("  PostgreSQL was not measured: no verdict.")
        return
    r = bench.results
    for listeners, key in ((4, "adds_4"), (0, "adds_0")):
        if (listeners, "create") not in r.adds:
            continue
        ratio = statistics.median(r.adds[(listeners, "async")]) / statistics.median(
            r.adds[(listeners, "create")]
        )
        owner = "" if listeners else " (helper adds' target)"
        print(f"  add_task x{bench.args.adds}, {listeners} listening <= {TARGETS[key]}x create():"
              f" {ratio:.2f}x  {verdict(ratio <= TARGETS[key])}{owner}")  # fmt: skip
    for (listeners, mode), values in r.cpu.items():
        worst = max(values) * 1e6
        note = "" if mode == "as sent" else " (for information: the listener's own cost)"
        print(f"  CPU per hint that moves nothing, {listeners} worker(s), {mode}: worst"
              f" {worst:.0f} µs <= {TARGETS['cpu_us']:g}  {verdict(worst <= TARGETS['cpu_us'])}"
              f"{note}")  # fmt: skip
    if r.idle:
        p50, _, p99 = (v * 1000 for v in percentiles(r.idle))
        ok = p50 <= TARGETS["idle_p50_ms"] and p99 <= TARGETS["idle_p99_ms"] and not r.idle_missing
        print(f"  after {bench.args.idle:g} s idle: p50 {p50:.2f} ms <= 15, p99 {p99:.2f} ms <= 30"
              f"  {verdict(ok)}")  # fmt: skip
    if quick:
        print("  (--quick: not the issue's sizes; indicative only)")


def parse_args(argv: list[str] | None) -> Any:
    parser = make_parser(__doc__, "postgres", "small sizes, 3 s idle: a smoke run")
    parser.add_argument("--parts", default="abc", help="which of a, b, c (abc)")
    parser.add_argument("--adds", type=int, help="single adds per measurement (500)")
    parser.add_argument("--runs", type=int, help="runs per median in (a) (3)")
    parser.add_argument("--hints", type=int, help="hints per CPU window in (b) (1000)")
    parser.add_argument("--idle", type=float, help="idle seconds before each probe in (c) (30)")
    parser.add_argument("--idle-rounds", type=int, help="probes per worker in (c) (4)")
    parser.add_argument("--idle-workers", type=int, default=4, help="workers in (c) (4)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    fill_defaults(
        args, adds=(500, 50), runs=(3, 1), hints=(1000, 100), idle=(30.0, 3.0), idle_rounds=(4, 2)
    )
    if set(args.parts) - set(PARTS) or not args.parts:
        parser.error("--parts takes letters among a, b, c")
    if min(args.adds, args.runs, args.hints, args.idle_rounds, args.idle_workers) < 1:
        parser.error("--adds, --runs, --hints, --idle-rounds and --idle-workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    SENDS.install()
    prefix = f"taskshed-bench-hints-{uuid.uuid4().hex[:8]}"
    import channels_redis

    layers = {"default": redis_layer(args.redis, prefix)}
    extra = [f"channels_redis {channels_redis.__version__}"]
    with session("hints", args, PG_DATABASE, layers, extra_versions=extra) as (targets, log_dir):
        print(
            f"Workers: `python -m django runtaskworker` (benchmarks.bench_settings), Redis layer on"
            f" {args.redis}, prefix {prefix}.\nThis process adds with AsyncScheduler (and"
            " SyncScheduler in (a)) through the same layer. Parts: "
            + ", ".join(f"({p}) {PARTS[p]}" for p in args.parts)
        )
        benches = {}
        for target in targets:
            benches[target.alias] = bench = Bench(target, args, log_dir, prefix)
            try:
                for part in args.parts:
                    {"a": bench.adds, "b": bench.cpu, "c": bench.idle}[part]()
            finally:
                bench.stop_workers()
            print_section(target)
            if "a" in args.parts:
                print_adds(bench)
            if "b" in args.parts:
                print_cpu(bench)
            if "c" in args.parts:
                print_idle(bench)
        print_targets(benches, args.quick)
        print_end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
