"""The worker's side of the datastore: claim due tasks under a lease, renew, release, settle.

Each operation is one transactional step, run by the worker on a database thread of its own
(or by its heartbeat thread). On PostgreSQL and SQLite 3.35+ the claim is one statement, and
on PostgreSQL results are written one statement per kind (``hotpath``).
"""

import json
import logging
import uuid
from collections.abc import Collection, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import Case, F, Func, OrderBy, When
from django.utils import timezone

from ..conf import taskshed_settings
from ..django_internals import delete_without_signals
from ..models import CLAIM_ORDER, Task, TaskQuerySet
from . import hotpath
from . import runs as runs_sql
from .tasks import TaskOperations

logger = logging.getLogger(__name__)

CLAIM_FIELDS = (
    "task_id", "callback", "kwargs", "run_at", "run_type", "interval", "coalesce",
    "max_retries", "timeout", "attempts", "updated_at", "cron", "timezone", "on_nonexistent",
    "on_ambiguous", "group_id", "priority", "abandoned_by",
)  # fmt: skip
KWARGS_AT = CLAIM_FIELDS.index("kwargs")
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
    cron: str
    timezone: str
    on_nonexistent: str
    on_ambiguous: str
    group_id: str | None
    priority: int
    abandoned_by: str | None  # the worker that died holding the lease before this claim
    claim_token: str
    # ``kwargs`` as claimed, as JSON text, for the run history: on PostgreSQL and SQLite the
    # text the claim read (encoding them again would cost a worker more than a no-op run),
    # elsewhere encoded by the claim.
    kwargs_json: str | None = None

    @property
    def stored_kwargs(self) -> str:
        """``kwargs`` as JSON text, as the run history keeps them."""
        return _json_text(self.kwargs) if self.kwargs_json is None else self.kwargs_json


def _json_text(kwargs: dict[str, Any]) -> str:
    return "{}" if kwargs == {} else json.dumps(kwargs)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: delete the task, or write ``changes`` (the lease is always cleared)."""

    claim: ClaimedTask
    delete: bool = False
    changes: dict[str, Any] = field(default_factory=dict)
    runs: tuple[tuple[Any, ...], ...] = ()  # the run history's rows (``runs.RUN_COLUMNS``)


@dataclass(slots=True)
class SettleReport:
    settled: int = 0
    edited: list[str] = field(default_factory=list)  # edited while running: only released
    lost: list[str] = field(default_factory=list)  # lease lost to another worker: nothing written


class LeaseOperations(TaskOperations):
    """The worker's steps; each starts from ``get_queryset()``."""

    def claim_due_tasks(
        self,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        ahead: float = 0.0,
        queues: Collection[str] | None = None,
    ) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks due within ``ahead`` seconds from ``queues`` (None:
        every queue), highest priority first, then earliest.

        PostgreSQL and MySQL lock the picked rows with ``SELECT ... FOR UPDATE SKIP LOCKED``;
        SQLite, which has no row locks, leases them with a conditional ``UPDATE``. Either way
        no task is claimed twice. A task whose lease expired under a dead worker counts that
        attempt, and is recorded in the run history as ``abandoned``.
        """
        now = timezone.now()
        due = self.claimable(now, ahead, queues)
        token = uuid.uuid4().hex
        expires = now + timedelta(seconds=lease_seconds)
        if hotpath.can_claim(connections[self.using]):
            # One statement is atomic by itself: no transaction around it, no round trip to commit.
            picked = due.values("task_id")[:limit]
            read = hotpath.claim(picked, CLAIM_FIELDS, worker_id, token, expires)
            for values in read:  # the kwargs' text last: the token, then it (encoded if not read)
                text = values.pop()
                values += [token, text or _json_text(values[KWARGS_AT])]
            claims = [ClaimedTask(*values) for values in read]
        else:
            rows = self._claim_in_transaction(due, limit, worker_id, token, expires)
            claims = [
                ClaimedTask(claim_token=token, kwargs_json=_json_text(row["kwargs"]), **row)
                for row in rows
            ]
        if taskshed_settings.HISTORY and any(claim.abandoned_by for claim in claims):
            self._record_abandoned(claims, now)
        return claims

    def claimable(
        self, now: datetime, ahead: float = 0.0, queues: Collection[str] | None = None
    ) -> TaskQuerySet:
        """The tasks a claim picks from, in the order it picks them (``CLAIM_ORDER``).

        The due index keeps that order, so a backlog is claimed by walking it to the claim's
        LIMIT. But with few tasks due among many future ones, that walk passes every future
        entry of each priority; then the ``run_at`` index, read up to now and sorted, is the
        cheap plan. PostgreSQL's planner picks between the two from its statistics. SQLite's
        and MySQL's would walk the due index: there, when every runnable task has one priority
        (two reads at the ends of the due index tell), the order is ``run_at`` alone, the same
        order; otherwise the priority is ordered by an expression no index keeps, forcing the
        read-and-sort plan.
        """
        due = self.get_queryset().due(now, now + timedelta(seconds=ahead)).in_queues(queues)
        if connections[self.using].vendor == "postgresql":
            return due.order_by(*CLAIM_ORDER)
        if self._one_priority():
            return due.order_by("run_at")
        return due.order_by(OrderBy(UnaryPlus(F("priority")), descending=True), "run_at")

    def _one_priority(self) -> bool:
        runnable = Task.objects.using(self.using).runnable().values_list("priority", flat=True)
        highest = runnable.order_by("-priority", "run_at").first()
        return highest is None or highest == runnable.order_by("priority", "-run_at").first()

    def _record_abandoned(self, claims: list[ClaimedTask], now: datetime) -> None:
        """The ``abandoned`` rows of the attempts this claim took over; a failure is logged."""
        rows = [
            runs_sql.abandoned_row(
                claim, claim.run_at, claim.attempts, claim.abandoned_by, now, claim.stored_kwargs
            )
            for claim in claims
            if claim.abandoned_by
        ]
        try:
            with transaction.atomic(using=self.using):
                runs_sql.insert_runs(connections[self.using], rows)
        except DatabaseError:
            logger.exception("could not record %d abandoned run(s) in the history", len(rows))

    def _claim_in_transaction(
        self, due: TaskQuerySet, limit: int, worker_id: str, token: str, expires: datetime
    ) -> list[dict[str, Any]]:
        # In this order: MySQL assigns from left to right, and the first two read the old owner.
        lease = {
            "abandoned_by": F("lease_owner"),
            "attempts": Case(
                When(lease_owner__isnull=True, then=F("attempts")), default=F("attempts") + 1
            ),
            "lease_owner": worker_id,
            "claim_token": token,
            "lease_expires_at": expires,
        }
        tasks = self.get_queryset()
        with transaction.atomic(using=self.using):
            if connections[self.using].features.has_select_for_update_skip_locked:
                picked = due.select_for_update(skip_locked=True)
                rows = list(picked.values(*CLAIM_FIELDS[:-1], "lease_owner")[:limit])
                if rows:
                    tasks.filter(pk__in=[row["task_id"] for row in rows]).update(**lease)
                for row in rows:  # as the UPDATE left them
                    row["abandoned_by"] = row.pop("lease_owner")
                    row["attempts"] += row["abandoned_by"] is not None
                return rows
            # The UPDATE re-checks the due condition, so a row another claim took between
            # the two statements is not taken twice; the rows are read back by primary key.
            ids = [pk for (pk,) in due.values_list("pk")[:limit]]
            if not ids or not due.filter(pk__in=ids).update(**lease):
                return []
            held = tasks.filter(pk__in=ids, claim_token=token)
            return list(held.order_by(*CLAIM_ORDER).values(*CLAIM_FIELDS))

    def renew_leases(self, worker_id: str, tokens: Iterable[str], lease_seconds: float) -> int:
        """Extend the leases this worker holds under ``tokens``. Returns how many."""
        tokens = list(tokens)
        if not tokens:
            return 0
        expires = timezone.now() + timedelta(seconds=lease_seconds)
        held = self.get_queryset().filter(lease_owner=worker_id, claim_token__in=tokens)
        return held.update(lease_expires_at=expires)

    def release_tasks(self, worker_id: str, claims: Iterable[ClaimedTask]) -> int:
        """Give back tasks this worker claimed but did not finish; they are due again at once."""
        claims = list(claims)
        if not claims:
            return 0
        held = self.get_queryset().filter(
            lease_owner=worker_id,
            pk__in=[claim.task_id for claim in claims],
            claim_token__in={claim.claim_token for claim in claims},
        )
        return held.update(**LEASE_CLEARED)

    def settle(self, worker_id: str, outcomes: list[Outcome]) -> SettleReport:
        """Write how runs ended, fenced: only rows still held under the same claim change.

        A row edited while it ran (its ``updated_at`` moved) keeps the edit. When the edit
        moved its ``run_at``, or the run would delete it, its lease is released and
        ``last_run_at`` stamped, nothing else; otherwise the run's result is written over
        the edit's other fields, so that an edit never makes an occurrence run again.
        """
        report = SettleReport()
        by_id = {outcome.claim.task_id: outcome for outcome in outcomes}
        if by_id and hotpath.can_settle(connections[self.using]):
            report.settled = self._settle_fenced(worker_id, by_id)
        if not by_id:
            return report
        tasks = self.get_queryset()
        with transaction.atomic(using=self.using):
            current = tasks.select_for_update().filter(pk__in=list(by_id), lease_owner=worker_id)
            held = {}
            for task_id, token, updated_at, run_at in current.values_list(
                "pk", "claim_token", "updated_at", "run_at"
            ):
                if token == by_id[task_id].claim.claim_token:
                    held[task_id] = _result_applies(by_id[task_id], updated_at, run_at)
            report.lost = [task_id for task_id in by_id if task_id not in held]
            report.edited = [task_id for task_id, unchanged in held.items() if not unchanged]
            kept = [by_id[task_id] for task_id, unchanged in held.items() if unchanged]
            deleted = [outcome.claim.task_id for outcome in kept if outcome.delete]
            if deleted:
                delete_without_signals(tasks.filter(pk__in=deleted))
            _write_changes(tasks, [outcome for outcome in kept if not outcome.delete])
            if report.edited:
                stamp = {"last_run_at": timezone.now(), **LEASE_CLEARED}
                tasks.filter(pk__in=report.edited).update(**stamp)
            self._record_runs([by_id[task_id] for task_id in held])
        report.settled += len(kept)
        return report

    def _settle_fenced(self, worker_id: str, by_id: dict[str, Outcome]) -> int:
        """Write each kind of result in one statement fenced by claim and ``updated_at``; what
        was written leaves ``by_id``, the rest is for the general path.

        On PostgreSQL the statement also records the history rows of what it wrote. Should
        that fail (say, the history table refuses a row), the results are written again
        without their history, which is then written on its own and may fail alone (logged):
        a history write never holds back a result. On SQLite the history rows of what was
        written follow in the same transaction, in a savepoint (``_record_runs``).
        """
        groups: dict[Any, list[Outcome]] = {}
        for outcome in by_id.values():
            if outcome.delete:
                groups.setdefault(None, []).append(outcome)
            elif outcome.changes.keys() <= hotpath.RESULT_TYPES.keys():
                groups.setdefault(tuple(sorted(outcome.changes)), []).append(outcome)
        if not groups:
            return 0
        history = any(outcome.runs for group in groups.values() for outcome in group)
        if connections[self.using].vendor == "sqlite":  # no WITH that writes
            written = self._write_then_record(worker_id, groups, by_id)
        else:
            try:
                written = self._write_fenced(worker_id, groups, history)
            except DatabaseError:
                if not history:
                    raise
                logger.warning(
                    "could not write %d result(s) with their history in one statement; writing"
                    " the history apart",
                    len(by_id),
                    exc_info=True,
                )
                written = self._write_then_record(worker_id, groups, by_id)
        for task_id in written:
            del by_id[task_id]
        return len(written)

    def _write_fenced(
        self, worker_id: str, groups: dict[Any, list[Outcome]], history: bool
    ) -> set[str]:
        """One statement per group (``hotpath``), with the runs' history rows when
        ``history``; several share a transaction (one needs none, nor a round trip to commit),
        so that a failure part-way leaves the whole batch to be written again. Within a
        caller's transaction they take a savepoint, so that a failure leaves it usable."""
        atomic = len(groups) > 1 or connections[self.using].in_atomic_block
        with transaction.atomic(using=self.using) if atomic else nullcontext():
            return self._write_groups(worker_id, groups, history)

    def _write_then_record(
        self, worker_id: str, groups: dict[Any, list[Outcome]], by_id: dict[str, Outcome]
    ) -> set[str]:
        """In one transaction: the results without their history, then the history rows of
        those written (``_record_runs``: in a savepoint, a failure logged)."""
        with transaction.atomic(using=self.using):
            written = self._write_groups(worker_id, groups, history=False)
            self._record_runs([by_id[task_id] for task_id in written])
        return written

    def _write_groups(
        self, worker_id: str, groups: dict[Any, list[Outcome]], history: bool
    ) -> set[str]:
        written: set[str] = set()
        for columns, group in groups.items():
            if columns is None:
                written |= hotpath.delete_fenced(self.using, worker_id, group, history)
            else:
                written |= hotpath.update_fenced(self.using, worker_id, group, columns, history)
        return written

    def _record_runs(self, outcomes: list[Outcome]) -> None:
        """Write the history rows of results written in this transaction, in one statement,
        in a savepoint: a history write that fails is logged and leaves the results."""
        runs = [row for outcome in outcomes for row in outcome.runs]
        if not runs:
            return
        try:
            with transaction.atomic(using=self.using):
                runs_sql.insert_runs(connections[self.using], runs)
        except DatabaseError:
            logger.exception("could not record %d task run(s) in the history", len(runs))

    def next_free_run_at(self, queues: Collection[str] | None = None) -> datetime | None:
        """The earliest run_at of a task in ``queues`` (None: every queue) free to run
        (runnable, no lease); None if none is. Earliest whatever its priority: a worker must
        wake for a due task of low priority too."""
        free = self.get_queryset().runnable().filter(lease_expires_at__isnull=True)
        free = free.in_queues(queues)
        return free.order_by("run_at").values_list("run_at", flat=True).first()


def _result_applies(outcome: Outcome, updated_at: datetime, run_at: datetime) -> bool:
    """Whether a held row takes the run's result: unedited since the claim, or edited without
    moving its ``run_at`` when the result keeps the row (an edit while it ran wins over a
    deletion)."""
    claim = outcome.claim
    return updated_at == claim.updated_at or (run_at == claim.run_at and not outcome.delete)


class UnaryPlus(Func):
    """``+expression``: the same value, which SQLite and MySQL do not read from an index."""

    template = "(+%(expressions)s)"


def _write_changes(tasks: TaskQuerySet, outcomes: list[Outcome]) -> None:
    """One bulk UPDATE per distinct set of changed fields."""
    groups: dict[tuple[str, ...], list[Task]] = {}
    for outcome in outcomes:
        values = {**outcome.changes, **LEASE_CLEARED}
        groups.setdefault(tuple(sorted(values)), []).append(
            Task(pk=outcome.claim.task_id, **values)
        )
    for fields, objs in groups.items():
        tasks.bulk_update(objs, list(fields), batch_size=500)
