"""The Django internals the app relies on (``django_internals``) behave as it expects.

Each function stands in for one private Django API; a Django release that changes it fails
here, by name, before anything subtler breaks in a worker.
"""

import pytest
from django.db import connection, transaction
from django.db.models.signals import post_delete

from django_taskshed.django_internals import (
    compiled_select,
    delete_without_signals,
    driver_cursor,
    on_commit_callbacks,
)
from django_taskshed.models import Task

pytestmark = pytest.mark.django_db


def seed(*task_ids: str) -> None:
    Task.objects.bulk_create(
        Task(task_id=task_id, callback="add", run_at="2030-01-01T00:00:00Z") for task_id in task_ids
    )


def test_delete_without_signals_deletes_in_one_statement_and_sends_no_signal(
    django_assert_num_queries,
):
    seed("a", "b", "c")
    deleted = []

    def record(sender, instance, **kwargs):
        deleted.append(instance.pk)

    post_delete.connect(record, sender=Task)
    try:
        with django_assert_num_queries(1):
            assert delete_without_signals(Task.objects.filter(pk__in=["a", "b"])) == 2
    finally:
        post_delete.disconnect(record, sender=Task)
    assert deleted == []
    assert list(Task.objects.values_list("pk", flat=True)) == ["c"]


def test_on_commit_callbacks_lists_what_the_open_transaction_registered():
    def first():
        pass

    def second():
        pass

    with transaction.atomic():
        transaction.on_commit(first)
        transaction.on_commit(second, robust=True)
        assert on_commit_callbacks(connection)[-2:] == [first, second]


def test_compiled_select_is_the_querysets_own_sql():
    seed("a", "b", "c")
    query = Task.objects.filter(pk__in=["a", "c"]).order_by("pk").values("task_id")[:5]
    sql, params = compiled_select(query)
    assert sql.lstrip().upper().startswith("SELECT")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert [row[0] for row in cursor.fetchall()] == ["a", "c"]


def test_driver_cursor_is_the_drivers_own():
    with connection.cursor() as cursor:
        raw = driver_cursor(cursor)
        assert raw is not cursor
        raw.execute("SELECT 1")
        assert raw.fetchone()[0] == 1
        if connection.vendor == "postgresql":
            assert callable(raw.copy)  # psycopg 3's COPY, which the run history uses
