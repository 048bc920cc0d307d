"""Where a request goes: health probes, the admin, the REST API, the legacy index, /hf/, pages."""

from django.contrib import admin
from django.urls import include, path

from hub_server import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("hub_server.api.urls")),
    path("dist/v2/", include("hub_server.api.dist_urls")),
    path("hf/", include("hub_server.api.hf_urls")),
    path("", include("frontend.urls")),
]
