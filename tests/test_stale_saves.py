"""Edits never undo the worker (issue 14, item 4): ``Task.save()`` does not write the lease,
refuses an instance older than its row (``StaleTaskError``), and the admin says so keeping
the user's input; an edit while a task runs never makes its occurrence run again.

The race against a real ``runtaskworker`` is in ``tests/chaos/test_stale_save.py``.
"""

import asyncio
import logging
import random
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore, Outcome
from django_taskshed.exceptions import StaleTaskError
from django_taskshed.models import Task
from django_taskshed.schedulers import AsyncScheduler, SyncScheduler
from django_taskshed.workers import EventDrivenWorker
from django_taskshed.workers.current import current_run
from django_taskshed.workers.runner import succeeded
from tests.waiting import eventually

STORE = DjangoDataStore("default")
HOUR = timedelta(hours=1)
LEASE = ("lease_owner", "lease_expires_at", "claim_token")


def recurring(task_id: str = "r", **fields: Any) -> Task:
    first = (timezone.now() - timedelta(seconds=1)).replace(microsecond=0)
    return SyncScheduler().add_task(
        "record", first, run_type="recurring", interval=HOUR, task_id=task_id, **fields
    )


def run_once(task_id: str) -> Outcome:
    """A worker's run of the task, claimed and settled (succeeded)."""
    (claim,) = STORE.claim_due_tasks("w-1", 10, 30)
    assert claim.task_id == task_id
    outcome = succeeded(claim, timezone.now(), timezone.now())
    STORE.settle("w-1", [outcome])
    return outcome


# --- Task.save() ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_instance_loaded_before_a_workers_run_is_refused_and_the_run_stays():
    added = recurring()
    stale = Task.objects.get(pk="r")
    run_once("r")
    stale.kwargs = {"edited": True}

    with pytest.raises(StaleTaskError, match="'r' was changed .* since this instance was loaded"):
        stale.save()

    row = Task.objects.get(pk="r")
    assert row.run_at == added.run_at + HOUR  # the worker's next occurrence, not the old one
    assert row.kwargs == {}


@pytest.mark.django_db
@pytest.mark.parametrize("loaded", ["before the claim", "after the claim"])
def test_save_never_writes_the_lease(loaded):
    recurring()
    before = Task.objects.get(pk="r")
    (claim,) = STORE.claim_due_tasks("w-1", 10, 30)
    task = before if loaded == "before the claim" else Task.objects.get(pk="r")
    task.kwargs = {"edited": True}
    task.lease_owner = task.lease_expires_at = task.claim_token = None

    task.save()

    row = Task.objects.get(pk="r")
    assert (row.lease_owner, row.claim_token) == ("w-1", claim.claim_token)
    assert row.lease_expires_at is not None
    assert row.kwargs == {"edited": True} and row.updated_at > claim.updated_at


@pytest.mark.django_db
def test_save_with_lease_fields_in_update_fields_is_refused():
    task = recurring()
    with pytest.raises(ValueError, match=r"does not write the lease fields \(claim_token\)"):
        task.save(update_fields=["kwargs", "claim_token"])


@pytest.mark.django_db
def test_a_partly_loaded_instance_saves_what_it_loaded_and_moves_updated_at():
    task = recurring()
    STORE.claim_due_tasks("w-1", 10, 30)
    partial = Task.objects.only("task_id", "kwargs").get(pk="r")
    partial.kwargs = {"partial": True}
    partial.save()
    row = Task.objects.get(pk="r")
    assert row.kwargs == {"partial": True} and row.lease_owner == "w-1"
    assert row.updated_at > task.updated_at  # the fence the worker's settle reads
    assert row.run_at == task.run_at


@pytest.mark.django_db
def test_a_deleted_task_is_not_saved_back():
    task = Task.objects.create(callback="x", run_at=timezone.now())
    Task.objects.filter(pk=task.pk).delete()
    with pytest.raises(StaleTaskError, match="was deleted since this instance was loaded"):
        task.save()
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_saves_of_an_instance_that_is_up_to_date_go_through():
    task = Task.objects.create(callback="x", run_at=timezone.now() + HOUR)
    task.kwargs = {"n": 1}
    task.save()  # after its own creation
    task.priority = 5
    task.save(update_fields=["priority"])  # after its own save
    other = Task.objects.get(pk=task.pk)
    other.kwargs = {"n": 2}
    other.save()
    with pytest.raises(StaleTaskError):
        task.save()
    task.refresh_from_db()
    task.paused = True
    task.save()
    row = Task.objects.get(pk=task.pk)
    assert (row.kwargs, row.priority, row.paused) == ({"n": 2}, 5, True)


@pytest.mark.django_db
def test_a_save_refused_leaves_the_row_as_the_worker_wrote_it():
    recurring()
    stale = Task.objects.get(pk="r")
    run_once("r")
    written = Task.objects.get(pk="r")
    with pytest.raises(StaleTaskError):
        stale.save()
    assert Task.objects.get(pk="r").__dict__ | {"_state": None} == written.__dict__ | {
        "_state": None
    }


# --- an edit while the task runs -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("edit", ["kwargs", "pause", "move"])
def test_an_edit_while_a_recurring_task_runs_keeps_the_edit_and_never_reruns_the_occurrence(edit):
    added = recurring()
    (claim,) = STORE.claim_due_tasks("w-1", 10, 30)
    moved_to = timezone.now() + 5 * HOUR
    task = Task.objects.get(pk="r")
    if edit == "kwargs":
        task.kwargs = {"edited": True}
    elif edit == "pause":
        task.paused = True
    else:
        task.run_at = moved_to
    task.save()

    report = STORE.settle("w-1", [succeeded(claim, timezone.now(), timezone.now())])

    row = Task.objects.get(pk="r")
    assert row.lease_owner is None and row.last_run_at is not None
    if edit == "move":  # the edit chose the next run: it wins
        assert row.run_at == moved_to and report.edited == ["r"]
    else:  # the run's result moves it on; the edit stays
        assert row.run_at == added.run_at + HOUR and report.edited == []
        assert (row.kwargs, row.paused) == (
            ({"edited": True}, False) if edit == "kwargs" else ({}, True)
        )


# --- the admin -----------------------------------------------------------------------------------


def change_url(task_id: str) -> str:
    return reverse("admin:django_taskshed_task_change", args=[task_id])


def change_data(page: Any, task: Task, **overrides: str) -> dict[str, str]:
    """What the change page of ``task`` posts, with ``overrides`` typed in."""
    local = timezone.localtime(task.run_at)
    data = {
        "opened_version": page.context["adminform"].form["opened_version"].value(),
        "callback": "record", "kwargs": '{"key": "r"}', "run_at_0": local.strftime("%Y-%m-%d"),
        "run_at_1": local.strftime("%H:%M:%S"), "run_type": "recurring", "interval": "01:00:00",
        "cron": "", "timezone": "", "on_nonexistent": "shift", "on_ambiguous": "first",
        "group_id": "", "queue": "default", "priority": "0", "coalesce": "on",
        "max_retries": "", "timeout": "",
    }  # fmt: skip
    return {**data, **overrides}


@pytest.mark.django_db
def test_the_admin_refuses_a_form_opened_before_a_run_and_keeps_the_input(admin_client):
    added = recurring(kwargs={"n": 1})
    page = admin_client.get(change_url("r"))
    data = change_data(page, added, kwargs='{"n": 2}')
    run_once("r")  # a worker runs it while the page is open

    response = admin_client.post(change_url("r"), data)

    assert response.status_code == 200, "a stale form was accepted"
    body = response.content.decode()
    assert "This task was changed since you opened it" in body
    form = response.context["adminform"].form
    assert form["kwargs"].value() == '{"n": 2}'  # the user's input is kept
    row = Task.objects.get(pk="r")
    assert (row.kwargs, row.run_at) == ({"n": 1}, added.run_at + HOUR)

    # The page now carries the row's new version: saving it again is a deliberate choice.
    again = dict(data, opened_version=form["opened_version"].value())
    assert admin_client.post(change_url("r"), again).status_code == 302
    assert Task.objects.get(pk="r").kwargs == {"n": 2}


@pytest.mark.django_db
def test_a_change_the_forms_check_missed_is_refused_by_the_save_and_shown(
    admin_client, monkeypatch
):
    """Where the row is not locked (SQLite in its default mode), a run may land between the
    form's check and the save: the save's StaleTaskError then shows the page again, with the
    message. Simulated: the check misses the change once."""
    from django_taskshed.admin.forms import TaskAdminForm

    added = recurring(kwargs={"n": 1})
    page = admin_client.get(change_url("r"))
    data = change_data(page, added, kwargs='{"n": 2}')
    run_once("r")
    check = TaskAdminForm._check_version
    missed: list[bool] = []

    def miss_once(form: Any, opened: Any) -> None:
        if missed:
            return check(form, opened)
        missed.append(True)
        form.instance.set_loaded_version(opened)  # what the check sets before comparing

    monkeypatch.setattr(TaskAdminForm, "_check_version", miss_once)
    response = admin_client.post(change_url("r"), data)

    assert response.status_code == 200, "a stale save went through"
    assert "This task was changed since you opened it" in response.content.decode()
    assert response.context["adminform"].form["kwargs"].value() == '{"n": 2}'
    row = Task.objects.get(pk="r")
    assert (row.kwargs, row.run_at) == ({"n": 1}, added.run_at + HOUR)


@pytest.mark.django_db
def test_the_admin_saves_a_form_of_an_unchanged_task(admin_client):
    added = recurring(kwargs={"n": 1})
    page = admin_client.get(change_url("r"))
    response = admin_client.post(change_url("r"), change_data(page, added, kwargs='{"n": 3}'))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Task.objects.get(pk="r").kwargs == {"n": 3}


@pytest.mark.django_db
def test_the_admin_refuses_a_form_of_a_task_deleted_since(admin_client):
    added = recurring()
    page = admin_client.get(change_url("r"))
    data = change_data(page, added)
    Task.objects.filter(pk="r").delete()
    response = admin_client.post(change_url("r"), data)
    assert not Task.objects.exists()
    assert response.status_code in (200, 302)  # Django's "doesn't exist" redirect, or the error


# --- the race, in this process -------------------------------------------------------------------


@pytest.mark.slow  # a real-time race: once per database (tests/chaos has it in processes)
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_stale_saves_racing_a_recurring_task_never_rerun_an_occurrence(caplog):
    """A recurring task every 50 ms in a worker, and 150 saves of instances loaded a moment
    earlier: each occurrence runs once, and no lease is lost."""
    caplog.set_level(logging.WARNING)
    occurrences: list[Any] = []

    async def tick(n: int = 0) -> None:
        occurrences.append(current_run.get().claim.run_at)
        await asyncio.sleep(0.01)

    worker = EventDrivenWorker({"tick": tick}, poll_interval=0.1)
    scheduler = AsyncScheduler(worker=worker)
    await scheduler.add_task(
        "tick", run_type="recurring", interval=timedelta(milliseconds=50), task_id="race"
    )
    rng = random.Random(14)
    saved = refused = 0
    await worker.start()
    try:
        for n in range(150):
            task = await Task.objects.aget(pk="race")
            await asyncio.sleep(rng.uniform(0, 0.03))
            task.kwargs = {"n": n}
            try:
                await task.asave()
                saved += 1
            except StaleTaskError:
                refused += 1
        await eventually(lambda: len(occurrences) > 10, what="runs")
    finally:
        await worker.shutdown()

    print(f"\n{len(occurrences)} runs, {saved} saves, {refused} refused as stale")
    assert len(occurrences) == len(set(occurrences)), "an occurrence ran twice"
    assert saved > 0 and refused > 0
    assert "lease lost" not in caplog.text
