"""Routes of the native REST API under /api/v1/."""

from django.urls import path

from hub_server.api.downloads import download_version

urlpatterns: list = [
    path(
        "adapters/<str:org>/<str:name>/versions/<str:version>/download",
        download_version,
        name="adapter-version-download",
    ),
]
