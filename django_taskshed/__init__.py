"""django-taskshed: TaskShed's scheduling model as a Django app."""

__version__ = "0.1.0"
