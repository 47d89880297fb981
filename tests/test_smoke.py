"""Smoke test: Django starts with the test settings and the app is installed."""

import os

from django.apps import apps
from django.conf import settings


def test_django_is_set_up_with_the_test_settings():
    assert apps.ready
    assert apps.get_app_config("django_taskshed").name == "django_taskshed"
    assert apps.get_app_config("testapp").name == "tests.testapp"
    assert settings.USE_TZ is True
    assert settings.TIME_ZONE == "Europe/Paris"
    assert settings.TASKSHED == {}


def test_database_and_layer_follow_the_environment():
    engine = settings.DATABASES["default"]["ENGINE"]
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url.startswith(("postgres", "pgsql")):
        assert engine == "django.db.backends.postgresql"
    elif not database_url:
        assert engine == "django.db.backends.sqlite3"
        assert settings.DATABASES["default"]["TEST"]["NAME"].endswith(".sqlite3")
    if os.environ.get("REDIS_URL") and os.environ.get("TASKSHED_TEST_LAYER") != "memory":
        assert layer == "channels_redis.core.RedisChannelLayer"
    else:
        assert layer == "channels.layers.InMemoryChannelLayer"
