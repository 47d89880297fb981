"""URLs of the example project: the admin, where the scheduled tasks are listed."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/django_taskshed/task/")),
]
