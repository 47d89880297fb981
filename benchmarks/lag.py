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

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_callbacks, bench_settings  # noqa: E402
from benchmarks.bench_common import (  # noqa: E402  # noqa: E402  # noqa: E402
    REPO_ROOT,
    Target,
    WorkerProcess,
    clear_tasks,
    epoch_datetime,
    fill_defaults,
    load_average,
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


@dataclass
class Outcome:
    """One row of the report: a scenario under a pattern, or the probe."""

    scenario: str
    pattern: str  # "jit", "upfront" or "probe"
    expected: int
    busy_before: float  # cores busy on the machine just before the row
    lateness: list[float] = field(default_factory=list)  # s; the probe: from add_task's call
    floor: list[float] = field(default_factory=list)  # s
    leads: list[float] = field(default_factory=list)  # s between add_task's return and run_at
    add_call: list[float] = field(default_factory=list)  # s, the probe's add_task calls
    load: str = ""
    notes: list[str] = field(default_factory=list)


class Ledger:
    """Where a scenario's worker records its calls: this process's list, or a worker's file."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        if path is None:
            bench_callbacks.LEDGER.clear()

    def entries(self, kind: str) -> list[tuple[str, float, float]]:
        if self.path is None:
            entries = list(bench_callbacks.LEDGER)
        else:
            entries = bench_callbacks.read_ledger(self.path)
        return [entry for entry in entries if entry[0] == kind]


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
        floor = str(REPO_ROOT / "benchmarks" / "bench_floor.py")
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen([sys.executable, floor], stdin=pipe, stdout=pipe, text=True)
        self.proc.stdin.write(json.dumps(dues))
        self.proc.stdin.close()

    async def result(self, timeout: float) -> list[float]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            return []
        return json.loads(self.proc.stdout.read() or "[]")


def lag_kwargs(epoch: float, kind: str = "lag") -> dict[str, str]:
    """The ``lag`` callback's kwargs: the reference time as ISO text (the run_at stored)."""
    kwargs = {"run_at": epoch_datetime(epoch).isoformat()}
    return kwargs if kind == "lag" else {**kwargs, "kind": kind}


def redis_layer(url: str, prefix: str) -> dict[str, Any]:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": prefix},
    }


class Runner:
    def __init__(self, target: Target, args: Any, log_dir: str, prefix: str) -> None:
        self.target = target
        self.args = args
        self.log_dir = log_dir
        self.prefix = prefix
        self.counter = 0

    async def start(self, scenario: str, pattern: str, count: int) -> Outcome:
        """A row begins: wait for a quiet machine, empty the table, pick the channel layer."""
        from asgiref.sync import sync_to_async
        from django.conf import settings

        loop = asyncio.get_running_loop()
        args = self.args
        busy = await loop.run_in_executor(None, wait_quiet, args.quiet_below, args.max_wait)
        await sync_to_async(clear_tasks)(self.target.alias)
        settings.TASKSHED["CHANNEL_LAYER"] = LAYER_ALIAS[scenario]
        return Outcome(scenario, pattern, count, busy)

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
        database = self.target.django_settings()
        if scenario == "b":
            layer = redis_layer(self.args.redis, self.prefix)
            env = bench_settings.environment(database, layer, {"POLL_INTERVAL": 60})
        else:
            env = bench_settings.environment(database, None, {"CHANNEL_LAYER": None})
        env[bench_callbacks.LEDGER_ENV] = path
        process = WorkerProcess(env, ["--max-tasks", str(max_tasks)], self.log_dir, name)
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

    async def warm_up(self, ledger: Ledger, what: str) -> None:
        if not await wait_until(lambda: len(ledger.entries(WARM_UP)) >= 1, 15.0):
            raise RuntimeError(f"{what}: the warm-up task never ran")

    async def scenario(self, scenario: str, pattern: str) -> Outcome:
        from django_taskshed.models import Task

        args = self.args
        count = args.tasks
        outcome = await self.start(scenario, pattern, count)
        offsets = sorted(random.uniform(0, args.seconds) for _ in range(count))
        leads = [random.uniform(args.lead_min, args.lead_max) / 1000 for _ in range(count)]
        dues: list[float] = []
        if pattern == "upfront":
            base = time.time() + (1.5 if scenario == "a" else 4.0)
            dues = [base + offset for offset in offsets]
            now = time.time()
            warm = Task(callback="lag", run_at=epoch_datetime(now), kwargs=lag_kwargs(now, WARM_UP))
            tasks = [warm] + [
                Task(callback="lag", run_at=epoch_datetime(d), kwargs=lag_kwargs(d)) for d in dues
            ]
            await self.scheduler(None).add_tasks(tasks)
        worker, ledger = await self.start_worker(scenario, count + 1)
        try:
            scheduler = self.scheduler(worker)
            if pattern == "jit":
                await scheduler.add_task("lag", kwargs=lag_kwargs(time.time(), WARM_UP))
            await self.warm_up(ledger, SCENARIOS[scenario])
            if pattern == "jit":
                base = time.time() + 1.0 + args.lead_max / 1000
                dues = [base + offset for offset in offsets]
            elif dues[0] - time.time() < 0.5:
                outcome.notes.append("worker was up less than 0.5 s before the first run_at")
            floor = Floor(dues)
            if pattern == "jit":
                outcome.leads = await self.feed(scheduler, dues, leads)
            grace = (8.0 if scenario == "c" else 3.0) + dues[-1] - time.time()
            await wait_until(lambda: len(ledger.entries("lag")) >= count, max(grace, 1.0))
            outcome.load = load_average()
            outcome.floor = await floor.result(max(dues[-1] - time.time(), 0) + 10)
        finally:
            await self.stop_worker(worker)
        outcome.lateness = [started - due for _, due, started in ledger.entries("lag")]
        if len(outcome.lateness) != count:
            outcome.notes.append(f"{count - len(outcome.lateness)} task(s) did not run in time")
        return outcome

    async def feed(self, scheduler: Any, dues: list[float], leads: list[float]) -> list[float]:
        """Add each task ``lead`` before its run_at, in the order of those moments."""
        actual = []
        for add_at, due in sorted((due - lead, due) for due, lead in zip(dues, leads, strict=True)):
            delay = add_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await scheduler.add_task("lag", run_at=epoch_datetime(due), kwargs=lag_kwargs(due))
            actual.append(due - time.time())
        return actual

    async def probe(self) -> Outcome:
        """Tasks with run_at=now from this process to a runtaskworker (Redis layer, poll 60 s)."""
        count = self.args.probe
        result = await self.start("b", "probe", count)
        worker, ledger = await self.start_worker("b", count + 1)
        try:
            scheduler = self.scheduler(worker)
            await scheduler.add_task("lag", kwargs=lag_kwargs(time.time(), WARM_UP))
            await self.warm_up(ledger, "probe")
            await asyncio.sleep(0.5)
            for _ in range(count):
                called = time.time()
                await scheduler.add_task("lag", kwargs=lag_kwargs(called, "now"))
                result.add_call.append(time.time() - called)
                await asyncio.sleep(random.uniform(0.04, 0.08))
            await wait_until(lambda: len(ledger.entries("now")) >= count, 10.0)
            result.load = load_average()
        finally:
            await self.stop_worker(worker)
        result.lateness = [started - due for _, due, started in ledger.entries("now")]
        return result


# --- report ----------------------------------------------------------------------------------


def ms(values: list[float]) -> list[str]:
    """p50, p95, p99 and max of ``values`` (s), in ms."""
    if not values:
        return ["n/a"] * 4
    return [f"{value * 1000:.2f}" for value in [*percentiles(values), max(values)]]


def print_outcomes(target: Target, outcomes: list[Outcome], args: Any) -> None:
    print_section(
        target,
        ": lateness = callback start - run_at, ms"
        f" ({args.tasks:,} tasks at random times over {args.seconds:g} s per row)",
    )
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
        rows += [[title]] if chosen else []
        for o in chosen:
            lead = f"{min(o.leads) * 1000:.0f}" if o.leads else ""
            ran, busy = f"{len(o.lateness)}/{o.expected}", f"{o.busy_before:.2f}"
            rows.append(
                [SCENARIOS[o.scenario], ran, *ms(o.lateness), *ms(o.floor), lead, busy, o.load]
            )
    print_table(header, rows, left={0, 12})
    for o in outcomes:
        for note in o.notes:
            print(f"   note, {o.pattern} {SCENARIOS[o.scenario]}: {note}")
    for probe in (o for o in outcomes if o.pattern == "probe"):
        print(
            f"-- probe: {probe.expected} tasks added with run_at=now from this process to a"
            " runtaskworker (Redis layer, poll 60 s), 40-80 ms apart;\n"
            "   latency = callback start - start of the add_task call (ms)"
        )
        header = ["", "ran", "p50", "p95", "p99", "max", "add_task call p50", "busy before"]
        ran, busy = f"{len(probe.lateness)}/{probe.expected}", f"{probe.busy_before:.2f}"
        row = ["run_at=now, another process", ran, *ms(probe.lateness), ms(probe.add_call)[0]]
        row += [busy, probe.load]
        print_table([*header, "load 1/5/15"], [row], left={0, 8})


def p_ms(o: Outcome, q: int, limit: float) -> tuple[float, tuple[bool, bool]]:
    """The ``q``-th percentile of a row's lateness in ms; whether it is within ``limit`` and
    whether every task ran."""
    value = percentiles(o.lateness, [q])[0] * 1000 if o.lateness else float("inf")
    return value, (value <= limit, len(o.lateness) == o.expected)


def print_targets(results: dict[str, list[Outcome]], quick: bool) -> None:
    print(
        "\nTargets (issue #4, PostgreSQL, jit pattern): (a) p50 <= 2 ms; (b) p50 <= 3 ms and"
        " p99 <= 10 ms; run_at=now from another process p50 <= 15 ms"
    )
    if "postgres" not in results:
        print("  PostgreSQL was not measured: no verdict.")
        return
    outcomes = {(o.scenario, o.pattern): o for o in results["postgres"]}
    for scenario, q, limit in TARGETS:
        o = outcomes.get((scenario, "jit"))
        if o is None:
            print(f"  {SCENARIOS[scenario]}: not measured")
            continue
        value, ok = p_ms(o, q, limit)
        extra = "" if ok[1] else f" ({o.expected - len(o.lateness)} did not run)"
        print(
            f"  {SCENARIOS[scenario]}: p{q} {value:.2f} ms <= {limit:g}: {verdict(all(ok))}{extra}"
        )
    if (probe := outcomes.get(("b", "probe"))) is not None:
        value, ok = p_ms(probe, 50, PROBE_TARGET_MS)
        print(f"  run_at=now from another process: p50 {value:.2f} ms <= 15: {verdict(all(ok))}")
    if quick:
        print("  (--quick: not the issue's size; indicative only)")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Any:
    parser = make_parser(__doc__, "postgres", "60 tasks over 2 s, jit only, probe 10: a smoke run")
    parser.add_argument("--tasks", type=int, help="tasks per row (1,000)")
    parser.add_argument("--seconds", type=float, help="spread of run_at, s (20)")
    parser.add_argument("--pattern", choices=["jit", "upfront", "both"])
    parser.add_argument("--scenarios", default="abc", help="which of a, b, c (abc)")
    parser.add_argument("--probe", type=int, help="run_at=now tasks (100; 0: none)")
    parser.add_argument("--lead-min", type=float, default=50.0, help="jit: ms ahead, least")
    parser.add_argument("--lead-max", type=float, default=500.0, help="jit: ms ahead, most")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, help="random seed (default: random)")
    args = parser.parse_args(argv)
    fill_defaults(
        args, tasks=(1000, 60), seconds=(20.0, 2.0), pattern=("both", "jit"), probe=(100, 10)
    )
    if set(args.scenarios) - set(SCENARIOS) or not args.scenarios:
        parser.error("--scenarios takes letters among a, b, c")
    if args.tasks < 1 or args.seconds <= 0 or not 0 < args.lead_min <= args.lead_max:
        parser.error("--tasks, --seconds and --lead-min/--lead-max must be positive")
    return args


async def run_all(targets: list[Target], args: Any, log_dir: str, prefix: str) -> None:
    patterns = ["jit", "upfront"] if args.pattern == "both" else [args.pattern]
    results: dict[str, list[Outcome]] = {}
    for target in targets:
        runner = Runner(target, args, log_dir, prefix)
        outcomes = results[target.alias] = []
        for pattern in patterns:
            for scenario in args.scenarios:
                progress(f"{target.title}: {pattern} {SCENARIOS[scenario]} (load {load_average()})")
                outcomes.append(await runner.scenario(scenario, pattern))
        if args.probe:
            outcomes.append(await runner.probe())
        print_outcomes(target, outcomes, args)
    print_targets(results, args.quick)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    random.seed(seed)
    prefix = f"taskshed-bench-lag-{uuid.uuid4().hex[:8]}"
    layers = {
        "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        "redis": redis_layer(args.redis, prefix),
    }
    import channels_redis

    redis = [f"channels_redis {channels_redis.__version__}"]
    no_layer = {"CHANNEL_LAYER": None}
    frame = session("lateness", args, PG_DATABASE, layers, no_layer, extra_versions=redis)
    with frame as (targets, log_dir):
        from django_taskshed.conf import DEFAULTS

        print(
            f"{args.tasks:,} one-off tasks per row, run_at uniform at random over"
            f" {args.seconds:g} s (seed {seed}); callback 'lag' (async) records time.time() at"
            " entry - its run_at.\nWorkers use the default flags and settings (concurrency"
            f" {DEFAULTS['CONCURRENCY']}, batch {DEFAULTS['BATCH_SIZE']},"
            f" lease {DEFAULTS['LEASE_SECONDS']:g} s)"
            " except POLL_INTERVAL 60 s in (b); (b)/(c) are\n`python -m django runtaskworker"
            " --max-tasks N+1` (settings benchmarks.bench_settings). Each worker runs one warm-up"
            " task first.\nRedis layer: channels_redis RedisChannelLayer on"
            f" {args.redis}, prefix {prefix}. Floor: bench_floor.py, a bare asyncio loop.call_at"
            " per run_at,\nin its own process, during the same run. 'min lead' = the least time"
            " between an add_task's return and its run_at.\nBefore each row the script waits"
            f" (up to {args.max_wait:g} s) until the machine uses < {args.quiet_below:g} cores"
            " for 2 s; 'busy before' = cores busy then."
        )
        asyncio.run(run_all(targets, args, log_dir, prefix))
        print_end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
