"""Benchmark: how late tasks start (callback start - run_at), in process and across processes.

Run from the repository root with the dev virtualenv (PostgreSQL and Redis on localhost)::

    .venv/bin/python benchmarks/lag.py [--database postgres|sqlite|both] [--tasks 1000]
        [--seconds 20] [--pattern jit|upfront|both] [--probe 100] [--quick]

``--tasks`` one-off tasks get ``run_at`` times drawn uniformly at random over ``--seconds``.
The ``lag`` callback (``bench_callbacks``) receives its task's ``run_at`` as a kwarg and
records ``time.time()`` at entry minus that; its worker writes a ledger. Three workers, one
after the other, each with fresh tasks:

(a) an ``EventDrivenWorker`` in this process, scheduled through ``AsyncScheduler(worker=...)``
    (direct wake-up) with the in-memory channel layer;
(b) a separate ``runtaskworker`` process with the Redis layer (channels_redis) and
    ``POLL_INTERVAL`` 60 s, so only a notification wakes it early;
(c) a separate ``runtaskworker`` process with no channel layer (``CHANNEL_LAYER`` None) and
    the default poll interval (5 s).

Two ways of scheduling (``--pattern``): ``jit``, each task added by this process with
``AsyncScheduler.add_task`` a random 50-500 ms before its ``run_at``, as time goes (the
issue's case); ``upfront``, all tasks added in one ``add_tasks`` before the worker starts.
During each run a bare asyncio timer (``bench_floor``, a process of its own) fires
``loop.call_at`` at the same ``run_at`` times: the floor, under the same load.
Finally, the probe: ``--probe`` tasks added with ``run_at=now`` from this process to a separate
``runtaskworker`` (Redis layer, poll 60 s), timed from the start of the ``add_task`` call to the
callback's start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402
    REPO_ROOT,
    WorkerProcess,
    add_database_arguments,
    add_quiet_arguments,
    clean_up,
    clear_tasks,
    configure_django,
    load_average,
    make_targets,
    migrate,
    percentile,
    print_table,
    scratch_root,
    versions,
    wait_quiet,
)

PG_DATABASE = "taskshed_bench_lag"
SCENARIOS = {
    "a": "(a) EventDrivenWorker in this process, in-memory layer",
    "b": "(b) runtaskworker, Redis layer, POLL_INTERVAL 60 s",
    "c": "(c) runtaskworker, no channel layer, poll 5 s",
}
LAYER_ALIAS = {"a": "memory", "b": "redis", "c": None}
TARGETS = (  # (scenario, percentile, limit ms): issue #4, PostgreSQL, jit pattern
    ("a", 50, 2.0),
    ("b", 50, 3.0),
    ("b", 99, 10.0),
)
PROBE_TARGET_MS = 15.0  # p50, issue #4
WARM_UP = "warmup"


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=dt_timezone.utc)


@dataclass
class Outcome:
    scenario: str
    pattern: str
    expected: int
    lateness: list[float] = field(default_factory=list)  # s
    floor: list[float] = field(default_factory=list)  # s
    leads: list[float] = field(default_factory=list)  # s between add_task's return and run_at
    load: str = ""
    busy_before: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class Probe:
    latency: list[float] = field(default_factory=list)  # add_task call start -> callback start
    add_call: list[float] = field(default_factory=list)  # add_task call duration
    expected: int = 0
    load: str = ""
    busy_before: float = 0.0


class Ledger:
    """Where a scenario's worker records its calls: this process's list, or a worker's file."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        if path is None:
            bench_callbacks.LEDGER.clear()

    def entries(self) -> list[tuple[str, float, float]]:
        if self.path is None:
            return list(bench_callbacks.LEDGER)
        return bench_callbacks.read_ledger(self.path)

    def count(self, kind: str) -> int:
        return sum(1 for entry in self.entries() if entry[0] == kind)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Floor:
    """``bench_floor`` in its own process, armed with the run's due times."""

    def __init__(self, dues: list[float]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_floor.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None  # noqa: S101
        self.proc.stdin.write(json.dumps(dues))
        self.proc.stdin.close()

    async def result(self, timeout: float) -> list[float]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            return []
        assert self.proc.stdout is not None  # noqa: S101
        return json.loads(self.proc.stdout.read() or "[]")


class Runner:
    def __init__(self, target: Any, args: argparse.Namespace, log_dir: str, prefix: str) -> None:
        self.target = target
        self.args = args
        self.log_dir = log_dir
        self.prefix = prefix
        self.counter = 0

    def set_layer(self, alias: str | None) -> None:
        from django.conf import settings

        settings.TASKSHED["CHANNEL_LAYER"] = alias

    def worker_env(self, scenario: str, ledger: str) -> dict[str, str]:
        if scenario == "b":
            layer = redis_layer(self.args.redis, self.prefix)
            env = bench_settings.environment(
                self.target.django_settings(), layer, {"POLL_INTERVAL": 60}
            )
        else:
            env = bench_settings.environment(
                self.target.django_settings(), None, {"CHANNEL_LAYER": None}
            )
        env[bench_callbacks.LEDGER_ENV] = ledger
        return env

    async def start_worker(self, scenario: str, max_tasks: int) -> tuple[Any, Ledger]:
        """(a): an EventDrivenWorker here; (b), (c): a runtaskworker process."""
        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.workers import EventDrivenWorker

        if scenario == "a":
            worker = EventDrivenWorker(
                callback_map={"lag": bench_callbacks.lag},
                datastore=DjangoDataStore(using=self.target.alias),
            )
            await worker.start()
            return worker, Ledger(None)
        self.counter += 1
        name = f"lag-{self.target.alias}-{scenario}-{self.counter}"
        path = os.path.join(self.log_dir, f"{name}.ledger")
        process = WorkerProcess(
            self.worker_env(scenario, path), ["--max-tasks", str(max_tasks)], self.log_dir, name
        )
        await asyncio.get_running_loop().run_in_executor(None, process.wait_ready)
        return process, Ledger(path)

    async def stop_worker(self, worker: Any) -> None:
        if isinstance(worker, WorkerProcess):
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, worker.wait4, 15.0)
            except TimeoutError:
                await loop.run_in_executor(None, worker.terminate)
        else:
            await worker.shutdown()

    def scheduler(self, worker: Any) -> Any:
        from django_taskshed.datastores import DjangoDataStore
        from django_taskshed.schedulers import AsyncScheduler

        in_process = None if isinstance(worker, WorkerProcess) else worker
        return AsyncScheduler(DjangoDataStore(using=self.target.alias), worker=in_process)

    async def quiet(self) -> float:
        loop = asyncio.get_running_loop()
        busy, _ = await loop.run_in_executor(
            None, wait_quiet, self.args.quiet_below, self.args.max_wait
        )
        return busy

    async def scenario(self, scenario: str, pattern: str) -> Outcome:
        from asgiref.sync import sync_to_async

        from django_taskshed.models import Task

        args = self.args
        count = args.tasks
        outcome = Outcome(scenario, pattern, count, busy_before=await self.quiet())
        await sync_to_async(clear_tasks)(self.target.alias)
        self.set_layer(LAYER_ALIAS[scenario])
        offsets = sorted(random.uniform(0, args.seconds) for _ in range(count))
        leads = [random.uniform(args.lead_min, args.lead_max) / 1000 for _ in range(count)]
        dues: list[float] = []
        if pattern == "upfront":
            base = time.time() + (1.5 if scenario == "a" else 4.0)
            dues = [base + offset for offset in offsets]
            now = time.time()
            warm = Task(callback="lag", run_at=to_datetime(now), kwargs=lag_kwargs(now, WARM_UP))
            tasks = [warm] + [
                Task(callback="lag", run_at=to_datetime(d), kwargs=lag_kwargs(d)) for d in dues
            ]
            await self.scheduler(None).add_tasks(tasks)
        worker, ledger = await self.start_worker(scenario, count + 1)
        try:
            scheduler = self.scheduler(worker)
            if pattern == "jit":
                now = time.time()
                await scheduler.add_task("lag", kwargs=lag_kwargs(now, WARM_UP))
            if not await wait_until(lambda: ledger.count(WARM_UP) >= 1, 15.0):
                raise RuntimeError(f"{SCENARIOS[scenario]}: the warm-up task never ran")
            if pattern == "jit":
                base = time.time() + 1.0 + args.lead_max / 1000
                dues = [base + offset for offset in offsets]
            elif dues[0] - time.time() < 0.5:
                outcome.notes.append("worker was up less than 0.5 s before the first run_at")
            floor = Floor(dues)
            if pattern == "jit":
                outcome.leads = await self.feed(scheduler, dues, leads)
            grace = (8.0 if scenario == "c" else 3.0) + dues[-1] - time.time()
            await wait_until(lambda: ledger.count("lag") >= count, max(grace, 1.0))
            outcome.load = load_average()
            outcome.floor = await floor.result(max(dues[-1] - time.time(), 0) + 10)
        finally:
            await self.stop_worker(worker)
        entries = [e for e in ledger.entries() if e[0] == "lag"]
        outcome.lateness = [started - due for _, due, started in entries]
        if len(entries) != count:
            outcome.notes.append(f"{count - len(entries)} task(s) did not run in time")
        return outcome

    async def feed(self, scheduler: Any, dues: list[float], leads: list[float]) -> list[float]:
        """Add each task ``lead`` before its run_at, in the order of those moments."""
        actual = []
        for add_at, due in sorted((due - lead, due) for due, lead in zip(dues, leads, strict=True)):
            delay = add_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await scheduler.add_task("lag", run_at=to_datetime(due), kwargs=lag_kwargs(due))
            actual.append(due - time.time())
        return actual

    async def probe(self) -> Probe:
        """Tasks with run_at=now from this process to a runtaskworker (Redis layer, poll 60 s)."""
        from asgiref.sync import sync_to_async

        count = self.args.probe
        result = Probe(expected=count, busy_before=await self.quiet())
        await sync_to_async(clear_tasks)(self.target.alias)
        self.set_layer("redis")
        worker, ledger = await self.start_worker("b", count + 1)
        try:
            scheduler = self.scheduler(worker)
            await scheduler.add_task("lag", kwargs=lag_kwargs(time.time(), WARM_UP))
            if not await wait_until(lambda: ledger.count(WARM_UP) >= 1, 15.0):
                raise RuntimeError("probe: the warm-up task never ran")
            await asyncio.sleep(0.5)
            for _ in range(count):
                called = time.time()
                await scheduler.add_task("lag", kwargs=lag_kwargs(called, "now"))
                result.add_call.append(time.time() - called)
                await asyncio.sleep(random.uniform(0.04, 0.08))
            await wait_until(lambda: ledger.count("now") >= count, 10.0)
            result.load = load_average()
        finally:
            await self.stop_worker(worker)
        result.latency = [started - due for kind, due, started in ledger.entries() if kind == "now"]
        return result


def lag_kwargs(epoch: float, kind: str = "lag") -> dict[str, str]:
    """The ``lag`` callback's kwargs: the reference time as ISO text (the run_at stored)."""
    kwargs = {"run_at": to_datetime(epoch).isoformat()}
    if kind != "lag":
        kwargs["kind"] = kind
    return kwargs


def redis_layer(url: str, prefix: str) -> dict[str, Any]:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": prefix},
    }


# --- report ----------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> str:
    if not values:
        return "n/a"
    if q == 100:
        return f"{max(values) * 1000:.2f}"
    return f"{percentile(values, q) * 1000:.2f}"


def print_outcomes(target: Any, outcomes: list[Outcome], probe: Probe | None, args: Any) -> None:
    version = f" {target.server_version()}" if target.server_version() else ""
    print(
        f"\n== {target.title}{version}: lateness = callback start - run_at, ms"
        f" ({args.tasks:,} tasks at random times over {args.seconds:g} s per row) =="
    )
    for note in target.notes():
        print(f"   {note}")
    header = [
        "scenario", "ran", "p50", "p95", "p99", "max", "floor p50", "p95", "p99", "max",
        "min lead ms", "busy before", "load 1/5/15",
    ]  # fmt: skip
    rows: list[list[str]] = []
    patterns = {
        "jit": f"-- jit: each task added {args.lead_min:g}-{args.lead_max:g} ms before its run_at",
        "upfront": "-- upfront: all tasks added (one add_tasks) before the worker started",
    }
    for pattern, title in patterns.items():
        chosen = [o for o in outcomes if o.pattern == pattern]
        if not chosen:
            continue
        rows.append([title])
        for o in chosen:
            rows.append(
                [
                    SCENARIOS[o.scenario],
                    f"{len(o.lateness)}/{o.expected}",
                    ms(o.lateness, 50),
                    ms(o.lateness, 95),
                    ms(o.lateness, 99),
                    ms(o.lateness, 100),
                    ms(o.floor, 50),
                    ms(o.floor, 95),
                    ms(o.floor, 99),
                    ms(o.floor, 100),
                    f"{min(o.leads) * 1000:.0f}" if o.leads else "",
                    f"{o.busy_before:.2f}",
                    o.load,
                ]
            )
    print_table(header, rows, set(range(1, 12)))
    for o in outcomes:
        for note in o.notes:
            print(f"   note, {o.pattern} {SCENARIOS[o.scenario]}: {note}")
    if probe is not None:
        print(
            f"-- probe: {probe.expected} tasks added with run_at=now from this process to a"
            " runtaskworker (Redis layer, poll 60 s), 40-80 ms apart;\n"
            "   latency = callback start - start of the add_task call (ms)"
        )
        header = ["", "ran", "p50", "p95", "p99", "max", "add_task call p50", "busy before"]
        header.append("load 1/5/15")
        row = [
            "run_at=now, another process",
            f"{len(probe.latency)}/{probe.expected}",
            ms(probe.latency, 50),
            ms(probe.latency, 95),
            ms(probe.latency, 99),
            ms(probe.latency, 100),
            ms(probe.add_call, 50),
            f"{probe.busy_before:.2f}",
            probe.load,
        ]
        print_table(header, [row], {1, 2, 3, 4, 5, 6, 7})


def print_targets(results: dict[str, tuple[list[Outcome], Probe | None]], quick: bool) -> None:
    print(
        "\nTargets (issue #4, PostgreSQL, jit pattern): (a) p50 <= 2 ms; (b) p50 <= 3 ms and"
        " p99 <= 10 ms; run_at=now from another process p50 <= 15 ms"
    )
    if "postgres" not in results:
        print("  PostgreSQL was not measured: no verdict.")
        return
    outcomes, probe = results["postgres"]
    for scenario, q, limit in TARGETS:
        found = [o for o in outcomes if o.scenario == scenario and o.pattern == "jit"]
        if not found:
            print(f"  {SCENARIOS[scenario]}: not measured")
            continue
        o = found[0]
        value = percentile(o.lateness, q) * 1000 if o.lateness else float("inf")
        complete = len(o.lateness) == o.expected
        verdict = "PASS" if value <= limit and complete else "MISS"
        extra = "" if complete else f" ({o.expected - len(o.lateness)} did not run)"
        print(f"  {SCENARIOS[scenario]}: p{q} {value:.2f} ms <= {limit:g}: {verdict}{extra}")
    if probe is not None:
        value = percentile(probe.latency, 50) * 1000 if probe.latency else float("inf")
        complete = len(probe.latency) == probe.expected
        verdict = "PASS" if value <= PROBE_TARGET_MS and complete else "MISS"
        print(f"  run_at=now from another process: p50 {value:.2f} ms <= 15: {verdict}")
    if quick:
        print("  (--quick: not the issue's size; indicative only)")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser, default="postgres")
    add_quiet_arguments(parser)
    parser.add_argument("--tasks", type=int, default=None, help="tasks per row (1,000)")
    parser.add_argument("--seconds", type=float, default=None, help="spread of run_at, s (20)")
    parser.add_argument("--pattern", choices=["jit", "upfront", "both"], default=None)
    parser.add_argument("--scenarios", default="abc", help="which of a, b, c (abc)")
    parser.add_argument("--probe", type=int, default=None, help="run_at=now tasks (100; 0: none)")
    parser.add_argument("--lead-min", type=float, default=50.0, help="jit: ms ahead, least")
    parser.add_argument("--lead-max", type=float, default=500.0, help="jit: ms ahead, most")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--quick", action="store_true", help="60 tasks over 2 s, jit only, probe 10: a smoke run"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.max_wait = 0.0
    args.tasks = args.tasks or (60 if args.quick else 1000)
    args.seconds = args.seconds or (2.0 if args.quick else 20.0)
    args.pattern = args.pattern or ("jit" if args.quick else "both")
    args.probe = args.probe if args.probe is not None else (10 if args.quick else 100)
    if set(args.scenarios) - set(SCENARIOS) or not args.scenarios:
        parser.error("--scenarios takes letters among a, b, c")
    if args.tasks < 1 or args.seconds <= 0 or not 0 < args.lead_min <= args.lead_max:
        parser.error("--tasks, --seconds and --lead-min/--lead-max must be positive")
    return args


async def run_all(targets: list[Any], args: argparse.Namespace, log_dir: str, prefix: str) -> None:
    patterns = ["jit", "upfront"] if args.pattern == "both" else [args.pattern]
    results: dict[str, tuple[list[Outcome], Probe | None]] = {}
    for target in targets:
        runner = Runner(target, args, log_dir, prefix)
        outcomes = []
        for pattern in patterns:
            for scenario in args.scenarios:
                print(
                    f"  {target.title}: {pattern} {SCENARIOS[scenario]} (load {load_average()})",
                    file=sys.stderr,
                    flush=True,
                )
                outcomes.append(await runner.scenario(scenario, pattern))
        probe = await runner.probe() if args.probe else None
        results[target.alias] = (outcomes, probe)
        print_outcomes(target, outcomes, probe, args)
    print_targets(results, args.quick)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    random.seed(seed)
    prefix = f"taskshed-bench-lag-{uuid.uuid4().hex[:8]}"
    targets = make_targets(args.database, PG_DATABASE, args)
    layers = {
        "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        "redis": redis_layer(args.redis, prefix),
    }
    configure_django(targets, layers, {"CHANNEL_LAYER": None})
    import channels_redis

    from django_taskshed.conf import DEFAULTS

    log_dir = tempfile.mkdtemp(prefix="taskshed-bench-lag-logs-", dir=scratch_root())
    print(f"django-taskshed: lateness, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(versions(targets, [f"channels_redis {channels_redis.__version__}"]))
    print(
        f"{args.tasks:,} one-off tasks per row, run_at uniform at random over {args.seconds:g} s"
        f" (seed {seed}); callback 'lag' (async) records time.time() at entry - its run_at.\n"
        "Workers use the default flags and settings (concurrency"
        f" {DEFAULTS['CONCURRENCY']}, batch {DEFAULTS['BATCH_SIZE']},"
        f" lease {DEFAULTS['LEASE_SECONDS']:g} s)"
        " except POLL_INTERVAL 60 s in (b); (b)/(c) are\n`python -m django runtaskworker"
        " --max-tasks N+1` (settings benchmarks.bench_settings). Each worker runs one warm-up"
        " task first.\nRedis layer: channels_redis RedisChannelLayer on"
        f" {args.redis}, prefix {prefix}. Floor: bench_floor.py, a bare asyncio loop.call_at"
        " per run_at,\nin its own process, during the same run. 'min lead' = the least time"
        " between an add_task's return and its run_at.\nBefore each row the script waits"
        f" (up to {args.max_wait:g} s) until the machine uses < {args.quiet_below:g} cores for 2 s;"
        " 'busy before' = cores busy then."
    )
    try:
        for target in targets:
            migrate(target.alias)
        from django.db import connections

        connections.close_all()
        asyncio.run(run_all(targets, args, log_dir, prefix))
        print(f"\nload average at end {load_average()}")
    finally:
        clean_up(targets, log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
