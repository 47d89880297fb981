"""A claim that writes no index entry: on PostgreSQL, drop two redundant indexes and leave room
on each page of the task table for the claim's new row versions.

Django gives every indexed ``varchar`` column on PostgreSQL a second index with
``varchar_pattern_ops``, for ``LIKE 'prefix%'`` queries: ``task_id`` (the primary key) and
``group_id`` have one each. Nothing here runs such a query (the admin's search is
``icontains``, which no btree index serves), yet every row version that is not a HOT
(heap-only) update writes an entry into each. This migration drops both.

A claim changes only columns that no index holds (the lease, the attempts, ``abandoned_by``),
so PostgreSQL can write the new row version on the same page without touching any index (a
HOT update), but only where the page has room. Rows are inserted into full pages
(``fillfactor`` 100), so most claims used to move their rows to another page and write an
entry into every index. ``fillfactor`` 70 keeps 30 % of each page free for them; it applies to
pages written from now on (a ``VACUUM FULL`` rewrites the old ones).

SQLite and MySQL/MariaDB have neither the extra indexes nor a fillfactor: nothing to do there.
Django's migration state never knew of the ``_like`` indexes and is unchanged. Later
``AlterField`` operations do not bring them back: Django makes them when an index is added to a
column or its type changes from ``varchar``, which would be a new migration's business.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

TABLE = "django_taskshed_task"
# Column -> the name Django gave its index (migration 0001; a hash of table and column).
LIKE_INDEXES = {
    "task_id": "django_taskshed_task_task_id_33ec594b_like",
    "group_id": "django_taskshed_task_group_id_42a96df3_like",
}
FILLFACTOR = 70


def like_indexes(schema_editor: BaseDatabaseSchemaEditor) -> list[str]:
    """The names of the task table's ``varchar_pattern_ops`` indexes on those columns."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_opclass o ON o.oid = x.indclass[0] JOIN pg_attribute a"
            " ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
            " WHERE x.indrelid = %s::regclass AND x.indnatts = 1"
            " AND o.opcname = 'varchar_pattern_ops' AND a.attname = ANY(%s)",
            [TABLE, list(LIKE_INDEXES)],
        )
        return [name for (name,) in cursor.fetchall()]


def forwards(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    qn = schema_editor.quote_name
    for name in like_indexes(schema_editor):
        schema_editor.execute(f"DROP INDEX IF EXISTS {qn(name)}")
    schema_editor.execute(f"ALTER TABLE {qn(TABLE)} SET (fillfactor = {FILLFACTOR})")


def backwards(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    qn = schema_editor.quote_name
    schema_editor.execute(f"ALTER TABLE {qn(TABLE)} RESET (fillfactor)")
    if like_indexes(schema_editor):
        return
    for column, name in LIKE_INDEXES.items():  # as Django made them
        schema_editor.execute(
            f"CREATE INDEX {qn(name)} ON {qn(TABLE)} ({qn(column)} varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    dependencies = [("django_taskshed", "0009_worker_rereads_at")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
