"""Page views: thin. Reads come from `frontend.selectors`; anonymous pages are cached as rendered
bytes until the catalogue changes (hub_server.catalog.cache), signed-in pages are rendered fresh.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from rest_framework.exceptions import NotFound

from frontend import selectors
from frontend.sizes import size_comparison
from hub_server.catalog.cache import cached_view, origin
from hub_server.catalog.selectors import Gone

# The query parameters of a listing page: its filters, the sort and the page number.
LISTING_PARAMS = (*selectors.FILTER_KEYS, "sort", "page")


def page_cache(prefix: str, params=()):
    """Serve anonymous GETs from the catalogue cache; signed-in users get a fresh page (their
    header and CSRF token are theirs alone). Browsers revalidate with the ETag every time.
    `params`: the query parameters the page reads (the cache keys hold only these)."""

    def decorator(view):
        # Pages hold absolute URLs (the load snippets): the cache varies by origin.
        cached = cached_view(f"page:{prefix}", vary=origin, params=params)(view)

        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.user.is_authenticated:
                response = view(request, *args, **kwargs)
                response["Cache-Control"] = "private, no-cache"
                return response
            return cached(request, *args, **kwargs)

        return wrapper

    return decorator


def _render(request, template: str, context: dict, status: int = 200):
    response = render(request, template, context, status=status)
    response["Cache-Control"] = "no-cache"
    return response


def hub_url(request) -> str:
    return settings.HUB_PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")


@page_cache("home")
def home(request):
    return _render(
        request,
        "frontend/home.html",
        {
            "counts": selectors.hub_counts(),
            "recent": selectors.recent_adapters(),
            "popular": selectors.popular_subtasks(),
        },
    )


@page_cache("explore", params=("q",))
def explore(request):
    query = request.GET.get("q", "").strip()
    return _render(
        request,
        "frontend/explore.html",
        {"sections": selectors.explore_sections(query), "query": query},
    )


@page_cache("subtask", params=LISTING_PARAMS)
def subtask(request, task: str, subtask: str):
    found = selectors.find_subtask(task, subtask)
    if found is None:
        raise Http404(f"No subtask {task}/{subtask}.")
    listing = selectors.adapter_listing(
        request.GET,
        fixed={"task": found.task.task, "subtask": found.subtask},
        facet_fields=selectors.SUBTASK_FACETS,
    )
    return _render(
        request,
        "frontend/subtask.html",
        {"subtask": found, "task": found.task, "listing": listing, "sorts": selectors.SORTS},
    )


@page_cache("adapters", params=LISTING_PARAMS)
def adapter_list(request):
    listing = selectors.adapter_listing(request.GET)
    return _render(
        request,
        "frontend/adapter_list.html",
        {"listing": listing, "sorts": selectors.SORTS},
    )


@page_cache("search", params=LISTING_PARAMS)
def search(request):
    query = request.GET.get("q", "").strip()
    context = {"query": query, "sorts": selectors.SORTS}
    if query:
        context["listing"] = selectors.adapter_listing(request.GET)
        context["subtasks"] = selectors.search_subtasks(query)
    else:
        context["popular"] = selectors.popular_subtasks(12)
    return _render(request, "frontend/search.html", context)


@page_cache("adapter")
def adapter_detail(request, org: str, name: str):
    base = hub_url(request)
    try:
        # Relative API root: the page's download links are paths on this host.
        detail = selectors.adapter_detail(org, name, reverse("api-root"), base)
    except NotFound as exc:
        raise Http404(str(exc.detail)) from exc
    except Gone:
        return _render(
            request, "frontend/adapter_gone.html", {"org": org, "name": name}, status=410
        )
    default = next((v for v in detail["versions"] if v["is_default"]), None)
    chart = size_comparison(
        detail["model_name"],
        detail["config"],
        detail["hidden_size"],
        default["size"] if default else None,
    )
    hosted = any(v["file_status"] == "hosted" for v in detail["versions"])
    return _render(
        request,
        "frontend/adapter_detail.html",
        {
            "a": detail,
            "chart": chart,
            "hosted": hosted,
            "hub_url": base,
            "hf_snippet": hf_snippet(base, detail) if hosted else "",
            "overridden": set(detail.get("config_overrides") or {}) - {"using"},
        },
    )


def hf_snippet(base: str, detail: dict) -> str:
    return (
        f"# Point adapters at this hub's Hugging Face endpoint: export HF_ENDPOINT={base}/hf\n"
        "from adapters import AutoAdapterModel\n"
        "\n"
        f'model = AutoAdapterModel.from_pretrained("{detail["model_name"]}")\n'
        f'adapter_name = model.load_adapter("{detail["org"]}/{detail["name"]}")\n'
        "model.set_active_adapters(adapter_name)\n"
    )
