"""The pytest fixture ``taskshed_clock``: each test that asks for it runs inside a test clock.

Loaded by pytest through the ``pytest11`` entry point of the package (or with
``-p django_taskshed.pytest_plugin`` where plugin autoloading is off). It imports Django only
when a test uses the fixture, so it costs other projects' test runs nothing.
"""

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
