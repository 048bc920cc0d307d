"""Routes of the pages (http-api.md section 4); included last by hub_server/urls.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import contributor_views as contrib
from frontend import views

urlpatterns = [
    path("", views.home, name="home"),
    path("explore/", views.explore, name="explore"),
    path("explore/<str:task>/<str:subtask>/", views.subtask, name="subtask"),
    path("adapters/", views.adapter_list, name="adapter-list-page"),
    path("adapters/<str:org>/<str:name>/", views.adapter_detail, name="adapter-page"),
    path("search/", views.search, name="search"),
    path("upload/", contrib.upload, name="upload"),
    path("uploads/<int:upload_id>/", contrib.upload_status, name="upload-status"),
    path(
        "uploads/<int:upload_id>/status.json",
        contrib.upload_status_json,
        name="upload-status-json",
    ),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/tokens/", contrib.tokens, name="tokens"),
    path("accounts/tokens/<int:token_id>/revoke/", contrib.revoke_token, name="revoke-token"),
    path("accounts/adapters/", contrib.my_adapters, name="my-adapters"),
]
