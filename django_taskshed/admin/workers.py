"""The admin's page of live workers, and the callback names they serve."""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from ..models import WorkerRecord

if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    WorkerModelAdmin = admin.ModelAdmin[WorkerRecord]
else:
    WorkerModelAdmin = admin.ModelAdmin


def live_workers() -> QuerySet[WorkerRecord]:
    return WorkerRecord.objects.filter(expires_at__gte=timezone.now())


def served_callbacks() -> frozenset[str]:
    names: set[str] = set()
    for callbacks in live_workers().values_list("callbacks", flat=True):
        names.update(callbacks or ())
    return frozenset(names)


@admin.register(WorkerRecord)
class WorkerRecordAdmin(WorkerModelAdmin):
    list_display = [
        "worker_id",
        "hostname",
        "pid",
        "started_at",
        "heartbeat_at",
        "served",
        "running",
    ]
    search_fields = ["worker_id", "hostname"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkerRecord]:
        return live_workers()

    @admin.display(description="callbacks served")
    def served(self, record: WorkerRecord) -> str:
        return ", ".join(record.callbacks or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
