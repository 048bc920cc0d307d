"""Reads of the pages. Filters, search and facet counts are the REST API's (hub_server.api), so a
page and its `/api/v1/adapters/?...` twin always agree; this module shapes them for templates.

Every read is a fixed number of queries whatever the page size (tests/frontend/test_queries.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db.models import Count, F, OuterRef, Q, Subquery
from django.http import QueryDict

from hub_server.api import selectors as api
from hub_server.api.filters import AdapterFilter
from hub_server.catalog.models import Adapter, AdapterVersion, Subtask, Task

PAGE_SIZE = 20
ACTIVE = Adapter.Status.ACTIVE

# Sort choices of the list: (parameter, label, ORDER BY). Score is the default version's.
SORTS = [
    ("-downloads", "Most downloaded", ("-downloads", "id")),
    ("-updated", "Recently updated", ("-updated_at", "id")),
    ("name", "Name", ("name", "id")),
    ("-score", "Best score", None),
]
DEFAULT_SORT = "-downloads"

# The facets a list shows, in order: (parameter, heading).
LIST_FACETS = [
    ("type", "Adapter type"),
    ("task", "Task"),
    ("subtask", "Subtask"),
    ("model_type", "Model type"),
    ("model_name", "Model"),
    ("architecture", "Architecture"),
    ("has_head", "Prediction head"),
    ("org", "Organisation"),
]
SUBTASK_FACETS = [f for f in LIST_FACETS if f[0] not in {"type", "task", "subtask"}]
FILTER_KEYS = {key for key, _ in LIST_FACETS} | {"config_id", "q"}
HEAD_LABELS = {"true": "With head", "false": "Adapter only"}


# -- home and explore -----------------------------------------------------------------------


def hub_counts() -> dict:
    active = Adapter.objects.filter(status=ACTIVE)
    task_counts = dict(
        Task.objects.values_list("type_id").annotate(n=Count("id")).values_list("type_id", "n")
    )
    return {
        "adapters": active.count(),
        "tasks": task_counts.get("text_task", 0),
        "languages": task_counts.get("text_lang", 0),
        "models": active.values("model_name").distinct().count(),
    }


def recent_adapters(limit: int = 6) -> list[dict]:
    return list(
        _list_rows(Adapter.objects.filter(status=ACTIVE)).order_by("-created_at", "-id")[:limit]
    )


def popular_subtasks(limit: int = 8) -> list[dict]:
    return list(
        Subtask.objects.values("task__task", "task__displayname", "subtask", "displayname")
        .annotate(n=Count("adapters", filter=Q(adapters__status=ACTIVE)))
        .filter(n__gt=0, task__type_id="text_task")
        .order_by("-n", "task__task", "subtask")[:limit]
    )


def explore_sections(query: str = "") -> list[dict]:
    """Tasks (text_task) and languages (text_lang) as cards, each with its subtasks and counts.

    `query` marks the cards whose task or one of whose subtasks matches (the no-JS path of the
    filter-as-you-type box); the others are rendered hidden, so the browser can show them again.
    """
    tasks = list(
        Task.objects.values("id", "type_id", "task", "displayname", "description")
        .annotate(n=Count("adapters", filter=Q(adapters__status=ACTIVE)))
        .order_by("displayname", "task")
    )
    subtasks: dict[int, list[dict]] = {}
    for row in (
        Subtask.objects.values("task_id", "subtask", "displayname", "language")
        .annotate(n=Count("adapters", filter=Q(adapters__status=ACTIVE)))
        .order_by("-n", "subtask")
    ):
        subtasks.setdefault(row["task_id"], []).append(row)
    needle = query.strip().lower()
    sections = {
        "text_task": {"id": "tasks", "title": "Tasks", "cards": []},
        "text_lang": {"id": "languages", "title": "Languages", "cards": []},
    }
    for task in tasks:
        task["subtasks"] = subtasks.get(task["id"], [])
        task["search"] = " ".join(
            [task["task"], task["displayname"]]
            + [f"{s['subtask']} {s['displayname']} {s['language']}" for s in task["subtasks"]]
        ).lower()
        task["match"] = not needle or needle in task["search"]
        section = sections.get(task["type_id"])
        if section is None:
            section = sections.setdefault(
                task["type_id"], {"id": task["type_id"], "title": task["type_id"], "cards": []}
            )
        section["cards"].append(task)
    for section in sections.values():
        # Cards with adapters first: an empty card is a promise, not a result.
        section["cards"].sort(key=lambda t: (t["n"] == 0, t["displayname"].lower()))
        section["shown"] = sum(1 for t in section["cards"] if t["match"])
    return list(sections.values())


def find_subtask(task: str, subtask: str) -> Subtask | None:
    return (
        Subtask.objects.select_related("task", "task__type")
        .filter(task__task=task, subtask=subtask)
        .first()
    )


def search_subtasks(query: str, limit: int = 12) -> list[dict]:
    term = query.strip().lstrip("@")
    if not term:
        return []
    return list(
        Subtask.objects.filter(
            Q(subtask__icontains=term)
            | Q(displayname__icontains=term)
            | Q(task__task__icontains=term)
            | Q(task__displayname__icontains=term)
        )
        .values("task__task", "task__displayname", "subtask", "displayname", "task__type_id")
        .annotate(n=Count("adapters", filter=Q(adapters__status=ACTIVE)))
        .order_by("-n", "task__task", "subtask")[:limit]
    )


# -- adapter lists --------------------------------------------------------------------------


@dataclass
class AdapterListing:
    rows: list[dict]
    total: int
    page: int
    pages: int
    sort: str
    filters: dict[str, str]
    facets: list[dict] = field(default_factory=list)
    query: str = ""

    @property
    def start(self) -> int:
        return (self.page - 1) * PAGE_SIZE + 1 if self.total else 0

    @property
    def end(self) -> int:
        return min(self.page * PAGE_SIZE, self.total)


def clean_filters(params: QueryDict, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """The list's filter values from a query string; unknown keys and bad values are dropped, so
    a hand-edited URL shows a wider list rather than an error."""
    filters = {
        key: params.get(key, "").strip()
        for key in FILTER_KEYS
        if params.get(key, "").strip() and key not in (fixed or {})
    }
    if filters.get("has_head") not in (None, "true", "false"):
        filters.pop("has_head")
    return filters


def adapter_listing(
    params: QueryDict,
    *,
    fixed: dict[str, str] | None = None,
    facet_fields=LIST_FACETS,
) -> AdapterListing:
    """One page of adapters under the filters of `params` (plus `fixed` ones, e.g. a subtask
    page's task and subtask), with facet counts, sorted by `sort`, paginated by `page`."""
    filters = clean_filters(params, fixed)
    sort = params.get("sort", DEFAULT_SORT)
    if sort not in {s[0] for s in SORTS}:
        sort = DEFAULT_SORT
    effective = QueryDict(mutable=True)
    effective.update({**filters, **(fixed or {})})

    counted = api.adapter_facets(effective)
    total = counted["total"]
    pages = max(1, math.ceil(total / PAGE_SIZE))
    try:
        page = min(max(1, int(params.get("page", 1))), pages)
    except ValueError:
        page = 1

    queryset = AdapterFilter(effective, queryset=api.active_adapters()).qs
    rows = _list_rows(queryset)
    order = dict((s[0], s[2]) for s in SORTS)[sort]
    if order is None:
        rows = rows.order_by(F("score").desc(nulls_last=True), "-downloads", "id")
    else:
        rows = rows.order_by(*order)
    offset = (page - 1) * PAGE_SIZE
    listing = AdapterListing(
        rows=list(rows[offset : offset + PAGE_SIZE]),
        total=total,
        page=page,
        pages=pages,
        sort=sort,
        filters=filters,
        query=filters.get("q", ""),
    )
    listing.facets = _facet_groups(counted["facets"], facet_fields, filters, sort)
    return listing


def _list_rows(queryset):
    default_score = AdapterVersion.objects.filter(
        adapter=OuterRef("pk"), version=OuterRef("default_version")
    ).values("score")[:1]
    return queryset.annotate(score=Subquery(default_score)).values(
        "org",
        "name",
        "type_id",
        "task__task",
        "task__displayname",
        "subtask__subtask",
        "subtask__displayname",
        "model_type",
        "model_name",
        "architecture__name",
        "has_head",
        "author",
        "description",
        "downloads",
        "updated_at",
        "score",
    )


def _facet_groups(counted: dict, fields, filters: dict[str, str], sort: str) -> list[dict]:
    """Each facet with its values: a count, whether chosen, and the query string that toggles it
    (every other filter and the sort kept, the page reset)."""
    groups = []
    for key, title in fields:
        chosen = filters.get(key, "")
        values = []
        for item in counted.get(key, []):
            value = item["value"]
            label = HEAD_LABELS.get(value, item["label"]) if key == "has_head" else item["label"]
            values.append(
                {
                    "value": value,
                    "label": label,
                    "count": item["count"],
                    "selected": value == chosen,
                    "query": toggle_query(filters, sort, key, value),
                }
            )
        if chosen and not any(v["selected"] for v in values):
            values.insert(
                0,
                {
                    "value": chosen,
                    "label": chosen,
                    "count": 0,
                    "selected": True,
                    "query": toggle_query(filters, sort, key, chosen),
                },
            )
        if values:
            groups.append(
                {
                    "key": key,
                    "title": title,
                    "values": values,
                    "chosen": chosen,
                    "clear": toggle_query(filters, sort, key, chosen) if chosen else "",
                }
            )
    return groups


def toggle_query(filters: dict[str, str], sort: str, key: str, value: str) -> str:
    """`?…` with `key=value` set, or removed when it is already the chosen value."""
    new = dict(filters)
    if new.get(key) == value:
        new.pop(key)
    else:
        new[key] = value
    return list_query(new, sort)


def list_query(filters: dict[str, str], sort: str, page: int | None = None) -> str:
    params = [(k, filters[k]) for k in sorted(filters)]
    if sort != DEFAULT_SORT:
        params.append(("sort", sort))
    if page and page > 1:
        params.append(("page", str(page)))
    return "?" + urlencode(params) if params else "?"


def adapter_detail(org: str, name: str, api_root: str, hub_url: str) -> dict:
    """The REST API's detail of one adapter (raises its NotFound / Gone), plus what only the
    page shows: the architecture's and the subtask's citation, and the card's overrides."""
    detail = api.adapter_detail(org, name, api_root=api_root, hub_url=hub_url)
    extra = (
        Adapter.objects.filter(org=org, name=name)
        .values(
            "config_overrides",
            "architecture__citation",
            "architecture__description",
            "subtask__citation",
            "subtask__url",
            "subtask__description",
            "task__type_id",
        )
        .first()
    )
    detail.update(extra or {})
    return detail
