"""``manage.py taskshedstatus``: live workers, task counts, the most overdue task and recurring
tasks' last successes, as text or JSON; with ``--check``, an exit code for probes and monitors."""

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore
from django_taskshed.status import collect_status
from django_taskshed.status_report import THRESHOLDS, check, status_document, status_text

CHECK_FAILED = 1  # exit code when a --check threshold fails
BAD_ARGUMENTS = 2  # exit code of a bad combination of arguments
DEFAULT_GRACE = 60.0


def non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"non-negative {kind.__name__}"
    return parse


class Command(BaseCommand):
    help = (
        "Show live workers, task counts per queue, the most overdue task and when each recurring "
        "task last succeeded. With --check, exit 1 when a threshold fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        seconds, count = non_negative(float), non_negative(int)
        parser.add_argument("--json", action="store_true", help="print the status as JSON")
        parser.add_argument(
            "--grace", type=seconds, default=DEFAULT_GRACE, metavar="SECONDS",
            help=f"a due task is overdue once this late (default {DEFAULT_GRACE:g})",
        )  # fmt: skip
        parser.add_argument("--database", help="database alias (default TASKSHED['DATABASE'])")
        parser.add_argument("--check", action="store_true", help="exit 1 if a threshold fails")
        group = parser.add_argument_group("--check thresholds")
        group.add_argument(
            "--max-overdue", type=seconds, metavar="SECONDS", help="most overdue task's lateness"
        )
        group.add_argument("--max-failed", type=count, metavar="N", help="failed tasks")
        group.add_argument("--min-workers", type=count, metavar="N", help="live workers")
        group.add_argument(
            "--stale-after", type=seconds, metavar="SECONDS",
            help="longest time since an active recurring task's last success",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        limits = {option: options[option] for option in THRESHOLDS}
        self._validate(options["check"], limits)
        using = options["database"] or DjangoDataStore().using
        if using not in connections:
            raise CommandError(f"no database {using!r} in DATABASES", returncode=BAD_ARGUMENTS)
        status = collect_status(using, timezone.now(), options["grace"])
        failures = check(status, limits) if options["check"] else None
        if options["json"]:
            self.stdout.write(json.dumps(status_document(status, failures), indent=2))
        else:
            self.stdout.write(status_text(status, failures))
        if failures:
            self.stdout.flush()
            sys.exit(CHECK_FAILED)

    @staticmethod
    def _validate(checking: bool, limits: dict[str, Any]) -> None:
        given = [f"--{option.replace('_', '-')}" for option, v in limits.items() if v is not None]
        if checking and not given:
            raise CommandError(
                "--check needs at least one threshold: --max-overdue, --max-failed, "
                "--min-workers or --stale-after",
                returncode=BAD_ARGUMENTS,
            )
        if given and not checking:
            raise CommandError(
                f"{', '.join(given)} only apply with --check", returncode=BAD_ARGUMENTS
            )
