"""Reads of the REST API: querysets of `.values()` rows and the composed detail of one adapter.

Every read is a fixed number of queries, whatever the page size: the list is COUNT + one SELECT,
each reference table one annotated SELECT, the detail one SELECT on PostgreSQL (two elsewhere;
two more when the card has dependencies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from django.contrib.postgres.aggregates import JSONBAgg
from django.db import connection
from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    JSONField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import JSONObject
from rest_framework.exceptions import NotFound, ValidationError

from hub_server.api import search_index
from hub_server.api.exceptions import Gone
from hub_server.api.filters import (
    DEFAULT_ORDERING,
    EXACT_FILTERS,
    ORDERINGS,
    REFERENCE_FILTERS,
    AdapterFilter,
    ReferenceIds,
)
from hub_server.catalog.models import (
    Adapter,
    AdapterDependency,
    AdapterVersion,
    Architecture,
    Subtask,
    SyncRun,
    Task,
)
from hub_server.catalog.prepared import PreparedQuery

ACTIVE = Adapter.Status.ACTIVE

ADAPTER_LIST_FIELDS = (
    "id",
    "org",
    "name",
    "type_id",
    "task__task",
    "subtask__subtask",
    "model_type",
    "model_name",
    "architecture__name",
    "config_hash",
    "has_head",
    "default_version",
    "author",
    "description",
    "downloads",
    "updated_at",
)


def active_adapters() -> QuerySet:
    """Adapters that listings show: withdrawn and yanked cards are hidden."""
    return Adapter.objects.filter(status=ACTIVE)


def adapter_rows(adapters: QuerySet | None = None) -> QuerySet:
    """The list's columns of `adapters` (default: every active adapter) as `.values()` rows."""
    return (adapters if adapters is not None else active_adapters()).values(*ADAPTER_LIST_FIELDS)


# -- the list, prepared ----------------------------------------------------------------------

_MAX_LIST_SHAPES = 256


@dataclass
class PreparedPage:
    """The rows and count of one filtered, ordered list as prepared statements (see
    `prepared_adapter_list`); no statements for a reference filter that names nothing."""

    queries: tuple[PreparedQuery, PreparedQuery] | None
    values: dict

    def rows(self, offset: int, limit: int) -> list[dict]:
        if self.queries is None:
            return []
        return self.queries[0].rows(**self.values, offset=offset, limit=limit)

    def count(self) -> int:
        return self.queries[1].rows(**self.values)[0]["count"] if self.queries else 0


_list_shapes: dict[tuple, tuple[PreparedQuery, PreparedQuery]] = {}


def clean_list_params(params) -> dict | None:
    """AdapterFilter's values of a page-numbered list request, as it reads them (stripped, empty
    ones ignored, the last of a repeated parameter winning, other parameters ignored), with the
    ordering filled in; None for a cursor or a value the filter would reject (its 400 says why).
    """
    if "cursor" in params:
        return None
    cleaned = {name: (params.get(name) or "").strip() for name in AdapterFilter.base_filters}
    if any("\x00" in value for value in cleaned.values()):
        return None
    cleaned["ordering"] = cleaned["ordering"] or DEFAULT_ORDERING
    if cleaned["has_head"] not in ("", "true", "false") or cleaned["ordering"] not in ORDERINGS:
        return None
    return cleaned


def prepared_adapter_list(params, ids: ReferenceIds) -> PreparedPage | None:
    """The page-numbered adapter list of `params` as prepared statements, or None where the
    request needs AdapterFilter itself: a search, a cursor, a value the filter would reject, or a
    new combination of filters once `_MAX_LIST_SHAPES` are prepared."""
    cleaned = clean_list_params(params)
    if cleaned is None or cleaned["q"]:
        return None
    has_head, ordering = cleaned["has_head"], cleaned["ordering"]
    # shape: (lookup, slot name, number of values) per filter; the values go in the slots.
    values, shape, empty = {}, [], False
    for name, lookup in EXACT_FILTERS.items():
        if cleaned[name]:
            values[name] = cleaned[name]
            shape.append((lookup, name, 1))
    for name in REFERENCE_FILTERS:
        if cleaned[name]:
            pks = getattr(ids, name).get(cleaned[name], [])
            empty = empty or not pks
            values.update({f"{name}_{i}": pk for i, pk in enumerate(pks)})
            shape.append((f"{name}_id__in", name, len(pks)))
    if empty:
        return PreparedPage(None, {})
    key = (tuple(shape), has_head, ordering)
    queries = _list_shapes.get(key)
    if queries is None:
        if len(_list_shapes) >= _MAX_LIST_SHAPES:
            return None
        queries = _list_shapes.setdefault(key, _prepare_list_shape(*key))
    return PreparedPage(queries, values)


def _prepare_list_shape(
    shape: tuple[tuple[str, str, int], ...], has_head: str, ordering: str
) -> tuple[PreparedQuery, PreparedQuery]:
    slots = {}
    for lookup, name, n in shape:
        if lookup.endswith("__in"):
            slots.update({f"{name}_{i}": int for i in range(n)})
        else:
            slots[name] = str

    def filtered(**values):
        adapters = active_adapters()
        for lookup, name, n in shape:
            if lookup.endswith("__in"):
                adapters = adapters.filter(**{lookup: [values[f"{name}_{i}"] for i in range(n)]})
            else:
                adapters = adapters.filter(**{lookup: values[name]})
        if has_head:  # true or false: part of the shape, not a slot
            adapters = adapters.filter(has_head=has_head == "true")
        return adapters

    rows = PreparedQuery(
        lambda **v: adapter_rows(filtered(**v)).order_by(*ORDERINGS[ordering]), paged=True, **slots
    )
    # COUNT(*) over one constant group: no column beyond the filters' own, so a partial index
    # on them answers it with an index-only scan.
    count = PreparedQuery(
        lambda **v: (
            filtered(**v)
            .order_by()
            .annotate(_all=Value(1, IntegerField()))
            .values("_all")
            .annotate(count=Count("*"))
            .values("count")
        ),
        **slots,
    )
    return rows, count


# -- search ----------------------------------------------------------------------------------


@dataclass
class IndexedPage:
    """A list answered by the process's search index: the page's positions and the count from
    memory, its items pre-rendered (see `SearchIndex.render_page`): no query at all."""

    index: search_index.SearchIndex
    mask: object
    ordering: str

    def positions(self, offset: int, limit: int):
        return self.index.page_positions(self.mask, self.ordering, offset, limit).tolist()

    def count(self) -> int:
        return int(self.mask.sum())

    def render(self, envelope: dict, positions, api_root: str) -> bytes:
        return self.index.render_page(envelope, positions, api_root)


def indexed_adapter_list(params, ids: ReferenceIds, generation: int) -> IndexedPage | None:
    """A page-numbered list (any filters, a search, an ordering) answered from the process's
    search index, or None where SQL answers: a cursor, a rejected value, a term the index cannot
    match exactly, or an index still being built."""
    cleaned = clean_list_params(params)
    if cleaned is None:
        return None
    index = search_index.index_for(generation)
    if index is None:
        return None
    mask = index.select(cleaned, ids)
    if mask is None:
        return None
    return IndexedPage(index, mask, cleaned["ordering"])


# Up to this many matches, a search page is read by sorting the matches (about sqrt(21 x 100,000)
# for a first page of a 100,000-card catalogue: below it, sorting beats walking the index).
SEARCH_SORT_MATCHES = 2000

# The same order as filters.ORDERINGS by expressions no index provides, so the planner sorts.
_UNINDEXED = {
    "downloads": lambda: F("downloads") + 0,
    "updated_at": lambda: ExpressionWrapper(
        F("updated_at") + Value(timedelta(0), output_field=DurationField()),
        output_field=DateTimeField(),
    ),
}


def sorted_without_index(queryset: QuerySet) -> QuerySet:
    """`queryset` in its own order, by expressions an index cannot serve."""
    order = []
    for field in queryset.query.order_by:
        name = field.lstrip("-") if isinstance(field, str) else None
        if name in _UNINDEXED:
            expression = _UNINDEXED[name]()
            order.append(expression.desc() if field.startswith("-") else expression.asc())
        else:
            order.append(field)
    return queryset.order_by(*order)


# -- facets ----------------------------------------------------------------------------------


def adapter_facets(params, request=None) -> dict:
    """Counts per value of each filter field, under all OTHER filters of `params` (so a chosen
    value's siblings keep their counts), and the total under all of them."""
    params = params.copy()
    for ignored in ("ordering", "page", "page_size", "cursor"):
        params.pop(ignored, None)
    filterset = AdapterFilter(params, queryset=active_adapters(), request=request)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    total = filterset.qs.order_by().count()
    facets = {}
    for facet, lookup in AdapterFilter.FACETS.items():
        others = params.copy()
        others.pop(facet, None)
        queryset = AdapterFilter(others, queryset=active_adapters(), request=request).qs.order_by()
        label = _FACET_LABELS.get(facet)
        rows = queryset.values(lookup).annotate(
            count=Count("id"), **({"label": Min(label)} if label else {})
        )
        values = [
            {
                "value": _facet_value(row[lookup]),
                "label": row.get("label") or _facet_value(row[lookup]),
                "count": row["count"],
            }
            for row in rows
        ]
        values.sort(key=lambda v: (-v["count"], v["value"]))
        facets[facet] = values
    return {"total": total, "facets": facets}


_FACET_LABELS = {
    "type": "type__displayname",
    "task": "task__displayname",
    "subtask": "subtask__displayname",
    "architecture": "architecture__displayname",
}


def _facet_value(value) -> str:
    # The string a client passes back as the filter: booleans as true/false.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- one adapter -----------------------------------------------------------------------------

_URL_SCHEME = re.compile(r"^https?://", re.IGNORECASE)


def social_url(value: str, site: str) -> str:
    """A profile URL from a card's `github`/`twitter` value: a handle (`@x` or `x`) or a URL."""
    value = (value or "").strip()
    if not value:
        return ""
    if _URL_SCHEME.match(value):
        return value
    host = f"{site}/"
    if value.lower().startswith(host):
        return f"https://{value}"
    return f"https://{host}{value.lstrip('@')}"


def load_snippet(identifier: str, model_name: str, architecture: str, hub_url: str) -> str:
    return (
        f"# Point adapters_core at this hub first: export ADAPTERHUB_URL={hub_url}\n"
        "from adapters_core import AutoAdapterModel\n"
        "\n"
        f'model = AutoAdapterModel.from_pretrained("{model_name}")\n'
        f'adapter_name = model.load_adapter("{identifier}", config="{architecture}")\n'
        "model.set_active_adapters(adapter_name)\n"
    )


def adapter_api_path(api_root: str, org: str, name: str) -> str:
    return f"{api_root}adapters/{quote(org)}/{quote(name)}/"


_DETAIL_FIELDS = (
    "id",
    "status",
    "type_id",
    "type__displayname",
    "task__task",
    "task__displayname",
    "subtask__subtask",
    "subtask__displayname",
    "subtask__language",
    "model_type",
    "model_name",
    "model_class",
    "has_head",
    "hidden_size",
    "architecture__name",
    "architecture__displayname",
    "config",
    "config_hash",
    "default_version",
    "author",
    "email",
    "url",
    "github",
    "twitter",
    "citation",
    "description",
    "warnings",
    "downloads",
    "created_at",
    "updated_at",
)

_VERSION_FIELDS = (
    "version",
    "score",
    "size",
    "sha1",
    "sha256",
    "description",
    "file_status",
    "downloads",
)


def _detail_adapters(org: str, name: str, versions_inline: bool) -> QuerySet:
    adapters = Adapter.objects.filter(org=org, name=name).annotate(
        has_dependencies=Exists(AdapterDependency.objects.filter(adapter=OuterRef("pk")))
    )
    fields = [*_DETAIL_FIELDS, "has_dependencies"]
    if versions_inline:  # PostgreSQL: the versions ride along as one JSON array
        versions = (
            AdapterVersion.objects.filter(adapter=OuterRef("pk"))
            .order_by()
            .values("adapter")
            .annotate(
                rows=JSONBAgg(JSONObject(**{f: f for f in _VERSION_FIELDS}), order_by="position")
            )
            .values("rows")
        )
        adapters = adapters.annotate(version_rows=Subquery(versions, output_field=JSONField()))
        fields.append("version_rows")
    return adapters.values(*fields)[:1]


# The detail is the hottest uncached read: its queries are compiled once (catalog.prepared), and
# on PostgreSQL they are one.
_detail_adapter = PreparedQuery(
    lambda org, name: _detail_adapters(org, name, versions_inline=False), org=str, name=str
)
_detail_adapter_and_versions = PreparedQuery(
    lambda org, name: _detail_adapters(org, name, versions_inline=True), org=str, name=str
)
_detail_versions = PreparedQuery(
    lambda adapter_id: (
        AdapterVersion.objects.filter(adapter_id=adapter_id)
        .order_by("position")
        .values(*_VERSION_FIELDS)
    ),
    adapter_id=int,
)
VERSIONS_INLINE = True  # on PostgreSQL; off only to test the portable path against it


def _adapter_and_versions(org: str, name: str) -> tuple[dict | None, list[dict]]:
    if VERSIONS_INLINE and connection.vendor == "postgresql":
        found = _detail_adapter_and_versions.rows(org=org, name=name)
        if not found:
            return None, []
        adapter = found[0]
        rows = adapter.pop("version_rows") or []
        return adapter, [{f: row[f] for f in _VERSION_FIELDS} for row in rows]
    found = _detail_adapter.rows(org=org, name=name)
    if not found:
        return None, []
    return found[0], _detail_versions.rows(adapter_id=found[0]["id"])


def adapter_detail(org: str, name: str, api_root: str, hub_url: str) -> dict:
    """The whole detail of `@org/name` as plain data. 404 unknown, 410 withdrawn.

    `api_root` is the absolute URL of /api/v1/, `hub_url` the hub's public base URL.
    """
    if "\x00" in org or "\x00" in name:  # no such id; PostgreSQL would reject the text
        raise NotFound(f"No adapter @{org}/{name}.")
    adapter, version_rows = _adapter_and_versions(org, name)
    if adapter is None:
        raise NotFound(f"No adapter @{org}/{name}.")
    if adapter["status"] == Adapter.Status.WITHDRAWN:
        raise Gone(f"Adapter @{org}/{name} was withdrawn from the hub.")
    base = adapter_api_path(api_root, org, name)
    versions = [
        {
            **row,
            "is_default": row["version"] == adapter["default_version"],
            "download_url": f"{base}versions/{quote(row['version'], safe='')}/download",
        }
        for row in version_rows
    ]
    task, subtask, model_name = (
        adapter["task__task"],
        adapter["subtask__subtask"],
        adapter["model_name"],
    )
    architecture = adapter["architecture__name"]
    identifier = f"{task}/{subtask}@{org}"
    return {
        "id": f"@{org}/{name}",
        "org": org,
        "name": name,
        "identifier": identifier,
        "status": adapter["status"],
        "type": adapter["type_id"],
        "type_displayname": adapter["type__displayname"],
        "task": task,
        "task_displayname": adapter["task__displayname"],
        "subtask": subtask,
        "subtask_displayname": adapter["subtask__displayname"],
        "language": adapter["subtask__language"],
        "model_type": adapter["model_type"],
        "model_name": model_name,
        "model_class": adapter["model_class"],
        "has_head": adapter["has_head"],
        "hidden_size": adapter["hidden_size"],
        "architecture": architecture,
        "architecture_displayname": adapter["architecture__displayname"],
        "config": adapter["config"],
        "config_id": adapter["config_hash"],
        "default_version": adapter["default_version"],
        "versions": versions,
        "author": adapter["author"],
        "email": adapter["email"],
        "url": adapter["url"],
        "github": adapter["github"],
        "github_url": social_url(adapter["github"], "github.com"),
        "twitter": adapter["twitter"],
        "twitter_url": social_url(adapter["twitter"], "twitter.com"),
        "citation": adapter["citation"],
        "description": adapter["description"],
        "dependencies": (
            _dependencies(adapter["id"], model_name, api_root)
            if adapter["has_dependencies"]
            else []
        ),
        "warnings": adapter["warnings"],
        "downloads": adapter["downloads"],
        "created": adapter["created_at"],
        "updated": adapter["updated_at"],
        "load_snippet": load_snippet(identifier, model_name, architecture, hub_url),
    }


_IDENTIFIER = re.compile(r"^(?P<task>[^/@]+)/(?P<subtask>[^/@]+)@(?P<org>[^/@]+)$")
_UNIQUE_ID = re.compile(r"^@?(?P<org>[^/@]+)/(?P<name>[^/@]+)$")


def _dependencies(adapter_id: int, model_name: str, api_root: str) -> list[dict]:
    """The card's dependencies, each with the API link of the adapter its key names, if known:
    `org/name` directly; `task/subtask@org` as `load_adapter` would resolve it for this adapter's
    base model without a config (the legacy index's subtask default: the last `pfeiffer` card in
    path order, else the first card)."""
    deps = list(
        AdapterDependency.objects.filter(adapter_id=adapter_id)
        .order_by("position")
        .values("key", "description")
    )
    if not deps:
        return []
    wanted = Q(pk__in=[])
    for dep in deps:
        key = dep["key"].strip()
        if m := _IDENTIFIER.match(key):
            wanted |= Q(
                task__task=m["task"],
                subtask__subtask=m["subtask"],
                org=m["org"],
                model_name=model_name,
            )
        elif m := _UNIQUE_ID.match(key):
            wanted |= Q(org=m["org"], name=m["name"])
    candidates = list(
        active_adapters()
        .filter(wanted)
        .order_by("source_path")
        .values("org", "name", "task__task", "subtask__subtask", "model_name", "architecture__name")
    )
    for dep in deps:
        key = dep["key"].strip()
        match = None
        if m := _IDENTIFIER.match(key):
            same = [
                c
                for c in candidates
                if (c["task__task"], c["subtask__subtask"], c["org"], c["model_name"])
                == (m["task"], m["subtask"], m["org"], model_name)
            ]
            pfeiffer = [c for c in same if c["architecture__name"] == "pfeiffer"]
            match = (pfeiffer or same or [None])[-1 if pfeiffer else 0]
        elif m := _UNIQUE_ID.match(key):
            match = next(
                (c for c in candidates if (c["org"], c["name"]) == (m["org"], m["name"])), None
            )
        dep["adapter"] = f"@{match['org']}/{match['name']}" if match else None
        dep["api_url"] = adapter_api_path(api_root, match["org"], match["name"]) if match else None
    return deps


# -- reference tables ------------------------------------------------------------------------

_ACTIVE_ADAPTERS = Q(adapters__status=ACTIVE)


def task_rows() -> QuerySet:
    return (
        Task.objects.values("type_id", "task", "displayname", "description")
        .annotate(adapter_count=Count("adapters", filter=_ACTIVE_ADAPTERS))
        .order_by("type_id", "task")
    )


def subtask_rows() -> QuerySet:
    return (
        Subtask.objects.values(
            "task__type_id",
            "task__task",
            "subtask",
            "displayname",
            "description",
            "url",
            "citation",
            "language",
            "hf_datasets_id",
            "metric_name",
            "metric_higher_is_better",
        )
        .annotate(adapter_count=Count("adapters", filter=_ACTIVE_ADAPTERS))
        .order_by("task__type_id", "task__task", "subtask")
    )


def architecture_rows() -> QuerySet:
    return (
        Architecture.objects.values(
            "name", "displayname", "description", "citation", "config", "config_hash"
        )
        .annotate(adapter_count=Count("adapters", filter=_ACTIVE_ADAPTERS))
        .order_by("name")
    )


def model_rows() -> QuerySet:
    """Distinct base models of active adapters, with their model type and adapter count."""
    return (
        active_adapters()
        .values("model_name", "model_type")
        .annotate(adapter_count=Count("id"))
        .order_by("model_name", "model_type")
    )


def sync_runs() -> QuerySet:
    return SyncRun.objects.order_by("-started_at", "-id")
