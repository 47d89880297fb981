"""The pytest fixture ``taskshed_clock``: each test that asks for it runs inside a test clock.
And after each test, the hints it left on their way are delivered (``pytest_runtest_teardown``).

Loaded by pytest through the ``pytest11`` entry point of the package (or with
``-p django_taskshed.pytest_plugin`` where plugin autoloading is off). It imports Django only
when a test uses the fixture, so it costs other projects' test runs nothing.
"""

import sys
import warnings
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import TaskshedClock


@pytest.fixture
def taskshed_clock_start() -> datetime:
    """Where the ``taskshed_clock`` fixture starts: the real time, to the second. Override
    this fixture (in a test module or a ``conftest.py``) to start at a time of your own."""
    from .testing import real_now

    return real_now()


@pytest.fixture
def taskshed_clock(taskshed_clock_start: datetime) -> Iterator["TaskshedClock"]:
    """A ``django_taskshed.testing.taskshed_clock`` frozen at ``taskshed_clock_start`` for
    the test. The test still needs database access (``@pytest.mark.django_db``)."""
    from .testing import taskshed_clock as clock

    with clock(taskshed_clock_start) as frozen:
        yield frozen


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown() -> None:
    """Before a test's fixtures are torn down, the hints it left on their way
    (``notifications.HINTS``: a layer across processes) are delivered, so that none reaches the
    next test, and that thread's database connections closed, so that the test database can
    be dropped at the end (even of a session cut short). Nothing to do in a process that has
    not imported django_taskshed's notifications."""
    notifications = sys.modules.get("django_taskshed.notifications")
    if notifications is None:
        return
    if not notifications.HINTS.flush(10, close_connections=True):
        warnings.warn("django_taskshed: hints still on their way after 10 s", stacklevel=1)
