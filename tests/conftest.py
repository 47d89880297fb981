"""Suite-wide checks: the servers named by DATABASE_URL / REDIS_URL must answer.

With ``TASKSHED_REQUIRE_SERVICES=1`` (set by ``scripts/test`` and CI) an unreachable server
ends the run with a non-zero exit before any test runs. Without it the run goes on and the
header says loudly which server is missing; tests that need Redis use the ``redis_url``
fixture, which then skips them with that reason.

Shared fixtures: ``worker_procs`` starts real ``runtaskworker`` subprocesses; ``scheduler``
runs a test with each scheduler (the sync one awaited through ``sync_to_async``),
``fake_worker`` stands in for an in-process worker, ``sent`` records group notifications,
``empty_registry`` empties the callback registry for a test, ``fail_once`` makes a database
step fail once, and async tests close the sync thread's connections when they end.
"""

import inspect
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import pytest

# The package's pytest plugin (the ``taskshed_clock`` fixture), for runs where the package is
# not installed with its entry point; where it is, this names the plugin already loaded.
pytest_plugins = ["django_taskshed.pytest_plugin"]

DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "pgsql": 5432, "mysql": 3306, "redis": 6379}
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class ServiceStatus:
    """What a probe of one server found."""

    name: str
    url: str
    error: str | None  # None when the server answered


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS.get(scheme, 0)


def _probe_tcp(url: str, greeting: bytes = b"", expect: bytes = b"") -> str | None:
    host, port = _address(url)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
            if greeting:
                sock.sendall(greeting)
                reply = sock.recv(64)
                if not reply.startswith(expect):
                    return f"{host}:{port} answered {reply!r}, expected {expect!r}"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc}"
    return None


def _probe_database(url: str) -> str | None:
    if urlsplit(url).scheme.startswith("sqlite"):
        return None
    if not urlsplit(url).hostname:
        return None  # a Unix socket: the driver reports it when the suite connects
    return _probe_tcp(url)


def _probe_redis(url: str) -> str | None:
    return _probe_tcp(url, greeting=b"PING\r\n", expect=b"+PONG")


def _probe_services() -> list[ServiceStatus]:
    statuses = []
    if database_url := os.environ.get("DATABASE_URL"):
        statuses.append(ServiceStatus("database", database_url, _probe_database(database_url)))
    if redis_url := os.environ.get("REDIS_URL"):
        statuses.append(ServiceStatus("redis", redis_url, _probe_redis(redis_url)))
    return statuses


def _services_required() -> bool:
    return os.environ.get("TASKSHED_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


services_key = pytest.StashKey[list[ServiceStatus]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[services_key] = _probe_services()
    config.addinivalue_line(
        "markers",
        "slow: starts real runtaskworker subprocesses or runs for many seconds; "
        "tox.ini runs these once per database",
    )
    config.addinivalue_line(
        "markers",
        "heavy: a slow test that keeps both cores busy (many workers, a browser); with "
        "TASKSHED_SLOW_TEST_LOCK it runs while no slow test of another env does",
    )
    config.addinivalue_line(
        "markers",
        "chaos: injects a production fault (lost connections, dying callbacks, outages) into "
        "real runtaskworker processes; tests/chaos/, PostgreSQL only, also marked slow",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the heavy tests first and the other slow tests last, in their order, after
    pytest-django has ordered the rest; with ``TASKSHED_SLOW_TESTS`` only some of them.

    A heavy test runs alone among the slow tests of every env (``pytest_runtest_protocol``):
    first in its env, it meets only the other envs' heavy tests, not their slow ones, which
    come last, when they overlap with each other and with the non-slow tests.

    With ``TASKSHED_DATABASE_TESTS_ONLY`` set, the tests that cannot reach the database are
    left out (py311-django52-mysql: py311-django52-postgres runs them on the same Python and
    Django).

    tox runs several envs at once (scripts/test), and each database's slow tests run once:
    where a database has two envs, one runs the slow tests of some files and the other the
    rest (tox.ini): ``TASKSHED_SLOW_TESTS="only PATH,..."`` or ``"except PATH,..."``, PATH a
    test file or directory as pytest names it (``tests/chaos/``).
    """
    items.sort(key=_run_order)
    if os.environ.get("TASKSHED_DATABASE_TESTS_ONLY"):
        _leave_out(config, items, [item for item in items if not _uses_database(item)])
    rule = os.environ.get("TASKSHED_SLOW_TESTS", "").strip()
    if not rule:
        return
    mode, _, paths = rule.partition(" ")
    prefixes = tuple(path.strip() for path in paths.split(",") if path.strip())
    if mode not in ("only", "except") or not prefixes:
        raise pytest.UsageError(
            f"TASKSHED_SLOW_TESTS must be 'only PATH,...' or 'except PATH,...', not {rule!r}"
        )
    leave_out = [
        item
        for item in items
        if item.get_closest_marker("slow") is not None
        and item.nodeid.startswith(prefixes) == (mode == "except")
    ]
    _leave_out(config, items, leave_out)


def _leave_out(
    config: pytest.Config, items: list[pytest.Item], leave_out: list[pytest.Item]
) -> None:
    if leave_out:
        config.hook.pytest_deselected(items=leave_out)
        left = {id(item) for item in leave_out}
        items[:] = [item for item in items if id(item) not in left]


DATABASE_FIXTURES = frozenset(
    ("db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback",
     "live_server", "admin_client", "admin_user", "django_user_model")
)  # fmt: skip


def _uses_database(item: pytest.Item) -> bool:
    """Whether a test may reach the database: pytest-django refuses it to the others."""
    if item.get_closest_marker("django_db") or item.get_closest_marker("slow"):
        return True
    return bool(DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def _run_order(item: pytest.Item) -> int:
    if item.get_closest_marker("heavy") is not None:
        return 0
    return 2 if item.get_closest_marker("slow") is not None else 1


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A heavy test runs while no slow test of another env does; other slow tests overlap.

    ``TASKSHED_SLOW_TEST_LOCK`` (set by tox.ini) names a lock file that the envs of one tox
    run share: slow tests hold it shared, heavy ones exclusive. Envs run in parallel, and one
    env's 4 workers and 10,000 tasks made another's recurring tasks on SQLite start late.
    The wait happens before pytest-timeout starts its clock (this wrapper is outside it) and
    is not part of the test's duration.
    """
    path = os.environ.get("TASKSHED_SLOW_TEST_LOCK")
    if not path or item.get_closest_marker("slow") is None:
        return (yield)
    import fcntl

    with open(path, "a") as lock:
        heavy = item.get_closest_marker("heavy") is not None
        fcntl.flock(lock, fcntl.LOCK_EX if heavy else fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from django.conf import settings

    database = settings.DATABASES["default"]
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    lines = [f"taskshed: database {database['ENGINE']} ({database['NAME']}), layer {layer}"]
    for status in config.stash[services_key]:
        state = "reachable" if status.error is None else f"UNREACHABLE: {status.error}"
        lines.append(f"taskshed: {status.name} at {status.url} {state}")
    if lock := os.environ.get("TASKSHED_SLOW_TEST_LOCK"):
        lines.append(f"taskshed: slow tests share the lock {lock}, heavy ones alone")
    return lines


def _postgresql_flushes_small_tables_with_delete() -> None:
    """After each transactional test Django empties the tables with one ``TRUNCATE``: on
    PostgreSQL that makes new files for each table and index, about 55 ms here, where a
    ``DELETE`` of a test's few rows takes 2. Most of this suite's tests are transactional
    (async tests reach the database from another thread), so tables that a test left small
    are emptied with ``DELETE``. When one of them took many rows, live or dead (a plan test's
    200,000, or the permissions that flushes of every app delete and make again), or when a
    flush resets sequences, Django's ``TRUNCATE`` of them all runs instead, which also drops
    the dead rows. Django's foreign keys are deferred, so the order of the deletes does not
    matter."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):  # noqa: ANN001, ANN202
        flush = partial(truncate, self, style, reset_sequences=reset_sequences)
        if reset_sequences or not tables:
            return flush(tables, allow_cascade=allow_cascade)
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
                "AND n_live_tup + n_dead_tup > %s",
                [list(tables), BIG_TABLE_ROWS],
            )
            if cursor.fetchall():  # then all of them, as one TRUNCATE (foreign keys)
                return flush(tables, allow_cascade=allow_cascade)
        return [f"DELETE FROM {self.quote_name(name)};" for name in tables]

    DatabaseOperations.sql_flush = sql_flush


BIG_TABLE_ROWS = 5000  # a flush truncates a table with more rows, live or dead


def _test_setup_skips_the_declared_schedules_sync() -> None:
    """A transactional test with ``available_apps`` starts with Django sending
    ``post_migrate``, whose receiver here syncs the schedules declared in code: about 20 ms
    of queries for each of some 600 tests an environment, for nothing, since the suite's
    settings declare none and the table was just emptied. The sync on ``migrate`` (and on
    ``flush``) is tested where it happens (tests/test_declared.py)."""
    from django.apps import apps
    from django.db.models.signals import post_migrate
    from django.test import TransactionTestCase

    from django_taskshed import receivers

    pre_setup = TransactionTestCase._pre_setup.__func__

    def _pre_setup(cls: type[TransactionTestCase]) -> None:
        sender = apps.get_app_config("django_taskshed")
        post_migrate.disconnect(receivers.sync_declared_schedules, sender=sender)
        try:
            pre_setup(cls)
        finally:
            post_migrate.connect(receivers.sync_declared_schedules, sender=sender)

    TransactionTestCase._pre_setup = classmethod(_pre_setup)


def pytest_sessionstart(session: pytest.Session) -> None:
    _postgresql_flushes_small_tables_with_delete()
    _test_setup_skips_the_declared_schedules_sync()
    missing = [s for s in session.config.stash[services_key] if s.error is not None]
    if missing and _services_required():
        details = "; ".join(f"{s.name} at {s.url}: {s.error}" for s in missing)
        pytest.exit(
            f"TASKSHED_REQUIRE_SERVICES is set and a server cannot be reached: {details}",
            returncode=3,
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    from django.conf import settings

    if getattr(settings, "TEST_TMPDIR_OWNED", False):
        shutil.rmtree(settings.TEST_TMPDIR, ignore_errors=True)


@pytest.fixture
def redis_url(pytestconfig: pytest.Config) -> str:
    """The Redis URL the suite runs against; skips (or fails, when required) without one."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: this test needs a Redis server")
    status = next(s for s in pytestconfig.stash[services_key] if s.name == "redis")
    if status.error is not None:
        message = f"Redis at {url} is UNREACHABLE: {status.error}"
        if _services_required():
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def fail_once(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[Any]]:
    """``fail_once(module, name)``: the first call of ``module.name`` raises a database error
    (as when the server drops the connection), later calls go through. Returns the calls."""
    from django.db import OperationalError

    def patch(module: Any, name: str) -> list[Any]:
        calls: list[Any] = []
        real = getattr(module, name)

        def flaky(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            if len(calls) == 1:
                raise OperationalError("the server went away")
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, flaky)
        return calls

    return patch


# --- Transactional tests that write only this package's tables ------------------------------


def package_apps() -> list[str]:
    """``available_apps`` for a transactional test that writes no table of Django's contrib
    apps (users, sessions, the admin log): every installed app but those.

    After a transactional test without ``available_apps`` Django empties every table and
    then makes every app's content types and permissions again (``post_migrate``): about
    45 ms a test on SQLite and 60 on PostgreSQL, more than most of these tests take. With
    it, only the listed apps' tables are emptied (the package's and the test app's
    ``Execution`` ledger) and nothing is made again. A test that logs in (``admin_client``)
    writes users and sessions: it keeps a plain ``django_db(transaction=True)``.
    """
    from django.conf import settings

    return [app for app in settings.INSTALLED_APPS if not app.startswith("django.contrib.")]


# --- Database connections of asgiref's sync thread -------------------------------------------


@pytest.fixture(autouse=True)
def _close_sync_thread_connections(request: pytest.FixtureRequest):
    """After an async test, close the database connections of asgiref's sync thread.

    Under pytest-asyncio, ``sync_to_async`` runs every thread-sensitive call on one shared
    executor thread with its own connection. Left open, it outlives the test and PostgreSQL
    refuses to drop the test database at the end ("being accessed by other users").
    """
    yield
    if inspect.iscoroutinefunction(request.function):
        from asgiref.sync import SyncToAsync
        from django.db import connections

        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


# --- Schedulers ------------------------------------------------------------------------------

SCHEDULER_METHODS = (
    "start",
    "shutdown",
    "add_task",
    "add_tasks",
    "fetch_tasks",
    "pause_tasks",
    "resume_tasks",
    "remove_tasks",
    "update_execution_times",
    "add_callback",
)


class AwaitedSyncScheduler:
    """A ``SyncScheduler`` that async tests drive like an ``AsyncScheduler``.

    Each public method runs through ``sync_to_async`` on Django's sync thread, as sync code
    would call it; everything else (``datastore``, ``worker``, ``started``) reads through.
    """

    def __init__(self, scheduler: Any):
        self.wrapped = scheduler

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if name in SCHEDULER_METHODS:
            from asgiref.sync import sync_to_async

            return sync_to_async(value)
        return value


class FakeWorker:
    """Stands in for an in-process worker: records wake-ups and callbacks."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Any] = {}
        self.wakeups: list[Any] = []

    def add_callback(self, name: str, callback: Any) -> None:
        if name in self.callbacks:
            raise ValueError(f"callback name {name!r} is already registered")
        self.callbacks[name] = callback

    def update_schedule(self, run_at: Any = None) -> None:
        self.wakeups.append(run_at)


def build_scheduler(kind: str, **options: Any) -> Any:
    """An ``AsyncScheduler`` or an awaited ``SyncScheduler`` built with ``options``."""
    from django_taskshed.schedulers import AsyncScheduler, SyncScheduler

    if kind == "async":
        return AsyncScheduler(**options)
    return AwaitedSyncScheduler(SyncScheduler(**options))


@pytest.fixture(params=["async", "sync"])
def scheduler_kind(request: pytest.FixtureRequest) -> str:
    """Runs a test once with each scheduler."""
    return request.param


@pytest.fixture
def make_scheduler(scheduler_kind: str) -> Callable[..., Any]:
    """Builds this test's kind of scheduler: ``make_scheduler(worker=..., datastore=...)``."""
    return partial(build_scheduler, scheduler_kind)


@pytest.fixture
def scheduler(make_scheduler: Callable[..., Any]) -> Any:
    """An ``AsyncScheduler``, or a ``SyncScheduler`` awaited through ``sync_to_async``."""
    return make_scheduler()


@pytest.fixture
def fake_worker() -> FakeWorker:
    return FakeWorker()


# --- Notifications ---------------------------------------------------------------------------


@pytest.fixture
def hungry_worker(db: None) -> Any:
    """A registered worker that publishes no re-read time: every hint is sent to the group
    (across processes, a hint no registered worker needs is not sent at all)."""
    from datetime import timedelta

    from django.utils import timezone

    from django_taskshed.models import WorkerRecord

    now = timezone.now()
    return WorkerRecord.objects.create(
        worker_id="hungry", hostname="test", pid=1, started_at=now, heartbeat_at=now,
        expires_at=now + timedelta(hours=1),
    )  # fmt: skip


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, hungry_worker: Any) -> list[Any]:
    """The ``run_at`` hint of every group notification sent during the test, in order, with
    a registered worker that wants every hint (``hungry_worker``).

    Both schedulers reach the channel layer through ``notifications.asend_changed``. The list
    compares equal only after the hints handed to ``notifications.HINTS`` are delivered.
    """
    from django_taskshed import notifications

    calls = SentHints()

    async def record(run_at: Any, *args: Any) -> None:
        calls.append(run_at)

    monkeypatch.setattr(notifications, "asend_changed", record)
    return calls


class SentHints(list):
    """Hints sent; read, first waits for those still on the way (``HINTS``)."""

    __hash__ = None  # type: ignore[assignment]

    @staticmethod
    def _arrived() -> None:
        from django_taskshed import notifications

        assert notifications.HINTS.flush(10), "hints still pending after 10 s"

    def __eq__(self, other: object) -> bool:
        self._arrived()
        return list.__eq__(self, other)

    def __len__(self) -> int:
        self._arrived()
        return list.__len__(self)

    def __getitem__(self, index: Any) -> Any:
        self._arrived()
        return list.__getitem__(self, index)

    def __iter__(self) -> Any:
        self._arrived()
        return list.__iter__(self)


# --- runtaskworker subprocesses --------------------------------------------------------------

fleet_key = pytest.StashKey[Any]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A failed test shows the output of its ``runtaskworker`` subprocesses."""
    report = yield
    fleet = item.stash.get(fleet_key, None)
    if report.failed and fleet is not None:
        report.sections.append(("runtaskworker subprocesses", fleet.describe()))
    return report


@pytest.fixture
def worker_procs(
    request: pytest.FixtureRequest, transactional_db: None, tmp_path_factory: pytest.TempPathFactory
):
    """A ``WorkerFleet``: ``worker_procs.start("w1", "--burst")`` starts ``runtaskworker``.

    Needs committed rows, hence ``transactional_db``. At teardown every process still
    running is stopped (SIGTERM, then SIGKILL); a failed test shows every worker's output.
    """
    from tests.workerprocs import WorkerFleet

    fleet = WorkerFleet(tmp_path_factory.mktemp("workers"))
    request.node.stash[fleet_key] = fleet
    yield fleet
    fleet.stop_all()


# --- The callback registry -------------------------------------------------------------------


@pytest.fixture
def empty_registry():
    """An empty callback registry for the test; the apps' registrations come back afterwards.

    ``django_taskshed.registry`` keeps module-level state that ``@register_callback`` fills.
    """
    from django_taskshed import registry

    decorated, conflicts = dict(registry._decorated), list(registry._conflicts)
    schedules = dict(registry._schedules)
    registry._decorated.clear()
    registry._conflicts.clear()
    registry._schedules.clear()
    yield registry
    registry._decorated.clear()
    registry._decorated.update(decorated)
    registry._conflicts[:] = conflicts
    registry._schedules.clear()
    registry._schedules.update(schedules)
