"""Reads the pages and the REST API share: the active adapters, their list rows, the facets and
the composed detail of one adapter. Both faces import them from here (the catalogue), so neither
reads through the other.

Every read is a fixed number of queries, whatever the page size: the facets one COUNT per filter
field, the detail one SELECT on PostgreSQL (two elsewhere; two more when the card has
dependencies).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from django.contrib.postgres.aggregates import JSONBAgg
from django.db import connection
from django.db.models import (
    Count,
    Exists,
    JSONField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import JSONObject
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError

from hub_server.catalog.filters import AdapterFilter
from hub_server.catalog.models import Adapter, AdapterDependency, AdapterVersion
from hub_server.catalog.prepared import PreparedQuery


class Gone(APIException):
    """A withdrawn adapter: the API answers 410, the pages say it was withdrawn."""

    status_code = status.HTTP_410_GONE
    default_detail = "This resource was withdrawn."
    default_code = "gone"


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
