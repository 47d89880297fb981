"""The admin's task form: callbacks from the registry, kwargs as validated JSON."""

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.utils import timezone

from ..conf import taskshed_settings
from ..datastores.validation import (
    check_identifier,
    check_priority,
    check_schedule,
    first_run,
    kwargs_to_json,
)
from ..exceptions import InvalidTaskError
from ..fenced_save import VERSION_FIELDS, version_text
from ..models import QUEUE_MAX_LENGTH, Task
from ..registry import get_callbacks

# The fields a task's schedule is checked on together.
SCHEDULE = ("run_at", "run_type", "interval", "cron", "timezone", "on_nonexistent", "on_ambiguous")
CHANGED_SINCE_OPENED = (
    "This task was changed since you opened it (edited elsewhere, or run by a worker): "
    "nothing was saved. Your input is kept below; check it against the task as it is now "
    "(open it in a new tab) and save again to apply it."
)
POLICY_DEFAULTS = {
    "on_nonexistent": Task._meta.get_field("on_nonexistent").default,
    "on_ambiguous": Task._meta.get_field("on_ambiguous").default,
}


def registered_names() -> list[str]:
    return sorted(get_callbacks())


class KwargsField(forms.JSONField):
    """JSON text that must be an object within ``TASKSHED['KWARGS_MAX_BYTES']``."""

    def validate(self, value: Any) -> None:
        super().validate(value)
        try:
            kwargs_to_json(value)
        except InvalidTaskError as exc:
            raise ValidationError(str(exc), code="invalid_kwargs") from None


@contextmanager
def as_validation_error() -> Iterator[None]:
    """The datastore's InvalidTaskError, as the form's error on the field being cleaned."""
    try:
        yield
    except InvalidTaskError as exc:
        raise ValidationError(str(exc), code=f"invalid_{exc.field}") from None


if TYPE_CHECKING:  # django-stubs' generics; Django's classes take no [] at run time
    TaskModelForm = forms.ModelForm[Task]
else:
    TaskModelForm = forms.ModelForm


class TaskAdminForm(TaskModelForm):
    callback = forms.CharField(widget=forms.Select())
    kwargs = KwargsField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "vLargeTextField"}),
        help_text='Keyword arguments as a JSON object, e.g. {"a": 1, "b": 2}.',
    )
    # The task's version when the page was opened: a save over a newer row is refused.
    opened_version = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Task
        fields = [
            "task_id", "callback", "kwargs", "run_at", "run_type", "interval", "cron", "timezone",
            "on_nonexistent", "on_ambiguous", "group_id", "queue", "priority", "paused", "coalesce",
            "max_retries", "timeout",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if "run_at" in self.fields:
            self.fields["run_at"].required = False
            self.fields["run_at"].help_text = "Empty: now; for a cron task, its next occurrence."
        if "timezone" in self.fields:
            self.fields["timezone"].help_text += " Empty: the current time zone."
        for name in ("on_nonexistent", "on_ambiguous"):  # only cron tasks use them
            if name in self.fields:
                self.fields[name].required = False
        if not self.instance._state.adding:
            self.fields["opened_version"].initial = self.instance.loaded_version()
        if "callback" in self.fields:  # read-only on a row declared in code
            self.fields["callback"].widget.choices = self._callback_choices()
        defaults = {
            "max_retries": taskshed_settings.MAX_RETRIES,
            "timeout": taskshed_settings.TIMEOUT,
        }
        for name, default in defaults.items():
            if name in self.fields:
                shown = "none" if default is None else default
                self.fields[name].help_text = f"Empty: the default, {shown} (TASKSHED setting)."

    def _callback_choices(self) -> list[tuple[str, str]]:
        names = registered_names()
        current = self.initial.get("callback")
        choices = [(name, name) for name in names]
        if current and current not in names:
            choices.insert(0, (current, f"{current} (not registered)"))
        return choices

    def clean_callback(self) -> str:
        name: str = self.cleaned_data["callback"]
        names = registered_names()
        if name not in names:
            raise ValidationError(
                "%(name)s is not a registered callback. Registered: %(names)s.",
                code="unregistered",
                params={"name": name, "names": ", ".join(names) or "(none)"},
            )
        return name

    def clean_kwargs(self) -> dict[str, Any]:
        value = self.cleaned_data.get("kwargs")
        return {} if value is None else value

    def clean_group_id(self) -> str | None:
        return self.cleaned_data.get("group_id") or None

    def clean_queue(self) -> str:
        value: str = self.cleaned_data["queue"]
        with as_validation_error():
            check_identifier(value, "queue", QUEUE_MAX_LENGTH, None)
        return value

    def clean_priority(self) -> int:
        value: int = self.cleaned_data["priority"]
        with as_validation_error():
            check_priority(value, None)
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        self._check_version(data.get("opened_version"))
        if "callback" in self.fields and "callback" not in data:
            return data  # the callback's own error is enough
        # The schedule as it will be stored: the form's fields over the row's read-only ones.
        task = SimpleNamespace(**{name: getattr(self.instance, name) for name in SCHEDULE})
        for name in SCHEDULE:
            if name in self.fields:
                value = data.get(name)
                setattr(
                    task,
                    name,
                    POLICY_DEFAULTS[name] if name in POLICY_DEFAULTS and not value else value,
                )
        try:
            check_schedule(task, None)
            run_at = first_run(task, timezone.now(), None)
        except InvalidTaskError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
            return data
        for name in ("timezone", "on_nonexistent", "on_ambiguous"):
            if name in self.fields:
                data[name] = getattr(task, name)
        if "run_at" in self.fields:
            data["run_at"] = run_at
        return data

    def _check_version(self, opened: str | None) -> None:
        """Refuse the form if the row changed since the page was opened; the page then
        carries the row's new version, so that saving again applies the user's input. The
        row stays locked (the admin's view is one transaction) until the save."""
        task = self.instance
        if task._state.adding or not opened:
            return
        try:
            task.set_loaded_version(opened)
        except ValueError:
            raise ValidationError("The page was altered: open the task again.") from None
        rows = Task._base_manager.using(task._state.db).select_for_update()
        now = rows.filter(pk=task.pk).values(*VERSION_FIELDS).first()
        if now is None:
            raise ValidationError("This task was deleted since you opened it.")
        if now != task._loaded_version:
            data = cast(QueryDict, self.data).copy()
            data[self.add_prefix("opened_version")] = version_text(now)
            self.data = data
            raise ValidationError(CHANGED_SINCE_OPENED, code="changed_since_opened")
