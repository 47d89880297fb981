"""Migrations match the models, and the due query is served by ``taskshed_due_idx``."""

import io

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, hotpath
from django_taskshed.datastores.leases import CLAIM_FIELDS
from django_taskshed.models import RUNNABLE, Task

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
    # A partial index over runnable tasks; MySQL/MariaDB, without partial indexes, a composite.
    expected = ["paused", "failed_at", "run_at"] if connection.vendor == "mysql" else ["run_at"]
    assert constraints[DUE_INDEX]["columns"] == expected
    assert constraints[DUE_INDEX]["index"] is True
    assert any(c["columns"] == ["group_id"] and c["index"] for c in constraints.values())
    for name in (
        "taskshed_run_type_valid",
        "taskshed_schedule_fields",
        "taskshed_kwargs_object",
    ):
        assert constraints[name]["check"] is True


DUE_QUERIES = {
    # The question the index is for: what may run now, earliest first.
    "due": lambda now: Task.objects.filter(RUNNABLE & Q(run_at__lte=now)),
    # The worker's claim asks it with the lease condition added.
    "TaskQuerySet.due": lambda now: Task.objects.due(now),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", DUE_QUERIES)
def test_the_due_query_uses_the_due_index(name):
    query = DUE_QUERIES[name](timezone.now()).order_by("run_at")
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A small table is cheaper to scan than to index: take that choice away.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()
    assert DUE_INDEX in plan, plan
    if connection.vendor == "sqlite":
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan  # the index gives the order


@pytest.mark.django_db
def test_the_hand_written_claim_uses_the_due_index():
    """The one-statement claim (PostgreSQL, SQLite 3.35+) wraps the ORM's due query."""
    if not hotpath.can_claim(connection):
        pytest.skip(f"{connection.vendor} claims through the ORM (covered above)")
    now = timezone.now()
    picked = DjangoDataStore().get_queryset().due(now).order_by("run_at").values("task_id")[:10]
    statement, params = hotpath.claim_statement(picked, CLAIM_FIELDS, "w", "t" * 32, now)
    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(explain + statement, params)
        plan = "\n".join(" ".join(map(str, row)) for row in cursor.fetchall())
    assert DUE_INDEX in plan, plan
    if connection.vendor == "sqlite":
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
