"""DatabaseThread: the worker's steps on a thread and connection of their own."""

import asyncio
import threading

import pytest
from django.db import Error, IntegrityError, connections
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from django_taskshed.models import WorkerRecord
from django_taskshed.workers.database_threads import DatabaseThread, worker_threads
from tests.conftest import package_apps

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"


def select_one() -> int:
    with connections[USING].cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def whose() -> tuple[int, int]:
    """This thread, and its connection wrapper."""
    return threading.get_ident(), id(connections[USING])


async def test_steps_run_on_one_thread_with_a_connection_of_its_own():
    db = DatabaseThread(USING, "test-db")
    try:
        first, second = await db.run(whose), await db.run(whose)
        assert first == second
        assert first[0] != threading.get_ident()
        assert await db.run(select_one) == 1
    finally:
        await db.close()


async def test_a_step_on_a_broken_connection_runs_again_at_once_on_a_new_one():
    db = DatabaseThread(USING, "test-db")
    try:
        assert await db.run(select_one) == 1
        before = await db.run(lambda: connections[USING].connection)

        def break_connection() -> None:
            connections[USING].connection.close()  # as when the server drops it

        await db.run(break_connection)
        assert await db.run(select_one) == 1  # no error: the step ran again
        assert await db.run(lambda: connections[USING].connection) is not before
    finally:
        await db.close()


async def test_a_failing_step_raises_in_the_caller_once_and_keeps_a_working_connection():
    db = DatabaseThread(USING, "test-db")
    calls = []

    def bad_sql() -> None:
        calls.append(1)
        with connections[USING].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")

    try:
        before = await db.run(lambda: (select_one(), connections[USING].connection)[1])
        with pytest.raises(Error):
            await db.run(bad_sql)
        assert calls == [1]  # not repeated: the connection still works
        assert await db.run(lambda: connections[USING].connection) is before
        assert await db.run(select_one) == 1
    finally:
        await db.close()


async def test_close_closes_the_threads_connection_and_can_be_called_twice():
    db = DatabaseThread(USING, "test-db")
    await db.run(select_one)
    wrapper = await db.run(lambda: connections[USING])
    assert wrapper.connection is not None
    await db.close()
    await db.close()
    assert wrapper.connection is None
    with pytest.raises(RuntimeError):
        await db.run(select_one)


# --- grouped commits (SQLite's shared thread) --------------------------------------------------


def add_worker_row(worker_id: str) -> None:
    now = timezone.now()
    WorkerRecord.objects.using(USING).create(
        worker_id=worker_id, hostname="h", pid=1, started_at=now, heartbeat_at=now, expires_at=now
    )


def transaction_of_step() -> int | None:
    """The outer transaction this step runs in (None: autocommit)."""
    connection = connections[USING]
    return id(connection.atomic_blocks[0]) if connection.in_atomic_block else None


async def grouped_behind_a_held_step(db: DatabaseThread, *steps):
    """Run ``steps`` with ``run_grouped`` while a first step (which adds a worker row "held")
    holds the thread; the results of all, the first's included (exceptions as values)."""
    started, release = threading.Event(), threading.Event()

    def held() -> int | None:
        add_worker_row("held")
        started.set()
        assert release.wait(10)
        return transaction_of_step()

    first = asyncio.create_task(db.run_grouped(held))
    if not await asyncio.to_thread(started.wait, 10):
        await first  # its error
        raise AssertionError("the first step did not start")
    rest = [asyncio.create_task(db.run_grouped(step)) for step in steps]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in [first, *rest])  # nothing before the commit
    release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


async def test_steps_given_while_one_runs_share_its_transaction_and_see_it_committed():
    db = DatabaseThread(USING, "test-db", group_commits=True)

    def second() -> int | None:
        add_worker_row("second")
        return transaction_of_step()

    try:
        held, joined = await grouped_behind_a_held_step(db, second)
        assert held is not None and joined == held
        # The callers get their results once the transaction is committed: other
        # connections (this thread's) see both rows.
        rows = WorkerRecord.objects.using(USING).values_list("worker_id", flat=True)
        assert sorted([row async for row in rows]) == ["held", "second"]
        assert await db.run_grouped(transaction_of_step) is not None  # alone: a transaction too
        assert await db.run(transaction_of_step) is None  # run(): never grouped
    finally:
        await db.close()


async def test_a_failing_step_in_a_group_undoes_only_itself():
    db = DatabaseThread(USING, "test-db", group_commits=True)

    def failing() -> None:
        add_worker_row("failing")
        raise ValueError("this step fails")

    def after() -> str:
        add_worker_row("after")
        return "after"

    try:
        held, failed, last = await grouped_behind_a_held_step(db, failing, after)
        assert held is not None and last == "after"
        assert isinstance(failed, ValueError) and str(failed) == "this step fails"
        rows = WorkerRecord.objects.using(USING).values_list("worker_id", flat=True)
        assert sorted([row async for row in rows]) == ["after", "held"]
    finally:
        await db.close()


async def test_without_group_commits_run_grouped_is_run():
    db = DatabaseThread(USING, "test-db")
    try:
        assert await db.run_grouped(transaction_of_step) is None
    finally:
        await db.close()


async def test_a_closed_thread_refuses_grouped_steps():
    db = DatabaseThread(USING, "test-db", group_commits=True)
    await db.close()
    with pytest.raises(RuntimeError):
        await db.run_grouped(select_one)


async def test_a_step_that_swallows_a_database_error_is_told_that_nothing_was_kept():
    """A query that fails inside the group's transaction marks it for rollback even when the
    step catches the error: its savepoint is rolled back, so the step fails for its caller
    instead of returning a result that was not kept; the other steps are kept."""
    db = DatabaseThread(USING, "test-db", group_commits=True)

    def swallowing() -> str:
        add_worker_row("swallowed")
        try:
            add_worker_row("swallowed")  # the same primary key again
        except IntegrityError:
            pass
        return "looks fine"

    try:
        held, swallowed = await grouped_behind_a_held_step(db, swallowing)
        assert held is not None
        assert isinstance(swallowed, TransactionManagementError), swallowed
        rows = WorkerRecord.objects.using(USING).values_list("worker_id", flat=True)
        assert [row async for row in rows] == ["held"]
    finally:
        await db.close()


def test_a_worker_groups_commits_on_sqlites_shared_thread_only():
    claims, results = worker_threads(USING)
    if connections[USING].vendor == "sqlite":
        assert claims is results and claims.group_commits
    else:
        assert claims is not results
        assert not claims.group_commits and not results.group_commits
