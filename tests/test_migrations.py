"""Migrations match the models, and the due query is served by ``taskshed_due_idx``."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

from django_taskshed.models import Task

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


def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("migration 0010 changes PostgreSQL only (its LIKE indexes and fillfactor)")


def like_indexes():
    """The task table's indexes for LIKE queries (``varchar_pattern_ops``), by column."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname, i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_opclass o ON o.oid = ANY(x.indclass) JOIN pg_attribute a"
            " ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)"
            " WHERE x.indrelid = %s::regclass AND o.opcname LIKE %s",
            [Task._meta.db_table, "%pattern_ops"],
        )
        return dict(cursor.fetchall())


def fillfactor():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [Task._meta.db_table]
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_task_table_has_no_like_index_and_room_for_in_place_updates():
    postgresql_only()
    assert like_indexes() == {}
    assert fillfactor() == ["fillfactor=70"]


@pytest.mark.django_db(transaction=True)
def test_0010_migrates_both_ways():
    postgresql_only()
    call_command("migrate", "django_taskshed", "0009", verbosity=0)
    try:
        assert sorted(like_indexes()) == ["group_id", "task_id"]
        assert fillfactor() is None
    finally:
        call_command("migrate", "django_taskshed", verbosity=0)
    assert like_indexes() == {}
    assert fillfactor() == ["fillfactor=70"]


@pytest.mark.django_db(transaction=True)
def test_0011_keys_the_run_at_index_on_run_at_alone_and_migrates_both_ways():
    def run_at_index() -> list[str]:
        with connection.cursor() as cursor:
            found = connection.introspection.get_constraints(cursor, Task._meta.db_table)
        return found["taskshed_run_at_idx"]["columns"]

    assert run_at_index() == ["run_at"]
    call_command("migrate", "django_taskshed", "0010", verbosity=0)
    try:
        assert run_at_index() == ["run_at", "task_id"]
    finally:
        call_command("migrate", "django_taskshed", verbosity=0)
    assert run_at_index() == ["run_at"]
