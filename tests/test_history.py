"""Run history: one ``TaskRun`` row per attempt, written with the worker's results."""

import asyncio
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, Outcome, runs
from django_taskshed.models import RunOutcome, Task, TaskRun
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.history import run_row
from django_taskshed.workers.runner import failed
from tests.conftest import package_apps
from tests.waiting import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

FAST = {"poll_interval": 0.1}


async def ok():
    return {"answer": 42}


async def big():
    return "x" * 100


async def opaque():
    return object()


async def boom():
    raise ZeroDivisionError("boom")


async def meddle(items, options):
    """Changes the arguments it was given (the history keeps them as they were claimed)."""
    items.append("added by the callback")
    options["seen"] = True


async def slow():
    await asyncio.sleep(5)


CALLBACKS = {
    "ok": ok, "big": big, "opaque": opaque, "boom": boom, "slow": slow, "meddle": meddle,
}  # fmt: skip


async def runs_of(task_id: str) -> list[TaskRun]:
    return [run async for run in TaskRun.objects.filter(task_id=task_id).order_by("id")]


async def drain(*tasks: Task, count: int, **options) -> EventDrivenWorker:
    """Add ``tasks``, run a worker until ``count`` runs are recorded, stop it."""
    await AsyncScheduler().add_tasks(list(tasks))
    worker = EventDrivenWorker(CALLBACKS, **{**FAST, **options})
    await worker.start()
    try:
        await eventually(lambda: _recorded(count), timeout=10, what=f"{count} recorded runs")
    finally:
        await worker.shutdown()
    return worker


async def _recorded(count: int) -> bool:
    return await TaskRun.objects.acount() >= count


def task(task_id: str, callback: str, **fields) -> Task:
    return Task(task_id=task_id, callback=callback, run_at=timezone.now(), **fields)


async def test_each_outcome_is_one_row_with_its_fields(settings):
    settings.TASKSHED = {"HISTORY_MAX_RESULT_BYTES": 50}
    tasks = [
        task("good", "ok", group_id="g"),
        task("bad", "boom"),
        task("late", "slow", timeout=timedelta(seconds=0.2)),
        task("big", "big"),
        task("opaque", "opaque"),
    ]
    worker = await drain(*tasks, count=5)
    (good,) = await runs_of("good")
    assert (good.outcome, good.callback, good.group_id, good.attempt) == ("succeeded", "ok", "g", 1)
    assert (good.return_value, good.return_value_omitted) == ({"answer": 42}, False)
    assert good.worker_id == worker.worker_id and good.kwargs == {}
    assert good.scheduled_for <= good.started_at <= good.finished_at
    assert not await Task.objects.filter(pk="good").aexists()  # the task is gone, its run stays
    (bad,) = await runs_of("bad")
    assert bad.outcome == "failed" and bad.error == "ZeroDivisionError: boom"
    assert "raise ZeroDivisionError" in bad.traceback and bad.return_value is None
    (late,) = await runs_of("late")
    assert late.outcome == "timed_out" and "timed out after 0.2 s" in late.error
    for task_id in ("big", "opaque"):  # over the size limit; not JSON
        (run,) = await runs_of(task_id)
        assert (run.outcome, run.return_value, run.return_value_omitted) == (
            "succeeded",
            None,
            True,
        )


async def test_a_run_keeps_the_kwargs_it_was_claimed_with():
    """The row's kwargs are the claim's JSON text (not encoded again after the run), so what
    a callback does to its arguments is not recorded as what it was called with."""
    kwargs = {"items": [1, "two", {"three": 3.5}], "options": {"é": None, "nested": [True]}}
    await drain(task("meddle", "meddle", kwargs=kwargs), count=1)
    (run,) = await runs_of("meddle")
    assert (run.outcome, run.kwargs) == ("succeeded", kwargs)


def test_a_claim_carries_the_kwargs_json_text_the_history_keeps():
    """On the single-statement claim (PostgreSQL, SQLite) the claim keeps the text it read;
    MySQL's claim encodes the kwargs it read."""
    kwargs = {"b": [1, 2], "a": "x"}
    SyncScheduler().add_task("ok", timezone.now(), kwargs=kwargs, task_id="text")
    SyncScheduler().add_task("ok", timezone.now(), task_id="empty")
    claims = {c.task_id: c for c in DjangoDataStore().claim_due_tasks("w", 10, 30)}
    assert set(claims) == {"text", "empty"}
    claim = claims["text"]
    assert json.loads(claim.kwargs_json) == kwargs
    assert json.loads(claim.stored_kwargs) == claim.kwargs == kwargs
    assert json.loads(claims["empty"].stored_kwargs) == {}


async def test_retries_are_rows_of_their_own(settings):
    settings.TASKSHED = {"MAX_RETRIES": 2, "RETRY_BACKOFF": 0}
    await drain(task("flaky", "boom"), count=3)
    runs = await runs_of("flaky")
    assert [(run.attempt, run.outcome) for run in runs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]


async def test_history_off_writes_nothing(settings):
    settings.TASKSHED = {"HISTORY": False}
    await AsyncScheduler().add_tasks([task("quiet", "ok")])
    worker = EventDrivenWorker(CALLBACKS, **FAST)
    await worker.start()
    try:
        await eventually(lambda: _gone("quiet"), what="the task to run")
    finally:
        await worker.shutdown()
    assert await TaskRun.objects.acount() == 0


async def _gone(task_id: str) -> bool:
    return not await Task.objects.filter(pk=task_id).aexists()


def claimed(store: DjangoDataStore, *task_ids: str):
    SyncScheduler().add_tasks([task(task_id, "ok") for task_id in task_ids])
    return {claim.task_id: claim for claim in store.claim_due_tasks("w1", 10, 60)}


def row_for(claim) -> tuple:
    now = timezone.now()
    return run_row(claim, Outcome(claim, delete=True), "succeeded", now, now, "w1")


def test_a_lost_lease_writes_no_row_and_a_written_result_no_second_one():
    store = DjangoDataStore()
    claims = claimed(store, "kept", "lost")
    Task.objects.filter(pk="lost").update(claim_token="someone-else")
    outcomes = [Outcome(claim, delete=True, runs=(row_for(claim),)) for claim in claims.values()]
    report = store.settle("w1", outcomes)
    assert report.lost == ["lost"]
    assert list(TaskRun.objects.values_list("task_id", flat=True)) == ["kept"]
    again = store.settle("w1", outcomes)  # a retried batch: nothing is held any more
    assert sorted(again.lost) == ["kept", "lost"]
    assert TaskRun.objects.count() == 1


@pytest.mark.parametrize("kind", ["delete", "update"])
def test_settled_runs_are_recorded_exactly_as_given(kind):
    """Every column of a result's history rows, as the worker built them (on PostgreSQL the
    result's own statement inserts them)."""
    from django_taskshed.occurrences import Missed

    store = DjangoDataStore()
    claim = claimed(store, "exact")["exact"]
    start = timezone.now().replace(microsecond=123456)
    end = start + timedelta(seconds=1, microseconds=7)
    outcome = Outcome(claim, delete=kind == "delete")
    run = list(run_row(claim, outcome, "failed", start, end, "w1", {"é": [1, None, "\\"]}))
    run[9:11] = ["ValueError: «quoted» 'x'", 'Traceback:\n  "line"\t\\']
    run[16] = json.dumps({"b": "ü", "n": [1.5, True, None]})
    missed = Missed(count=3, first=start - timedelta(hours=3), last=start - timedelta(hours=1))
    coalesced = runs.missed_row(claim, RunOutcome.COALESCED, missed, end, "w1", 2)
    later = start + timedelta(hours=1)
    changes = {} if kind == "delete" else {"run_at": later, "attempts": 0, "last_run_at": start}
    outcome = Outcome(claim, kind == "delete", changes, (tuple(run), coalesced))
    assert store.settle("w1", [outcome]).settled == 1
    recorded = TaskRun.objects.order_by("id").values_list(*runs.RUN_COLUMNS)
    expected = []
    for row in (run, coalesced):
        row = list(row)
        for i in (11, 16):  # kept as JSON text, read back decoded
            row[i] = None if row[i] is None else json.loads(row[i])
        expected.append(tuple(row))
    assert [tuple(row) for row in recorded] == expected
    if kind == "update":
        assert Task.objects.values_list("run_at", "lease_owner").get() == (later, None)


def test_a_nul_character_in_an_error_or_a_result_does_not_hold_back_the_result():
    """PostgreSQL stores no NUL in text or jsonb: the error keeps it escaped, and a result
    holding one is left out of the history (as one too big would be), so the run's result and
    its history row are written."""
    store = DjangoDataStore()
    claim = claimed(store, "nul")["nul"]
    now = timezone.now()
    outcome = failed(claim, ValueError("bad\x00byte"), now, now, max_retries=0, backoff=1.0)
    run = run_row(claim, outcome, "failed", now, now, "w1", {"text": "a\x00b"})
    report = store.settle("w1", [Outcome(claim, False, outcome.changes, (run,))])
    assert (report.settled, report.lost, report.edited) == (1, [], [])
    task = Task.objects.get(pk="nul")
    assert task.failed_at is not None and task.last_error == "ValueError: bad\\x00byte"
    assert task.last_traceback.endswith("ValueError: bad\\x00byte\n")
    recorded = TaskRun.objects.get(task_id="nul")
    assert recorded.error == task.last_error
    assert recorded.return_value is None and recorded.return_value_omitted


REFUSE_RUNS = {
    "postgresql": [
        "CREATE FUNCTION taskshed_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'history table unavailable'; END $$",
        "CREATE TRIGGER taskshed_test_refuse BEFORE INSERT ON django_taskshed_taskrun"
        " FOR EACH ROW EXECUTE FUNCTION taskshed_test_refuse()",
    ],
    "sqlite": [
        "CREATE TRIGGER taskshed_test_refuse BEFORE INSERT ON django_taskshed_taskrun"
        " BEGIN SELECT RAISE(ABORT, 'history table unavailable'); END",
    ],
    "mysql": [
        "CREATE TRIGGER taskshed_test_refuse BEFORE INSERT ON django_taskshed_taskrun"
        " FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'history table unavailable'",
    ],
}
ALLOW_RUNS = {
    "postgresql": [
        "DROP TRIGGER taskshed_test_refuse ON django_taskshed_taskrun",
        "DROP FUNCTION taskshed_test_refuse()",
    ],
    "sqlite": ["DROP TRIGGER taskshed_test_refuse"],
    "mysql": ["DROP TRIGGER taskshed_test_refuse"],
}


@pytest.fixture
def history_refused():
    """The history table refuses every insert (a trigger), as a broken one would."""
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in REFUSE_RUNS[connection.vendor]:
            cursor.execute(statement)
    yield
    with connection.cursor() as cursor:
        for statement in ALLOW_RUNS[connection.vendor]:
            cursor.execute(statement)


@pytest.mark.parametrize("kind", ["delete", "update"])
def test_a_failing_history_write_is_logged_and_keeps_the_result(history_refused, caplog, kind):
    store = DjangoDataStore()
    claims = claimed(store, "one", "two")
    later = timezone.now() + timedelta(hours=1)
    if kind == "delete":
        outcomes = [Outcome(c, delete=True, runs=(row_for(c),)) for c in claims.values()]
    else:
        changes = {"run_at": later, "attempts": 0}
        outcomes = [Outcome(c, changes=changes, runs=(row_for(c),)) for c in claims.values()]
    report = store.settle("w1", outcomes)
    assert report.settled == 2 and not report.lost and not report.edited
    if kind == "delete":
        assert not Task.objects.filter(pk__in=["one", "two"]).exists()
    else:
        rows = Task.objects.filter(pk__in=["one", "two"]).values_list("run_at", "lease_owner")
        assert sorted(rows) == [(later, None), (later, None)]
    assert "could not record 2 task run(s)" in caplog.text
    assert "history table unavailable" in caplog.text
    assert TaskRun.objects.count() == 0


@pytest.mark.slow
def test_a_real_worker_records_its_runs(worker_procs):
    SyncScheduler().add_tasks(
        [
            Task(task_id="r-ok", callback="record", kwargs={"key": "r-ok"}),
            Task(task_id="r-fail", callback="fail", kwargs={"key": "r-fail"}),
            Task(
                task_id="r-slow",
                callback="sleep",
                kwargs={"key": "r-slow", "seconds": 5},
                timeout=timedelta(seconds=0.3),
            ),
        ]
    )
    worker = worker_procs.start("hist-1", "--poll-interval", "0.2")
    worker_procs.wait_until(lambda: TaskRun.objects.count() >= 3, 20, "three recorded runs")
    runs = {run.task_id: run for run in TaskRun.objects.all()}
    assert [runs[key].outcome for key in ("r-ok", "r-fail", "r-slow")] == [
        "succeeded",
        "failed",
        "timed_out",
    ]
    assert "timed out after 0.3 s" in runs["r-slow"].error
    assert {run.worker_id for run in runs.values()} == {"hist-1"}
    assert all(run.attempt == 1 and run.finished_at >= run.started_at for run in runs.values())
    worker.stop()


@pytest.mark.slow
def test_a_worker_down_for_several_intervals_leaves_one_coalesced_row(worker_procs):
    interval = timedelta(seconds=1)
    SyncScheduler().add_task(
        "record", run_type="recurring", interval=interval, task_id="beat", kwargs={"key": "beat"}
    )
    first = worker_procs.start("up-then-down", "--poll-interval", "0.2")
    worker_procs.wait_until(lambda: TaskRun.objects.count() >= 2, 20, "two runs")
    first.stop()
    time.sleep(4.5)  # no worker: four or five occurrences fall due
    second = worker_procs.start("back-up", "--poll-interval", "0.2")
    mine = TaskRun.objects.filter(worker_id="back-up")
    worker_procs.wait_until(
        lambda: mine.filter(outcome="coalesced").exists(), 20, "a coalesced row"
    )
    second.stop()
    ran, *_ = mine.filter(outcome="succeeded").order_by("id")
    missed, *_ = mine.filter(outcome="coalesced").order_by("id")
    assert ran.started_at - ran.scheduled_for > 3 * interval  # due while no worker ran
    assert missed.missed >= 3 and missed.missed_from == ran.scheduled_for + interval
    assert missed.missed == (missed.missed_until - missed.missed_from) // interval + 1
    assert missed.missed_until <= missed.finished_at < missed.missed_until + interval
    assert missed.finished_at == ran.finished_at


@pytest.mark.django_db
def test_the_admin_lists_runs_read_only_with_lateness_and_duration(admin_client):
    from django.urls import reverse

    now = timezone.now()
    TaskRun.objects.create(
        task_id="nightly", callback="ok", scheduled_for=now - timedelta(seconds=3),
        started_at=now - timedelta(seconds=2.5), finished_at=now, outcome="succeeded",
    )  # fmt: skip
    response = admin_client.get(reverse("admin:django_taskshed_taskrun_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "nightly" in page and "0.5 s" in page and "2.5 s" in page
    assert admin_client.get(reverse("admin:django_taskshed_taskrun_add")).status_code == 403


# --- retention ---------------------------------------------------------------------------------


def old_and_new_runs(old: int, new: int) -> None:
    now = timezone.now()
    rows = [
        TaskRun(
            task_id=f"{age}-{i}", callback="ok", outcome="succeeded",
            scheduled_for=now - timedelta(days=days), started_at=now - timedelta(days=days),
        )
        for age, days, count in (("old", 10, old), ("new", 1, new))
        for i in range(count)
    ]  # fmt: skip
    rows.append(  # a run that did not happen has a started_at too, and is pruned by it
        TaskRun(task_id="coalesced", callback="ok", outcome="coalesced", missed=3,
                scheduled_for=now - timedelta(days=10), started_at=now - timedelta(days=10))
    )  # fmt: skip
    TaskRun.objects.bulk_create(rows)


def test_prune_deletes_only_runs_past_the_retention_in_batches(django_assert_max_num_queries):
    from django_taskshed.datastores.runs import PRUNE_BATCH, prune_runs

    old_and_new_runs(old=PRUNE_BATCH + 5, new=3)
    cut = timezone.now() - timedelta(days=7)
    assert prune_runs("default", cut, max_batches=1) == PRUNE_BATCH  # one statement's worth
    with django_assert_max_num_queries(4):
        assert prune_runs("default", cut) == 6
    assert sorted(TaskRun.objects.values_list("task_id", flat=True)) == ["new-0", "new-1", "new-2"]


def test_a_prune_batch_is_one_range_of_the_started_index_in_its_order():
    """The condition and the order come from taskshed_run_started_idx: no filter on other
    rows, no sort (benchmarks/prune.py measures it at 1,000,000 rows)."""
    from django.db import connection, transaction

    from django_taskshed.datastores.runs import prune_batch

    query = prune_batch("default", timezone.now())
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A small table is cheaper to scan and sort than to index: take that choice away.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("SET LOCAL enable_sort = off")
        plan = query.explain()
    assert "taskshed_run_started_idx" in plan, plan
    assert "Filter" not in plan and "Sort" not in plan, plan
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_prunetaskruns_uses_the_retention_or_older_than(settings):
    import io

    from django.core.management import call_command

    old_and_new_runs(old=2, new=2)
    settings.TASKSHED = {"HISTORY_RETENTION": timedelta(days=30)}
    out = io.StringIO()
    call_command("prunetaskruns", stdout=out)
    assert "deleted 0 run(s)" in out.getvalue()
    call_command("prunetaskruns", "--older-than", str(2 * 86400), stdout=out)
    assert "deleted 3 run(s)" in out.getvalue()
    assert TaskRun.objects.count() == 2


def test_a_workers_heartbeat_prunes_at_most_once_a_minute(settings):
    from django_taskshed.models import WorkerRecord
    from django_taskshed.workers.heartbeat import Heartbeat

    old_and_new_runs(old=3, new=1)
    now = timezone.now()
    record = WorkerRecord(
        worker_id="pruner", hostname="h", pid=1, started_at=now, heartbeat_at=now, expires_at=now
    )
    beat = Heartbeat(record, DjangoDataStore(), 60, lambda: [], lambda: 0)
    beat.beat()
    assert TaskRun.objects.count() == 1
    old_and_new_runs(old=2, new=0)
    beat.beat()  # within the minute: nothing pruned
    assert TaskRun.objects.count() == 4


@pytest.mark.django_db
def test_a_tasks_page_shows_its_last_20_runs_and_links_to_the_rest(admin_client):
    from django.urls import reverse

    now = timezone.now()
    Task.objects.create(task_id="daily", callback="ok", run_at=now + timedelta(days=1))
    TaskRun.objects.bulk_create(
        TaskRun(
            task_id="daily", callback="ok", outcome="failed" if i == 24 else "succeeded",
            scheduled_for=now - timedelta(days=25 - i), started_at=now - timedelta(days=25 - i),
            finished_at=now - timedelta(days=25 - i) + timedelta(seconds=2),
            error="ValueError: nope" if i == 24 else "",
        )
        for i in range(25)
    )  # fmt: skip
    TaskRun.objects.create(task_id="other", callback="ok", outcome="succeeded", scheduled_for=now)
    page = admin_client.get(reverse("admin:django_taskshed_task_change", args=["daily"]))
    html = page.content.decode()
    section = html[html.lower().index("last 20 runs") :]
    assert section.count("<li>") >= 20
    assert "failed" in section and "ValueError: nope" in section and "(2 s)" in section
    assert "taskrun/?q=daily" in section


# --- runs that did not happen ------------------------------------------------------------------


@pytest.mark.parametrize("coalesce", [True, False])
async def test_coalescing_records_the_missed_occurrences_as_one_row(coalesce):
    """Due 5.5 intervals ago: with coalescing one run and one row for the 5 it skipped;
    without, 6 runs and no such row."""
    interval = timedelta(minutes=1)
    first = timezone.now() - 5.5 * interval
    recurring = task("tick", "ok", run_type="recurring", interval=interval, coalesce=coalesce)
    recurring.run_at = first
    await drain(recurring, count=2 if coalesce else 6)
    rows = await runs_of("tick")
    if not coalesce:
        assert [run.outcome for run in rows] == ["succeeded"] * 6
        assert [run.scheduled_for for run in rows] == [first + n * interval for n in range(6)]
        return
    ran, missed = rows
    assert (ran.outcome, ran.scheduled_for) == ("succeeded", first)
    assert (missed.outcome, missed.missed, missed.attempt) == ("coalesced", 5, 1)
    assert (missed.missed_from, missed.missed_until) == (first + interval, first + 5 * interval)
    assert missed.scheduled_for == missed.missed_from
    assert missed.started_at == missed.finished_at == ran.finished_at
    assert missed.worker_id == ran.worker_id and missed.kwargs is None
    assert (await Task.objects.aget(pk="tick")).run_at == first + 6 * interval


async def test_a_cron_tasks_coalesced_row_counts_its_skipped_occurrences():
    every_five = timedelta(minutes=5)
    now = timezone.now()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5 + 20)
    cron = task("cron", "ok", run_type="cron", cron="*/5 * * * *", timezone="UTC")
    cron.run_at = first
    await drain(cron, count=2)
    ran, missed = await runs_of("cron")
    following = (await Task.objects.aget(pk="cron")).run_at
    assert (ran.outcome, ran.scheduled_for, missed.outcome) == ("succeeded", first, "coalesced")
    assert missed.missed == (following - first) // every_five - 1 >= 4
    assert (missed.missed_from, missed.missed_until) == (first + every_five, following - every_five)


async def test_an_attempt_under_a_dead_workers_lease_is_recorded_abandoned():
    scheduler = AsyncScheduler()
    # One retry: with none (the default), a task whose worker died is failed, not run again.
    orphan = task("orphan", "ok", group_id="g", max_retries=1)
    await scheduler.add_tasks([orphan, task("fresh", "ok")])
    lapsed = timezone.now() - timedelta(seconds=1)
    await Task.objects.filter(pk="orphan").aupdate(
        lease_owner="dead-worker", claim_token="t" * 32, lease_expires_at=lapsed
    )
    await drain(count=3)
    abandoned, rerun = await runs_of("orphan")
    assert (abandoned.outcome, abandoned.worker_id, abandoned.attempt) == (
        "abandoned",
        "dead-worker",
        1,
    )
    assert abandoned.group_id == "g" and "dead-worker" in abandoned.error
    assert abandoned.kwargs == rerun.kwargs == {}
    assert abandoned.scheduled_for == rerun.scheduled_for
    assert (rerun.outcome, rerun.attempt) == ("succeeded", 2)
    assert [run.outcome for run in await runs_of("fresh")] == ["succeeded"]


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "transaction"])
def test_a_claim_takes_over_an_expired_lease_counting_the_attempt(monkeypatch, one_statement):
    """Both claim paths (the single statement, and the transaction MySQL uses)."""
    from django_taskshed.datastores import hotpath

    if not one_statement:
        monkeypatch.setattr(hotpath, "can_claim", lambda connection: False)
    elif not hotpath.can_claim(connection_of(DjangoDataStore())):
        pytest.skip("this database has no single-statement claim")
    SyncScheduler().add_tasks([task("orphan", "ok"), task("fresh", "ok")])
    lapsed = timezone.now() - timedelta(seconds=1)
    Task.objects.filter(pk="orphan").update(
        lease_owner="dead", claim_token="t" * 32, lease_expires_at=lapsed, attempts=1
    )
    claims = {claim.task_id: claim for claim in DjangoDataStore().claim_due_tasks("w2", 10, 60)}
    assert (claims["orphan"].abandoned_by, claims["orphan"].attempts) == ("dead", 2)
    assert (claims["fresh"].abandoned_by, claims["fresh"].attempts) == (None, 0)
    stored = Task.objects.get(pk="orphan")
    assert (stored.lease_owner, stored.abandoned_by, stored.attempts) == ("w2", "dead", 2)
    (row,) = TaskRun.objects.all()
    assert (row.task_id, row.outcome, row.worker_id, row.attempt) == (
        "orphan",
        "abandoned",
        "dead",
        2,
    )


def connection_of(store: DjangoDataStore):
    from django.db import connections

    return connections[store.using]


def test_history_off_counts_an_abandoned_attempt_without_a_row(settings):
    settings.TASKSHED = {"HISTORY": False}
    SyncScheduler().add_tasks([task("orphan", "ok")])
    lapsed = timezone.now() - timedelta(seconds=1)
    Task.objects.filter(pk="orphan").update(lease_owner="dead", lease_expires_at=lapsed)
    (claim,) = DjangoDataStore().claim_due_tasks("w2", 10, 60)
    assert (claim.abandoned_by, claim.attempts) == ("dead", 1)
    assert not TaskRun.objects.exists()


def test_resuming_skips_what_fell_due_while_paused_and_records_it_once(settings):
    interval = timedelta(minutes=1)
    first = timezone.now() - 3.5 * interval
    scheduler = SyncScheduler()
    recurring = task("paused", "ok", run_type="recurring", interval=interval, paused=True)
    recurring.run_at = first
    one_off = task("paused-once", "ok", paused=True)
    one_off.run_at = first
    scheduler.add_tasks([recurring, one_off])
    assert scheduler.resume_tasks(task_ids=["paused", "paused-once"]) == 2
    resumed = Task.objects.get(pk="paused")
    assert (resumed.paused, resumed.run_at) == (False, first + 4 * interval)  # next from now
    assert Task.objects.get(pk="paused-once").run_at == first  # a one-off still runs, late
    (row,) = TaskRun.objects.all()
    assert (row.task_id, row.outcome, row.missed) == ("paused", "skipped_paused", 4)
    assert (row.missed_from, row.missed_until) == (first, first + 3 * interval)
    assert row.worker_id == "" and row.started_at == row.finished_at

    settings.TASKSHED = {"HISTORY": False}
    scheduler.pause_tasks(task_ids=["paused"])
    Task.objects.filter(pk="paused").update(run_at=first)
    scheduler.resume_tasks(task_ids=["paused"])
    assert Task.objects.get(pk="paused").run_at == first + 4 * interval
    assert TaskRun.objects.count() == 1  # no second row with the history off


def test_resuming_a_cron_task_moves_it_past_now():
    now = timezone.now()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    cron = task("cron", "ok", run_type="cron", cron="*/10 * * * *", timezone="UTC", paused=True)
    cron.run_at = first.replace(minute=first.minute - first.minute % 10)
    SyncScheduler().add_tasks([cron])
    SyncScheduler().resume_tasks(task_ids=["cron"])
    following = Task.objects.get(pk="cron").run_at
    assert now < following <= now + timedelta(minutes=10) and following.minute % 10 == 0
    (row,) = TaskRun.objects.all()
    assert row.missed == (following - cron.run_at) // timedelta(minutes=10)
    assert (row.missed_from, row.missed_until) == (cron.run_at, following - timedelta(minutes=10))
