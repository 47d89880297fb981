"""Settlement: results written in batches, a failed write retried, unfinished claims released."""

import asyncio
import logging
from datetime import datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from django_taskshed.datastores import ClaimedTask, DjangoDataStore, Outcome
from django_taskshed.models import Task
from django_taskshed.schedulers import SyncScheduler
from django_taskshed.workers import settlement
from django_taskshed.workers.database_threads import DatabaseThread
from django_taskshed.workers.settlement import Settlement
from tests.conftest import package_apps

pytestmark = [
    pytest.mark.django_db(transaction=True, available_apps=package_apps()),
    pytest.mark.timeout(30),
]

USING = "default"
STORE = DjangoDataStore(USING)


@pytest.fixture
async def db():
    thread = DatabaseThread(USING, "test-settle")
    yield thread
    await thread.close()


async def claimed(*task_ids: str) -> dict[str, ClaimedTask]:
    due = timezone.now() - timedelta(seconds=1)
    tasks = [Task(task_id=task_id, callback="x", run_at=due) for task_id in task_ids]
    await sync_to_async(SyncScheduler().add_tasks)(tasks)
    claims = await sync_to_async(STORE.claim_due_tasks)("w1", 10, 60)
    return {claim.task_id: claim for claim in claims}


async def test_results_are_written_and_the_earliest_new_run_at_is_hinted(db):
    claims = await claimed("once", "again")
    hints: list[datetime] = []
    idle = asyncio.Event()
    ledger = Settlement(STORE, "w1", db, hint=hints.append, idle=idle.set)
    for claim in claims.values():
        ledger.hold(claim)
    assert ledger.held_tokens() == [claims["once"].claim_token]  # one claim, one token
    later = timezone.now() + timedelta(hours=1)

    ledger.add(Outcome(claims["once"], delete=True))
    ledger.add(Outcome(claims["again"], changes={"run_at": later, "attempts": 0}))
    assert ledger.pending
    await ledger.drain()

    assert not ledger.pending and idle.is_set()
    assert hints == [later]
    assert ledger.held_tokens() == []
    rows = [task async for task in Task.objects.all()]
    assert [(task.task_id, task.run_at, task.lease_owner) for task in rows] == [
        ("again", later, None)
    ]


async def test_a_failed_write_is_retried_and_nothing_is_lost(db, monkeypatch, fail_once, caplog):
    claims = await claimed("flaky")
    monkeypatch.setattr(settlement, "ERROR_BACKOFF", 0.05)
    calls = fail_once(DjangoDataStore, "settle")
    ledger = Settlement(STORE, "w1", db, hint=lambda run_at: None, idle=lambda: None)
    ledger.hold(claims["flaky"])
    ledger.add(Outcome(claims["flaky"], delete=True))
    await ledger.drain()

    assert len(calls) == 2
    assert not await Task.objects.filter(pk="flaky").aexists()
    assert "could not record 1 results" in caplog.text
    assert caplog.records[0].levelno == logging.ERROR


async def test_finish_gives_back_the_held_claims_except_those_kept(db, caplog):
    claims = await claimed("stuck", "unfinished")
    ledger = Settlement(STORE, "w1", db, hint=lambda run_at: None, idle=lambda: None)
    for claim in claims.values():
        ledger.hold(claim)

    with caplog.at_level(logging.INFO, logger="django_taskshed"):
        await ledger.finish(keep={"stuck"})

    assert "worker w1 released 1 unfinished task(s)" in caplog.text

    leased = dict([(t.task_id, t.lease_owner) async for t in Task.objects.all()])
    assert leased == {"stuck": "w1", "unfinished": None}
