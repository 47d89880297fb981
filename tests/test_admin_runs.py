"""The run list and a task's last runs in the admin: columns per outcome, exact search,
bounded count, filters that read no DISTINCT values of the run table, and (on PostgreSQL)
query plans that use the run table's indexes rather than scan it."""

import re
from datetime import datetime, timedelta
from html import unescape
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_taskshed.admin import filters as admin_filters
from django_taskshed.models import Task, TaskRun, WorkerRecord

pytestmark = pytest.mark.django_db

RUN_TABLE = TaskRun._meta.db_table


def run_list_url(**query: str) -> str:
    url = reverse("admin:django_taskshed_taskrun_changelist")
    return url + ("?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else "")


def make_run(task_id: str, outcome: str, ago: float = 60, **fields: Any) -> TaskRun:
    now = timezone.now()
    started = now - timedelta(seconds=ago)
    defaults: dict[str, Any] = {
        "callback": "record",
        "scheduled_for": started - timedelta(seconds=2),
        "started_at": started,
        "finished_at": started + timedelta(seconds=3),
    }
    return TaskRun.objects.create(task_id=task_id, outcome=outcome, **{**defaults, **fields})


def cells(body: str, run: TaskRun) -> dict[str, str]:
    """The text of each column of ``run``'s row, by column name."""
    row = re.search(rf'<tr>(?:(?!</tr>).)*?value="{run.pk}".*?</tr>', body, re.DOTALL)
    assert row is not None, f"no row for run {run.pk}"
    found = re.findall(r'<t[dh] class="field-(\w+)[^"]*">(.*?)</t[dh]>', row[0], re.DOTALL)
    return {name: " ".join(unescape(re.sub("<[^>]+>", " ", html)).split()) for name, html in found}


def test_runs_that_ran_show_lateness_and_duration_the_others_what_they_missed(admin_client):
    now = timezone.now()
    ran = make_run("ran", "succeeded")
    failed = make_run("broke", "failed", error="ValueError: nope\nsecond line")
    coalesced = make_run(
        "late", "coalesced", missed=3, finished_at=None,
        missed_from=now - timedelta(minutes=30), missed_until=now - timedelta(minutes=10),
    )  # fmt: skip
    skipped = make_run(
        "held", "skipped_paused", missed=2,
        missed_from=now - timedelta(minutes=20), missed_until=now - timedelta(minutes=5),
    )  # fmt: skip
    abandoned = make_run(
        "lost", "abandoned", worker_id="dead-worker", error="lease expired under dead-worker"
    )

    body = admin_client.get(run_list_url()).content.decode()

    assert cells(body, ran)["lateness"] == "2 s" and cells(body, ran)["duration"] == "3 s"
    assert cells(body, failed)["outcome_line"] == "failed ValueError: nope"
    for run in (coalesced, skipped, abandoned):
        assert (cells(body, run)["lateness"], cells(body, run)["duration"]) == ("-", "-")
    # a time of today shows alone, one of another day (in the first 30 minutes after local
    # midnight) with its date
    missed_from = timezone.localtime(now - timedelta(minutes=30))
    today = missed_from.date() == timezone.localtime(now).date()
    missed = missed_from.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")
    assert cells(body, coalesced)["outcome_line"].startswith(f"coalesced 3 missed (from {missed}")
    assert cells(body, skipped)["outcome_line"].startswith("skipped while paused 2 missed (from")
    assert cells(body, abandoned)["outcome_line"] == "abandoned lease expired under dead-worker"
    assert "worker dead-worker" in body  # the outcome's tooltip


def test_a_tasks_last_runs_say_what_was_missed_without_a_duration(admin_client):
    Task.objects.create(task_id="daily", callback="record", run_at=timezone.now())
    make_run(
        "daily", "coalesced", missed=4, missed_from=timezone.now(), missed_until=timezone.now()
    )

    page = admin_client.get(reverse("admin:django_taskshed_task_change", args=["daily"]))

    item = re.search(r"<li>([^<]*coalesced[^<]*)</li>", page.content.decode())
    assert item is not None and "4 missed (from " in item[1] and " s)" not in item[1], item


def test_a_runs_own_page_shows_it_read_only(admin_client):
    run = make_run("daily", "failed", error="ValueError: nope", traceback="Traceback: here")

    page = admin_client.get(reverse("admin:django_taskshed_taskrun_change", args=[run.pk]))

    body = page.content.decode()
    assert page.status_code == 200 and "Traceback: here" in body and 'name="_save"' not in body


def test_search_finds_a_task_id_exactly(admin_client):
    wanted, other = make_run("daily", "succeeded"), make_run("daily-2", "succeeded")

    response = admin_client.get(run_list_url(q="daily"))

    assert [run.pk for run in response.context["cl"].result_list] == [wanted.pk]
    assert other.pk not in [run.pk for run in response.context["cl"].result_list]


def test_run_list_never_counts_the_whole_table(admin_client, monkeypatch):
    monkeypatch.setattr(admin_filters, "COUNT_CAP", 5)
    TaskRun.objects.bulk_create(
        TaskRun(task_id=f"t{i}", callback="record", outcome="succeeded",
                scheduled_for=timezone.now(), started_at=timezone.now())
        for i in range(20)
    )  # fmt: skip

    with CaptureQueriesContext(connection) as queries:
        body = admin_client.get(run_list_url()).content.decode()

    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts
    assert "more than 5 task runs" in " ".join(unescape(body).split())


def test_filters_read_no_distinct_values_of_the_run_table(admin_client):
    Task.objects.create(task_id="t", callback="record", run_at=timezone.now(), group_id="mail")
    now = timezone.now()
    WorkerRecord.objects.create(
        worker_id="w-1", hostname="h", pid=1, started_at=now, heartbeat_at=now, expires_at=now
    )
    make_run("t", "succeeded", group_id="mail", worker_id="w-1")

    with CaptureQueriesContext(connection) as queries:
        body = admin_client.get(run_list_url()).content.decode()

    distinct = [q["sql"] for q in queries if "DISTINCT" in q["sql"] and RUN_TABLE in q["sql"]]
    assert not distinct, distinct  # neither the filters nor the date hierarchy
    assert "?group=mail" in body and "?worker=w-1" in body and "?callback=record" in body


@pytest.mark.parametrize(
    ("query", "choices"),
    [
        ({}, ["November 2026", "December 2026"]),
        ({"started_at__year": "2026"}, ["November 2026", "December 2026"]),
        # The 29th has no runs: listed all the same (the ends of the index, not every row).
        (
            {"started_at__year": "2026", "started_at__month": "11"},
            ["November 28", "November 29", "November 30"],
        ),
    ],
)
def test_date_hierarchy_lists_the_days_from_the_first_run_to_the_last(
    admin_client, settings, query, choices
):
    settings.TIME_ZONE = "UTC"
    for day in ("2026-11-28", "2026-11-30", "2026-12-01"):  # none on November 29
        moment = timezone.make_aware(datetime.fromisoformat(f"{day}T12:00"))
        make_run("t", "succeeded", started_at=moment, scheduled_for=moment)

    response = admin_client.get(run_list_url(**query))

    body = " ".join(unescape(response.content.decode()).split())
    hierarchy = re.search(r'<nav class="toplinks"[^>]*>(.*?)</nav>', body)  # 6.x: aria
    assert hierarchy is not None, body[:3000]
    shown = [
        " ".join(re.sub("<[^>]+>", " ", link).split())
        for link in re.findall(r"<a [^>]*>(.*?)</a>", hierarchy[1])
    ]
    assert [text for text in shown if not text.startswith("‹")] == choices, shown


# --- Query plans (PostgreSQL) ------------------------------------------------------------------

PLANNED_ROWS = 200_000  # enough that a scan costs more than the index, after ANALYZE
STARTED_INDEX, TASK_INDEX = "taskshed_run_started_idx", "taskshed_run_task_idx"
PAGES = {
    # page -> (query string, the index its rows query must use)
    "default": ({}, STARTED_INDEX),
    "outcome": ({"outcome__exact": "failed"}, "taskshed_run_outcome_idx"),
    "search": ({"q": "task-7"}, TASK_INDEX),
    "task": ({"task_id": "task-7"}, TASK_INDEX),
    "day": (None, STARTED_INDEX),  # yesterday in the date hierarchy
    "callback": ({"callback": "cb-3"}, "taskshed_run_cb_idx"),
    "group": ({"group": "group-3"}, "taskshed_run_group_idx"),
    # A fifth of the rows: walking the default order's index finds a page as fast, and the
    # planner may take either.
    "worker": ({"worker": "worker-3"}, None),
}


@pytest.fixture
def many_runs() -> None:
    """``PLANNED_ROWS`` runs, one a second back from now: 1,000 tasks, 1% failed."""
    if connection.vendor != "postgresql":
        pytest.skip(f"query plans are checked on PostgreSQL, not {connection.vendor}")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {RUN_TABLE} (task_id, callback, group_id, scheduled_for, started_at,
            finished_at, outcome, attempt, worker_id, error, traceback, return_value_omitted,
            missed)
            SELECT 'task-' || (i %% 1000), 'cb-' || (i %% 10), 'group-' || (i %% 20),
              now() - i * interval '1 second', now() - i * interval '1 second',
              now() - i * interval '1 second',
              CASE WHEN i %% 100 = 0 THEN 'failed' ELSE 'succeeded' END, 1,
              'worker-' || (i %% 5), '', '', false, 0
            FROM generate_series(1, %s) AS i""",  # noqa: S608  (a table name from the model)
            [PLANNED_ROWS],
        )
        cursor.execute(f"ANALYZE {RUN_TABLE}")


def plans_of(admin_client: Any, url: str) -> list[tuple[str, str]]:
    """(statement, plan) of each statement a page runs on the run table."""
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(url).status_code == 200
    statements = [q["sql"] for q in queries if RUN_TABLE in q["sql"]]
    with connection.cursor() as cursor:
        plans = []
        for sql in statements:
            cursor.execute("EXPLAIN " + sql)
            plans.append((sql, "\n".join(row[0] for row in cursor.fetchall())))
    return plans


def assert_no_scan(sql: str, plan: str) -> None:
    """A bounded count may scan (it stops at COUNT_CAP + 1 rows); nothing else may."""
    if "COUNT(" in sql.upper():
        assert "Limit" in plan, plan
    else:
        assert f"Seq Scan on {RUN_TABLE}" not in plan, f"{sql}\n{plan}"


@pytest.mark.slow  # 200,000 rows: once per database (PostgreSQL only)
def test_run_list_queries_use_an_index(admin_client, many_runs):
    """Every page of ``PAGES`` on one table of runs (filling it is most of the test's time)."""
    for page, (query, index) in PAGES.items():
        if query is None:
            day = timezone.localtime() - timedelta(days=1)
            query = {
                f"started_at__{part}": str(getattr(day, part)) for part in ("year", "month", "day")
            }
        plans = plans_of(admin_client, run_list_url(**query))
        rows = [(sql, plan) for sql, plan in plans if "ORDER BY" in sql and "LIMIT" in sql]
        assert len(rows) == 1, (page, plans)  # the page of rows, with its LIMIT
        for sql, plan in plans:
            print(f"\n{page}: {sql[:160]}...\n{plan}")  # noqa: T201  (the plans, shown with -s)
            assert_no_scan(sql, plan)
        assert ("WHERE" in rows[0][0]) == bool(query), (page, rows[0][0])  # the filter applies
        if index is not None:
            assert index in rows[0][1], (page, rows[0][1])


# A rare value (abandoned runs, a gone worker): an index leading with the filtered column finds
# its few rows, where the default order's index would be walked to its end.
RARE_VALUES = [
    {"outcome__exact": "abandoned"},
    {"callback": "retired-callback"},
    {"group": "retired-group"},
    {"worker": "gone-worker"},
]


@pytest.mark.slow  # 200,000 rows: once per database (PostgreSQL only)
def test_run_list_filtered_on_a_rare_value_uses_an_index(admin_client, many_runs):
    for query in RARE_VALUES:
        for sql, plan in plans_of(admin_client, run_list_url(**query)):
            assert_no_scan(sql, plan)
    # and a task's last runs, on its change view, come from the task index
    Task.objects.create(task_id="task-7", callback="record", run_at=timezone.now())
    url = reverse("admin:django_taskshed_task_change", args=["task-7"])
    (sql, plan), *others = plans_of(admin_client, url)
    print(f"\nchange view: {sql[:160]}...\n{plan}")  # noqa: T201  (the plan, shown with -s)
    assert not others and "LIMIT 20" in sql, plans_of(admin_client, url)
    assert TASK_INDEX in plan and f"Seq Scan on {RUN_TABLE}" not in plan, plan
