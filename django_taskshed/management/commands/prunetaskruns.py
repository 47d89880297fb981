"""``manage.py prunetaskruns``: delete old runs from the run history."""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from django_taskshed.datastores import DjangoDataStore
from django_taskshed.datastores.runs import prune_runs, retention


def positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = (
        "Delete runs older than TASKSHED['HISTORY_RETENTION'] (or --older-than) from the history."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=positive_seconds,
            metavar="SECONDS",
            help="age of the runs to delete (default: HISTORY_RETENTION)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        age = options["older_than"]
        keep = timedelta(seconds=age) if age is not None else retention()
        deleted = prune_runs(DjangoDataStore().using, timezone.now() - keep)
        self.stdout.write(f"deleted {deleted} run(s) older than {keep}")
