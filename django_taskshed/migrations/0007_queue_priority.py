"""Queues and priorities; the due index now keeps the claim's order: priority DESC, run_at.

The index replaces 0002's under the same name, per database as 0002 makes it: partial over the
runnable tasks on PostgreSQL and SQLite, led by the condition's columns on MySQL/MariaDB. SQLite
rebuilds the table to add the columns and the constraint, which drops the index; either way the
right one is made after the rebuild.
"""

import importlib

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

old_index = importlib.import_module("django_taskshed.migrations.0002_due_index")
INDEX, TABLE = old_index.INDEX, old_index.TABLE


def _present(schema_editor: BaseDatabaseSchemaEditor) -> bool:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        return INDEX in connection.introspection.get_constraints(cursor, TABLE)


def create_due_index(schema_editor: BaseDatabaseSchemaEditor) -> None:
    qn = schema_editor.quote_name
    order = f"{qn('priority')} DESC, {qn('run_at')}"
    if schema_editor.connection.vendor == "mysql":
        columns = f"{qn('paused')}, {qn('failed_at')}, {order}"
        schema_editor.execute(f"CREATE INDEX {qn(INDEX)} ON {qn(TABLE)} ({columns})")
        return
    runnable = "false" if schema_editor.connection.vendor == "postgresql" else "0"
    schema_editor.execute(
        f"CREATE INDEX {qn(INDEX)} ON {qn(TABLE)} ({order}) "
        f"WHERE {qn('paused')} = {runnable} AND {qn('failed_at')} IS NULL"
    )


def use_new_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if _present(schema_editor):
        old_index.drop_due_index(apps, schema_editor)
    create_due_index(schema_editor)


def drop_new_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if _present(schema_editor):
        old_index.drop_due_index(apps, schema_editor)


def restore_old_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if not _present(schema_editor):
        old_index.create_due_index(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("django_taskshed", "0006_run_kwargs")]

    # MySQL cannot run DDL inside a transaction.
    atomic = False
    operations = [
        # Reversed last, after the columns are gone (and SQLite has rebuilt the table).
        migrations.RunPython(migrations.RunPython.noop, restore_old_index, elidable=False),
        migrations.AddField(
            model_name="task",
            name="queue",
            field=models.CharField(
                default="default",
                help_text="Workers started with --queue claim only from their queues.",
                max_length=100,
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="priority",
            field=models.SmallIntegerField(
                default=0, help_text="-100 to 100; among due tasks, higher runs first."
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(("priority__gte", -100), ("priority__lte", 100)),
                name="taskshed_priority_range",
            ),
        ),
        migrations.RunPython(use_new_index, drop_new_index, atomic=False, elidable=False),
    ]
