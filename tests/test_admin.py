"""The task and worker admin through Django's test client.

Columns, filters, search and ordering of the task changelist; its query count and bounded
count; the add and change forms; every action with its message, its effect and the one
notification it sends after commit; permissions; and the read-only workers page.
"""

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from html import unescape
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from django_taskshed import admin as task_admin
from django_taskshed import notifications
from django_taskshed.admin import display
from django_taskshed.admin import filters as admin_filters
from django_taskshed.admin.forms import registered_names
from django_taskshed.conf import taskshed_settings
from django_taskshed.cron import describe
from django_taskshed.models import Task, WorkerRecord
from django_taskshed.occurrences import upcoming_runs
from tests.test_cron import dst_table

pytestmark = pytest.mark.django_db

ACTIONS = ["pause", "resume", "run_now", "retry_failed", "delete_selected"]
CHANGE_ACTIONS = ["pause", "resume", "run_now", "retry_failed"]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LEASE = timedelta(
    seconds=taskshed_settings.LEASE_SECONDS
)  # a worker row lives a lease past its beat


# --- URLs and rows ---------------------------------------------------------------------------


def changelist_url() -> str:
    return reverse("admin:django_taskshed_task_changelist")


def add_url() -> str:
    return reverse("admin:django_taskshed_task_add")


def change_url(task_id: str) -> str:
    return reverse("admin:django_taskshed_task_change", args=[task_id])


def delete_url(task_id: str) -> str:
    return reverse("admin:django_taskshed_task_delete", args=[task_id])


def make_task(task_id: str, callback: str = "record", **fields: Any) -> Task:
    """A task row written directly, due in an hour unless ``run_at`` says otherwise."""
    fields.setdefault("run_at", timezone.now() + timedelta(hours=1))
    fields.setdefault("kwargs", {"key": task_id})
    return Task.objects.create(task_id=task_id, callback=callback, **fields)


def state_fields(state: str) -> dict[str, Any]:
    """Row fields that put a task in ``state`` (as ``Task.status_at`` reads them)."""
    now = timezone.now()
    return {
        "scheduled": {},
        "paused": {"paused": True, "paused_at": now},
        "running": {
            "lease_owner": "worker-a",
            "lease_expires_at": now + timedelta(minutes=5),
            "claim_token": "token",
            "attempts": 1,
        },
        "retrying": {
            "attempts": 2,
            "last_run_at": now - timedelta(minutes=1),
            "last_error": "RuntimeError: flaky service\nsecond line of the error",
        },
        "failed": {
            "attempts": 3,
            "failed_at": now,
            "last_run_at": now - timedelta(minutes=2),
            "last_error": "ValueError: bad input\nDetails: the rest of the message",
            "last_traceback": "Traceback (most recent call last):\n  ...\nValueError: bad input",
        },
    }[state]


class ResultTable(HTMLParser):
    """The rows of the changelist's ``#result_list``: task id -> column name -> cell."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.order: list[str] = []
        self._in_table = False
        self._row: dict[str, dict[str, Any]] | None = None
        self._cell: dict[str, Any] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "table" and attributes.get("id") == "result_list":
            self._in_table = True
        elif not self._in_table:
            return
        elif tag == "tr":
            self._row = {}
        elif tag in ("td", "th") and self._row is not None:
            name = next((c[len("field-") :] for c in classes if c.startswith("field-")), None)
            self._cell = {"text": "", "classes": []}
            if name:
                self._row[name] = self._cell
        elif tag == "input" and attributes.get("name") == "_selected_action":
            self.order.append(attributes["value"] or "")
            self.rows[attributes["value"] or ""] = self._row if self._row is not None else {}
        if self._cell is not None:
            self._cell["classes"].extend(classes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._in_table:
            self._in_table = False
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data.replace("\xa0", " ")


def rows_of(response: Any) -> dict[str, dict[str, dict[str, Any]]]:
    assert response.status_code == 200, response.content[:2000]
    return ResultTable(response.content.decode()).rows


def listed_ids(response: Any) -> list[str]:
    """The task ids of the changelist page, in display order."""
    assert response.status_code == 200, response.content[:2000]
    return [task.pk for task in response.context["cl"].result_list]


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def post_action(client: Any, action: str, ids: list[str], **extra: str) -> Any:
    data = {"action": action, "_selected_action": ids, "index": "0", **extra}
    return client.post(changelist_url(), data, follow=True)


def run_action(client: Any, action: str, ids: list[str]) -> Any:
    """Run an action to its end (``delete_selected`` through its confirmation page)."""
    extra = {"post": "yes"} if action == "delete_selected" else {}
    return post_action(client, action, ids, **extra)


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    permissions = Permission.objects.filter(
        content_type__app_label="django_taskshed", codename__in=codenames
    )
    assert permissions.count() == len(codenames), codenames
    user.user_permissions.add(*permissions)
    return user


# --- Changelist columns ----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["scheduled", "paused", "running", "retrying", "failed"])
def test_status_badge_shows_each_state(admin_client, state):
    make_task("subject", **state_fields(state))
    make_task("plain")

    rows = rows_of(admin_client.get(changelist_url()))

    badge = rows["subject"]["status_badge"]
    assert badge["text"].strip() == state
    assert f"taskshed-status-{state}" in badge["classes"]
    assert rows["plain"]["status_badge"]["text"].strip() == "scheduled"


@pytest.mark.parametrize(
    ("interval", "words"),
    [
        (None, "once"),
        (timedelta(minutes=5), "every 5 minutes"),
        (timedelta(hours=1), "every hour"),
        (timedelta(days=2), "every 2 days"),
        (timedelta(seconds=90), "every 90 seconds"),
    ],
)
def test_schedule_column_says_it_in_words(admin_client, interval, words):
    run_type = "once" if interval is None else "recurring"
    make_task("subject", run_type=run_type, interval=interval)

    rows = rows_of(admin_client.get(changelist_url()))

    assert rows["subject"]["schedule"]["text"] == words


def test_next_run_shows_the_local_time_and_a_relative_hint(admin_client):
    now = timezone.now()
    make_task("soon", run_at=now + timedelta(seconds=45))
    make_task("later", run_at=now + timedelta(hours=2, seconds=30))
    make_task("late", run_at=now - timedelta(minutes=10, seconds=5))

    rows = rows_of(admin_client.get(changelist_url()))

    today = timezone.localdate(now)
    for task_id in ("soon", "later", "late"):
        local = timezone.localtime(Task.objects.get(pk=task_id).run_at)
        # The time alone today; with the date on other days.
        shown = local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")
        assert rows[task_id]["next_run"]["text"].startswith(shown)
    assert re.fullmatch(r".*\(in 4\d s\)", rows["soon"]["next_run"]["text"])
    assert rows["later"]["next_run"]["text"].endswith("(in 2 hours)")
    assert rows["late"]["next_run"]["text"].endswith("(10 minutes ago)")


@pytest.mark.parametrize("seconds", [59.5, 59.7, 59.99, -59.5, -59.7, -59.99])
def test_relative_hint_never_says_0_minutes(seconds):
    """Just under a minute away (or ago) is "60 s" or "1 minute", never "0 minutes"."""
    now = timezone.now()

    hint = display.relative(now + timedelta(seconds=seconds), now).replace("\xa0", " ")

    assert "0 minutes" not in hint, hint


def test_last_error_column_shows_only_the_first_line(admin_client):
    make_task("broken", **state_fields("failed"))
    make_task("fine")

    rows = rows_of(admin_client.get(changelist_url()))

    assert rows["broken"]["error_line"]["text"] == "ValueError: bad input"
    assert rows["fine"]["error_line"]["text"].strip() in ("", "-")


def test_no_live_worker_flag_follows_the_worker_records(admin_client):
    make_task("recorded", "record")
    make_task("failing", "fail")
    flag = "no live worker"

    rows = rows_of(admin_client.get(changelist_url()))
    # The task column: the id, and below it the callback, flagged.
    assert flag in rows["recorded"]["task_summary"]["text"]
    assert flag in rows["failing"]["task_summary"]["text"]

    now = timezone.now()
    stale_since = now - timedelta(seconds=taskshed_settings.LEASE_SECONDS + 30)
    WorkerRecord.objects.create(
        worker_id="stale", hostname="old", pid=1, started_at=stale_since,
        heartbeat_at=stale_since, expires_at=stale_since + LEASE, callbacks=["record", "fail"],
    )  # fmt: skip
    WorkerRecord.objects.create(
        worker_id="fresh", hostname="host", pid=2, started_at=now, heartbeat_at=now,
        expires_at=now + LEASE, callbacks=["record"],
    )  # fmt: skip

    rows = rows_of(admin_client.get(changelist_url()))
    assert rows["recorded"]["task_summary"]["text"].strip() == "recorded" + "record"
    assert flag in rows["failing"]["task_summary"]["text"]


def test_change_view_flags_a_callback_no_live_worker_serves(admin_client):
    """Issue 5: a task whose callback no live worker serves is flagged in the task views."""
    make_task("lonely", "fail")

    body = admin_client.get(change_url("lonely")).content.decode()

    assert "no live worker" in body


# --- Filters, search, ordering ---------------------------------------------------------------


@pytest.fixture
def catalogue() -> None:
    """Tasks to filter and search: ids, groups, callbacks and states all differ."""
    now = timezone.now()
    make_task("alpha-1", "record", group_id="nightly", run_at=now + timedelta(minutes=30))
    make_task("alpha-2", "record_sync", group_id="nightly", run_at=now + timedelta(minutes=10))
    make_task("beta-1", "fail", group_id="hourly", **state_fields("failed"))
    make_task(
        "gamma", "sleep", run_type="recurring", interval=timedelta(minutes=5),
        run_at=now + timedelta(minutes=20), **state_fields("paused"),
    )  # fmt: skip
    make_task("delta", "flaky", group_id="hourly", **state_fields("retrying"))
    make_task("epsilon", "hang", run_at=now - timedelta(minutes=1), **state_fields("running"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "scheduled"}, {"alpha-1", "alpha-2"}),
        ({"status": "paused"}, {"gamma"}),
        ({"status": "running"}, {"epsilon"}),
        ({"status": "retrying"}, {"delta"}),
        ({"status": "failed"}, {"beta-1"}),
        ({"run_type__exact": "recurring"}, {"gamma"}),
        ({"run_type__exact": "once"}, {"alpha-1", "alpha-2", "beta-1", "delta", "epsilon"}),
        ({"callback": "record"}, {"alpha-1"}),
        ({"callback": "fail"}, {"beta-1"}),
        ({"group": "hourly"}, {"beta-1", "delta"}),
        ({"group": "nightly"}, {"alpha-1", "alpha-2"}),
        ({"paused__exact": "1"}, {"gamma"}),
        ({"paused__exact": "0"}, {"alpha-1", "alpha-2", "beta-1", "delta", "epsilon"}),
        ({"status": "scheduled", "group": "nightly", "callback": "record_sync"}, {"alpha-2"}),
    ],
)
def test_filters_return_exactly_the_matching_tasks(admin_client, catalogue, query, expected):
    assert set(listed_ids(admin_client.get(changelist_url(), query))) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("beta-1", {"beta-1"}),  # task id
        ("alpha", {"alpha-1", "alpha-2"}),  # part of a task id
        ("nightly", {"alpha-1", "alpha-2"}),  # group
        ("hourly", {"beta-1", "delta"}),
        ("record", {"alpha-1", "alpha-2"}),  # callback (record and record_sync)
        ("flaky", {"delta"}),
        ("no-such-thing", set()),
    ],
)
def test_search_finds_by_task_id_group_and_callback(admin_client, catalogue, text, expected):
    assert set(listed_ids(admin_client.get(changelist_url(), {"q": text}))) == expected


def test_filter_sidebar_offers_states_callbacks_and_groups(admin_client, catalogue):
    body = admin_client.get(changelist_url()).content.decode()

    for state in ("scheduled", "paused", "running", "retrying", "failed"):
        assert f"?status={state}" in body
    for name in registered_names():
        assert f"?callback={name}" in body
    assert "?group=hourly" in body and "?group=nightly" in body


def test_changelist_is_ordered_by_next_run(admin_client, catalogue):
    by_run_at = list(Task.objects.order_by("run_at", "task_id").values_list("pk", flat=True))

    response = admin_client.get(changelist_url())
    assert listed_ids(response) == by_run_at
    assert ResultTable(response.content.decode()).order == by_run_at

    column = response.context["cl"].list_display.index("next_run")
    descending = admin_client.get(changelist_url(), {"o": f"-{column}"})
    assert listed_ids(descending) == by_run_at[::-1]


# --- Changelist cost -------------------------------------------------------------------------


def add_many(start: int, stop: int) -> None:
    """Tasks in every state, with many groups and callbacks (no signals: bulk_create)."""
    states = ["scheduled", "paused", "running", "retrying", "failed"]
    callbacks = ["record", "fail", "sleep", "no_such_callback"]
    now = timezone.now()
    Task.objects.bulk_create(
        Task(
            task_id=f"bulk-{number:05d}",
            callback=callbacks[number % len(callbacks)],
            kwargs={"key": number},
            run_at=now + timedelta(seconds=number),
            run_type="recurring" if number % 3 == 0 else "once",
            interval=timedelta(minutes=number % 7 + 1) if number % 3 == 0 else None,
            group_id=f"group-{number}",
            **state_fields(states[number % len(states)]),
        )
        for number in range(start, stop)
    )


def changelist_queries(client: Any, query: dict[str, str] | None = None) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(changelist_url(), query or {})
    assert response.status_code == 200
    return [entry["sql"] for entry in captured.captured_queries]


@pytest.mark.parametrize("query", [{}, {"status": "failed", "q": "bulk"}])
def test_changelist_query_count_does_not_grow_with_rows(admin_client, query):
    WorkerRecord.objects.create(
        worker_id="w", hostname="h", pid=1, started_at=timezone.now(),
        heartbeat_at=timezone.now(), expires_at=timezone.now() + LEASE, callbacks=["record"],
    )  # fmt: skip
    add_many(0, 10)
    with_10 = changelist_queries(admin_client, query)

    add_many(10, 200)
    with_200 = changelist_queries(admin_client, query)

    assert len(with_200) == len(with_10), "\n".join(with_200)
    assert len(with_200) <= 8, "\n".join(with_200)


def test_changelist_stays_within_its_query_budget(admin_client, django_assert_max_num_queries):
    add_many(0, 200)

    # session, user, served callbacks, group filter, bounded count, the page of rows.
    with django_assert_max_num_queries(8):
        response = admin_client.get(changelist_url())

    assert len(listed_ids(response)) == task_admin.TaskAdmin.list_per_page


@pytest.fixture
def small_count_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(admin_filters, "COUNT_CAP", 5)
    return 5


@pytest.mark.parametrize("query", [{}, {"q": "bulk"}, {"status": "scheduled"}])
def test_changelist_never_counts_the_whole_table(admin_client, small_count_cap, query):
    add_many(0, 20)

    sql = changelist_queries(admin_client, query)

    counts = [statement for statement in sql if "COUNT(" in statement.upper()]
    assert counts, "\n".join(sql)
    for statement in counts:
        assert "LIMIT" in statement.upper(), f"an unbounded count: {statement}"


def test_capped_changelist_still_renders_its_first_page(admin_client, small_count_cap):
    add_many(0, 20)

    response = admin_client.get(changelist_url())

    assert response.status_code == 200
    shown = listed_ids(response)
    assert shown == list(Task.objects.order_by("run_at", "task_id").values_list("pk", flat=True))


def test_capped_changelist_does_not_claim_a_wrong_exact_count(admin_client, small_count_cap):
    """Past the cap, the page must not state the cap + 1 as if it were the number of tasks."""
    add_many(0, 20)

    body = admin_client.get(changelist_url()).content.decode()

    paginator = re.search(r'<p class="paginator">(.*?)</p>', body, re.DOTALL)
    assert paginator is not None
    text = " ".join(unescape(paginator[1]).split())
    assert f"{small_count_cap + 1} tasks" not in text, f"paginator says {text!r} for 20 tasks"


# --- Add and change forms --------------------------------------------------------------------


def form_data(**overrides: str) -> dict[str, str]:
    data = {
        "task_id": "new-task",
        "callback": "record",
        "kwargs": '{"key": "new-task"}',
        "run_at_0": "2030-01-01",
        "run_at_1": "10:00:00",
        "run_type": "once",
        "interval": "",
        "group_id": "",
        "queue": "default",
        "priority": "0",
        "coalesce": "on",
        "max_retries": "",
        "timeout": "",
    }
    data.update(overrides)
    return data


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was accepted"
    form = response.context["adminform"].form
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def test_add_form_offers_only_registered_callbacks(admin_client):
    form = admin_client.get(add_url()).context["adminform"].form

    assert [value for value, _ in form.fields["callback"].widget.choices] == registered_names()


def test_add_form_creates_the_task(admin_client):
    response = admin_client.post(add_url(), form_data(group_id="reports"))

    assert response.status_code == 302, form_errors(response)
    task = Task.objects.get(pk="new-task")
    assert task.callback == "record"
    assert task.kwargs == {"key": "new-task"}
    assert task.group_id == "reports"
    # The form's time is Paris time (TIME_ZONE); 10:00 in winter is 09:00 UTC.
    assert task.run_at.isoformat() == "2030-01-01T09:00:00+00:00"
    assert not task.paused


def test_add_form_saves_queue_and_priority(admin_client):
    form = admin_client.get(add_url()).context["adminform"].form
    assert (form["queue"].initial, form["priority"].initial) == ("default", 0)

    response = admin_client.post(add_url(), form_data(queue="reports", priority="-40"))

    assert response.status_code == 302, form_errors(response)
    assert Task.objects.values_list("queue", "priority").get() == ("reports", -40)


def test_change_form_moves_a_task_to_another_queue_and_priority(admin_client):
    make_task("moving", queue="a", priority=5)

    data = form_data(kwargs='{"key": "moving"}', queue="b", priority="100")
    response = admin_client.post(change_url("moving"), data)

    assert response.status_code == 302, form_errors(response)
    assert Task.objects.values_list("queue", "priority").get() == ("b", 100)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("priority", "101", "priority must be an int from -100 to 100, got 101"),
        ("priority", "-101", "priority must be an int from -100 to 100, got -101"),
        ("priority", "high", "Enter a whole number."),
        ("queue", "", "This field is required."),
        ("queue", "q" * 101, "Ensure this value has at most 100 characters (it has 101)."),
    ],
)
def test_add_form_refuses_a_bad_queue_or_priority(admin_client, field, value, expected):
    errors = form_errors(admin_client.post(add_url(), form_data(**{field: value})))

    assert errors[field] == [expected]
    assert not Task.objects.exists()


def test_the_changelist_filters_by_queue_and_keeps_its_columns(admin_client):
    make_task("in-a", queue="a")
    make_task("in-b", queue="b")
    make_task("in-default")

    response = admin_client.get(changelist_url(), {"queue": "b"})

    assert listed_ids(response) == ["in-b"]
    queue_filter = next(f for f in response.context["cl"].filter_specs if f.title == "queue")
    assert [value for value, _ in queue_filter.lookup_choices] == ["a", "b", "default"]
    assert response.context["cl"].list_display == [
        "action_checkbox", "task_summary", "schedule", "next_run", "status_badge", "error_line",
    ]  # fmt: skip


def test_add_form_creates_a_recurring_task(admin_client):
    data = form_data(run_type="recurring", interval="00:05:00", group_id="")

    response = admin_client.post(add_url(), data)

    assert response.status_code == 302, form_errors(response)
    task = Task.objects.get(pk="new-task")
    assert (task.run_type, task.interval, task.group_id) == (
        "recurring",
        timedelta(minutes=5),
        None,
    )


def test_unregistered_callback_is_refused_with_the_registered_names(admin_client):
    errors = form_errors(admin_client.post(add_url(), form_data(callback="send_mail")))

    (message,) = errors["callback"]
    assert "send_mail is not a registered callback" in message
    names = registered_names()
    assert names, "the test app registers callbacks"
    assert f"Registered: {', '.join(names)}." in message
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ("[1, 2]", "kwargs must be a dict, not list"),
        ('"text"', "kwargs must be a dict, not str"),
        ("42", "kwargs must be a dict, not int"),
        ('{"key": ', "Enter a valid JSON."),
        ("{key: 1}", "Enter a valid JSON."),
    ],
)
def test_kwargs_must_be_a_json_object(admin_client, kwargs, expected):
    errors = form_errors(admin_client.post(add_url(), form_data(kwargs=kwargs)))

    assert errors["kwargs"] == [expected]
    assert not Task.objects.exists()


def test_kwargs_over_the_size_limit_are_refused(admin_client, settings):
    settings.TASKSHED = {"KWARGS_MAX_BYTES": 100}
    big = '{"key": "%s"}' % ("x" * 200)

    errors = form_errors(admin_client.post(add_url(), form_data(kwargs=big)))

    (message,) = errors["kwargs"]
    assert "over the limit of 100" in message and "KWARGS_MAX_BYTES" in message
    assert not Task.objects.exists()

    just_fits = '{"key": "%s"}' % ("x" * 80)
    assert admin_client.post(add_url(), form_data(kwargs=just_fits)).status_code == 302


def test_empty_kwargs_are_an_empty_object(admin_client):
    assert admin_client.post(add_url(), form_data(kwargs="")).status_code == 302
    assert Task.objects.get(pk="new-task").kwargs == {}


def test_recurring_without_interval_is_refused(admin_client):
    errors = form_errors(admin_client.post(add_url(), form_data(run_type="recurring")))

    assert any("recurring task needs a positive" in message for message in errors["interval"])
    assert not Task.objects.exists()


def test_once_with_interval_is_refused(admin_client):
    errors = form_errors(admin_client.post(add_url(), form_data(interval="00:05:00")))

    assert any("only for recurring tasks" in message for message in errors["interval"])


def test_task_id_is_read_only_on_change(admin_client):
    make_task("original", group_id="before")

    page = admin_client.get(change_url("original"))
    assert 'name="task_id"' not in page.content.decode()
    assert "task_id" not in page.context["adminform"].form.fields

    data = form_data(task_id="renamed", kwargs='{"key": "original"}', group_id="after")
    response = admin_client.post(change_url("original"), data)

    assert response.status_code == 302, form_errors(response)
    assert list(Task.objects.values_list("pk", "group_id")) == [("original", "after")]


def test_change_form_keeps_an_unregistered_callback_visible_but_refuses_it(admin_client):
    make_task("legacy", "retired_callback")

    page = admin_client.get(change_url("legacy"))
    assert "retired_callback (not registered)" in page.content.decode()

    data = form_data(callback="retired_callback", kwargs="{}")
    errors = form_errors(admin_client.post(change_url("legacy"), data))
    assert "retired_callback is not a registered callback" in errors["callback"][0]


def upcoming_items(body: str) -> list[str]:
    section = re.search(r'field-upcoming".*?<ol>(.*?)</ol>', body, re.DOTALL)
    assert section is not None, "no list of upcoming runs on the page"
    return [" ".join(unescape(item).split()) for item in re.findall(r"<li>(.*?)</li>", section[1])]


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("paused", [False, True])
def test_change_view_lists_the_next_ten_runs(admin_client, coalesce, paused):
    now = timezone.now()
    task = make_task(
        "hourly", run_type="recurring", interval=timedelta(hours=1), coalesce=coalesce,
        run_at=now - timedelta(hours=2, minutes=30), paused=paused,
    )  # fmt: skip

    items = upcoming_items(admin_client.get(change_url("hourly")).content.decode())

    expected = upcoming_runs(task, task.coalesce, timezone.now(), 10)
    times = [timezone.localtime(run).strftime(TIME_FORMAT) for run in expected]
    assert len(items) == 10
    assert [item.split(" (")[0] for item in items] == times
    flagged = [item.endswith("(paused: will not run until resumed)") for item in items]
    assert flagged == [paused] * 10


def test_change_view_of_a_one_off_task_lists_its_single_run(admin_client):
    task = make_task("once", run_at=timezone.now() + timedelta(days=1))

    items = upcoming_items(admin_client.get(change_url("once")).content.decode())

    assert len(items) == 1
    assert items[0].startswith(timezone.localtime(task.run_at).strftime(TIME_FORMAT))


def test_change_view_shows_the_full_traceback(admin_client):
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/tasks.py", line 12, in nightly\n'
        "    raise ValueError(f'<{name}> & co')\n"
        "ValueError: <report> & co"
    )
    make_task("broken", **{**state_fields("failed"), "last_traceback": traceback})

    body = admin_client.get(change_url("broken")).content.decode()

    assert escape(traceback) in body
    assert "<report>" not in body  # escaped, not markup
    assert "ValueError: bad input" in body  # the one-line error too


def test_change_view_shows_worker_state_read_only(admin_client):
    make_task("busy", **state_fields("running"))

    response = admin_client.get(change_url("busy"))

    form_fields = response.context["adminform"].form.fields
    for name in ("lease_owner", "lease_expires_at", "attempts", "last_run_at", "created_at"):
        assert name not in form_fields
    body = response.content.decode()
    assert "worker-a" in body and "taskshed-status-running" in body


# --- Actions ---------------------------------------------------------------------------------


@pytest.fixture
def action_tasks() -> dict[str, list[str]]:
    """Three plain tasks, two paused ones and one failed one, by kind."""
    for task_id in ("plain-1", "plain-2", "plain-3"):
        make_task(task_id)
    for task_id in ("paused-1", "paused-2"):
        make_task(task_id, **state_fields("paused"))
    make_task("failed-1", **state_fields("failed"))
    return {
        "plain": ["plain-1", "plain-2", "plain-3"],
        "paused": ["paused-1", "paused-2"],
        "failed": ["failed-1"],
    }


def test_pause_action(admin_client, action_tasks):
    selected = action_tasks["plain"] + action_tasks["paused"][:1]
    first_pause = Task.objects.get(pk="paused-1").paused_at

    response = run_action(admin_client, "pause", selected)

    assert messages_of(response) == ["3 tasks paused."]
    assert set(Task.objects.filter(paused=True).values_list("pk", flat=True)) == {
        *action_tasks["plain"], *action_tasks["paused"]
    }  # fmt: skip
    assert not Task.objects.filter(paused=True, paused_at__isnull=True).exists()
    assert Task.objects.get(pk="paused-1").paused_at == first_pause  # not re-stamped


def test_pause_action_says_one_task(admin_client, action_tasks):
    response = run_action(admin_client, "pause", ["plain-1"])

    assert messages_of(response) == ["1 task paused."]


def test_resume_action(admin_client, action_tasks):
    response = run_action(admin_client, "resume", action_tasks["paused"] + ["plain-1"])

    assert messages_of(response) == ["2 tasks resumed."]
    assert not Task.objects.filter(paused=True).exists()
    assert not Task.objects.filter(paused_at__isnull=False).exists()


def test_run_now_action(admin_client, action_tasks):
    selected = ["plain-1", "paused-1", "failed-1"]
    before = timezone.now()

    response = run_action(admin_client, "run_now", selected)

    assert messages_of(response) == ["3 tasks will run now."]
    for task in Task.objects.filter(pk__in=selected):
        assert before <= task.run_at <= timezone.now()
        assert (task.paused, task.failed_at, task.attempts) == (False, None, 0)
    assert Task.objects.get(pk="plain-2").run_at > timezone.now() + timedelta(minutes=30)


def test_retry_failed_action_touches_only_failed_tasks(admin_client, action_tasks):
    untouched = {t.pk: t.run_at for t in Task.objects.filter(pk__in=["plain-1", "paused-1"])}

    response = run_action(admin_client, "retry_failed", ["plain-1", "paused-1", "failed-1"])

    assert messages_of(response) == ["1 task queued for a retry."]
    retried = Task.objects.get(pk="failed-1")
    assert (retried.failed_at, retried.attempts) == (None, 0)
    assert retried.run_at <= timezone.now()
    for task in Task.objects.filter(pk__in=untouched):
        assert task.run_at == untouched[task.pk]
    assert Task.objects.get(pk="paused-1").paused


def test_delete_selected_action(admin_client, action_tasks):
    selected = ["plain-1", "paused-1", "failed-1"]

    confirmation = post_action(admin_client, "delete_selected", selected)
    assert confirmation.status_code == 200
    assert "Are you sure" in confirmation.content.decode()
    assert Task.objects.count() == 6

    response = run_action(admin_client, "delete_selected", selected)

    assert messages_of(response) == ["Successfully deleted 3 tasks."]
    assert set(Task.objects.values_list("pk", flat=True)) == {"plain-2", "plain-3", "paused-2"}


def test_superuser_sees_every_action(admin_client):
    assert offered_actions(admin_client) == ACTIONS


# --- Notifications ---------------------------------------------------------------------------


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bool]]:
    """Each call of ``notifications.notify``: its hint, and whether a transaction was open."""
    calls: list[tuple[Any, bool]] = []

    def record(run_at: Any, worker: Any = None, using: Any = None) -> None:
        calls.append((run_at, connection.in_atomic_block))

    monkeypatch.setattr(notifications, "notify", record)
    return calls


def commit_rows(**kinds: list[str]) -> None:
    """Rows for the transactional tests (these commit, and notify, before the test clears:
    their hints are delivered before this returns)."""
    for kind, task_ids in kinds.items():
        for task_id in task_ids:
            make_task(task_id, **state_fields(kind))
    assert notifications.HINTS.flush(10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("action", "selected", "hint"),
    [
        ("pause", ["scheduled-1", "scheduled-2"], None),
        ("resume", ["paused-1", "paused-2"], "earliest"),
        ("run_now", ["scheduled-1", "paused-1"], None),
        ("retry_failed", ["failed-1", "scheduled-1"], None),
        ("delete_selected", ["scheduled-1", "failed-1"], None),
    ],
)
def test_each_action_notifies_workers_once_after_commit(
    admin_client, notices, action, selected, hint
):
    commit_rows(scheduled=["scheduled-1", "scheduled-2"], paused=["paused-1", "paused-2"])
    commit_rows(failed=["failed-1"])
    earliest = min(Task.objects.filter(pk__in=selected).values_list("run_at", flat=True))
    notices.clear()

    response = run_action(admin_client, action, selected)

    assert response.status_code == 200 and messages_of(response)
    expected_hint = earliest if hint == "earliest" else None
    assert notices == [(expected_hint, False)], "one notification, sent after the commit"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("action", "selected"),
    [
        ("pause", ["paused-1"]),  # already paused
        ("resume", ["scheduled-1"]),  # not paused
        ("retry_failed", ["scheduled-1"]),  # not failed
    ],
)
def test_an_action_that_changes_nothing_notifies_nobody(admin_client, notices, action, selected):
    commit_rows(scheduled=["scheduled-1"], paused=["paused-1"])
    notices.clear()

    response = run_action(admin_client, action, selected)

    assert messages_of(response)[0].startswith("0 tasks ")
    assert notices == []


@pytest.mark.django_db(transaction=True)
def test_delete_confirmation_page_notifies_nobody(admin_client, notices):
    commit_rows(scheduled=["scheduled-1"])
    notices.clear()

    post_action(admin_client, "delete_selected", ["scheduled-1"])

    assert notices == []
    assert Task.objects.filter(pk="scheduled-1").exists()


@pytest.mark.django_db(transaction=True)
def test_admin_add_notifies_once_after_commit(admin_client, notices):
    response = admin_client.post(add_url(), form_data())

    assert response.status_code == 302
    assert notices == [(Task.objects.get(pk="new-task").run_at, False)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("paused", [False, True])
def test_admin_change_notifies_once_after_commit(admin_client, notices, paused):
    commit_rows(scheduled=["edited"])
    notices.clear()
    data = form_data(kwargs='{"key": "edited"}', run_at_0="2031-06-01", run_at_1="08:30:00")
    if paused:
        data["paused"] = "on"

    response = admin_client.post(change_url("edited"), data)

    assert response.status_code == 302, form_errors(response)
    task = Task.objects.get(pk="edited")
    assert task.paused is paused
    assert notices == [(None if paused else task.run_at, False)]


@pytest.mark.django_db(transaction=True)
def test_admin_delete_notifies_once_after_commit(admin_client, notices):
    commit_rows(scheduled=["doomed"])
    notices.clear()

    assert admin_client.get(delete_url("doomed")).status_code == 200
    assert notices == []
    response = admin_client.post(delete_url("doomed"), {"post": "yes"})

    assert response.status_code == 302
    assert not Task.objects.exists()
    assert notices == [(None, False)]


@pytest.mark.django_db(transaction=True)
def test_refused_form_notifies_nobody(admin_client, notices):
    admin_client.post(add_url(), form_data(callback="send_mail"))

    assert notices == []


@contextmanager
def group_member() -> Iterator[Any]:
    """A channel in the workers' group of the configured channel layer; yields a receiver."""
    layer = notifications.channel_layer()
    assert layer is not None, "the test settings configure a channel layer"
    group = taskshed_settings.GROUP
    channel = async_to_sync(layer.new_channel)("taskshed.test.")
    async_to_sync(layer.group_add)(group, channel)

    async def receive(timeout: float) -> Any:
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout)
        except asyncio.TimeoutError:
            return None

    try:
        yield lambda timeout=1.0: async_to_sync(receive)(timeout)
    finally:
        async_to_sync(layer.group_discard)(group, channel)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["pause", "run_now", "delete_selected"])
def test_an_action_reaches_the_channel_layer_group_once(admin_client, action):
    commit_rows(scheduled=["scheduled-1", "scheduled-2"])

    with group_member() as receive:
        run_action(admin_client, action, ["scheduled-1", "scheduled-2"])
        message = receive()
        extra = receive(0.3)

    assert message == {"type": "taskshed.changed", "run_at": None}
    assert extra is None, f"a second message: {extra!r}"


@pytest.mark.django_db(transaction=True)
def test_an_admin_save_reaches_the_channel_layer_group_once(admin_client, hungry_worker):
    with group_member() as receive:
        admin_client.post(add_url(), form_data())
        message = receive()
        extra = receive(0.3)

    run_at = Task.objects.get(pk="new-task").run_at
    assert message is not None and message["type"] == "taskshed.changed"
    assert notifications.parse_changed(message) == run_at
    assert extra is None, f"a second message: {extra!r}"


# --- Permissions -----------------------------------------------------------------------------


def offered_actions(client: Any) -> list[str]:
    response = client.get(changelist_url())
    assert response.status_code == 200
    action_form = response.context["action_form"]
    if action_form is None:
        return []
    return [value for value, _ in action_form.fields["action"].choices if value]


def test_change_only_staff_runs_change_actions_but_cannot_delete(client, action_tasks):
    client.force_login(staff("changer", "change_task"))

    assert offered_actions(client) == CHANGE_ACTIONS
    assert messages_of(run_action(client, "pause", ["plain-1"])) == ["1 task paused."]
    assert messages_of(run_action(client, "resume", ["plain-1"])) == ["1 task resumed."]
    assert messages_of(run_action(client, "run_now", ["paused-1"])) == ["1 task will run now."]
    assert messages_of(run_action(client, "retry_failed", ["failed-1"])) == [
        "1 task queued for a retry."
    ]

    for extra in ({}, {"post": "yes"}):
        forged = post_action(client, "delete_selected", ["plain-1", "plain-2"], **extra)
        assert forged.status_code == 403
    assert client.post(delete_url("plain-1"), {"post": "yes"}).status_code == 403
    assert Task.objects.count() == 6


def test_change_only_staff_can_edit_a_task(client, action_tasks):
    client.force_login(staff("changer", "change_task"))

    data = form_data(kwargs='{"key": "plain-1"}', group_id="moved")
    response = client.post(change_url("plain-1"), data)

    assert response.status_code == 302
    assert Task.objects.get(pk="plain-1").group_id == "moved"


def test_view_only_staff_sees_tasks_but_no_actions(client, action_tasks):
    client.force_login(staff("viewer", "view_task"))

    response = client.get(changelist_url())

    assert response.status_code == 200
    assert set(listed_ids(response)) == set(Task.objects.values_list("pk", flat=True))
    assert len(listed_ids(response)) == 6
    assert offered_actions(client) == []
    assert 'name="action"' not in response.content.decode()
    page = client.get(change_url("failed-1"))
    assert page.status_code == 200 and "ValueError: bad input" in page.content.decode()


@pytest.mark.parametrize("action", ACTIONS)
def test_view_only_staff_gets_403_on_a_forged_action(client, action_tasks, action):
    client.force_login(staff("viewer", "view_task"))
    before = list(Task.objects.order_by("pk").values())

    response = client.post(
        changelist_url(),
        {"action": action, "_selected_action": ["plain-1", "paused-1", "failed-1"], "post": "yes"},
    )

    assert response.status_code == 403
    assert list(Task.objects.order_by("pk").values()) == before


def test_view_only_staff_gets_403_on_posting_forms(client, action_tasks):
    client.force_login(staff("viewer", "view_task"))

    data = form_data(kwargs='{"key": "plain-1"}', group_id="moved")
    assert client.post(change_url("plain-1"), data).status_code == 403
    assert client.post(add_url(), form_data()).status_code == 403
    assert client.post(delete_url("plain-1"), {"post": "yes"}).status_code == 403
    assert Task.objects.get(pk="plain-1").group_id is None
    assert not Task.objects.filter(pk="new-task").exists()


def test_staff_without_permission_gets_403(client, action_tasks):
    client.force_login(staff("nobody"))

    assert client.get(changelist_url()).status_code == 403
    assert client.get(change_url("plain-1")).status_code == 403
    assert post_action(client, "pause", ["plain-1"]).status_code == 403
    assert not Task.objects.get(pk="plain-1").paused


def test_anonymous_is_sent_to_the_login_page(client):
    response = client.get(changelist_url())

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- Workers page ----------------------------------------------------------------------------


def workers_url() -> str:
    return reverse("admin:django_taskshed_workerrecord_changelist")


@pytest.fixture
def workers() -> None:
    now = timezone.now()
    stale = now - timedelta(seconds=taskshed_settings.LEASE_SECONDS + 5)
    WorkerRecord.objects.create(
        worker_id="live-1", hostname="alpha", pid=101, started_at=now - timedelta(hours=1),
        heartbeat_at=now, expires_at=now + LEASE, callbacks=["record", "sleep"], running=2,
    )  # fmt: skip
    WorkerRecord.objects.create(
        worker_id="live-2", hostname="beta", pid=102, started_at=now,
        heartbeat_at=now - timedelta(seconds=5), expires_at=now - timedelta(seconds=5) + LEASE,
        callbacks=["fail"],
    )  # fmt: skip
    WorkerRecord.objects.create(
        worker_id="stale-1", hostname="gamma", pid=103, started_at=stale,
        heartbeat_at=stale, expires_at=stale + LEASE, callbacks=["record"],
    )  # fmt: skip


def test_workers_page_lists_only_live_workers(admin_client, workers):
    response = admin_client.get(workers_url())

    assert [worker.pk for worker in response.context["cl"].result_list] == ["live-1", "live-2"]
    body = response.content.decode()
    assert "record, sleep" in body and "alpha" in body and "101" in body
    assert "stale-1" not in body and "gamma" not in body


def test_workers_page_has_no_add_change_or_delete(admin_client, workers):
    response = admin_client.get(workers_url())

    assert response.context["has_add_permission"] is False
    assert reverse("admin:django_taskshed_workerrecord_add") not in response.content.decode()
    assert response.context["action_form"] is None or not [
        value for value, _ in response.context["action_form"].fields["action"].choices if value
    ]
    add = reverse("admin:django_taskshed_workerrecord_add")
    assert admin_client.get(add).status_code == 403
    assert admin_client.post(add, {"worker_id": "forged"}).status_code == 403
    live = reverse("admin:django_taskshed_workerrecord_change", args=["live-1"])
    page = admin_client.get(live)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(live, {"hostname": "changed"}).status_code == 403
    delete = reverse("admin:django_taskshed_workerrecord_delete", args=["live-1"])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    admin_client.post(
        workers_url(), {"action": "delete_selected", "_selected_action": ["live-1"], "post": "yes"}
    )
    assert WorkerRecord.objects.filter(pk="live-1", hostname="alpha").exists()


# --- cron tasks and schedules declared in code -------------------------------------------------


def test_add_form_makes_a_cron_task_at_its_next_occurrence(admin_client):
    data = form_data(run_type="cron", cron="30 2 * * *", timezone="Europe/Berlin")
    data.update(run_at_0="", run_at_1="")
    response = admin_client.post(add_url(), data)
    assert response.status_code == 302, form_errors(response)
    task = Task.objects.get(pk="new-task")
    assert (task.run_type, task.cron, task.timezone) == ("cron", "30 2 * * *", "Europe/Berlin")
    assert task.run_at == task.next_runs(timezone.now() - timedelta(seconds=30), 1)[0]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"run_type": "cron", "cron": "30 2 * * *", "timezone": "Nowhere/City"},
            "timezone",
            "unknown time zone",
        ),
        ({"run_type": "cron", "cron": "99 2 * * *"}, "cron", "bad minute field '99'"),
        ({"run_type": "once", "cron": "@daily"}, "cron", "only for cron tasks"),
    ],
)
def test_add_form_names_what_is_wrong_in_a_cron_task(admin_client, fields, field, message):
    response = admin_client.post(add_url(), form_data(**fields))
    errors = form_errors(response)
    assert any(message in error for error in errors.get(field, [])), errors
    assert not Task.objects.filter(pk="new-task").exists()


def test_a_declared_row_shows_its_definition_read_only_and_keeps_its_actions(admin_client):
    make_task("declared", declared_in_code=True, kwargs={"key": "declared"})
    make_task("by-hand")
    form = admin_client.get(change_url("declared")).context["adminform"].form
    for name in ("callback", "kwargs", "run_type", "interval", "cron", "timezone", "group_id"):
        assert name not in form.fields, name
    assert "paused" in form.fields  # state, not definition
    hand_form = admin_client.get(change_url("by-hand")).context["adminform"].form
    assert "callback" in hand_form.fields and "cron" in hand_form.fields

    response = admin_client.post(
        changelist_url(), {"action": "pause", "_selected_action": ["declared"]}, follow=True
    )
    assert response.status_code == 200
    assert Task.objects.get(pk="declared").paused


def test_the_changelist_filters_declared_rows(admin_client):
    make_task("declared", declared_in_code=True)
    make_task("by-hand")
    assert listed_ids(admin_client.get(changelist_url(), {"declared_in_code__exact": "1"})) == [
        "declared"
    ]
    assert listed_ids(admin_client.get(changelist_url(), {"declared_in_code__exact": "0"})) == [
        "by-hand"
    ]


# --- Cron tasks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "words"),
    [
        ("30 2 * * *", "Europe/Berlin", "at 02:30 every day, Europe/Berlin"),
        ("@hourly", "America/New_York", "at the start of every hour, America/New_York"),
        (
            "*/15 9-17 * * 1-5",
            "UTC",
            "every 15th minute from 09:00 through 17:59 on Monday through Friday, UTC",
        ),
    ],
)
def test_schedule_column_describes_a_cron_task(admin_client, cron, zone, words):
    make_task("subject", run_type="cron", cron=cron, timezone=zone)

    rows = rows_of(admin_client.get(changelist_url()))

    assert rows["subject"]["schedule"]["text"] == words == describe(cron, zone)


DST_NOTE = re.compile(r"\[(?P<note>[^\]]+)\]")
MOVED = "moved out of a daylight-saving gap"
TWICE = "a repeated hour, run in both passes"


def dst_notes(items: list[str]) -> dict[int, str]:
    """The DST note of each listed run that has one, by position."""
    return {i: found["note"] for i, item in enumerate(items) if (found := DST_NOTE.search(item))}


@pytest.mark.parametrize(
    ("zone", "cron", "policy", "notes"),
    [
        ("Europe/Berlin", "30 2 * * *", "shift", {1: f"03:00 CEST: {MOVED}"}),
        ("Europe/Berlin", "30 2 * * *", "skip", {}),
        (
            "Europe/Berlin",
            "30 2 * * *",
            "both",
            {1: f"02:30 CEST: {TWICE}", 2: f"02:30 CET: {TWICE}"},
        ),
        ("America/New_York", "30 1 * * *", "second", {}),
        (
            "America/New_York",
            "30 1 * * *",
            "both",
            {1: f"01:30 EDT: {TWICE}", 2: f"01:30 EST: {TWICE}"},
        ),
    ],
)
def test_change_view_lists_cron_runs_across_a_dst_change_with_notes(
    admin_client, zone, cron, policy, notes
):
    """A task due since a row of the DST table, without coalescing: its next 10 runs
    start with the table's, and the runs a change of the clocks moved or doubled say so."""
    row = next(r for r in dst_table() if (r.zone, r.cron, r.policy) == (zone, cron, policy))
    nonexistent, ambiguous = row.policies()[0]
    task = make_task(
        "cron", run_type="cron", cron=cron, timezone=zone, on_nonexistent=nonexistent,
        on_ambiguous=ambiguous, coalesce=False, run_at=row.runs[0],
    )  # fmt: skip

    items = upcoming_items(admin_client.get(change_url("cron")).content.decode())

    expected = upcoming_runs(task, task.coalesce, timezone.now(), 10)
    assert expected[: len(row.runs)] == list(row.runs)
    assert len(items) == 10
    assert [item.split(" (")[0] for item in items] == [
        timezone.localtime(run).strftime(TIME_FORMAT) for run in expected
    ]
    assert dst_notes(items) == notes


def berlin_wall(day: Any, hour: int, minute: int) -> datetime:
    """The instant (UTC) a Berlin wall time stands for; past a gap, for one that is in it."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin"))
    return local.astimezone(dt_timezone.utc)


def test_change_view_of_a_coalescing_cron_task_notes_the_next_spring_change(admin_client):
    """From two days before Berlin's next jump from 02:00 to 03:00: the third run moves."""
    day = timezone.localdate() + timedelta(days=3)
    while berlin_wall(day, 2, 30).astimezone(ZoneInfo("Europe/Berlin")).hour == 2:
        day += timedelta(days=1)  # 02:30 exists that day
    first = berlin_wall(day - timedelta(days=2), 2, 30)
    task = make_task(
        "spring", run_type="cron", cron="30 2 * * *", timezone="Europe/Berlin", run_at=first
    )

    items = upcoming_items(admin_client.get(change_url("spring")).content.decode())

    expected = upcoming_runs(task, task.coalesce, timezone.now(), 10)
    assert [item.split(" (")[0] for item in items] == [
        timezone.localtime(run).strftime(TIME_FORMAT) for run in expected
    ]
    assert expected[2] == berlin_wall(day, 3, 0)
    assert dst_notes(items) == {2: f"03:00 CEST: {MOVED}"}
