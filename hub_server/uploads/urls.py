"""Contributor routes under /api/v1/: API tokens and uploads."""

from django.urls import include, path

urlpatterns = [
    path("", include("hub_server.accounts.urls")),
]
