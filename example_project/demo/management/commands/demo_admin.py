"""``manage.py demo_admin``: make the demo's admin user and check that the task admin answers."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.test import Client
from django.test.utils import setup_test_environment

USERNAME = PASSWORD = "admin"
PAGES = ("/admin/django_taskshed/task/", "/admin/django_taskshed/workerrecord/")


class Command(BaseCommand):
    help = "Create the demo superuser (admin/admin) if missing and fetch the task admin pages."

    def handle(self, *args, **options):
        users = get_user_model().objects
        user = users.filter(username=USERNAME).first()
        if user is None:
            user = users.create_superuser(USERNAME, "admin@example.com", PASSWORD)
            self.stdout.write(f"created superuser {USERNAME!r} (password {PASSWORD!r})")
        setup_test_environment()  # lets the test client read the rendered context
        client = Client()
        client.force_login(user)
        for page in PAGES:
            response = client.get(page)
            if response.status_code != 200:
                raise CommandError(f"{page} answered {response.status_code}")
            rows = response.context["cl"].result_count
            self.stdout.write(f"admin page {page}: 200 OK, {rows} row(s) listed")
