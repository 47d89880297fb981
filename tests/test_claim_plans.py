"""The claim's query plans, on tables shaped as production shapes them.

A backlog (many tasks due) is claimed by walking the due index (``priority DESC, run_at``) to
the claim's LIMIT, with no sort. A few due tasks among many future ones must not walk that
index, which would pass every future entry of each priority: they are read from the ``run_at``
index up to now and sorted. PostgreSQL's planner chooses from its statistics; on SQLite and
MySQL the datastore chooses (``LeaseOperations.claimable``).
"""

import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, hotpath
from django_taskshed.datastores.leases import CLAIM_FIELDS
from django_taskshed.models import CLAIM_ORDER, RUNNABLE, Task

pytestmark = pytest.mark.django_db

DUE_INDEX, RUN_AT_INDEX = "taskshed_due_idx", "taskshed_run_at_idx"
QUEUES = {"every queue": None, "one queue": ["a"], "two queues": ["b", "c"]}
FUTURE = 20_000  # enough rows that PostgreSQL's costs tell the plans apart
COMPUTED = {"task_id", "run_at", "queue", "priority"}  # set per row by fill()


def explain(statement: str, params) -> str:
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(prefix + statement, params)
        rows = cursor.fetchall()
        if connection.vendor == "mysql":  # the index chosen, not the possible ones
            names = [column[0].lower() for column in cursor.description]
            rows = [(f"key={row[names.index('key')]}", row[names.index("extra")]) for row in rows]
        return "\n".join(" ".join(map(str, row)) for row in rows)


def sorted_after_reading(plan: str) -> bool:
    if connection.vendor == "sqlite":
        return "USE TEMP B-TREE FOR ORDER BY" in plan
    if connection.vendor == "postgresql":
        return "Sort" in plan
    return "filesort" in plan


def claim_plan(queues=None) -> str:
    """The plan of the claim a worker would make now (its one statement, or the SELECT of the
    transaction path)."""
    now = timezone.now()
    picked = DjangoDataStore().claimable(now, 0.05, queues).values("task_id")[:10]
    if hotpath.can_claim(connection):
        return explain(*hotpath.claim_statement(picked, CLAIM_FIELDS, "w", "t" * 32, now))
    query = picked.select_for_update(skip_locked=True).query
    with transaction.atomic():
        return explain(*query.get_compiler(picked.db).as_sql())


def fill(due: int, future: int, priorities: tuple[int, ...]) -> None:
    """``due`` tasks due a second apart up to now and ``future`` ones after it, their
    priorities taken in turn from ``priorities``, queues a, b, c; then fresh statistics.

    One INSERT ... SELECT on PostgreSQL and SQLite (building 20,000 instances would take most
    of the test's time); instances on MySQL, whose plans are not checked here.
    """
    if connection.vendor == "mysql":
        now = timezone.now()
        times = [now - timedelta(seconds=n + 1) for n in range(due)]
        times += [now + timedelta(seconds=n + 60) for n in range(future)]
        Task.objects.bulk_create(
            Task(task_id=f"t{n}", callback="noop", run_at=at, queue="abc"[n % 3],
                 priority=priorities[n % len(priorities)])
            for n, at in enumerate(times)
        )  # fmt: skip
        return
    template = Task(task_id="t", callback="noop", run_at=timezone.now())
    Task.objects.bulk_create([template])  # one row with every default, copied below
    table = connection.ops.quote_name(Task._meta.db_table)
    columns = [f.column for f in Task._meta.concrete_fields if f.column not in COMPUTED]
    copied = ", ".join(map(connection.ops.quote_name, columns))
    levels = ", ".join(map(str, priorities))
    if connection.vendor == "postgresql":
        numbers = "generate_series(1, %s) AS s(n)"
        moment = "now() + (CASE WHEN s.n <= %s THEN -s.n ELSE s.n + 60 END) * interval '1 second'"
        level = f"(ARRAY[{levels}])[1 + s.n %% {len(priorities)}]"
    else:
        numbers = (
            "(WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < %s) "
            "SELECT n FROM r) AS s"
        )
        moment = (
            "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', "
            "(CASE WHEN s.n <= %s THEN -s.n ELSE s.n + 60 END) || ' seconds')"
        )
        level = (
            f"(CASE s.n %% {len(priorities)} "
            + " ".join(f"WHEN {i} THEN {p}" for i, p in enumerate(priorities))
            + " END)"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({copied}, task_id, run_at, queue, priority) "  # noqa: S608
            f"SELECT {copied}, 't' || s.n, {moment}, substr('abc', 1 + s.n %% 3, 1), {level} "
            f"FROM {table}, {numbers} WHERE {table}.task_id = 't'",
            [due, due + future],
        )
        cursor.execute(f"DELETE FROM {table} WHERE task_id = 't'")  # noqa: S608
    assert Task.objects.count() == due + future
    assert Task.objects.filter(run_at__lte=timezone.now()).count() == due
    assert set(Task.objects.values_list("priority", flat=True)) == set(priorities)
    if connection.vendor != "mysql":  # MySQL's ANALYZE TABLE would commit the test's transaction
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(Task._meta.db_table)}")


def plans_checked() -> None:
    if connection.vendor == "mysql":
        pytest.skip("MySQL/MariaDB claim plans are not checked yet (only PostgreSQL and SQLite)")


@pytest.mark.parametrize("queues", QUEUES.values(), ids=QUEUES.keys())
def test_a_backlog_is_claimed_in_claim_order_without_a_sort(queues):
    plans_checked()
    fill(due=FUTURE, future=100, priorities=(0, 5, -3))
    plan = claim_plan(queues)
    if connection.vendor == "postgresql":
        assert DUE_INDEX in plan and not sorted_after_reading(plan), plan
        if queues is not None:
            assert "queue" in plan, plan  # filtered on the index scan
    else:  # mixed priorities: read up to now, sorted (the datastore's choice there)
        assert RUN_AT_INDEX in plan and sorted_after_reading(plan), plan


@pytest.mark.parametrize("priorities", [(0,), (0, 5, -3)], ids=["one priority", "several"])
def test_a_few_due_among_many_future_tasks_are_read_from_the_run_at_index(priorities):
    plans_checked()
    fill(due=5, future=FUTURE, priorities=priorities)
    plan = claim_plan()
    assert RUN_AT_INDEX in plan and DUE_INDEX not in plan, plan
    if connection.vendor != "postgresql":
        assert sorted_after_reading(plan) == (len(priorities) > 1), plan


def test_one_priority_everywhere_is_claimed_in_run_at_order_without_a_sort():
    plans_checked()
    fill(due=FUTURE, future=100, priorities=(0,))
    plan = claim_plan()
    if connection.vendor == "postgresql":  # the planner's own choice: the due index
        assert DUE_INDEX in plan and not sorted_after_reading(plan), plan
    else:
        assert RUN_AT_INDEX in plan and not sorted_after_reading(plan), plan


def test_the_plain_due_query_in_claim_order_can_use_the_due_index():
    """The due index keeps the claim order (the check above can tell a sort apart)."""
    plans_checked()
    query = Task.objects.filter(RUNNABLE & Q(run_at__lte=timezone.now())).order_by(*CLAIM_ORDER)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
        plan = explain(*query.query.sql_with_params())
    assert DUE_INDEX in plan and not sorted_after_reading(plan), plan


def test_the_listing_order_reads_the_run_at_index_and_sorts_only_ties():
    """The admin and ``fetch_tasks`` list tasks by ``run_at, task_id`` (the model's order):
    the ``run_at`` index gives the first key and only tasks sharing a ``run_at`` are sorted
    by id (PostgreSQL's incremental sort, SQLite's sort of the right part), never the whole
    table (migration 0011)."""
    plans_checked()
    fill(due=100, future=FUTURE, priorities=(0,))
    query = Task.objects.order_by("run_at", "task_id").values_list("pk")[:100]
    plan = explain(*query.query.sql_with_params())
    assert RUN_AT_INDEX in plan, plan
    if connection.vendor == "postgresql":
        assert "Incremental Sort" in plan or "Sort" not in plan, plan
    else:
        assert "RIGHT PART OF ORDER BY" in plan or "TEMP B-TREE" not in plan, plan


def test_claims_keep_the_claim_order_either_way():
    fill(due=6, future=10, priorities=(0, 5, -3))
    store = DjangoDataStore()
    claims = store.claim_due_tasks("w", 6, 60)
    keys = [(-claim.priority, claim.run_at) for claim in claims]
    assert len(claims) == 6 and keys == sorted(keys)


def test_a_claim_writes_no_index_entry_where_the_page_has_room():
    """The claim changes only columns no index holds (nor any partial index's condition), so
    PostgreSQL updates the rows in place (HOT) when their page has room: no index write."""
    if connection.vendor != "postgresql":
        pytest.skip("HOT updates are PostgreSQL's; SQLite and MySQL have no counterpart to check")
    fill(due=20, future=10, priorities=(0,))  # one page, most of it free
    table = connection.ops.quote_name(Task._meta.db_table)
    counters = (
        f"SELECT pg_stat_get_xact_tuples_updated('{table}'::regclass),"
        f" pg_stat_get_xact_tuples_hot_updated('{table}'::regclass)"
    )  # this transaction's own counts, with no wait for the statistics to be reported
    with connection.cursor() as cursor:
        cursor.execute(counters)
        before = cursor.fetchone()
        claims = DjangoDataStore().claim_due_tasks("w", 10, 60)
        cursor.execute(counters)
        updated, hot = (after - was for after, was in zip(cursor.fetchone(), before, strict=True))
    assert len(claims) == 10
    assert (updated, hot) == (10, 10)


@pytest.mark.parametrize("kind", ["delete", "update"])
def test_a_settle_finds_its_rows_by_primary_key(kind):
    """The settle statement (the fenced write of a batch of results; on PostgreSQL with the
    insert of their history rows) reads the task table by its primary key, not by a scan of
    the table."""
    if not hotpath.can_settle(connection):
        pytest.skip("MySQL settles by the ORM path (a SELECT ... FOR UPDATE by primary key)")
    fill(due=FUTURE, future=100, priorities=(0,))
    table = Task._meta.db_table
    if connection.vendor == "sqlite":
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        rows = [[f"t{n}", "t" * 32, now, *([] if kind == "delete" else [now])]
                for n in range(1, 11)]  # fmt: skip
        statement = (
            hotpath.sqlite_delete_sql()
            if kind == "delete"
            else hotpath.sqlite_update_sql(("run_at",))
        )
        plan = explain(statement, [json.dumps(rows), "w"])
        assert f"SEARCH {table} USING INDEX sqlite_autoindex_{table}_1 (task_id=?)" in plan, plan
        assert f"SCAN {table}" not in plan, plan
        return
    now = timezone.now().isoformat()
    run = ["t1", "noop", None, now, now, now, "succeeded", 1, "w", "", "", None, False, 0]
    rows = [[f"t{n}", "t" * 32, now, *([] if kind == "delete" else [now]), [run + [None] * 3]]
            for n in range(1, 11)]  # fmt: skip
    statement = (
        hotpath.delete_sql(True) if kind == "delete" else hotpath.update_sql(("run_at",), True)
    )
    plan = explain(statement, [json.dumps(rows), "w"])
    assert f"Index Scan using {table}_pkey" in plan and f"Seq Scan on {table}" not in plan, plan
