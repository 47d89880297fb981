"""Django's Tasks framework on TaskShed's tables and worker (``django_taskshed.backends``)."""
