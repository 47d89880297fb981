"""Batch writes, row for row the same whichever way they reach the database.

On PostgreSQL (psycopg 3) a batch of ``upserts.COPY_AFTER_ROWS`` rows or more goes through a
binary COPY into a staging table, a smaller one through one ``INSERT ... SELECT FROM unnest``;
elsewhere through ``executemany``. The ``path`` fixture runs a test with each: "copy" lowers
the threshold to one row, "statement" raises it above any batch here (on SQLite and MySQL
both are the one statement path).
"""

import os
import weakref
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_taskshed import cron
from django_taskshed.datastores import DjangoDataStore, upserts
from django_taskshed.exceptions import InvalidTaskError
from django_taskshed.models import Task
from django_taskshed.schedulers import SyncScheduler

UTC = dt_timezone.utc
NOW = datetime(2030, 1, 10, 12, 0, 0, 123456, tzinfo=UTC)
T0 = datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
T1 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
T2 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")  # also the suite's TIME_ZONE: naive times are read in it

pytestmark = pytest.mark.django_db

# Values a text COPY or a quoting bug would mangle: escapes, quotes, separators, non-ASCII.
TEXT = "tab\there\nnew line\\back\\slash 'single' \"double\" , ; | \\N héllo ✓ 日本語 🎉"
KWARGS = [
    {},
    {"text": TEXT, "": "empty key", "line\nkey": "\u2028\u2029"},
    {"nested": {"list": [1, 2.5, None, True, False, {"deep": ["x", []]}], "empty": {}}},
    {"big": 2**53, "negative": -1.25e-10, "zero": 0, "null": None, "float": 0.1},
]


def is_postgres_copy() -> bool:
    return upserts.can_copy(connection)


@pytest.fixture(params=["statement", "copy"])
def path(request, monkeypatch) -> str:
    threshold = 1 if request.param == "copy" else 10**9
    monkeypatch.setattr(upserts, "COPY_AFTER_ROWS", threshold)
    return request.param


@pytest.fixture
def frozen_now(monkeypatch) -> datetime:
    """Validation's "now" (created_at, updated_at, paused_at, a cron task's first run)."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


@pytest.fixture
def store() -> DjangoDataStore:
    return DjangoDataStore()


def definitions(prefix: str) -> list[Task]:
    """One batch of every kind of value a task stores, ids prefixed with ``prefix``."""
    return [
        Task(task_id=f"{prefix}once", callback="cb.one", run_at=T1, kwargs=KWARGS[1],
             group_id="g1", queue="emails", priority=100, max_retries=0,
             timeout=timedelta(0), coalesce=False),
        Task(task_id=f"{prefix}paris", callback="cb.two", kwargs=KWARGS[2], priority=-100,
             run_at=datetime(2030, 7, 1, 12, 0, tzinfo=PARIS), paused=True),
        Task(task_id=f"{prefix}naive", callback="cb", run_at=datetime(2030, 1, 15, 9, 30),
             kwargs=KWARGS[3]),
        Task(task_id=f"{prefix}recurring", callback="cb", run_at=T2, run_type="recurring",
             interval=timedelta(days=3, seconds=7, microseconds=11), max_retries=2**31 - 1,
             timeout=timedelta(minutes=5, microseconds=1), kwargs=KWARGS[0]),
        Task(task_id=f"{prefix}cron", callback="cb", run_type="cron", cron=" 30  2 * *\t1-5 ",
             timezone="America/New_York", on_nonexistent="skip", on_ambiguous="both"),
        Task(task_id=f"{prefix}cron-zone", callback="cb", run_type="cron", cron="@daily"),
        Task(task_id=f"{prefix}ünï✓", callback="cb.ü", group_id="grüppe ✓", run_at=T0,
             declared_in_code=True, queue="q ü"),
    ]  # fmt: skip


def stored(prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every column of the rows whose id starts with ``prefix``, by id without the prefix."""
    rows = Task.objects.filter(task_id__startswith=prefix).values()
    return {row.pop("task_id")[len(prefix) :]: row for row in rows}


# --- values ----------------------------------------------------------------------------------


def test_every_value_is_stored_as_given(store, path, frozen_now):
    store.write_tasks(definitions("b-"))
    rows = stored("b-")
    assert set(rows) == {"once", "paris", "naive", "recurring", "cron", "cron-zone", "ünï✓"}
    once, paris, naive = rows["once"], rows["paris"], rows["naive"]
    assert [rows[k]["kwargs"] for k in ("recurring", "once", "paris", "naive")] == KWARGS
    assert (once["run_at"], once["group_id"], once["queue"], once["priority"]) == (
        T1, "g1", "emails", 100,
    )  # fmt: skip
    assert (once["max_retries"], once["timeout"], once["coalesce"]) == (0, timedelta(0), False)
    assert (paris["run_at"], paris["paused"], paris["paused_at"], paris["priority"]) == (
        datetime(2030, 7, 1, 10, 0, tzinfo=UTC), True, NOW, -100,
    )  # fmt: skip
    assert naive["run_at"] == datetime(2030, 1, 15, 8, 30, tzinfo=UTC)  # 09:30 in Paris
    recurring = rows["recurring"]
    assert recurring["interval"] == timedelta(days=3, seconds=7, microseconds=11)
    assert recurring["timeout"] == timedelta(minutes=5, microseconds=1)
    assert recurring["max_retries"] == 2**31 - 1
    new_york = rows["cron"]
    assert (new_york["cron"], new_york["timezone"]) == ("30 2 * * 1-5", "America/New_York")
    assert (new_york["on_nonexistent"], new_york["on_ambiguous"]) == ("skip", "both")
    schedule = cron.cron_schedule("30 2 * * 1-5", "America/New_York", "skip", "both")
    assert new_york["run_at"] == schedule.next_after(NOW)
    assert rows["cron-zone"]["timezone"] == "Europe/Paris"  # the current time zone, kept
    odd = rows["ünï✓"]
    assert (odd["callback"], odd["group_id"], odd["queue"]) == ("cb.ü", "grüppe ✓", "q ü")
    assert odd["declared_in_code"] is True
    for row in rows.values():  # what every new row starts with
        assert (row["created_at"], row["updated_at"], row["attempts"]) == (NOW, NOW, 0)
        assert (row["lease_owner"], row["lease_expires_at"], row["claim_token"]) == (None,) * 3
        assert (row["failed_at"], row["last_run_at"], row["last_error"]) == (None, None, "")
    unset = [k for k, v in rows["naive"].items() if v is None]
    assert set(unset) == {
        "interval", "group_id", "paused_at", "max_retries", "timeout", "lease_owner",
        "lease_expires_at", "claim_token", "abandoned_by", "last_run_at", "failed_at",
    }  # fmt: skip


def test_both_paths_and_a_single_add_store_the_same_row(store, monkeypatch, frozen_now):
    monkeypatch.setattr(upserts, "COPY_AFTER_ROWS", 1)
    store.write_tasks(definitions("c-"))
    monkeypatch.setattr(upserts, "COPY_AFTER_ROWS", 10**9)
    store.write_tasks(definitions("s-"))
    for task in definitions("w-"):
        store.write_task(task)
    assert stored("c-") == stored("s-") == stored("w-")
    assert len(stored("c-")) == len(definitions(""))


def test_postgresql_copies_a_large_batch_through_a_dropped_staging_table(store):
    if not is_postgres_copy():
        pytest.skip("COPY is PostgreSQL's, through psycopg 3")
    batch = [Task(task_id=f"t{i:04d}", callback="cb", run_at=T1) for i in range(150)]
    with CaptureQueriesContext(connection) as queries:
        store.write_tasks(batch[: upserts.COPY_AFTER_ROWS - 1])
    assert not any("COPY" in q["sql"] for q in queries.captured_queries)
    with CaptureQueriesContext(connection) as queries:
        store.write_tasks(batch)
    statements = [q["sql"].split(" ", 1)[0] for q in queries.captured_queries]
    assert [s for s in statements if s in ("CREATE", "COPY", "INSERT", "DROP")] == [
        "CREATE", "COPY", "INSERT", "DROP",
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [upserts.STAGING_TABLE])
        assert cursor.fetchone() == (None,)
    assert Task.objects.count() == 150


def test_without_the_temporary_privilege_a_large_batch_takes_the_statement(store, monkeypatch):
    if not is_postgres_copy():
        pytest.skip("COPY is PostgreSQL's, through psycopg 3")
    monkeypatch.setattr(upserts, "_TEMPORARY_ALLOWED", weakref.WeakKeyDictionary())
    role = f"taskshed_no_temp_{os.getpid()}"  # made and dropped in the test's transaction
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(
            f'REVOKE TEMPORARY ON DATABASE "{connection.settings_dict["NAME"]}" FROM PUBLIC'
        )
        cursor.execute(f"GRANT ALL ON {Task._meta.db_table} TO {role}")
        cursor.execute(f"SET ROLE {role}")
        try:
            with CaptureQueriesContext(connection) as queries:
                store.write_tasks(big_batch())
        finally:
            cursor.execute("RESET ROLE")
    assert not any("COPY" in q["sql"] for q in queries.captured_queries)
    assert Task.objects.count() == 150


# --- replace_existing ------------------------------------------------------------------------

LEASE = {
    "lease_owner": "w1", "lease_expires_at": T2, "claim_token": "tok", "abandoned_by": "w0",
    "last_run_at": T0, "last_error": "boom", "last_traceback": "Traceback ...",
}  # fmt: skip


def seed_existing() -> dict[str, dict[str, Any]]:
    Task.objects.bulk_create(
        [
            Task(task_id="leased", callback="old", run_at=T0, kwargs={"v": "old"}, group_id="g",
                 attempts=3, failed_at=T1, paused=True, paused_at=T0, **LEASE),
            Task(task_id="plain", callback="old", run_at=T0, priority=5, queue="old-q"),
        ]
    )  # fmt: skip
    Task.objects.update(created_at=T0, updated_at=T0)  # before any "now" of the tests
    return stored()


def batch_over_existing() -> list[Task]:
    new = [Task(task_id=f"new{i:03d}", callback="cb", run_at=T1) for i in range(120)]
    return [
        *new[:60],
        Task(task_id="leased", callback="new", run_at=T2, kwargs={"v": "new"}, priority=-3,
             run_type="recurring", interval=timedelta(hours=1)),
        *new[60:],
        Task(task_id="plain", callback="new", run_at=T2, queue="new-q"),
    ]  # fmt: skip


def test_replacing_rewrites_definitions_and_keeps_leases(store, path, frozen_now):
    before = seed_existing()
    store.write_tasks(batch_over_existing())
    after = stored()
    assert len(after) == 122
    leased = after["leased"]
    assert (leased["callback"], leased["run_at"], leased["kwargs"], leased["priority"]) == (
        "new", T2, {"v": "new"}, -3,
    )  # fmt: skip
    assert (leased["run_type"], leased["interval"]) == ("recurring", timedelta(hours=1))
    assert (leased["group_id"], leased["paused"], leased["paused_at"]) == (None, False, None)
    assert (leased["attempts"], leased["failed_at"], leased["updated_at"]) == (0, None, NOW)
    assert {k: leased[k] for k in LEASE} == LEASE  # the running worker keeps its lease
    assert leased["created_at"] == before["leased"]["created_at"]
    assert (after["plain"]["queue"], after["plain"]["priority"]) == ("new-q", 0)
    assert after["new000"]["created_at"] == NOW


def test_not_replacing_leaves_existing_rows_alone(store, path, frozen_now):
    before = seed_existing()
    store.write_tasks(batch_over_existing(), replace_existing=False)
    after = stored()
    assert len(after) == 122
    assert after["leased"] == before["leased"]
    assert after["plain"] == before["plain"]
    assert after["new119"]["run_at"] == T1


# --- all or nothing --------------------------------------------------------------------------


def big_batch(count: int = 150) -> list[Task]:
    return [Task(task_id=f"t{i:04d}", callback="cb", run_at=T1) for i in range(count)]


def test_a_duplicate_id_fails_the_batch_before_any_statement(
    store, path, django_assert_num_queries
):
    batch = [*big_batch(), Task(task_id="t0007", callback="cb", run_at=T2)]
    with django_assert_num_queries(0), pytest.raises(InvalidTaskError) as caught:
        store.write_tasks(batch)
    assert (caught.value.task_id, caught.value.field) == ("t0007", "task_id")
    assert not Task.objects.exists()


def test_a_bad_last_row_fails_the_batch_before_any_statement(
    store, path, django_assert_num_queries
):
    batch = [*big_batch(), Task(task_id="bad", callback="cb", run_at=T1, priority=101)]
    with django_assert_num_queries(0), pytest.raises(InvalidTaskError, match="priority") as caught:
        store.write_tasks(batch)
    assert (caught.value.task_id, caught.value.field) == ("bad", "priority")
    assert not Task.objects.exists()


def test_a_failure_after_the_insert_rolls_the_batch_back(store, path, monkeypatch):
    before = seed_existing()
    insert = upserts.insert_tasks

    def insert_then_fail(*args: Any, **kwargs: Any) -> None:
        insert(*args, **kwargs)
        assert Task.objects.count() == 122  # written, inside the transaction
        raise RuntimeError("the database went away")

    monkeypatch.setattr(upserts, "insert_tasks", insert_then_fail)
    with pytest.raises(RuntimeError):
        store.write_tasks(batch_over_existing())
    assert stored() == before


def test_a_value_the_database_refuses_mid_batch_rolls_the_batch_back(store, path):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL refuses NUL in text; SQLite stores it")
    before = seed_existing()
    batch = batch_over_existing()
    batch[100].callback = "nul\x00inside"  # valid to the checks, refused by the server
    with pytest.raises(DatabaseError):
        store.write_tasks(batch)
    assert stored() == before  # and the connection still works


# --- transactions ----------------------------------------------------------------------------


def test_two_batches_in_one_outer_transaction(store, path):
    with transaction.atomic():
        store.write_tasks(big_batch(150))
        again = [Task(task_id=f"t{i:04d}", callback="again", run_at=T2) for i in range(100, 250)]
        store.write_tasks(again)
    assert Task.objects.count() == 250
    assert Task.objects.filter(callback="again").count() == 150
    assert Task.objects.get(pk="t0099").callback == "cb"


def test_a_batch_in_an_outer_transaction_that_rolls_back_leaves_nothing(store, path):
    with pytest.raises(RuntimeError), transaction.atomic():
        store.write_tasks(big_batch())
        assert Task.objects.count() == 150
        raise RuntimeError("the view failed")
    assert not Task.objects.exists()
    store.write_tasks(big_batch())  # the staging table left nothing behind to trip on
    assert Task.objects.count() == 150


@pytest.mark.django_db(transaction=True)
def test_scheduler_batch_notifies_once_and_only_on_commit(path, sent):
    scheduler = SyncScheduler()
    with pytest.raises(RuntimeError), transaction.atomic():
        scheduler.add_tasks(big_batch())
        raise RuntimeError("rolled back")
    assert (Task.objects.count(), sent) == (0, [])
    with transaction.atomic():
        scheduler.add_tasks(big_batch())
        scheduler.add_tasks([Task(task_id="early", callback="cb", run_at=T0)])
        assert sent == []
    assert Task.objects.count() == 151
    assert sent == [T0]
