"""The legacy AdapterHub index (`dist/v2`), built from the catalogue for old clients.

Content rules follow the original generator (docs/hub-format.md): one JSON per card, one index per
model (text_task and text_lang merged), `architectures.json` and `all.json`. Where the hub hosts a
version itself, the version's `url` is this hub's own download URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db.models import Prefetch

from hub_server.catalog.models import Adapter, AdapterVersion, Architecture

# Builds the absolute download URL of a hosted version: (org, name, version) -> url.
UrlBuilder = Callable[[str, str, str], str]

LISTED = [Adapter.Status.ACTIVE]
# A yanked adapter is still served by its exact id (old clients pinned to it keep working).
REACHABLE = [Adapter.Status.ACTIVE, Adapter.Status.YANKED]


def _adapters(statuses, **filters):
    versions = AdapterVersion.objects.only(
        "adapter_id", "version", "url", "sha1", "sha256", "score", "file_status", "position"
    ).order_by("position")
    return (
        Adapter.objects.filter(status__in=statuses, **filters)
        .select_related("task", "subtask", "architecture")
        .prefetch_related(Prefetch("versions", queryset=versions))
    )


def card_path(adapter: Adapter) -> str:
    return f"adapters/{adapter.org}/{adapter.name}.json"


def _sort_key(adapter: Adapter) -> str:
    return adapter.source_path or f"adapters/{adapter.org}/{adapter.name}.yaml"


def _file_entry(adapter: Adapter, version: AdapterVersion, url_for: UrlBuilder) -> dict:
    hosted = version.file_status == AdapterVersion.FileStatus.HOSTED
    entry = {"url": url_for(adapter.org, adapter.name, version.version) if hosted else version.url}
    if version.sha1:
        entry["sha1"] = version.sha1
    if version.sha256:
        entry["sha256"] = version.sha256
    if version.score is not None:
        entry["score"] = version.score
    return entry


def card_info(adapter: Adapter) -> dict:
    info = {
        "source": "ah",
        "adapter_id": adapter.unique_id,
        "model_name": adapter.model_name,
        "task": adapter.task.task,
        "subtask": adapter.subtask.subtask,
        "username": adapter.org,
        "adapter_config": adapter.config,
    }
    default = next(
        (v for v in adapter.versions.all() if v.version == adapter.default_version), None
    )
    if default is not None and default.sha1:
        info["sha1_checksum"] = default.sha1
    return info


def card_document(adapter: Adapter, url_for: UrlBuilder) -> dict:
    return {
        "config_id": adapter.config_hash,
        "default_version": adapter.default_version,
        "files": {v.version: _file_entry(adapter, v, url_for) for v in adapter.versions.all()},
        "info": card_info(adapter),
    }


def adapter_document(org: str, name: str, url_for: UrlBuilder) -> dict | None:
    adapter = _adapters(REACHABLE, org=org, name=name).first()
    return card_document(adapter, url_for) if adapter else None


def model_index(model_name: str) -> dict | None:
    """`index/<model_name>.json`; None when the hub has no adapter for that model."""
    adapters = sorted(
        Adapter.objects.filter(status__in=LISTED, model_name=model_name).select_related(
            "task", "subtask", "architecture"
        ),
        key=_sort_key,
    )
    if not adapters:
        return None
    index: dict = {}
    for adapter in adapters:
        subtask = index.setdefault(adapter.task.task, {}).setdefault(adapter.subtask.subtask, {})
        path = card_path(adapter)
        entry = subtask.setdefault(adapter.config_hash, {"versions": {}})
        entry["versions"][adapter.org] = path
        # The first card seen is the default, until a card in the Pfeiffer architecture comes.
        if "default" not in subtask or adapter.architecture.name == "pfeiffer":
            subtask["default"] = path
    return index


def architectures_document() -> dict:
    return dict(Architecture.objects.order_by("name").values_list("name", "config"))


def all_document() -> list[dict]:
    return [card_info(a) for a in sorted(_adapters(LISTED), key=_sort_key)]


def indexed_model_names() -> Iterable[str]:
    return (
        Adapter.objects.filter(status__in=LISTED)
        .order_by("model_name")
        .values_list("model_name", flat=True)
        .distinct()
    )
