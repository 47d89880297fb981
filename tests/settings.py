"""Django settings for the test suite, chosen by environment.

``DATABASE_URL`` (parsed by dj-database-url) selects the database; unset means an SQLite
file. ``REDIS_URL`` selects channels_redis (unless ``TASKSHED_TEST_LAYER=memory``); unset
means the in-memory channel layer.
The SQLite file lives in ``TASKSHED_TEST_TMPDIR`` (created once, then inherited through the
environment) so that ``runtaskworker`` subprocesses started by the tests share it.
On a database server, ``TASKSHED_TEST_DATABASE`` names the test database (Django's default is
``test_`` + the database name): tox gives each environment its own, so that environments can
run in parallel against one server.
"""

import json
import os
import tempfile
import uuid
from importlib.util import find_spec
from pathlib import Path

import dj_database_url

SECRET_KEY = "django-taskshed-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the live server serves the admin's and the app's CSS
    "channels",
    "django_taskshed",
    "tests.testapp",
]

# Django's Tasks framework: built in from Django 6.0, the django-tasks backport on 5.2 (whose
# app wires its checks and signals). Tasks go to this app's backend.
TASKS_FRAMEWORK = find_spec("django.tasks") is not None or find_spec("django_tasks") is not None
if TASKS_FRAMEWORK and find_spec("django.tasks") is None:
    INSTALLED_APPS.append("django_tasks")
TASKS = {
    "default": {
        "BACKEND": "django_taskshed.backends.TaskShedBackend",
        "QUEUES": ["default", "mail", "reports", "batch"],
    }
}

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

# Test users' passwords need no strength: PBKDF2's million rounds cost 0.3 s per user here.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

USE_TZ = True
TIME_ZONE = "Europe/Paris"  # not UTC, so tests of naive datetimes mean something
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

# True in the process that made the directory (conftest removes it at the end of the run).
TEST_TMPDIR_OWNED = "TASKSHED_TEST_TMPDIR" not in os.environ
TEST_TMPDIR = Path(
    os.environ.get("TASKSHED_TEST_TMPDIR") or tempfile.mkdtemp(prefix="taskshed-tests-")
)
os.environ["TASKSHED_TEST_TMPDIR"] = str(TEST_TMPDIR)
TEST_TMPDIR.mkdir(parents=True, exist_ok=True)


def _database_from_env() -> dict:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(TEST_TMPDIR / "db.sqlite3"),
            "TEST": {"NAME": str(TEST_TMPDIR / "test_db.sqlite3")},
        }
    database = dj_database_url.parse(url)
    if test_name := os.environ.get("TASKSHED_TEST_DATABASE"):
        # Letters, digits and underscores only (tox env names have dashes).
        test_name = "".join(c if c.isalnum() else "_" for c in test_name)
        database.setdefault("TEST", {})["NAME"] = test_name
    return database


def _tune_database(database: dict) -> dict:
    engine = database["ENGINE"]
    options = database.setdefault("OPTIONS", {})
    if engine.endswith("sqlite3"):
        # Worker subprocesses write to the same file: wait for locks instead of failing.
        options.setdefault("timeout", 20)
        options.setdefault("transaction_mode", "IMMEDIATE")
        if os.environ.get("TASKSHED_TEST_SQLITE_WAL"):  # WAL mode (docs/guides/deployment.md)
            options.setdefault("init_command", "PRAGMA journal_mode=WAL")
    elif engine.endswith("mysql"):
        try:  # PyMySQL stands in for mysqlclient, which needs C headers to build.
            import pymysql

            pymysql.install_as_MySQLdb()
            # PyMySQL 1.2 tries TLS on every connection unless told not to, and building its
            # TLS context costs ~50 ms (loading the CA bundle): a test server on this machine
            # speaks plain TCP.
            if database.get("HOST") in ("127.0.0.1", "localhost", "::1"):
                options.setdefault("ssl_disabled", True)
        except ImportError:
            pass
        options.setdefault("charset", "utf8mb4")
        database.setdefault("TEST", {}).setdefault("CHARSET", "utf8mb4")
    return database


DATABASES = {"default": _tune_database(_database_from_env())}

REDIS_URL = os.environ.get("REDIS_URL") or None
# The layer the suite runs on: channels_redis when REDIS_URL is set, unless
# TASKSHED_TEST_LAYER=memory keeps the in-memory one (Redis tests still get REDIS_URL).
if REDIS_URL and os.environ.get("TASKSHED_TEST_LAYER", "redis") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                # One prefix per test run (inherited by subprocesses) so runs that share a
                # Redis server do not see each other's groups.
                "prefix": os.environ.setdefault(
                    "TASKSHED_TEST_LAYER_PREFIX", f"taskshed-test-{uuid.uuid4().hex[:8]}"
                ),
            },
        },
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Empty for the suite (tests use override_settings); ``runtaskworker`` subprocesses started by
# tests/workerprocs.py receive theirs as JSON in TASKSHED_TEST_SETTINGS.
TASKSHED: dict = json.loads(os.environ.get("TASKSHED_TEST_SETTINGS") or "{}")
