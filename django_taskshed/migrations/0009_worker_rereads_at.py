from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_taskshed', '0008_run_list_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='workerrecord',
            name='rereads_at',
            field=models.DateTimeField(blank=True, help_text='The worker reads the schedule again by then anyway: a hint of a task due then or later need not reach it. Empty: every hint is sent.', null=True),
        ),
    ]
