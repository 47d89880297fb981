"""The worker's side of the Task table: claim due tasks under a lease, renew, release, settle.

Each function is one transactional step, called through ``sync_to_async`` by the worker
(or from the worker's heartbeat thread).
"""

import logging
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Q, Value
from django.utils import timezone

from . import leases_sql
from .models import Task

logger = logging.getLogger(__name__)

CLAIM_FIELDS = (
    "task_id", "callback", "kwargs", "run_at", "run_type", "interval", "coalesce",
    "max_retries", "timeout", "attempts", "updated_at",
)  # fmt: skip
# Tasks that can run at all, written "paused = <false>" on every database and Django version
# (a bare False is written "NOT paused" on SQLite by Django 5.2 and "paused = 0" by 6.x), so
# that the due index's condition matches it.
RUNNABLE = Q(paused=Value(False), failed_at__isnull=True)
LEASE_CLEARED = {"lease_owner": None, "lease_expires_at": None, "claim_token": None}


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """What a worker holds of a task while it runs it; ``claim_token`` fences its writes."""

    task_id: str
    callback: str
    kwargs: dict[str, Any]
    run_at: datetime
    run_type: str
    interval: timedelta | None
    coalesce: bool
    max_retries: int | None
    timeout: timedelta | None
    attempts: int
    updated_at: datetime
    claim_token: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: delete the task, or write ``changes`` (the lease is always cleared)."""

    claim: ClaimedTask
    delete: bool = False
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SettleReport:
    settled: int = 0
    edited: list[str] = field(default_factory=list)  # edited while running: edit kept
    lost: list[str] = field(default_factory=list)  # lease lost to another worker: nothing written


def due(now: datetime, until: datetime | None = None) -> Q:
    """Tasks due by ``until`` (default now): not paused, not failed, not under a live lease."""
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    return RUNNABLE & Q(run_at__lte=until or now) & free


def claim_due_tasks(
    using: str, worker_id: str, limit: int, lease_seconds: float, ahead: float = 0.0
) -> list[ClaimedTask]:
    """Claim up to ``limit`` tasks due within ``ahead`` seconds, earliest first.

    PostgreSQL and MySQL lock the picked rows with ``SELECT ... FOR UPDATE SKIP LOCKED``;
    SQLite, which has no row locks, leases them with a conditional ``UPDATE``. Either way
    no task is claimed twice. On PostgreSQL and SQLite 3.35+ the claim is one
    ``UPDATE ... RETURNING`` statement (``leases_sql``).
    """
    now = timezone.now()
    until = now + timedelta(seconds=ahead)
    token = uuid.uuid4().hex
    expires = now + timedelta(seconds=lease_seconds)
    lease = {"lease_owner": worker_id, "claim_token": token, "lease_expires_at": expires}
    if leases_sql.can_claim(connections[using]):
        # One statement is atomic by itself: no transaction around it, no round trip to commit.
        rows = leases_sql.claim(using, CLAIM_FIELDS, worker_id, token, expires, now, until, limit)
        return [ClaimedTask(claim_token=token, **row) for row in rows]
    tasks = Task.objects.using(using)
    with transaction.atomic(using=using):
        if connections[using].features.has_select_for_update_skip_locked:
            picked = (
                tasks.filter(due(now, until)).order_by("run_at").select_for_update(skip_locked=True)
            )
            rows = list(picked.values(*CLAIM_FIELDS)[:limit])
            if rows:
                tasks.filter(pk__in=[row["task_id"] for row in rows]).update(**lease)
        else:
            # The UPDATE re-checks the due condition, so a row another claim took between
            # the two statements is not taken twice; the rows are read back by primary key.
            due_ids = tasks.filter(due(now, until)).order_by("run_at").values_list("pk")[:limit]
            ids = [pk for (pk,) in due_ids]
            claimed = tasks.filter(due(now, until), pk__in=ids).update(**lease) if ids else 0
            held = tasks.filter(pk__in=ids, claim_token=token)
            rows = list(held.order_by("run_at").values(*CLAIM_FIELDS)) if claimed else []
    return [ClaimedTask(claim_token=token, **row) for row in rows]


def renew_leases(using: str, worker_id: str, tokens: Iterable[str], lease_seconds: float) -> int:
    """Extend the leases this worker holds under ``tokens``. Returns how many."""
    tokens = list(tokens)
    if not tokens:
        return 0
    expires = timezone.now() + timedelta(seconds=lease_seconds)
    held = Task.objects.using(using).filter(lease_owner=worker_id, claim_token__in=tokens)
    return held.update(lease_expires_at=expires)


def release(using: str, worker_id: str, claims: Iterable[ClaimedTask]) -> int:
    """Give back tasks this worker claimed but did not finish; they are due again at once."""
    claims = list(claims)
    if not claims:
        return 0
    held = Task.objects.using(using).filter(
        lease_owner=worker_id,
        pk__in=[claim.task_id for claim in claims],
        claim_token__in={claim.claim_token for claim in claims},
    )
    return held.update(**LEASE_CLEARED)


def settle(using: str, worker_id: str, outcomes: list[Outcome]) -> SettleReport:
    """Write how runs ended, fenced: only rows still held under the same claim change.

    A row edited while it ran (its ``updated_at`` moved) keeps the edit: its lease is
    released and ``last_run_at`` stamped, nothing else.
    """
    report = SettleReport()
    if not outcomes:
        return report
    by_id = {outcome.claim.task_id: outcome for outcome in outcomes}
    if connections[using].vendor == "postgresql":
        report.settled = _settle_fenced(using, worker_id, by_id)
        if not by_id:
            return report
    tasks = Task.objects.using(using)
    with transaction.atomic(using=using):
        current = tasks.select_for_update().filter(pk__in=list(by_id), lease_owner=worker_id)
        held = {}
        for task_id, token, updated_at in current.values_list("pk", "claim_token", "updated_at"):
            claim = by_id[task_id].claim
            if token == claim.claim_token:
                held[task_id] = updated_at == claim.updated_at
        report.lost = [task_id for task_id in by_id if task_id not in held]
        report.edited = [task_id for task_id, unchanged in held.items() if not unchanged]
        kept = [by_id[task_id] for task_id, unchanged in held.items() if unchanged]
        deleted = [outcome.claim.task_id for outcome in kept if outcome.delete]
        if deleted:
            tasks.filter(pk__in=deleted)._raw_delete(using)
        _write_changes(tasks, [outcome for outcome in kept if not outcome.delete])
        if report.edited:
            now = timezone.now()
            tasks.filter(pk__in=report.edited).update(last_run_at=now, **LEASE_CLEARED)
    report.settled += len(kept)
    return report


def _settle_fenced(using: str, worker_id: str, by_id: dict[str, Outcome]) -> int:
    """PostgreSQL: write each kind of result in one statement fenced by claim and
    ``updated_at``; what was written leaves ``by_id``, the rest is for the general path."""
    groups: dict[Any, list[Outcome]] = {}
    for outcome in by_id.values():
        if outcome.delete:
            groups.setdefault(None, []).append(outcome)
        elif outcome.changes.keys() <= leases_sql.ARRAY_TYPES.keys():
            groups.setdefault(tuple(sorted(outcome.changes)), []).append(outcome)
    written: set[str] = set()
    # One statement needs no transaction (and no round trip to commit); several share one,
    # so that a failure part-way leaves the whole batch to be written again.
    with transaction.atomic(using=using) if len(groups) > 1 else nullcontext():
        for columns, group in groups.items():
            claims = [outcome.claim for outcome in group]
            if columns is None:
                written |= leases_sql.delete_fenced(using, worker_id, claims)
            else:
                values = [[outcome.changes[c] for outcome in group] for c in columns]
                written |= leases_sql.update_fenced(using, worker_id, claims, columns, values)
    for task_id in written:
        del by_id[task_id]
    return len(written)


def _write_changes(tasks: Any, outcomes: list[Outcome]) -> None:
    """One bulk UPDATE per distinct set of changed fields."""
    groups: dict[tuple[str, ...], list[Task]] = {}
    for outcome in outcomes:
        values = {**outcome.changes, **LEASE_CLEARED}
        groups.setdefault(tuple(sorted(values)), []).append(
            Task(pk=outcome.claim.task_id, **values)
        )
    for fields, objs in groups.items():
        tasks.bulk_update(objs, list(fields), batch_size=500)


def next_run_at(using: str) -> datetime | None:
    """The earliest run_at of a task that is free to run (no lease); None if there is none."""
    free = Task.objects.using(using).filter(RUNNABLE, lease_expires_at__isnull=True)
    return free.order_by("run_at").values_list("run_at", flat=True).first()
