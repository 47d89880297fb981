"""DatabaseThread: the worker's steps on a thread and connection of their own."""

import threading

import pytest
from django.db import Error, connections

from django_taskshed.workers.database_threads import DatabaseThread
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
