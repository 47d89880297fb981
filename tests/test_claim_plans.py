"""The claim's query plans, on tables shaped as production shapes them.

A backlog (many tasks due) is claimed by walking the due index (``priority DESC, run_at``) to
the claim's LIMIT, with no sort. A few due tasks among many future ones must not walk that
index, which would pass every future entry of each priority: they are read from the ``run_at``
index up to now and sorted. PostgreSQL's planner chooses from its statistics; on SQLite and
MySQL the datastore chooses (``LeaseOperations.claimable``).
"""

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
    priorities taken in turn from ``priorities``, queues a, b, c; then fresh statistics."""
    now = timezone.now()
    times = [now - timedelta(seconds=n + 1) for n in range(due)]
    times += [now + timedelta(seconds=n + 60) for n in range(future)]
    Task.objects.bulk_create(
        [
            Task(
                task_id=f"t{n}",
                callback="noop",
                run_at=at,
                queue="abc"[n % 3],
                priority=priorities[n % len(priorities)],
            )  # fmt: skip
            for n, at in enumerate(times)
        ],
        batch_size=2000,
    )
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


def test_claims_keep_the_claim_order_either_way():
    fill(due=6, future=10, priorities=(0, 5, -3))
    store = DjangoDataStore()
    claims = store.claim_due_tasks("w", 6, 60)
    keys = [(-claim.priority, claim.run_at) for claim in claims]
    assert len(claims) == 6 and keys == sorted(keys)
