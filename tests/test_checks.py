"""System checks on the ``TASKSHED`` settings: each wrong key is an error that names it."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_taskshed.checks import check_settings
from django_taskshed.conf import DEFAULTS, taskshed_settings

pytestmark = pytest.mark.usefixtures("empty_registry")


def run_check() -> str:
    """``manage.py check``'s complaint, or "" when it passes."""
    try:
        call_command("check", stdout=io.StringIO())
    except SystemCheckError as error:
        return str(error)
    return ""


def callback(x: int) -> int:
    return x


VALID = {
    "CALLBACKS": {"callback": "tests.test_checks.callback"},
    "DATABASE": "default",
    "CHANNEL_LAYER": "default",
    "GROUP": "taskshed.workers-1_a",
    "POLL_INTERVAL": 0.5,
    "LEASE_SECONDS": 30,
    "BATCH_SIZE": 1,
    "CONCURRENCY": 50,
    "MAX_RETRIES": 0,
    "RETRY_BACKOFF": 0,
    "TIMEOUT": 2.5,
    "KWARGS_MAX_BYTES": 2,  # room for the schedule's {}
    "SCHEDULES": {"nightly": {"callback": "callback", "cron": "30 2 * * *"}},
    "HISTORY": False,
    "HISTORY_RETENTION": timedelta(days=1),
    "HISTORY_MAX_RESULT_BYTES": 0,
}

BAD = {
    "CALLBACKS": [
        "tests.test_checks.callback",
        ["callback"],
        {"": "tests.test_checks.callback"},
        {"callback": ""},
        {1: "tests.test_checks.callback"},
        {"callback": 1},
    ],
    "DATABASE": ["replica", "", None, 0, ["default"]],
    "CHANNEL_LAYER": ["nope", "", 0, ["default"]],
    "GROUP": ["", "with space", "ünïcode", "g" * 100, "taskshed\n", None, 5],
    "POLL_INTERVAL": [0, -1, "5", True, None, timedelta(seconds=5)],
    "LEASE_SECONDS": [0, -0.5, "60", False, None],
    "BATCH_SIZE": [0, -1, 1.5, "10", True, None],
    "CONCURRENCY": [0, 2.0, "20", True, None],
    "MAX_RETRIES": [-1, 1.5, "0", True, None],
    "RETRY_BACKOFF": [-1, "5", None, True, False],
    "TIMEOUT": [0, -1, "30", True, timedelta(seconds=30)],
    "KWARGS_MAX_BYTES": [0, -1, 1.5, "1024", True, None],
    "SCHEDULES": [None, [], "nightly", {"": {"callback": "callback", "interval": 60}}],
    "HISTORY": [0, 1, "yes", None],
    "HISTORY_RETENTION": [0, -1, timedelta(0), "7 days", None, True],
    "HISTORY_MAX_RESULT_BYTES": [-1, 1.5, "10", True, None],
}
BAD_CASES = [
    pytest.param(key, value, id=f"{key}={value!r}")
    for key, values in BAD.items()
    for value in values
]


def test_every_setting_is_covered_here():
    assert VALID.keys() == DEFAULTS.keys()
    assert BAD.keys() == DEFAULTS.keys()


def test_the_test_settings_pass():
    assert check_settings() == []
    assert run_check() == ""


def test_a_valid_full_dict_passes():
    with override_settings(TASKSHED=VALID):
        assert check_settings() == []
        assert run_check() == ""
        assert taskshed_settings.GROUP == "taskshed.workers-1_a"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CHANNEL_LAYER", None),
        ("TIMEOUT", None),
        ("GROUP", "g" * 99),
        ("POLL_INTERVAL", 1),
        ("RETRY_BACKOFF", 0.25),
        ("MAX_RETRIES", 10),
        ("CALLBACKS", {}),
    ],
    ids=lambda value: repr(value)[:20],
)
def test_edge_values_that_are_valid(key, value):
    with override_settings(TASKSHED={key: value}):
        assert check_settings() == []


@pytest.mark.parametrize(("key", "value"), BAD_CASES)
def test_a_wrong_value_is_an_error_naming_the_key(key, value):
    with override_settings(TASKSHED={**VALID, key: value}):
        errors = [e for e in check_settings() if f"TASKSHED[{key!r}]" in e.msg]
        output = run_check()
    assert [e.id for e in errors] == ["django_taskshed.E004"]
    assert f"TASKSHED[{key!r}] must be" in output
    for other in DEFAULTS.keys() - {key}:
        assert f"TASKSHED[{other!r}] must be" not in output


def test_an_unknown_key_is_reported():
    with override_settings(TASKSHED={"POLL_INTERVALL": 5}):
        (error,) = check_settings()
        output = run_check()
    assert error.id == "django_taskshed.E003"
    assert "TASKSHED['POLL_INTERVALL'] is not a django-taskshed setting" in error.msg
    assert "POLL_INTERVAL" in error.hint
    assert "POLL_INTERVALL" in output


def test_taskshed_must_be_a_dict():
    with override_settings(TASKSHED=["POLL_INTERVAL", 5]):
        (error,) = check_settings()
        output = run_check()
    assert error.id == "django_taskshed.E002"
    assert "TASKSHED must be a dict, not list" in output


def test_use_tz_false_is_reported():
    with override_settings(USE_TZ=False):
        (error,) = check_settings()
    assert error.id == "django_taskshed.E001"
    assert "USE_TZ" in error.msg


def test_settings_are_read_when_used():
    assert taskshed_settings.POLL_INTERVAL == DEFAULTS["POLL_INTERVAL"]
    with override_settings(TASKSHED={"POLL_INTERVAL": 0.25}):
        assert taskshed_settings.POLL_INTERVAL == 0.25
        assert taskshed_settings.BATCH_SIZE == DEFAULTS["BATCH_SIZE"]
    assert taskshed_settings.POLL_INTERVAL == DEFAULTS["POLL_INTERVAL"]
    with pytest.raises(AttributeError, match="NO_SUCH_SETTING"):
        taskshed_settings.NO_SUCH_SETTING  # noqa: B018


def test_taskshed_settings_see_every_way_of_changing_them(settings):
    """The worker reads some settings at every run through a shortcut into what Django's
    settings object keeps: overrides, assignments and changes in place must all show."""
    from django.conf import settings as django_settings

    settings.TASKSHED = {"POLL_INTERVAL": 2.0}
    assert taskshed_settings.POLL_INTERVAL == 2.0
    assert taskshed_settings.BATCH_SIZE == DEFAULTS["BATCH_SIZE"]
    django_settings.TASKSHED["POLL_INTERVAL"] = 3.0  # in place
    assert taskshed_settings.POLL_INTERVAL == 3.0
    with override_settings(TASKSHED={"BATCH_SIZE": 7}):
        assert (taskshed_settings.BATCH_SIZE, taskshed_settings.POLL_INTERVAL) == (7, 5.0)
    assert (taskshed_settings.BATCH_SIZE, taskshed_settings.POLL_INTERVAL) == (100, 3.0)
    django_settings.TASKSHED = {"HISTORY": False}  # assigned (into the fixture's override)
    assert (taskshed_settings.HISTORY, taskshed_settings.POLL_INTERVAL) == (False, 5.0)
    del django_settings.TASKSHED
    assert taskshed_settings.HISTORY is True
    with pytest.raises(AttributeError, match="unknown TASKSHED setting 'NOPE'"):
        taskshed_settings.NOPE  # noqa: B018
