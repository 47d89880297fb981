"""The callback registry: ``@register_callback``, ``TASKSHED["CALLBACKS"]``, and the check
that reports duplicate names and paths that do not lead to a callable.

The registry is module-level state: each test runs with it emptied (``empty_registry``).
"""

import io
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_taskshed.registry import get_callbacks, register_callback, registry_errors


async def add(a: int, b: int) -> int:
    return a + b


def multiply(a: int, b: int) -> int:
    return a * b


async def other_add(a: int, b: int) -> int:
    return a + b + 0


NOT_CALLABLE = 42


class Doubler:
    def __call__(self, x: int) -> int:
        return 2 * x


pytestmark = pytest.mark.usefixtures("empty_registry")


def check_output() -> str:
    """``manage.py check``'s complaint, or "" when it passes."""
    try:
        call_command("check", stdout=io.StringIO())
    except SystemCheckError as error:
        return str(error)
    return ""


# --- The decorator ---------------------------------------------------------------------------


def test_bare_decorator_registers_under_the_function_name():
    assert register_callback(add) is add
    assert get_callbacks() == {"add": add}


def test_named_decorator_registers_under_the_name():
    assert register_callback("sum")(add) is add
    assert register_callback(name="product")(multiply) is multiply
    assert get_callbacks() == {"sum": add, "product": multiply}


def test_empty_parentheses_use_the_function_name():
    assert register_callback()(multiply) is multiply
    assert get_callbacks() == {"multiply": multiply}


def test_decorator_syntax():
    @register_callback
    async def ping() -> str:
        return "pong"

    @register_callback("pong")
    def pong_sync() -> str:
        return "ping"

    assert get_callbacks() == {"ping": ping, "pong": pong_sync}


def test_a_callable_class_registers_under_its_name_and_an_instance_under_a_given_name():
    doubler = Doubler()
    register_callback(Doubler)
    register_callback("double")(doubler)
    assert get_callbacks() == {"Doubler": Doubler, "double": doubler}


@pytest.mark.parametrize("name", ["", 5, b"add", 1.5], ids=["empty", "int", "bytes", "float"])
def test_a_name_must_be_a_non_empty_string(name):
    with pytest.raises(TypeError, match="non-empty string"):
        register_callback(name)
    assert get_callbacks() == {}


def test_the_same_function_twice_is_not_a_conflict():
    register_callback(add)
    register_callback("add")(add)
    assert registry_errors() == []
    assert get_callbacks() == {"add": add}


def test_two_functions_under_one_name_are_reported_by_check():
    register_callback("add")(add)
    register_callback("add")(other_add)
    assert get_callbacks() == {"add": add}  # the first registration stays
    (error,) = registry_errors()
    assert "'add'" in error
    assert "tests.test_registry.add" in error
    assert "tests.test_registry.other_add" in error
    output = check_output()
    assert "django_taskshed.E005" in output
    assert "callback name 'add' is registered twice" in output


# --- Settings --------------------------------------------------------------------------------


def test_settings_callbacks_are_merged_with_decorated_ones():
    register_callback(add)
    with override_settings(TASKSHED={"CALLBACKS": {"mul": "tests.test_registry.multiply"}}):
        assert get_callbacks() == {"mul": multiply, "add": add}
        assert registry_errors() == []
        assert check_output() == ""


def test_settings_and_decorator_may_name_the_same_function():
    register_callback(add)
    with override_settings(TASKSHED={"CALLBACKS": {"add": "tests.test_registry.add"}}):
        assert get_callbacks() == {"add": add}
        assert registry_errors() == []


def test_settings_and_decorator_naming_different_functions_conflict():
    register_callback("add")(other_add)
    with override_settings(TASKSHED={"CALLBACKS": {"add": "tests.test_registry.add"}}):
        assert get_callbacks()["add"] is add  # settings win
        output = check_output()
    assert "callback name 'add' is registered twice" in output
    assert "tests.test_registry.add" in output
    assert "tests.test_registry.other_add" in output


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        ("tests.no_such_module.add", "cannot be imported"),
        ("tests.test_registry.no_such_function", "cannot be imported"),
        ("nodots", "cannot be imported"),
        ("tests.test_registry.NOT_CALLABLE", "is not callable"),
    ],
    ids=["missing module", "missing attribute", "not a dotted path", "not callable"],
)
def test_a_bad_settings_path_is_reported_by_check(path, complaint):
    with override_settings(
        TASKSHED={"CALLBACKS": {"good": "tests.test_registry.add", "bad": path}}
    ):
        output = check_output()
        (error,) = registry_errors()
    assert f"TASKSHED['CALLBACKS']['bad'] = {path!r}" in error
    assert complaint in error
    assert f"TASKSHED['CALLBACKS']['bad'] = {path!r}" in output
    assert "'good'" not in output


def test_with_nothing_registered_check_passes():
    assert registry_errors() == []
    assert check_output() == ""


def test_apps_tasks_modules_are_autodiscovered():
    # tests.testapp is installed; its tasks module is imported when the app registry is ready.
    assert "tests.testapp.tasks" in sys.modules
