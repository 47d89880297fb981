"""DjangoDataStore: the ORM operations under the schedulers, called directly.

Sync tests run inside pytest-django's test transaction; TaskShed's coroutine methods get their
own transactional test.
"""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from asgiref.sync import iscoroutinefunction
from django.test import override_settings
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, upserts
from django_taskshed.datastores import tasks as tasks_module
from django_taskshed.datastores.tasks import CHUNK, chunks, selector
from django_taskshed.models import Task, TaskExecutionTime

UTC = dt_timezone.utc
T0 = datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
T1 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
T2 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
T3 = datetime(2030, 1, 15, 11, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db

# Statements a bulk operation on 1,000 rows may take (savepoints included): a handful, never
# one per row.
FEW = 8


@pytest.fixture
def store() -> DjangoDataStore:
    return DjangoDataStore()


def row(task_id: str, run_at: datetime = T1, **fields) -> Task:
    return Task(task_id=task_id, callback="add", run_at=run_at, **fields)


def seed(*tasks: Task) -> None:
    Task.objects.bulk_create(tasks)


def ids() -> list[str]:
    return list(Task.objects.order_by("pk").values_list("pk", flat=True))


# --- Helpers ---------------------------------------------------------------------------------


def test_chunks_split_long_lists():
    assert list(chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(chunks([], 2)) == []
    assert [len(part) for part in chunks(list(range(CHUNK + 1)))] == [CHUNK, 1]


def test_selector_chunks_ids_and_takes_one_group():
    assert len(selector([str(i) for i in range(2 * CHUNK + 1)], None)) == 3
    assert len(selector(["a"], None)) == 1
    assert len(selector(None, "g")) == 1
    assert selector([], None) == []


@pytest.mark.parametrize(
    ("task_ids", "group_id", "message"),
    [
        (None, None, "neither was given"),
        (["a"], "g", "not both"),
        ("abc", None, "not the string 'abc'"),
    ],
)
def test_selector_rejects(task_ids, group_id, message):
    with pytest.raises(ValueError, match=message):
        selector(task_ids, group_id)


def test_using_follows_the_settings_unless_given():
    assert DjangoDataStore().using == "default"
    with override_settings(TASKSHED={"DATABASE": "replica"}):
        assert DjangoDataStore().using == "replica"
        assert DjangoDataStore(using="default").using == "default"


# --- add -------------------------------------------------------------------------------------


def test_add_tasks_returns_the_earliest_run_at(store):
    earliest = store.write_tasks([row("a", T2), row("b", T0), row("c", T1)])
    assert earliest == T0
    assert ids() == ["a", "b", "c"]


def test_add_tasks_of_nothing_returns_none(store, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert store.write_tasks([]) is None


def test_add_tasks_is_one_bulk_statement(store, django_assert_max_num_queries):
    with django_assert_max_num_queries(FEW):
        store.write_tasks([row(f"t{i:04d}", T1) for i in range(2000)])
    assert Task.objects.count() == 2000


def test_add_tasks_is_all_or_nothing_in_the_database(store, monkeypatch):
    insert = upserts.insert_tasks

    def insert_then_fail(*args, **kwargs):
        insert(*args, **kwargs)
        raise RuntimeError("the database went away")

    seed(row("old", T0, kwargs={"v": "old"}))
    monkeypatch.setattr(upserts, "insert_tasks", insert_then_fail)
    with pytest.raises(RuntimeError):
        store.write_tasks([row("a"), row("old", T2, kwargs={"v": "new"})])
    assert ids() == ["old"]
    assert Task.objects.get(pk="old").kwargs == {"v": "old"}


def test_add_task_returns_the_stored_task(store):
    task = store.write_task(row("a", T1, kwargs={"x": 1}))
    stored = Task.objects.get(pk="a")
    assert (task.task_id, task.run_at, task.kwargs) == ("a", T1, {"x": 1})
    assert task.created_at == stored.created_at
    assert task._state.adding is False
    assert task._state.db == "default"


def test_add_task_without_replacing_returns_the_existing_row(store):
    store.write_task(row("a", T1, kwargs={"v": "old"}))
    kept = store.write_task(row("a", T2, kwargs={"v": "new"}), replace_existing=False)
    assert (kept.run_at, kept.kwargs) == (T1, {"v": "old"})
    assert Task.objects.get(pk="a").kwargs == {"v": "old"}


@pytest.mark.parametrize("many", [False, True], ids=["add_task", "add_tasks"])
def test_replacing_rewrites_the_definition_and_clears_the_failure(store, many):
    seed(
        row(
            "a",
            T0,
            kwargs={"v": "old"},
            group_id="g",
            paused=True,
            paused_at=T0,
            attempts=4,
            failed_at=T1,
            lease_owner="w1",
            lease_expires_at=T3,
            claim_token="tok",
        )
    )
    created_at = Task.objects.get(pk="a").created_at
    new = row("a", T2, kwargs={"v": "new"}, run_type="recurring", interval=timedelta(hours=1))
    if many:
        store.write_tasks([new])
    else:
        store.write_task(new)
    task = Task.objects.get(pk="a")
    assert (task.run_at, task.kwargs, task.run_type, task.interval) == (
        T2,
        {"v": "new"},
        "recurring",
        timedelta(hours=1),
    )
    assert (task.group_id, task.paused, task.paused_at) == (None, False, None)
    assert (task.attempts, task.failed_at) == (0, None)
    assert (task.lease_owner, task.lease_expires_at, task.claim_token) == ("w1", T3, "tok")
    assert task.created_at == created_at


@pytest.mark.parametrize("many", [False, True], ids=["add_task", "add_tasks"])
def test_not_replacing_leaves_every_column_alone(store, many):
    seed(row("a", T0, kwargs={"v": "old"}, attempts=2, failed_at=T1, last_error="boom"))
    before = Task.objects.filter(pk="a").values().get()
    new = row("a", T2, kwargs={"v": "new"})
    if many:
        store.write_tasks([new, row("b")], replace_existing=False)
    else:
        store.write_task(new, replace_existing=False)
    assert Task.objects.filter(pk="a").values().get() == before


# --- fetch / next_run_at ---------------------------------------------------------------------


def test_fetch_tasks_orders_by_run_at_then_id(store):
    seed(row("b", T1), row("a", T1), row("c", T0), row("d", T2, group_id="g"))
    assert [t.task_id for t in store.read_tasks(["a", "b", "c", "d"])] == ["c", "a", "b", "d"]
    assert [t.task_id for t in store.read_tasks(group_id="g")] == ["d"]


def test_fetch_tasks_orders_across_chunks(store, monkeypatch):
    """Ordering across chunks is the datastore's logic: a small chunk size shows it (the
    real one is crossed by test_long_id_lists_cross_the_chunk_size)."""
    monkeypatch.setattr(tasks_module, "CHUNK", 100)
    count = 2 * 100 + 50
    seed(*(row(f"t{i:05d}", T1 + timedelta(seconds=(i * 7919) % count)) for i in range(count)))
    fetched = store.read_tasks([f"t{i:05d}" for i in range(count)])
    assert len(fetched) == count
    keys = [(t.run_at, t.task_id) for t in fetched]
    assert keys == sorted(keys)


def test_next_run_at_skips_paused_and_failed_tasks(store):
    assert store.next_run_at() is None
    seed(row("paused", T0, paused=True), row("failed", T0, failed_at=T0), row("due", T2))
    assert store.next_run_at() == T2
    seed(row("earlier", T1))
    assert store.next_run_at() == T1


# --- update_execution_times ------------------------------------------------------------------


def test_update_execution_times_returns_the_earliest(store):
    seed(row("a", T0), row("b", T0))
    earliest = store.move_tasks(
        [TaskExecutionTime("a", T3), TaskExecutionTime("b", datetime(2030, 1, 15, 11, 0))]
    )
    assert earliest == T2  # 11:00 in Paris is 10:00 UTC
    assert Task.objects.get(pk="a").run_at == T3
    assert Task.objects.get(pk="b").run_at == T2


def test_update_execution_times_of_an_unknown_id_creates_nothing(store):
    assert store.move_tasks([TaskExecutionTime("ghost", T1)]) == T1
    assert ids() == []
    assert store.move_tasks([]) is None


def test_update_execution_times_uses_bulk_statements(store, django_assert_max_num_queries):
    seed(*(row(f"t{i:04d}", T0) for i in range(1000)))
    times = [TaskExecutionTime(f"t{i:04d}", T1 + timedelta(seconds=i)) for i in range(1000)]
    with django_assert_max_num_queries(FEW):
        store.move_tasks(times)
    assert Task.objects.filter(run_at__gte=T1).count() == 1000


# --- pause / resume / remove -----------------------------------------------------------------


def test_pause_resume_counts_and_stamps(store):
    seed(row("a", T2, group_id="g"), row("b", T1, group_id="g"), row("c", T0))
    before = timezone.now()
    assert store.pause_tasks(group_id="g") == 2
    stamp = Task.objects.get(pk="a").paused_at
    assert before <= stamp <= timezone.now()
    assert store.pause_tasks(["a", "b", "c"]) == 1
    assert Task.objects.get(pk="a").paused_at == stamp
    assert store.resume_tasks(group_id="g") == (2, T1)
    assert store.resume_tasks(["a", "b"]) == (0, None)
    assert store.resume_tasks(["a", "b", "c"]) == (1, T0)
    assert not Task.objects.filter(paused=True).exists()
    assert not Task.objects.exclude(paused_at=None).exists()


def test_resume_reports_the_earliest_of_the_resumed_tasks_only(store):
    seed(row("running", T0), row("paused", T2, paused=True, paused_at=T0))
    assert store.resume_tasks(["running", "paused"]) == (1, T2)


def test_bulk_selectors_issue_one_statement_per_chunk(store, django_assert_max_num_queries):
    seed(*(row(f"t{i:04d}") for i in range(1000)))
    all_ids = [f"t{i:04d}" for i in range(1000)]
    with django_assert_max_num_queries(FEW):
        assert store.pause_tasks(all_ids) == 1000
    with django_assert_max_num_queries(FEW):
        assert store.resume_tasks(all_ids) == (1000, T1)
    with django_assert_max_num_queries(FEW):
        assert len(store.read_tasks(all_ids)) == 1000
    with django_assert_max_num_queries(FEW):
        assert store.delete_tasks(all_ids) == 1000


@pytest.mark.slow  # 10,001 rows against the database's parameter limits: once per database
def test_long_id_lists_cross_the_chunk_size(store):
    count = 2 * CHUNK + 1
    seed(*(row(f"t{i:05d}") for i in range(count)))
    all_ids = [f"t{i:05d}" for i in range(count)]
    assert store.pause_tasks(all_ids) == count
    assert store.resume_tasks(all_ids) == (count, T1)
    assert len(store.read_tasks(all_ids)) == count
    assert store.delete_tasks(all_ids[1:]) == count - 1
    assert ids() == ["t00000"]


def test_remove_tasks_by_ids_and_group(store):
    seed(row("a", group_id="g"), row("b", group_id="g"), row("c"), row("d"))
    assert store.delete_tasks(group_id="g") == 2
    assert store.delete_tasks(["c", "ghost"]) == 1
    assert ids() == ["d"]


def test_remove_all_tasks(store):
    assert store.delete_all_tasks() == 0
    seed(row("a", group_id="g"), row("b", paused=True), row("c", failed_at=T0))
    assert store.delete_all_tasks() == 3
    assert ids() == []


# --- TaskShed's datastore methods --------------------------------------------------------------

TASKSHED_METHODS = [
    "start", "shutdown", "add_tasks", "fetch_due_tasks", "fetch_next_wakeup", "fetch_tasks",
    "fetch_group_tasks", "update_execution_times", "update_tasks_paused_status",
    "update_group_paused_status", "remove_tasks", "remove_all_tasks", "remove_group_tasks",
]  # fmt: skip


@pytest.mark.parametrize("name", TASKSHED_METHODS)
def test_taskshed_datastore_methods_are_coroutines(store, name):
    assert iscoroutinefunction(getattr(store, name))


@pytest.mark.django_db(transaction=True, available_apps=["django_taskshed"])
async def test_taskshed_datastore_methods_work_as_taskshed_calls_them(store):
    await store.start()
    now = timezone.now()
    past, soon = now - timedelta(minutes=1), now + timedelta(hours=1)
    await store.add_tasks([row("a", soon, group_id="g"), row("b", past, group_id="g")])
    await store.add_tasks([row("c", past + timedelta(seconds=1)), row("d", T3)])
    assert [t.task_id for t in await store.fetch_due_tasks(now)] == ["b", "c"]
    assert await store.fetch_next_wakeup() == past
    assert [t.task_id for t in await store.fetch_tasks(["c", "a"])] == ["c", "a"]
    assert [t.task_id for t in await store.fetch_group_tasks("g")] == ["b", "a"]
    await store.update_execution_times([TaskExecutionTime("d", T0)])
    assert (await Task.objects.aget(pk="d")).run_at == T0
    await store.update_tasks_paused_status(["b", "c"], True)
    assert await store.fetch_due_tasks(now) == []
    await store.update_group_paused_status("g", True)
    assert await store.fetch_next_wakeup() == T0
    await store.update_group_paused_status("g", False)
    assert [t.task_id for t in await store.fetch_due_tasks(now)] == ["b"]
    await store.remove_tasks(["d"])
    await store.remove_group_tasks("g")
    assert [t.task_id async for t in Task.objects.all()] == ["c"]
    await store.remove_all_tasks()
    assert await Task.objects.acount() == 0
    await store.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_large_batch_refreshes_postgresql_statistics(store):
    """After a batch of ANALYZE_AFTER_ROWS or more, the planner knows the table's size."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("statistics are refreshed on PostgreSQL only")

    def estimated_rows() -> float:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [Task._meta.db_table]
            )
            return cursor.fetchone()[0]

    small = upserts.ANALYZE_AFTER_ROWS - 1
    store.write_tasks([row(f"s{i}") for i in range(small)])
    assert estimated_rows() < small  # below the threshold: left to autovacuum
    store.write_tasks([row(f"l{i}") for i in range(upserts.ANALYZE_AFTER_ROWS)])
    assert estimated_rows() == pytest.approx(small + upserts.ANALYZE_AFTER_ROWS, rel=0.05)
