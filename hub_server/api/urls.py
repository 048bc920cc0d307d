"""Routes of the native REST API under /api/v1/.

Read routes are wrapped in `catalog.cache.cached_view` (one cache round trip): a warm GET is answered from the stored rendered bytes
before DRF, filtering or serialising run (and so before throttling: a cached page costs about
what /healthz costs). Every route is wrapped in `json_errors`, and any other path is a JSON 404.
"""

from importlib.util import find_spec

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from hub_server.api import views
from hub_server.api.exceptions import api_not_found, json_errors
from hub_server.catalog.cache import cached_view, origin


def origin_and_accept(request) -> str:
    return f"{origin(request)}|{request.headers.get('Accept', '')}"


PAGING = ("page", "page_size", "cursor")


def query_params(view_class) -> set[str]:
    """The query parameters a catalogue view reads: its filters and the paging ones."""
    filterset = getattr(view_class, "filterset_class", None)
    names = set(filterset.base_filters) if filterset is not None else set()
    if getattr(view_class, "pagination_class", None) is not None:
        names.update(PAGING)
    return names


def cached(prefix: str, view_class, vary=origin, params=None):
    params = query_params(view_class) if params is None else params
    return json_errors(cached_view(prefix, vary=vary, params=params)(view_class.as_view()))


urlpatterns = [
    path("", cached("api-root", views.ApiRootView), name="api-root"),
    path("adapters/", cached("adapters", views.AdapterListView), name="adapter-list"),
    path(
        "adapters/<str:org>/<str:name>/",
        cached("adapter", views.AdapterDetailView),
        name="adapter-detail",
    ),
    path("facets/", cached("facets", views.FacetsView), name="facets"),
    path("tasks/", cached("tasks", views.TaskListView), name="task-list"),
    path("subtasks/", cached("subtasks", views.SubtaskListView), name="subtask-list"),
    path(
        "architectures/",
        cached("architectures", views.ArchitectureListView),
        name="architecture-list",
    ),
    path("models/", cached("models", views.ModelListView), name="model-list"),
    path("sync/", json_errors(views.SyncView.as_view()), name="sync"),
    path("sync/runs/", json_errors(views.SyncRunListView.as_view()), name="sync-run-list"),
    path("", include("hub_server.uploads.urls")),
    path(
        "schema/",
        cached(
            "schema",
            SpectacularAPIView,
            vary=origin_and_accept,
            params=("format", "lang", "version"),
        ),
        name="api-schema",
    ),
    # The split view: Swagger UI's start script is a file of its own (`?script`), not inline,
    # so the docs work under the Content-Security-Policy (hub_server/security.py).
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", template_name="api/swagger_ui.html"
        ),
        name="api-docs",
    ),
]

# The download view is built in parallel (hub_server/api/downloads.py); routed once it exists.
if find_spec("hub_server.api.downloads") is not None:
    from hub_server.api import downloads

    urlpatterns.append(
        path(
            "adapters/<str:org>/<str:name>/versions/<str:version>/download",
            downloads.download_version,
            name="adapter-version-download",
        )
    )

urlpatterns.append(re_path(r"^.*$", api_not_found, name="api-not-found"))
