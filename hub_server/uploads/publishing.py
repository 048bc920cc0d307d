"""Where an adapter folder becomes a hosted version: `publish_adapter_folder`, the one service that
writes hosted files into the catalogue, and `render_card_yaml`, the card to commit to the Hub repo.

Publishing = read adapter_config.json, map its config to a catalogue architecture, make sure both
weight formats are present (the missing one written from tensors read through the safe path of
adapters_core.loading), zip the folder deterministically, store the archive and every member by
content, then write the Adapter, AdapterVersion and VersionFile rows in one transaction. Versions
are immutable: the same version with other bytes is refused, the same bytes again are a no-op.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from django.conf import settings
from django.db import transaction

from hub_server import storage
from hub_server.catalog import hubformat
from hub_server.catalog.hf_revision import freeze_hf_revisions
from hub_server.catalog.hosting import (
    ADAPTER_CONFIG,
    FolderError,
    prepare_folder,
    record_version_files,
    write_archive,
)
from hub_server.catalog.models import (
    Adapter,
    AdapterType,
    AdapterVersion,
    Architecture,
    Subtask,
    Task,
)
from hub_server.catalog.signals import catalog_changed

log = logging.getLogger(__name__)

PUBLISHED = Adapter.Origin.PUBLISHED

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# The only config keys a Hub card may override on top of its architecture (the card schema).
OVERRIDABLE = ("non_linearity", "reduction_factor")
CARD_FIELDS = ("author", "email", "url", "github", "twitter", "citation", "description")
CARD_EXTRA_KEYS = {
    *CARD_FIELDS,
    "model_name",
    "model_class",
    "version_description",
    "score",
    "hf_readme",
}


class PublishError(FolderError):
    """The folder or its card cannot be published; the message says why and what to change."""


def download_path(org: str, name: str, version: str) -> str:
    return (
        f"/api/v1/adapters/{quote(org, safe='')}/{quote(name, safe='')}"
        f"/versions/{quote(version, safe='')}/download"
    )


def download_url(org: str, name: str, version: str) -> str:
    """This hub's download URL of a version: absolute when HUB_PUBLIC_URL is set."""
    return settings.HUB_PUBLIC_URL + download_path(org, name, version)


# -- the service ------------------------------------------------------------------------------


def publish_adapter_folder(
    folder: str | Path,
    *,
    task: str,
    subtask: str,
    org: str,
    name: str | None = None,
    version: str | None = None,
    type: str = "text_task",
    card_extra: dict[str, Any] | None = None,
) -> AdapterVersion:
    """Publish an adapter folder written by `save_adapter` as a hosted version; return it."""
    folder = Path(folder)
    extra = dict(card_extra or {})
    unknown = sorted(set(extra) - CARD_EXTRA_KEYS)
    if unknown:
        raise PublishError(
            f"unknown card field(s) {unknown}; allowed: {sorted(CARD_EXTRA_KEYS)}", "card_extra"
        )
    task_row, subtask_row = _task_rows(type, task, subtask)
    with tempfile.TemporaryDirectory(prefix="hub-publish-") as tmp:
        try:
            prepared = prepare_folder(folder, Path(tmp) / "members")
        except PublishError:
            raise
        except FolderError as exc:
            raise PublishError(str(exc), exc.field) from None
        cfg = prepared.adapter_config
        model_name = extra.get("model_name") or cfg.get("model_name")
        if not model_name:
            raise PublishError(
                f"{ADAPTER_CONFIG} has no model_name (the base model); pass it as "
                "card_extra['model_name']",
                "model_name",
            )
        model_type = cfg.get("model_type")
        if not model_type:
            raise PublishError(f"{ADAPTER_CONFIG} has no model_type", "model_type")
        architecture, overrides = match_architecture(cfg.get("config"))
        name = name or default_name(model_name, task, subtask, architecture.name)
        _check_identifier(org, "org")
        _check_identifier(name, "name")
        if version is not None and not VERSION_RE.match(str(version)):
            raise PublishError(
                f"version {version!r} must be letters, digits, '.', '_' or '-'", "version"
            )
        archive_path = Path(tmp) / "archive.zip"
        write_archive(prepared.root, prepared.members, archive_path)
        archive = storage.store_path(archive_path)
        members = [(m, storage.store_path(prepared.root / m)) for m in prepared.members]

    config = hubformat.full_config(architecture.config, overrides)
    adapter_values = {
        "type_id": type,
        "task_id": task_row.pk,
        "subtask_id": subtask_row.pk,
        "model_type": model_type,
        "model_name": model_name,
        "model_class": extra.get("model_class") or cfg.get("model_class") or "",
        "has_head": "head_config.json" in prepared.members,
        "architecture_id": architecture.pk,
        "config_overrides": {"using": architecture.name, **overrides},
        "config": config,
        "config_hash": hubformat.config_hash(config),
        "hidden_size": cfg.get("hidden_size"),
    }
    card = {k: str(extra[k]).strip() for k in CARD_FIELDS if extra.get(k)}
    with transaction.atomic():
        earlier = Adapter.objects.filter(org=org, name=name).first()
        if earlier is not None:
            freeze_hf_revisions(earlier)  # before the new card changes what they would show
        row, created = _write_adapter(org, name, adapter_values, card)
        published = _write_version(row, version, archive, members, extra)
        if published[1] and not published[0].hf_sha:
            published[0].hf_readme = str(extra.get("hf_readme") or "")
            published[0].save(update_fields=["hf_readme"])
        freeze_hf_revisions(row)
        record_card_source(row)
    if created or published[1]:
        transaction.on_commit(
            lambda: catalog_changed.send(sender=AdapterVersion, version=published[0])
        )
    return published[0]


def _task_rows(type_id: str, task: str, subtask: str) -> tuple[Task, Subtask]:
    if not AdapterType.objects.filter(id=type_id).exists():
        known = sorted(AdapterType.objects.values_list("id", flat=True))
        raise PublishError(f"unknown adapter type {type_id!r}; known: {known}", "type")
    task_row = Task.objects.filter(type_id=type_id, task=task).first()
    if task_row is None:
        raise PublishError(
            f"unknown task {task!r} for type {type_id!r}: add tasks/{type_id}/<file>.yaml "
            "to the Hub repository first",
            "task",
        )
    subtask_row = Subtask.objects.filter(task=task_row, subtask=subtask).first()
    if subtask_row is None:
        raise PublishError(
            f"unknown subtask {subtask!r} of task {task!r}: add subtasks/{type_id}/<file>.yaml "
            "to the Hub repository first",
            "subtask",
        )
    return task_row, subtask_row


def _check_identifier(value: str, field: str) -> None:
    if not NAME_RE.match(value or ""):
        raise PublishError(
            f"{field} {value!r} must start with a letter or digit and contain only letters, "
            "digits, '.', '_', '+' or '-'",
            field,
        )


def default_name(model_name: str, task: str, subtask: str, architecture: str) -> str:
    """`<model>_<task>_<subtask>_<architecture>`, the Hub's own naming (a '/' becomes '-')."""
    return f"{model_name.replace('/', '-')}_{task}_{subtask}_{architecture}"


# -- architecture ------------------------------------------------------------------------------


def _normalised(config: dict[str, Any]) -> dict[str, Any]:
    from adapters_core import AdapterConfig

    return AdapterConfig.load(dict(config)).to_dict()


def match_architecture(config: Any) -> tuple[Architecture, dict[str, Any]]:
    """The catalogue architecture an adapter config is, and the card overrides it needs.

    Both configs are expanded to their full form by adapters_core, then compared on every key but
    the two a card may override (non_linearity, reduction_factor); fewest overrides wins.
    """
    if not isinstance(config, dict) or not config:
        raise PublishError(f"{ADAPTER_CONFIG} has no config block", "config")
    try:
        wanted = _normalised(config)
    except Exception as exc:
        raise PublishError(f"{ADAPTER_CONFIG}: config is not readable: {exc}", "config") from None
    best: tuple[int, Architecture, dict[str, Any]] | None = None
    for arch in Architecture.objects.all():
        try:
            known = _normalised(arch.config)
        except Exception:
            continue  # an architecture adapters_core cannot express matches nothing
        keys = set(wanted) | set(known)
        if any(wanted.get(k) != known.get(k) for k in keys - set(OVERRIDABLE)):
            continue
        overrides = {k: wanted[k] for k in OVERRIDABLE if wanted.get(k) != known.get(k)}
        if best is None or len(overrides) < best[0]:
            best = (len(overrides), arch, overrides)
    if best is None:
        method = config.get("architecture") or "bottleneck"
        names = sorted(Architecture.objects.values_list("name", flat=True))
        raise PublishError(
            f"no architecture of the catalogue matches this {method} config (known: {names}); "
            "add an architectures/<name>.yaml to the Hub repository first",
            "config",
        )
    _, arch, overrides = best
    rf = overrides.get("reduction_factor")
    if rf is not None:
        if isinstance(rf, float) and rf.is_integer():
            overrides["reduction_factor"] = int(rf)
        elif not isinstance(rf, int):
            raise PublishError(
                f"reduction_factor {rf!r} has no card representation (a Hub card takes one "
                "integer)",
                "config",
            )
    return arch, overrides


# -- rows ---------------------------------------------------------------------------------------


def _write_adapter(
    org: str, name: str, values: dict[str, Any], card: dict[str, str]
) -> tuple[Adapter, bool]:
    row = Adapter.objects.select_for_update().filter(org=org, name=name).first()
    if row is None:
        clash = (
            Adapter.objects.exclude(status=Adapter.Status.WITHDRAWN)
            .filter(
                org=org,
                type_id=values["type_id"],
                model_name=values["model_name"],
                task_id=values["task_id"],
                subtask_id=values["subtask_id"],
                config_hash=values["config_hash"],
            )
            .first()
        )
        if clash is not None:
            raise PublishError(
                f"{clash.unique_id} already is this adapter (same type, model, task, subtask, "
                f"config and org); publish a new version of it instead",
                "name",
            )
        card.setdefault("author", org)
        row = Adapter.objects.create(
            org=org, name=name, default_version="", origin=PUBLISHED, **values, **card
        )
        return row, True
    fixed = ("type_id", "task_id", "subtask_id", "model_name", "config_hash")
    differs = [k.removesuffix("_id") for k in fixed if getattr(row, k) != values[k]]
    if differs:
        raise PublishError(
            f"{row.unique_id} exists with another {', '.join(differs)}; a new version must "
            "describe the same adapter (publish under another name instead)",
            "name",
        )
    changed = False
    for key, value in card.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    if row.status == Adapter.Status.WITHDRAWN:
        row.status = Adapter.Status.ACTIVE
        changed = True
    if row.origin != PUBLISHED:
        # A card of the Hub repository that this hub now publishes versions of: the hub's from
        # here on, so a sync of that repository no longer rewrites or withdraws it.
        row.origin = PUBLISHED
        changed = True
    if changed:
        row.save()
    return row, False


def _next_version(row: Adapter) -> str:
    numbers = [int(v) for v in row.versions.values_list("version", flat=True) if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _write_version(
    row: Adapter,
    version: str | None,
    archive: storage.StoredBlob,
    members: list[tuple[str, storage.StoredBlob]],
    extra: dict[str, Any],
) -> tuple[AdapterVersion, bool]:
    """(the version, whether anything was written)."""
    if version is None:
        same = row.versions.filter(sha256=archive.sha256).first()
        if same is not None and same.file_status == AdapterVersion.FileStatus.HOSTED:
            return same, False
        version = same.version if same is not None else _next_version(row)
    existing = row.versions.filter(version=version).first()
    if existing is not None:
        if existing.sha256 and existing.sha256 != archive.sha256:
            raise PublishError(
                f"{row.unique_id} version {version} is already published with other content "
                f"(sha256 {existing.sha256}); versions are immutable, publish a new version",
                "version",
            )
        if existing.file_status == AdapterVersion.FileStatus.HOSTED and existing.storage_key:
            return existing, False
        # A card listed this version (same bytes) as an external link: this upload hosts it.
        target = existing
    else:
        position = row.versions.order_by("-position").values_list("position", flat=True)[:1]
        target = AdapterVersion(
            adapter=row, version=version, position=(position[0] + 1) if position else 0
        )
    target.url = download_url(row.org, row.name, version)
    target.sha1 = archive.digests.sha1
    target.sha256 = archive.sha256
    target.size = archive.size
    target.storage_key = archive.key
    target.file_status = AdapterVersion.FileStatus.HOSTED
    target.file_error = ""
    if extra.get("version_description"):
        target.description = str(extra["version_description"]).strip()
    if extra.get("score") is not None:
        target.score = float(extra["score"])
    target.save()
    record_version_files(target, members)
    row.default_version = version
    row.save(update_fields=["default_version", "updated_at"])
    return target, True


# -- the card, for the Hub repository ----------------------------------------------------------


def card_path(adapter: Adapter) -> str:
    """Where the card goes in the Hub repository."""
    return f"adapters/{adapter.org}/{adapter.name}.yaml"


def card_data(adapter: Adapter, base_url: str | None = None) -> dict[str, Any]:
    base = (base_url if base_url is not None else settings.HUB_PUBLIC_URL).rstrip("/")
    data: dict[str, Any] = {
        "type": adapter.type_id,
        "task": adapter.task.task,
        "subtask": adapter.subtask.subtask,
        "model_type": adapter.model_type,
        "model_name": adapter.model_name,
    }
    if adapter.model_class:
        data["model_class"] = adapter.model_class
    data["prediction_head"] = adapter.has_head
    overrides = {k: v for k, v in adapter.config_overrides.items() if k != "using"}
    data["config"] = {"using": adapter.architecture.name, **overrides}
    if adapter.hidden_size:
        data["hidden_size"] = adapter.hidden_size
    for key in CARD_FIELDS:
        value = getattr(adapter, key)
        if value or key == "author":
            data[key] = value or adapter.org
    data["default_version"] = adapter.default_version
    files = []
    for v in adapter.versions.order_by("position", "id"):
        url = v.url if "://" in v.url or not base else base + v.url
        entry: dict[str, Any] = {"version": v.version, "url": url}
        if v.sha1:
            entry["sha1"] = v.sha1
        if v.sha256:
            entry["sha256"] = v.sha256
        if v.description:
            entry["description"] = v.description
        if v.score is not None:
            entry["score"] = v.score
        files.append(entry)
    data["files"] = files
    deps = [
        {"key": d.key, **({"description": d.description} if d.description else {})}
        for d in adapter.dependencies.all()
    ]
    if deps:
        data["dependencies"] = deps
    return data


def record_card_source(adapter: Adapter) -> None:
    """The card the hub publishes, as a sync would have read it: its path (the legacy index's
    order), its git blob (the same card merged into a Hub repository is recognised there) and the
    format checks' warnings."""
    path = card_path(adapter)
    content = render_card_yaml(adapter)
    parsed = hubformat.parse_file(path, content.encode("utf-8"))
    adapter.source_path = path
    adapter.source_blob = git_blob_id(content.encode("utf-8"))
    adapter.warnings = [w.as_dict() for w in parsed.warnings]
    adapter.author = parsed.data.get("author") or adapter.author
    adapter.save(update_fields=["source_path", "source_blob", "warnings", "author"])


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def render_card_yaml(adapter: Adapter, base_url: str | None = None) -> str:
    """The adapter as a Hub-format card (adapters/<org>/<name>.yaml), for the upload workflow to
    commit into the Hub repository. Relative download URLs are made absolute with `base_url`
    (default HUB_PUBLIC_URL)."""
    return yaml.safe_dump(
        card_data(adapter, base_url), sort_keys=False, allow_unicode=True, width=100
    )
