"""``Task.save()`` never undoes a worker: it does not write the lease, and it refuses an
instance older than its row (``StaleTaskError``).

An instance remembers the row's version as it loaded it: ``updated_at`` (which every edit
moves), ``run_at`` and ``last_run_at`` (which every run of a worker moves, and a claim
never does). A save of a loaded instance is an UPDATE of every field but the lease's, made
only if the row still has that version (the row is locked while it is compared); else
nothing is written and ``StaleTaskError`` says so. The scheduler's own writes are single
statements that never write a whole row (``datastores.tasks``).
"""

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, TypeVar

from django.db import models, router
from django.db.models.base import ModelBase

from .exceptions import StaleTaskError

# The worker's: written by claims, renewals and results, never by save().
LEASE_FIELDS = frozenset({"lease_owner", "lease_expires_at", "claim_token", "abandoned_by"})
VERSION_FIELDS = ("updated_at", "run_at", "last_run_at")

M = TypeVar("M", bound="FencedSaveModel")


class FencedSaveModel(models.Model):
    """The ``save()`` of a model with a lease and a version (``VERSION_FIELDS``)."""

    _loaded_version: dict[str, Any] | None = None

    class Meta:
        abstract = True

    def save(
        self,
        *,
        force_insert: bool | tuple[ModelBase, ...] = False,
        force_update: bool = False,
        using: str | None = None,
        update_fields: Iterable[str] | None = None,
    ) -> None:
        """Save; an instance loaded from the database is saved only over the row version
        it loaded, and never writes the lease fields (``StaleTaskError``, ``ValueError``)."""
        if update_fields is not None and not (update_fields := list(update_fields)):
            return  # as Django: nothing named, nothing saved
        version = self._loaded_version
        if force_insert or (self._state.adding and not force_update):
            super().save(
                force_insert=force_insert,
                force_update=force_update,
                using=using,
                update_fields=update_fields,
            )
            self._loaded_version = self._version_of(VERSION_FIELDS)
            return
        from .datastores.transactions import writing  # it imports the Task model

        fields = self._fields_to_write(update_fields)
        using = using or router.db_for_write(type(self), instance=self)
        with writing(using):  # on SQLite, the write lock first: the compare, then the write
            if version:  # else not loaded with it (deferred, or made by hand): not compared
                rows = type(self)._base_manager.using(using).select_for_update()
                row = rows.filter(pk=self.pk).values(*version).first()
                if row != version:
                    raise StaleTaskError(self.pk, deleted=row is None)
            super().save(using=using, update_fields=fields)
        written = self._version_of([name for name in VERSION_FIELDS if name in fields])
        self._loaded_version = {**(version or {}), **written}

    @classmethod
    def from_db(
        cls: type[M],
        db: str | None,
        field_names: Collection[str],
        values: Collection[Any],
        **kwargs: Any,
    ) -> M:
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._loaded_version = instance._version_of(VERSION_FIELDS)
        return instance

    def refresh_from_db(
        self,
        using: str | None = None,
        fields: Iterable[str] | None = None,
        from_queryset: "models.QuerySet[Any] | None" = None,
    ) -> None:
        fields = None if fields is None else list(fields)
        super().refresh_from_db(using, fields, from_queryset)
        names = VERSION_FIELDS if fields is None else [n for n in VERSION_FIELDS if n in fields]
        self._loaded_version = {**(self._loaded_version or {}), **self._version_of(names)}

    def _fields_to_write(self, update_fields: Iterable[str] | None) -> set[str]:
        if update_fields is not None:
            names = set(update_fields)
            if lease := ", ".join(sorted(names & LEASE_FIELDS)):
                raise ValueError(
                    f"save() does not write the lease fields ({lease}): they belong to the "
                    "worker that runs the task"
                )
        else:
            deferred = self.get_deferred_fields()
            names = {
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.attname not in deferred
            }
        return (names - LEASE_FIELDS) | {"updated_at"}

    def _version_of(self, names: Iterable[str]) -> dict[str, Any]:
        """The loaded values of ``names`` as the database compares them."""
        loaded = self.__dict__
        fields = {field.name: field for field in self._meta.concrete_fields}
        return {name: fields[name].get_prep_value(loaded[name]) for name in names if name in loaded}

    def loaded_version(self) -> str:
        """The version this instance was loaded at, as text (the admin form keeps it)."""
        return version_text(self._loaded_version or {})

    def set_loaded_version(self, text: str) -> None:
        """Save only over the version ``loaded_version()`` gave (the one a form opened at)."""
        try:
            stored = json.loads(text)
            version = {
                name: None if value is None else datetime.fromisoformat(value)
                for name, value in stored.items()
                if name in VERSION_FIELDS
            }
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a task version: {text!r}") from exc
        self._loaded_version = version


def version_text(version: dict[str, Any]) -> str:
    """A version as JSON text (``FencedSaveModel.set_loaded_version`` reads it)."""
    return json.dumps({name: None if v is None else v.isoformat() for name, v in version.items()})
