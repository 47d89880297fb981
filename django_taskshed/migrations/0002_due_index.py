"""The index of the due query, made per database.

PostgreSQL and SQLite get a partial index over the tasks that can run, whose condition
matches the query's ``paused = <false> AND failed_at IS NULL`` (see ``models.RUNNABLE``);
MySQL/MariaDB, which has no partial indexes, gets a composite one.
It lives outside ``Meta.indexes`` because Django would skip a partial index on MySQL with
a warning.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

INDEX = "taskshed_due_idx"
TABLE = "django_taskshed_task"


def create_due_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    qn = schema_editor.quote_name
    if schema_editor.connection.vendor == "mysql":
        sql = f"CREATE INDEX {qn(INDEX)} ON {qn(TABLE)} ({qn('paused')}, {qn('failed_at')}, {qn('run_at')})"
    else:
        runnable = "false" if schema_editor.connection.vendor == "postgresql" else "0"
        sql = (
            f"CREATE INDEX {qn(INDEX)} ON {qn(TABLE)} ({qn('run_at')}) "
            f"WHERE {qn('paused')} = {runnable} AND {qn('failed_at')} IS NULL"
        )
    schema_editor.execute(sql)


def drop_due_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    qn = schema_editor.quote_name
    if schema_editor.connection.vendor == "mysql":
        schema_editor.execute(f"DROP INDEX {qn(INDEX)} ON {qn(TABLE)}")
    else:
        schema_editor.execute(f"DROP INDEX {qn(INDEX)}")


class Migration(migrations.Migration):
    dependencies = [("django_taskshed", "0001_initial")]

    # MySQL cannot run DDL inside a transaction.
    atomic = False
    operations = [
        migrations.RunPython(create_due_index, drop_due_index, atomic=False, elidable=False)
    ]
