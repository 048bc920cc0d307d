"""Reads of the pages. Filters, search, facet counts and the detail are the catalogue's reads the
REST API uses too (hub_server.catalog.filters, hub_server.catalog.selectors), so a page and its
`/api/v1/adapters/?...` twin always agree; this module shapes them for templates.

Every read is a fixed number of queries whatever the page size (tests/frontend/test_queries.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from django.db.models import Count, F, OuterRef, Q, Subquery
from django.http import QueryDict
from django.urls import reverse

from hub_server.catalog import selectors as catalog
from hub_server.catalog.filters import AdapterFilter
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
    explore = reverse("explore")
    for task in tasks:
        task["subtasks"] = subtasks.get(task["id"], [])
        for sub in task["subtasks"]:
            # Built here, not with {% url %} per link: reversing ~200 URLs was half the render.
            sub["url"] = (
                f"{explore}{quote(task['task'], safe='')}/{quote(sub['subtask'], safe='')}/"
            )
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


# Up to this many adapters under the base filters (search, a subtask page's task and subtask),
# a listing is one query: rows are filtered, counted and sorted here. Beyond it (a catalogue of
# tens of thousands), the database counts the facets (the REST API's adapter_facets).
IN_MEMORY_LIMIT = 5000
BASE_KEYS = {"q"}


def adapter_listing(
    params: QueryDict,
    *,
    fixed: dict[str, str] | None = None,
    facet_fields=LIST_FACETS,
) -> AdapterListing:
    """One page of adapters under the filters of `params` (plus `fixed` ones, e.g. a subtask
    page's task and subtask), with facet counts, sorted by `sort`, paginated by `page`.

    Facets count as `/api/v1/facets/` does: each facet's values under every OTHER filter, so a
    chosen value's siblings keep their counts.
    """
    filters = clean_filters(params, fixed)
    sort = params.get("sort", DEFAULT_SORT)
    if sort not in {s[0] for s in SORTS}:
        sort = DEFAULT_SORT
    base = QueryDict(mutable=True)
    base.update({**{k: v for k, v in filters.items() if k in BASE_KEYS}, **(fixed or {})})
    candidates = list(
        _list_rows(AdapterFilter(base, queryset=catalog.active_adapters()).qs.order_by())[
            : IN_MEMORY_LIMIT + 1
        ]
    )
    if len(candidates) > IN_MEMORY_LIMIT:
        return _database_listing(params, filters, fixed, sort, facet_fields)

    chosen = {k: v for k, v in filters.items() if k not in BASE_KEYS and k in FACET_FIELDS}
    matching = [row for row in candidates if _matches(row, chosen)]
    matching.sort(key=_SORT_KEYS[sort])
    counted = {}
    for key, _ in facet_fields:
        others = {k: v for k, v in chosen.items() if k != key}
        counted[key] = _count_values((row for row in candidates if _matches(row, others)), key)
    total = len(matching)
    page, pages = _page(params, total)
    offset = (page - 1) * PAGE_SIZE
    listing = AdapterListing(
        rows=matching[offset : offset + PAGE_SIZE],
        total=total,
        page=page,
        pages=pages,
        sort=sort,
        filters=filters,
        query=filters.get("q", ""),
    )
    listing.facets = _facet_groups(counted, facet_fields, filters, sort)
    return listing


# facet -> (the row's value field, its label field)
FACET_FIELDS = {
    "type": ("type_id", "type__displayname"),
    "task": ("task__task", "task__displayname"),
    "subtask": ("subtask__subtask", "subtask__displayname"),
    "model_type": ("model_type", None),
    "model_name": ("model_name", None),
    "architecture": ("architecture__name", "architecture__displayname"),
    "config_id": ("config_hash", None),
    "org": ("org", None),
    "has_head": ("has_head", None),
}


def _row_value(row: dict, key: str) -> str:
    value = row[FACET_FIELDS[key][0]]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matches(row: dict, chosen: dict[str, str]) -> bool:
    return all(_row_value(row, key) == value for key, value in chosen.items())


def _count_values(rows, key: str) -> list[dict]:
    """[{value, label, count}] as adapter_facets gives them: label = the smallest display name."""
    label_field = FACET_FIELDS[key][1]
    counts: dict[str, int] = {}
    labels: dict[str, str] = {}
    for row in rows:
        value = _row_value(row, key)
        counts[value] = counts.get(value, 0) + 1
        label = row.get(label_field) if label_field else None
        if label and (value not in labels or label < labels[value]):
            labels[value] = label
    values = [{"value": v, "label": labels.get(v, v), "count": n} for v, n in counts.items()]
    values.sort(key=lambda v: (-v["count"], v["value"]))
    return values


_SORT_KEYS = {
    "-downloads": lambda r: (-r["downloads"], r["id"]),
    "-updated": lambda r: (-r["updated_at"].timestamp(), r["id"]),
    "name": lambda r: (r["name"], r["id"]),
    "-score": lambda r: (r["score"] is None, -(r["score"] or 0), -r["downloads"], r["id"]),
}


def _page(params: QueryDict, total: int) -> tuple[int, int]:
    pages = max(1, math.ceil(total / PAGE_SIZE))
    try:
        page = min(max(1, int(params.get("page", 1))), pages)
    except ValueError:
        page = 1
    return page, pages


def _database_listing(params, filters, fixed, sort, facet_fields) -> AdapterListing:
    """The same listing with counting and sorting done by PostgreSQL (large catalogues)."""
    effective = QueryDict(mutable=True)
    effective.update({**filters, **(fixed or {})})
    counted = catalog.adapter_facets(effective)
    total = counted["total"]
    page, pages = _page(params, total)
    rows = _list_rows(AdapterFilter(effective, queryset=catalog.active_adapters()).qs)
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
        "id",
        "org",
        "name",
        "type_id",
        "type__displayname",
        "task__task",
        "task__displayname",
        "subtask__subtask",
        "subtask__displayname",
        "model_type",
        "model_name",
        "architecture__name",
        "architecture__displayname",
        "config_hash",
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
                    # The list shows 8 values, the rest folded: unfold when the choice is there.
                    "tail_open": any(v["selected"] for v in values[8:]),
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
    detail = catalog.adapter_detail(org, name, api_root=api_root, hub_url=hub_url)
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
