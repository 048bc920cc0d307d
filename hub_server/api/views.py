"""Views of the REST API: thin. Reads come from `selectors`, the sync request from `webhooks`;
every read view's rendered bytes are cached until the catalogue changes (see urls.py)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.urls import get_script_prefix, reverse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authentication import BasicAuthentication as DrfBasicAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from hub_server.accounts.authentication import BasicAuthentication
from hub_server.api import selectors, serializers
from hub_server.api.pagination import (
    CatalogPageNumberPagination,
    PageOrCursorPagination,
    ReferencePagination,
)
from hub_server.api.webhooks import (
    SIGNATURE_HEADER,
    IsStaffOrSignedWebhook,
    ignored_push_reason,
    queue_hub_sync,
)
from hub_server.catalog import selectors as catalog_selectors
from hub_server.catalog.cache import generation
from hub_server.catalog.filters import (
    AdapterFilter,
    ArchitectureFilter,
    ModelFilter,
    SubtaskFilter,
    TaskFilter,
    reference_ids,
)
from hub_server.errors import api_exception_handler


def errors(*codes: int) -> dict:
    """OpenAPI responses for the JSON errors a view can answer (429: every view is throttled)."""
    return {code: serializers.ErrorSerializer for code in (*codes, 429)}


def hub_url(request) -> str:
    return settings.HUB_PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")


_API_ROOT_PATHS: dict[str, str] = {}


def api_root_url(request) -> str:
    # reverse() depends only on the script prefix; it cost 7% of a cold detail request.
    prefix = get_script_prefix()
    path = _API_ROOT_PATHS.get(prefix)
    if path is None:
        path = _API_ROOT_PATHS[prefix] = reverse("api-root")
    return hub_url(request) + path


_JSON = JSONRenderer()


class ApiViewMixin:
    """JSON only, whatever Accept says (as the cached bytes are), and JSON errors."""

    renderer_classes = [JSONRenderer]
    permission_classes = [AllowAny]

    def get_exception_handler(self):
        return api_exception_handler

    def perform_content_negotiation(self, request, force=False):
        # One renderer: parsing Accept could only end in a 406 that the cache never gives.
        return _JSON, _JSON.media_type


class ApiRootView(ApiViewMixin, APIView):
    @extend_schema(exclude=True)
    def get(self, request):
        root = api_root_url(request)
        names = ["adapters", "facets", "tasks", "subtasks", "architectures", "models", "sync"]
        links = {name: f"{root}{name}/" for name in names}
        links["sync_runs"] = f"{root}sync/runs/"
        links["schema"] = f"{root}schema/"
        links["docs"] = f"{root}docs/"
        return Response(links)


class CatalogListView(ApiViewMixin, generics.ListAPIView):
    filter_backends = [DjangoFilterBackend]
    pagination_class = ReferencePagination

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "api_root": api_root_url(self.request)}


class AdapterListView(CatalogListView):
    """Active adapters, filtered, searched and ordered; page numbers by default, `?cursor=` for
    keyset paging."""

    serializer_class = serializers.AdapterListItemSerializer
    filterset_class = AdapterFilter
    pagination_class = PageOrCursorPagination

    def get_queryset(self):
        return catalog_selectors.active_adapters()

    def as_rows(self, queryset):
        return catalog_selectors.adapter_rows(queryset)

    @extend_schema(responses={200: serializers.AdapterListItemSerializer, **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def list(self, request, *args, **kwargs):
        # Page-numbered lists, searches included, come from the process's search index: the
        # page and the count from memory, the items pre-rendered, no query. While the index is
        # being rebuilt, plain filters run as prepared statements (COUNT + SELECT) and a search
        # goes through AdapterFilter. All three give the same bytes (tested side by side).
        current = getattr(request, "catalog_generation", None) or generation()
        ids = reference_ids(current)
        params = request.query_params
        paginator = CatalogPageNumberPagination()
        indexed = selectors.indexed_adapter_list(params, ids, current)
        if indexed is not None:
            positions = paginator.paginate(request, indexed.positions, indexed.count)
            envelope = paginator.get_paginated_response([]).data
            body = indexed.render(envelope, positions, api_root_url(request))
            return HttpResponse(body, content_type=_JSON.media_type)
        prepared = selectors.prepared_adapter_list(params, ids)
        if prepared is None:
            return super().list(request, *args, **kwargs)
        self.paginator.active = paginator
        rows = paginator.paginate(request, prepared.rows, prepared.count)
        return paginator.get_paginated_response(self.get_serializer(rows, many=True).data)

    def paginate_queryset(self, queryset):
        params = self.request.query_params
        if not (params.get("q") or "").strip() or "cursor" in params:
            return super().paginate_queryset(queryset)
        # A search counts first, then reads its page the way that count makes cheap: a few
        # matches are found through the trigram index and sorted; many are met soonest by
        # walking the sort order's index. PostgreSQL cannot tell which from a LIKE pattern, and
        # walked the index past every row for a term that matched 48 (287 ms, 3 ms sorted).
        total = queryset.order_by().count()
        if total <= selectors.SEARCH_SORT_MATCHES:
            queryset = selectors.sorted_without_index(queryset)
        rows = catalog_selectors.adapter_rows(queryset)
        paginator = self.paginator.active = CatalogPageNumberPagination()
        return paginator.paginate(
            self.request, lambda offset, limit: list(rows[offset : offset + limit]), lambda: total
        )


class AdapterDetailView(ApiViewMixin, APIView):
    @extend_schema(
        responses={
            200: serializers.AdapterDetailSerializer,
            **errors(404),
            410: OpenApiResponse(serializers.ErrorSerializer, description="withdrawn"),
        }
    )
    def get(self, request, org: str, name: str):
        detail = catalog_selectors.adapter_detail(
            org, name, api_root_url(request), hub_url(request)
        )
        return Response(serializers.AdapterDetailSerializer(detail).data)


class FacetsView(ApiViewMixin, generics.GenericAPIView):
    """Counts per value of each adapter filter; each facet applies every other filter."""

    filter_backends = [DjangoFilterBackend]
    filterset_class = AdapterFilter
    pagination_class = None

    def get_queryset(self):
        return catalog_selectors.active_adapters()

    @extend_schema(filters=True, responses={200: serializers.FacetsSerializer, **errors(400)})
    def get(self, request):
        facets = catalog_selectors.adapter_facets(request.query_params, request)
        return Response(serializers.FacetsSerializer(facets).data)


class TaskListView(CatalogListView):
    serializer_class = serializers.TaskSerializer
    filterset_class = TaskFilter

    def get_queryset(self):
        return selectors.task_rows()

    @extend_schema(responses={200: serializers.TaskSerializer, **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SubtaskListView(CatalogListView):
    serializer_class = serializers.SubtaskSerializer
    filterset_class = SubtaskFilter

    def get_queryset(self):
        return selectors.subtask_rows()

    @extend_schema(responses={200: serializers.SubtaskSerializer, **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ArchitectureListView(CatalogListView):
    serializer_class = serializers.ArchitectureSerializer
    filterset_class = ArchitectureFilter

    def get_queryset(self):
        return selectors.architecture_rows()

    @extend_schema(responses={200: serializers.ArchitectureSerializer, **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ModelListView(CatalogListView):
    """Distinct base models (model_name, model_type) of active adapters, with adapter counts."""

    serializer_class = serializers.ModelSerializer
    filterset_class = ModelFilter

    def get_queryset(self):
        return selectors.model_rows()

    @extend_schema(responses={200: serializers.ModelSerializer, **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SyncRunListView(ApiViewMixin, generics.ListAPIView):
    """Sync runs, newest first, with counts and per-file errors. Public: nothing here is secret
    (credentials in a source URL are removed). Not cached: a no-op run changes no catalogue."""

    serializer_class = serializers.SyncRunSerializer
    pagination_class = CatalogPageNumberPagination

    def get_queryset(self):
        return selectors.sync_runs()

    @extend_schema(responses={200: serializers.SyncRunSerializer, **errors(404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SyncView(ApiViewMixin, APIView):
    """Queue a sync of the Hub repository: staff users, or a push webhook signed with
    HMAC-SHA256 of the raw body (`X-Hub-Signature-256: sha256=<hex>`, secret HUB_WEBHOOK_SECRET)."""

    # The configured ones (API tokens, sessions) plus Basic, for scripts of staff users.
    authentication_classes = [
        *[
            c
            for c in api_settings.DEFAULT_AUTHENTICATION_CLASSES
            if not issubclass(c, DrfBasicAuthentication)
        ],
        BasicAuthentication,
    ]
    permission_classes = [IsStaffOrSignedWebhook]

    @extend_schema(
        request=serializers.SyncRequestSerializer,
        parameters=[
            OpenApiParameter(
                SIGNATURE_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="sha256=<hex HMAC-SHA256 of the body> for webhooks",
            )
        ],
        responses={
            202: serializers.SyncQueuedSerializer,
            200: OpenApiResponse(serializers.SyncIgnoredSerializer, description="ping, or a push to another branch"),
            **errors(400, 401, 403),
        },
    )  # fmt: skip
    def post(self, request):
        full = False
        if request.signed_webhook:
            reason = ignored_push_reason(request.body, request.headers.get("X-GitHub-Event", ""))
            if reason:
                return Response({"detail": reason})
        else:
            body = serializers.SyncRequestSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            full = body.validated_data["full"]
        queued = queue_hub_sync(full=full)
        return Response(
            {
                "detail": "sync queued",
                "task_id": queued.task_id,
                "run_id": queued.run_id,
                "runs_url": api_root_url(request) + "sync/runs/",
            },
            status=status.HTTP_202_ACCEPTED,
        )
