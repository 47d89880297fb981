"""The admin in a real browser, with a real ``runtaskworker`` running what it schedules.

Headless Chromium (Selenium) drives the live server; a worker subprocess shares its test
database. The test adds a task through the add form and sees the worker run it, pauses and
resumes a recurring task, runs a paused task now, follows a task's runs from its change view
to the run list, checks that neither list scrolls sideways in a 1,366-pixel window (beside
Django's navigation and filter sidebars, with long ids, callback names and errors), and saves
screenshots of the task list, a change view and the run list into ``docs/screenshots/``.
"""

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from django_taskshed.models import Task, TaskRun
from django_taskshed.schedulers import SyncScheduler
from tests.browser_support import WINDOW, find_browser, start_chromium
from tests.testapp.models import Execution

pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.timeout(120)]

# The screenshots in docs/ are refreshed only on request (TASKSHED_SCREENSHOTS=1), so that
# test runs leave the checkout clean; otherwise they go to the test run's temporary directory.
SCREENSHOTS = (
    Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    if os.environ.get("TASKSHED_SCREENSHOTS") == "1"
    else Path(os.environ.get("TASKSHED_TEST_TMPDIR") or tempfile.gettempdir()) / "screenshots"
)
PASSWORD = "browser-test-password"  # noqa: S105
WORKER_ARGS = ("--poll-interval", "0.5", "--shutdown-timeout", "2")
QUIET_SECONDS = 6.0  # how long a paused 2-second task must stay silent
MAX_PAGE_HEIGHT = 2400  # pixels: the change view is captured whole, up to this height


def runs(key: str) -> int:
    """How many times the worker has run the task whose ledger key is ``key``."""
    return Execution.objects.filter(key=key).count()


class AdminSession:
    """The admin as a user sees it: pages, rows, badges, messages and actions."""

    def __init__(self, driver: Any, base_url: str, wait_until: Callable[..., Any]):
        self.driver = driver
        self.base_url = base_url
        self.wait_until = wait_until

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, what: str, timeout: float = 15.0) -> Any:
        return self.wait_until(lambda: next(iter(self.find(css)), None), timeout, what)

    def submit(self, button: Any, what: str, timeout: float = 15.0) -> None:
        """Click ``button`` and wait until the browser has left the page it was on.

        Without this, a lookup right after the click can still find elements of the old page
        (the changelist and the delete confirmation page both have a form in ``#content``).
        """
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.common.by import By

        page = self.driver.find_element(By.TAG_NAME, "html")
        button.click()

        def left() -> bool:
            try:
                page.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as exc:
                # Chromium may say so in other words while the old document is torn down.
                if "does not belong to the document" in str(exc):
                    return True
                raise
            return False

        self.wait_until(left, timeout, what)

    def log_in(self, username: str, password: str) -> None:
        self.open(reverse("admin:login"))
        self.wait_for("#id_username", "the login form").send_keys(username)
        self.find("#id_password")[0].send_keys(password)
        self.submit(self.find('input[type="submit"]')[0], "the login form to be sent")
        self.wait_for("#user-tools", "the admin's user tools after logging in")

    def changelist(self) -> None:
        self.open(reverse("admin:django_taskshed_task_changelist"))
        self.wait_for("#changelist", "the task changelist")

    def row(self, task_id: str) -> Any:
        from selenium.webdriver.common.by import By

        rows = self.driver.find_elements(
            By.XPATH, f'//input[@name="_selected_action" and @value="{task_id}"]/ancestor::tr'
        )
        return rows[0] if rows else None

    def cell(self, task_id: str, field: str) -> str | None:
        row = self.row(task_id)
        if row is None:
            return None
        return " ".join(row.find_elements("css selector", f".field-{field}")[0].text.split())

    def badge(self, task_id: str) -> str | None:
        return self.cell(task_id, "status_badge")

    def messages(self) -> list[str]:
        return [item.text for item in self.find("ul.messagelist li")]

    def run_action(self, action: str, task_ids: list[str]) -> str:
        """Tick the rows, choose the action, press Go; returns the message it reports."""
        from selenium.webdriver.support.select import Select

        self.changelist()
        for task_id in task_ids:
            self.row(task_id).find_element("css selector", "input.action-select").click()
        Select(self.find('select[name="action"]')[0]).select_by_value(action)
        self.submit(self.find('button[name="index"]')[0], f"the {action} action to be sent")
        if action == "delete_selected":
            confirm = self.wait_for(
                '#content form input[name="post"] ~ input[type="submit"]',
                "the delete confirmation page",
            )
            self.submit(confirm, "the deletion to be confirmed")
        self.wait_for("ul.messagelist li", f"the message of the {action} action")
        (message,) = self.messages()
        return message

    def refresh_until(self, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        """Reload the current page until ``condition`` holds on it."""

        def check() -> Any:
            self.driver.refresh()
            return condition()

        return self.wait_until(check, timeout, what)

    def set_viewport(self, width: int, height: int) -> None:
        """Size the window so that the page itself gets ``width`` x ``height`` pixels."""
        inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        outer = self.driver.get_window_size()
        self.driver.set_window_size(
            outer["width"] + width - inner[0], outer["height"] + height - inner[1]
        )

    def sideways_overflow(self) -> dict[str, int]:
        """How far the page, and the results table's own scroller, reach past their width."""
        return self.driver.execute_script(
            "const results = document.querySelector('#changelist .results');"
            "const table = document.querySelector('#result_list');"
            "table.style.width = 'min-content';"  # the narrowest the table can get
            "const narrowest = table.scrollWidth;"
            "table.style.width = '';"
            "return {page: document.documentElement.scrollWidth - window.innerWidth,"
            " results: results.scrollWidth - results.clientWidth,"
            " box: results.clientWidth, narrowest: narrowest};"
        )

    def assert_fits(self, width: int, what: str) -> dict[str, int]:
        """Neither the page nor the results table scrolls sideways in a ``width``-wide window."""
        self.set_viewport(width, WINDOW[1])
        overflow = self.sideways_overflow()
        print(f"{what} at {width} px: {overflow}")  # noqa: T201  (shown with -s: the widths)
        assert overflow["page"] <= 0, f"{what} scrolls sideways at {width} px: {overflow}"
        assert overflow["results"] <= 0, f"{what}'s table scrolls at {width} px: {overflow}"
        return overflow

    def screenshot(self, name: str, *, whole_page: bool = False) -> Path:
        """Save the page, the window or its whole height, as docs/screenshots/<name>.png."""
        width, height = WINDOW
        self.set_viewport(width, height)
        if whole_page:
            page = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.set_viewport(width, max(height, min(page, MAX_PAGE_HEIGHT)))
        self.driver.execute_script("window.scrollTo(0, 0)")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"could not save {path}"
        return path


@pytest.fixture
def browser(tmp_path: Path, settings: Any) -> Iterator[Any]:
    """Headless Chromium; skips (or fails under TASKSHED_REQUIRE_SERVICES) without one."""
    if connection.vendor != "postgresql":
        # The browser is the suite's heaviest test (it runs alone): once, on the production
        # store. The admin's queries are tested on every database by test_admin*.py.
        pytest.skip("the browser test runs on PostgreSQL (DATABASE_URL=postgres://...)")
    find_browser()
    driver = start_chromium(tmp_path / "profile")
    yield driver
    driver.quit()


@pytest.fixture
def admin_session(browser: Any, live_server: Any, worker_procs: Any) -> AdminSession:
    """A logged-in superuser, and one ``runtaskworker`` running against the same database."""
    User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    worker_procs.start("browser-worker", *WORKER_ARGS)
    session = AdminSession(browser, live_server.url, worker_procs.wait_until)
    session.log_in("boss", PASSWORD)
    return session


def add_task_through_the_form(admin: AdminSession, task_id: str, due_in: float) -> datetime:
    from selenium.webdriver.support.select import Select

    admin.open(reverse("admin:django_taskshed_task_add"))
    field = admin.wait_for("#id_task_id", "the add form")
    field.clear()
    field.send_keys(task_id)
    Select(admin.find("#id_callback")[0]).select_by_value("record")
    kwargs = admin.find("#id_kwargs")[0]
    kwargs.clear()
    kwargs.send_keys(f'{{"key": "{task_id}"}}')
    Select(admin.find("#id_run_type")[0]).select_by_value("once")
    due = timezone.localtime(timezone.now() + timedelta(seconds=due_in))
    for suffix, value in (("0", due.strftime("%Y-%m-%d")), ("1", due.strftime("%H:%M:%S"))):
        box = admin.find(f"#id_run_at_{suffix}")[0]
        box.clear()
        box.send_keys(value)
    admin.submit(admin.find('input[name="_save"]')[0], "the add form to be saved")
    admin.wait_for("ul.messagelist li", "the message after saving the add form")
    return due.replace(microsecond=0)


def test_add_pause_resume_and_run_now_with_a_running_worker(admin_session):
    admin = admin_session
    scheduler = SyncScheduler()

    # A task added through the add form, due in 5 s, is run by the worker and goes away.
    # Its row is read after the save, before the worker runs and deletes it: the form takes
    # whole seconds, so saving and reading have 4-5 s (with 2 s, a busy machine lost the race).
    typed = add_task_through_the_form(admin, "browser-once", due_in=5)
    assert "was added successfully" in admin.messages()[0]
    run_at = Task.objects.get(pk="browser-once").run_at
    assert run_at == typed  # the local time typed into the form, stored in UTC
    admin.wait_until(lambda: runs("browser-once"), 20, "the worker to run browser-once")
    execution = Execution.objects.get(key="browser-once")
    assert run_at <= execution.started_at < run_at + timedelta(seconds=10)
    admin.changelist()
    admin.refresh_until(
        lambda: admin.row("browser-once") is None, "browser-once to leave the changelist"
    )

    # A recurring task is paused with the action, stays silent, then resumed and runs again.
    scheduler.add_task(
        "record", kwargs={"key": "browser-tick"}, task_id="browser-tick",
        run_type="recurring", interval=timedelta(seconds=2),
    )  # fmt: skip
    admin.wait_until(lambda: runs("browser-tick"), 20, "the first run of browser-tick")
    admin.changelist()
    assert admin.cell("browser-tick", "schedule") == "every 2 seconds"
    # The task column: its id, and below it its callback, served by a live worker.
    assert admin.cell("browser-tick", "task_summary") == "browser-tick record"

    assert admin.run_action("pause", ["browser-tick"]) == "1 task paused."
    assert admin.badge("browser-tick") == "paused"
    admin.wait_until(
        lambda: (
            not Task.objects.filter(pk="browser-tick", lease_expires_at__gt=timezone.now()).exists()
        ),
        20,
        "the run in progress (if any) of browser-tick to end",
    )
    silent_from = runs("browser-tick")
    time.sleep(QUIET_SECONDS)
    assert runs("browser-tick") == silent_from, "a paused task ran"
    admin.changelist()
    assert admin.badge("browser-tick") == "paused"

    assert admin.run_action("resume", ["browser-tick"]) == "1 task resumed."
    assert admin.badge("browser-tick") != "paused"
    admin.wait_until(
        lambda: runs("browser-tick") > silent_from, 20, "browser-tick to run after resume"
    )

    # A paused task is run now with the action.
    scheduler.add_task(
        "record", kwargs={"key": "browser-later"}, task_id="browser-later",
        run_at=timezone.now() + timedelta(hours=1), paused=True,
    )  # fmt: skip
    admin.changelist()
    assert admin.badge("browser-later") == "paused"
    assert admin.run_action("run_now", ["browser-later"]) == "1 task will run now."
    admin.wait_until(lambda: runs("browser-later"), 20, "the worker to run browser-later")
    admin.refresh_until(
        lambda: admin.row("browser-later") is None, "browser-later to leave the changelist"
    )

    assert admin.run_action("delete_selected", ["browser-tick"]) == "Successfully deleted 1 task."
    assert not Task.objects.filter(pk="browser-tick").exists()

    take_screenshots(admin, scheduler)


def take_screenshots(admin: AdminSession, scheduler: SyncScheduler) -> None:
    """Tasks in every state, some of them run by the worker, then the two screenshots."""
    now = timezone.now()
    tomorrow_2am = timezone.localtime(now + timedelta(days=1)).replace(
        hour=2, minute=0, second=0, microsecond=0
    )
    scheduler.add_task(
        "record", kwargs={"key": "nightly-report", "value": "sales"}, task_id="nightly-report",
        run_type="recurring", interval=timedelta(days=1), run_at=tomorrow_2am, group_id="reports",
    )  # fmt: skip
    scheduler.add_task(
        "record_sync", kwargs={"key": "send-reminders"}, task_id="send-reminders",
        run_at=now + timedelta(minutes=12), group_id="mail",
    )  # fmt: skip
    scheduler.add_task(
        "record", kwargs={"key": "cleanup-sessions"}, task_id="cleanup-sessions",
        run_type="recurring", interval=timedelta(minutes=15), run_at=now + timedelta(minutes=7),
        paused=True,
    )  # fmt: skip
    scheduler.add_task(
        "export_csv", kwargs={"table": "orders"}, task_id="legacy-export",
        run_at=now + timedelta(hours=3), group_id="reports",
    )  # fmt: skip
    # Run by the worker: one fails for good, one recurring task fails and will try again
    # at its next occurrence, and one is still running when the screenshot is taken.
    scheduler.add_task("fail", kwargs={"key": "import-orders"}, task_id="import-orders")
    scheduler.add_task(
        "flaky", kwargs={"key": "sync-inventory", "failures": 1000}, task_id="sync-inventory",
        run_type="recurring", interval=timedelta(minutes=15), group_id="inventory",
    )  # fmt: skip
    scheduler.add_task(
        "sleep", kwargs={"key": "rebuild-search-index", "seconds": 60},
        task_id="rebuild-search-index",
    )  # fmt: skip
    admin.wait_until(
        lambda: (
            Task.objects.filter(pk="import-orders", failed_at__isnull=False).exists()
            and Task.objects.filter(pk="sync-inventory", attempts=1, lease_owner=None).exists()
            and runs("rebuild-search-index")
        ),
        20,
        "the worker to fail import-orders and sync-inventory and start rebuild-search-index",
    )

    add_long_values_and_past_runs(scheduler)
    admin.wait_until(
        lambda: Task.objects.filter(pk=LONG_ID, failed_at__isnull=False).exists(),
        20,
        "the worker to fail the task with the long id",
    )

    admin.changelist()
    expected = {
        "nightly-report": "scheduled",
        "send-reminders": "scheduled",
        "cleanup-sessions": "paused",
        "legacy-export": "scheduled",
        "import-orders": "failed",
        "sync-inventory": "retrying",
        "rebuild-search-index": "running",
        LONG_ID: "failed",
    }
    assert {task_id: admin.badge(task_id) for task_id in expected} == expected
    assert "no live worker" in admin.cell("legacy-export", "task_summary")
    assert "no live worker" not in admin.cell("nightly-report", "task_summary")
    assert admin.cell("import-orders", "error_line").startswith("RuntimeError: fail callback")
    admin.assert_fits(NARROW, "the task changelist")
    changelist = admin.screenshot("changelist")

    admin.open(reverse("admin:django_taskshed_task_change", args=["sync-inventory"]))
    admin.wait_for(".field-upcoming li", "the upcoming runs of sync-inventory")
    assert len(admin.find(".field-upcoming li")) == 10
    assert "RuntimeError: flaky attempt 1" in admin.find(".field-traceback")[0].text
    recent = [item.text for item in admin.find(".field-recent_runs li")]
    assert len(recent) == 4, recent  # the worker's failed attempt, then the three made above
    assert "failed" in recent[0] and "RuntimeError: flaky attempt 1" in recent[0], recent
    assert "3 missed" in recent[1] and "abandoned" in recent[3], recent
    change_view = admin.screenshot("change_view", whole_page=True)

    admin.submit(admin.find(".field-recent_runs a")[0], "the link to all runs of the task")
    admin.wait_for("#changelist", "the run list of sync-inventory")
    listed = {cell.text.split()[0] for cell in admin.find("#result_list .field-task_run")}
    assert listed == {"sync-inventory"}, listed
    admin.open(reverse("admin:django_taskshed_taskrun_changelist"))
    admin.wait_for("#changelist", "the run list")
    outcomes = {" ".join(cell.text.split()) for cell in admin.find("td.field-outcome_line")}
    assert "succeeded" in outcomes, outcomes  # browser-once, browser-tick, browser-later
    assert "failed RuntimeError: fail callback for import-orders raised on purpose" in outcomes
    assert any(text.startswith("coalesced 3 missed (from ") for text in outcomes), outcomes
    not_run = admin.find("#result_list tr:has(.taskshed-outcome-coalesced) td.field-lateness")
    assert not_run and not_run[0].text == "-", "a run that did not happen has no lateness"
    admin.assert_fits(NARROW, "the run list")
    run_list = admin.screenshot("run_list")

    for path in (changelist, change_view, run_list):
        assert path.stat().st_size > 10_000, f"{path} looks empty"


LONG_ID = "eu-west-1-customer-statements-monthly-rollup-for-accounting"
NARROW = 1366  # pixels: a common laptop screen, where neither list may scroll sideways


def add_long_values_and_past_runs(scheduler: SyncScheduler) -> None:
    """Long ids, callback names and errors, and runs of each kind that did not run a callback
    (the real worker records the others): what widens a list in practice."""
    now = timezone.now()
    scheduler.add_task("fail", kwargs={"key": LONG_ID}, task_id=LONG_ID, group_id="accounting")
    scheduler.add_task(
        "billing.statements.render_monthly_customer_statement_pdfs", task_id="statement-pdfs",
        run_type="recurring", interval=timedelta(hours=1), run_at=now + timedelta(minutes=40),
        group_id="accounting-month-end-close",
    )  # fmt: skip
    past = [
        ("coalesced", 20, {"missed": 3, "missed_from": now - timedelta(minutes=65),
                            "missed_until": now - timedelta(minutes=35)}),
        ("skipped_paused", 90, {"missed": 2, "missed_from": now - timedelta(minutes=120),
                                 "missed_until": now - timedelta(minutes=105)}),
        ("abandoned", 240, {
            "worker_id": "worker-ip-10-0-12-34.eu-west-1.compute.internal-4711",
            "error": "lease expired: worker worker-ip-10-0-12-34.eu-west-1.compute.internal-4711"
                     " stopped sending heartbeats (killed or lost) while running this task",
        }),
    ]  # fmt: skip
    TaskRun.objects.bulk_create(
        TaskRun(
            task_id="sync-inventory", callback="flaky", group_id="inventory", outcome=outcome,
            scheduled_for=now - timedelta(minutes=ago + 1),
            started_at=now - timedelta(minutes=ago), finished_at=now - timedelta(minutes=ago),
            **fields,
        )
        for outcome, ago, fields in past
    )  # fmt: skip
