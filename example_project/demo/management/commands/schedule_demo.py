"""``manage.py schedule_demo``: schedules the demo's tasks and lists them.

Every task has a fixed ``task_id`` and is added with ``replace_existing=True``, so running
the command again reschedules the same tasks instead of adding copies.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from django_taskshed.models import Task
from django_taskshed.schedulers import SyncScheduler

ONE_OFF_ID = "demo-send-report"
HEARTBEAT_ID = "demo-heartbeat"
BATCH_GROUP = "adding_numbers"
BATCH_IDS = [f"task-{i}" for i in range(5)]
FLAKY_IDS = ["demo-flaky-recovers", "demo-flaky-gives-up"]
DECLARED_ID = "demo-nightly-report"  # from TASKSHED["SCHEDULES"] in the settings
ALL_IDS = [ONE_OFF_ID, HEARTBEAT_ID, *BATCH_IDS, *FLAKY_IDS]

COLUMNS = (
    "task_id", "callback", "run_at (local)", "run_type", "schedule", "group_id", "status",
    "attempts", "last error",
)  # fmt: skip


class Command(BaseCommand):
    help = "Schedule the demo's example tasks (idempotent) and list them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--clear", action="store_true", help="Remove the demo's tasks instead of adding them."
        )
        parser.add_argument(
            "--list", action="store_true", help="Only list the demo's tasks as they are now."
        )

    def handle(self, *args, **options):
        scheduler = SyncScheduler()
        scheduler.start()
        try:
            if options["clear"]:
                scheduler.remove_tasks(task_ids=ALL_IDS)
                self.stdout.write(self.style.SUCCESS(f"Removed the {len(ALL_IDS)} demo tasks."))
                return
            if not options["list"]:
                self.schedule(scheduler)
            self.print_table(scheduler.fetch_tasks(task_ids=[*ALL_IDS, DECLARED_ID]))
        finally:
            scheduler.shutdown()

    def schedule(self, scheduler: SyncScheduler) -> None:
        now = timezone.now()
        scheduler.add_task(
            "send_report",
            run_at=now + timedelta(seconds=5),
            kwargs={"recipient": "ops@example.com"},
            task_id=ONE_OFF_ID,
            replace_existing=True,
        )
        scheduler.add_task(
            "heartbeat",
            run_at=now,
            run_type="recurring",
            interval=timedelta(seconds=10),
            task_id=HEARTBEAT_ID,
            replace_existing=True,
        )
        scheduler.add_tasks(self.batch(now), replace_existing=True)
        scheduler.add_tasks(self.failing(now), replace_existing=True)

    @staticmethod
    def batch(now) -> list[Task]:
        """Five additions in one group, one transaction (TaskShed's add_tasks example)."""
        return [
            Task(
                callback="add",
                run_at=now + timedelta(seconds=i * 10),
                kwargs={"a": 1, "b": 2},
                task_id=task_id,
                group_id=BATCH_GROUP,
            )
            for i, task_id in enumerate(BATCH_IDS)
        ]

    @staticmethod
    def failing(now) -> list[Task]:
        """One task that fails twice then succeeds on retry, one that runs out of retries."""
        recovers, gives_up = FLAKY_IDS
        return [
            Task(
                callback="flaky",
                run_at=now,
                kwargs={"fail_times": 2},
                max_retries=3,
                task_id=recovers,
            ),
            Task(
                callback="flaky",
                run_at=now,
                kwargs={"fail_times": 99},
                max_retries=1,
                task_id=gives_up,
            ),
        ]

    def print_table(self, tasks: list[Task]) -> None:
        rows = [self.row(task) for task in sorted(tasks, key=lambda t: (t.run_at, t.task_id))]
        widths = [max(len(str(v)) for v in column) for column in zip(COLUMNS, *rows, strict=True)]
        for values in (COLUMNS, *rows):
            self.stdout.write(
                "  ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=True))
            )
        gone = len(ALL_IDS) + 1 - len(rows)
        self.stdout.write(
            self.style.SUCCESS(f"{len(rows)} demo tasks in the table, {gone} done and removed.")
        )

    @staticmethod
    def row(task: Task) -> tuple[str, ...]:
        return (
            task.task_id,
            task.callback,
            timezone.localtime(task.run_at).strftime("%Y-%m-%d %H:%M:%S"),
            task.run_type,
            f"{task.cron} {task.timezone}" if task.cron else str(task.interval or "-"),
            task.group_id or "-",
            task.status_at(timezone.now()).value,
            str(task.attempts),
            task.last_error[:50] or "-",
        )
