"""The ``run_at`` index without ``task_id``: cheaper to keep up as due tasks come and go.

``taskshed_run_at_idx`` was ``(run_at, task_id)``. Tasks scheduled for one moment (a bulk add,
a drain) share a ``run_at``, so their entries were ordered by their ids, which are random: a
worker deleting a batch of finished tasks touched a page of that index per task, and on SQLite
(rollback journal) each touched page is written twice per commit. Keyed on ``run_at`` alone,
entries of one moment follow the row order (SQLite's rowid; PostgreSQL's heap order), so a
batch's entries share pages. Measured (``benchmarks/compare.py`` against ``41999f1``, 100,000
due tasks, ratios of tasks/s): SQLite 1.05x before this migration, 1.29x after; PostgreSQL
1.40x, 1.62x.

The claim's plans are unchanged (``tests/test_claim_plans.py``). A listing in the model's order
(``run_at, task_id``: the admin, ``fetch_tasks``) reads this index and sorts ties by id
(PostgreSQL's incremental sort, SQLite's sort of the right part): as before when times differ;
a listing of many tasks with one ``run_at`` sorts them (about 15 ms for 100,000 here, where the
old index read 100 of them). MySQL/MariaDB keep the primary key in every secondary index, so
there the index is the same as before.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_taskshed", "0010_cheaper_claims"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="taskshed_run_at_idx",
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["run_at"], name="taskshed_run_at_idx"),
        ),
    ]
