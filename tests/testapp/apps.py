"""App config of the app the tests install beside django_taskshed."""

from django.apps import AppConfig


class TestappConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"

    def ready(self) -> None:
        from .receivers import connect

        connect()
