"""Cron tasks (cron, timezone and the DST policy) and schedules declared in code.

SQLite rebuilds the table to change the constraints, which drops the due index made by 0002
outside ``Meta.indexes``: it is made again after the rebuild, either way.
"""

import datetime
import importlib

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

due_index = importlib.import_module("django_taskshed.migrations.0002_due_index")


def restore_due_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        present = connection.introspection.get_constraints(cursor, due_index.TABLE)
    if due_index.INDEX not in present:
        due_index.create_due_index(apps, schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ('django_taskshed', '0002_due_index'),
    ]

    operations = [
        # Reversed last: unapplying this migration rebuilds the table on SQLite too.
        migrations.RunPython(migrations.RunPython.noop, restore_due_index, elidable=False),
        migrations.RemoveConstraint(
            model_name='task',
            name='taskshed_run_type_valid',
        ),
        migrations.RemoveConstraint(
            model_name='task',
            name='taskshed_recurring_has_interval',
        ),
        migrations.AddField(
            model_name='task',
            name='cron',
            field=models.CharField(blank=True, default='', help_text='Cron tasks: five fields ("30 2 * * *") or a macro such as @daily.', max_length=200),
        ),
        migrations.AddField(
            model_name='task',
            name='declared_in_code',
            field=models.BooleanField(default=False, help_text="Kept in step with TASKSHED['SCHEDULES']; edit it there."),
        ),
        migrations.AddField(
            model_name='task',
            name='on_ambiguous',
            field=models.CharField(choices=[('first', 'first: the earlier of the two instants'), ('second', 'second: the later of the two instants'), ('both', 'both: run twice')], default='first', max_length=8),
        ),
        migrations.AddField(
            model_name='task',
            name='on_nonexistent',
            field=models.CharField(choices=[('shift', 'shift: run at the first instant after the gap'), ('skip', 'skip: no run that day')], default='shift', max_length=8),
        ),
        migrations.AddField(
            model_name='task',
            name='timezone',
            field=models.CharField(blank=True, default='', help_text='Cron tasks: the IANA time zone the expression is read in.', max_length=64),
        ),
        migrations.AlterField(
            model_name='task',
            name='run_type',
            field=models.CharField(choices=[('once', 'once'), ('recurring', 'recurring (interval)'), ('cron', 'cron')], default='once', max_length=10),
        ),
        migrations.AddConstraint(
            model_name='task',
            constraint=models.CheckConstraint(condition=models.Q(('run_type__in', ['once', 'recurring', 'cron'])), name='taskshed_run_type_valid'),
        ),
        migrations.AddConstraint(
            model_name='task',
            constraint=models.CheckConstraint(condition=models.Q(('run_type', 'once'), models.Q(('cron', ''), ('interval__gt', datetime.timedelta(0)), ('interval__isnull', False), ('run_type', 'recurring')), models.Q(('interval__isnull', True), ('run_type', 'cron'), models.Q(('cron', ''), _negated=True), models.Q(('timezone', ''), _negated=True)), _connector='OR'), name='taskshed_schedule_fields'),
        ),
        migrations.RunPython(restore_due_index, migrations.RunPython.noop, elidable=False),
    ]
