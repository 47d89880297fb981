"""Migrations match the models, and the due query is served by ``taskshed_due_idx``."""

import io

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, hotpath
from django_taskshed.datastores.leases import CLAIM_FIELDS
from django_taskshed.models import CLAIM_ORDER, RUNNABLE, Task

DUE_INDEX = "taskshed_due_idx"


@pytest.mark.django_db  # makemigrations checks the applied history
def test_makemigrations_finds_nothing_to_do():
    out = io.StringIO()
    # --check exits non-zero when the models and migrations disagree.
    call_command("makemigrations", "django_taskshed", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_the_migrated_table_has_the_index_and_constraints():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Task._meta.db_table)
    assert_new_due_index(constraints)
    assert any(c["columns"] == ["group_id"] and c["index"] for c in constraints.values())
    for name in (
        "taskshed_run_type_valid",
        "taskshed_schedule_fields",
        "taskshed_kwargs_object",
        "taskshed_priority_range",
    ):
        assert constraints[name]["check"] is True


def assert_new_due_index(constraints):
    """The due index of migration 0007, in the claim's order (priority DESC, run_at): partial
    over runnable tasks; on MySQL/MariaDB, without partial indexes, led by their columns."""
    index = constraints[DUE_INDEX]
    leading = ["paused", "failed_at"] if connection.vendor == "mysql" else []
    assert index["columns"] == [*leading, "priority", "run_at"], index
    assert index["orders"] == ["ASC"] * len(leading) + ["DESC", "ASC"], index
    assert index["index"] is True


def due_index(constraints):
    return constraints.get(DUE_INDEX, {}).get("columns")


@pytest.mark.django_db(transaction=True)
def test_0007_migrates_both_ways_and_leaves_the_right_due_index():
    def constraints():
        with connection.cursor() as cursor:
            return connection.introspection.get_constraints(cursor, Task._meta.db_table)

    call_command("migrate", "django_taskshed", "0006", verbosity=0)
    try:
        before = constraints()
        old = ["paused", "failed_at", "run_at"] if connection.vendor == "mysql" else ["run_at"]
        assert due_index(before) == old, before
        assert "taskshed_priority_range" not in before
        columns = {c.name for c in connection.introspection.get_table_description(
            connection.cursor(), Task._meta.db_table
        )}  # fmt: skip
        assert not {"queue", "priority"} & columns
    finally:
        call_command("migrate", "django_taskshed", verbosity=0)
    after = constraints()
    assert_new_due_index(after)
    assert after["taskshed_priority_range"]["check"] is True


QUEUES = {"every queue": None, "one queue": ["a"], "two queues": ["b", "c"]}


def explain(statement, params):
    """The plan of ``statement`` as text; on PostgreSQL with sequential scans priced out (a
    small table is cheaper to scan than to index: take that choice away)."""
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(prefix + statement, params)
        rows = cursor.fetchall()
        if connection.vendor == "mysql":  # the index chosen, not the possible ones
            names = [column[0].lower() for column in cursor.description]
            rows = [(f"key={row[names.index('key')]}", row[names.index("extra")]) for row in rows]
        return "\n".join(" ".join(map(str, row)) for row in rows)


def reads_due_index_in_order(plan):
    """The plan walks the due index and takes its order from it: no sort step."""
    if DUE_INDEX not in plan:
        return False
    if connection.vendor == "sqlite":
        return "USE TEMP B-TREE FOR ORDER BY" not in plan
    if connection.vendor == "postgresql":
        return "Sort" not in plan
    return "filesort" not in plan


def claim_plan(picked):
    """The plan of the one-statement claim of ``picked``, or of the ORM path's SELECT."""
    if hotpath.can_claim(connection):
        return explain(*hotpath.claim_statement(picked, CLAIM_FIELDS, "w", "t" * 32, NOW))
    query = picked.select_for_update(skip_locked=True).query
    with transaction.atomic():
        return explain(*query.get_compiler(picked.db).as_sql())


NOW = timezone.now()


@pytest.mark.django_db
@pytest.mark.parametrize("queues", QUEUES.values(), ids=QUEUES.keys())
def test_the_claim_walks_the_due_index_in_its_order(queues):
    """Highest priority, then earliest run_at, with or without a queue filter, straight from
    the index: no sort of every due task before the LIMIT."""
    picked = DjangoDataStore().claimable(NOW, 0.05, queues).values("task_id")[:10]
    plan = claim_plan(picked)
    assert reads_due_index_in_order(plan), plan
    if queues is not None and connection.vendor == "postgresql":
        assert '"queue"' in plan or "(queue)" in plan, plan  # filtered on the index scan


@pytest.mark.django_db
def test_the_index_check_fails_for_an_order_the_due_index_does_not_keep():
    """The check above can fail: earliest first alone is not what the due index keeps."""
    picked = DjangoDataStore().get_queryset().due(NOW).order_by("run_at").values("task_id")[:10]
    plan = claim_plan(picked)
    assert not reads_due_index_in_order(plan), plan


@pytest.mark.django_db
def test_the_plain_due_query_in_claim_order_uses_the_due_index():
    query = Task.objects.filter(RUNNABLE & Q(run_at__lte=NOW)).order_by(*CLAIM_ORDER)
    plan = explain(*query.query.sql_with_params())
    assert reads_due_index_in_order(plan), plan
