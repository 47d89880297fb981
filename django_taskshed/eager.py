"""Calls that take effect when made and may also be awaited, as TaskShed's callers do."""

from collections.abc import Callable, Generator
from functools import wraps
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Done(Generic[T]):
    """The result of a call that has already happened; ``await`` on it returns ``value``.

    TaskShed calls ``scheduler.add_callback(...)`` plainly and ``await worker.update_schedule()``;
    a coroutine would do nothing until awaited, and a plain function cannot be awaited.
    """

    __slots__ = ("value",)

    def __init__(self, value: T):
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        yield from ()  # a generator that ends at once: ``await`` never suspends
        return self.value


def eager(func: Callable[P, T]) -> Callable[P, Done[T]]:
    """Make ``func`` run when called and return a ``Done`` that may be awaited."""

    @wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> Done[T]:
        return Done(func(*args, **kwargs))

    return call
