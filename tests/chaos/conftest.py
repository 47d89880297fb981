"""The chaos suite: faults that production injects into workers, on PostgreSQL only.

Every test here starts real ``runtaskworker`` processes; each is marked ``slow`` and ``chaos``
here, so tox runs the suite once, in the PostgreSQL env that runs the slow tests.
"""

import pytest
from django.db import connection


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py sorts the slow tests last
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in item.nodeid:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the chaos suite runs on PostgreSQL (DATABASE_URL=postgres://...)")
