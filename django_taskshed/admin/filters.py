"""The task changelist's filters, and its paginator that never counts the whole table."""

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from ..models import Task, TaskStatus
from .forms import registered_names

COUNT_CAP = 10_000  # the changelist never counts further than this


if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    RowPaginator = Paginator[Any]
else:
    RowPaginator = Paginator


class BoundedCountPaginator(RowPaginator):
    """Counts at most ``COUNT_CAP`` + 1 rows, so a huge table never costs a full count."""

    @cached_property
    def count(self) -> int:
        rows = cast("QuerySet[Any]", self.object_list)
        return rows.order_by()[: COUNT_CAP + 1].count()


class BoundedCount:
    """A changelist that counts at most ``COUNT_CAP`` + 1 rows (its pagination template says
    "more than" past that)."""

    paginator: type[RowPaginator] = BoundedCountPaginator
    show_full_result_count = False

    @property
    def count_cap(self) -> int:
        """The most rows the changelist counts (read by its pagination template)."""
        return COUNT_CAP


def with_selected(names: list[str], selected: str | None) -> list[tuple[str, str]]:
    """``names`` as choices, plus the selected one if it is not among them: a filter with no
    choices is dropped by Django, and its value silently ignored."""
    if selected and selected not in names:
        names = [*names, selected]
    return [(name, name) for name in names]


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(TaskStatus.choices)

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() in TaskStatus.values:
            return queryset.with_status(self.value(), timezone.now())
        return queryset


class CallbackFilter(admin.SimpleListFilter):
    """Registered callback names: no query over the table."""

    title = "callback"
    parameter_name = "callback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return with_selected(registered_names(), self.value())

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(callback=self.value()) if self.value() else queryset


class GroupFilter(admin.SimpleListFilter):
    """The first 50 groups of tasks by name (an index scan), and the one selected."""

    title = "group"
    parameter_name = "group"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        groups = Task.objects.filter(group_id__isnull=False).order_by("group_id")
        names = groups.values_list("group_id", flat=True).distinct()[:50]
        return with_selected([str(name) for name in names], self.value())

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(group_id=self.value()) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    """The first 50 queues by name."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Task.objects.order_by("queue").values_list("queue", flat=True).distinct()[:50]
        return [(str(name), str(name)) for name in names]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(queue=self.value()) if self.value() else queryset
