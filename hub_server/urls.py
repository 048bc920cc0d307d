"""Where a request goes: health probes, the admin, then each app's routes."""

from django.contrib import admin
from django.urls import path

from hub_server import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
]
