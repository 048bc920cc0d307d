"""Contributor routes under /api/v1/: API tokens and uploads."""

from django.urls import include, path

from hub_server.errors import json_errors
from hub_server.uploads import views

urlpatterns = [
    path("", include("hub_server.accounts.urls")),
    path("uploads/", json_errors(views.UploadListView.as_view()), name="upload-list"),
    path(
        "uploads/<int:upload_id>/",
        json_errors(views.UploadDetailView.as_view()),
        name="upload-detail",
    ),
]
