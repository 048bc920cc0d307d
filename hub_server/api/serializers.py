"""Serializers of the REST API. They render the plain rows that `selectors` returns (dicts from
`.values()`), so no serializer ever touches a model instance or triggers a query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from rest_framework import serializers

_DATETIME = serializers.DateTimeField()
_NO_OFFSET = timedelta(0)


def render_datetime(value: datetime | None) -> str | None:
    """What `serializers.DateTimeField().to_representation` renders (ISO 8601 in the current time
    zone, `Z` for UTC) in a tenth of its time for the aware UTC values the database returns: a
    list page renders twenty of them."""
    if value is None or settings.TIME_ZONE != "UTC" or value.tzinfo is None:
        return _DATETIME.to_representation(value)
    if value.utcoffset() != _NO_OFFSET:
        value = value.astimezone(UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.JSONField())


class AdapterListItemSerializer(serializers.Serializer):
    id = serializers.SerializerMethodField(help_text="unique id @org/name")
    org = serializers.CharField()
    name = serializers.CharField()
    identifier = serializers.SerializerMethodField(help_text="task/subtask@org")
    type = serializers.CharField(source="type_id")
    task = serializers.CharField(source="task__task")
    subtask = serializers.CharField(source="subtask__subtask")
    model_type = serializers.CharField()
    model_name = serializers.CharField()
    architecture = serializers.CharField(source="architecture__name")
    config_id = serializers.CharField(source="config_hash")
    has_head = serializers.BooleanField()
    default_version = serializers.CharField()
    author = serializers.CharField()
    description = serializers.CharField()
    downloads = serializers.IntegerField()
    updated = serializers.DateTimeField(source="updated_at")
    url = serializers.SerializerMethodField(help_text="this adapter's detail in the API")

    def get_id(self, row) -> str:
        return f"@{row['org']}/{row['name']}"

    def get_identifier(self, row) -> str:
        return f"{row['task__task']}/{row['subtask__subtask']}@{row['org']}"

    def get_url(self, row) -> str:
        return f"{self.context['api_root']}adapters/{quote(row['org'])}/{quote(row['name'])}/"

    def to_representation(self, row) -> dict:
        # The hot path of every cold list page: the fields above, built directly (DRF's
        # per-field machinery costs more than the page's two queries). Same output, same schema.
        org, name = row["org"], row["name"]
        return {
            "id": f"@{org}/{name}",
            "org": org,
            "name": name,
            "identifier": f"{row['task__task']}/{row['subtask__subtask']}@{org}",
            "type": row["type_id"],
            "task": row["task__task"],
            "subtask": row["subtask__subtask"],
            "model_type": row["model_type"],
            "model_name": row["model_name"],
            "architecture": row["architecture__name"],
            "config_id": row["config_hash"],
            "has_head": row["has_head"],
            "default_version": row["default_version"],
            "author": row["author"],
            "description": row["description"],
            "downloads": row["downloads"],
            "updated": render_datetime(row["updated_at"]),
            "url": f"{self.context['api_root']}adapters/{quote(org)}/{quote(name)}/",
        }


class AdapterVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    is_default = serializers.BooleanField()
    score = serializers.FloatField(allow_null=True)
    size = serializers.IntegerField(allow_null=True, help_text="bytes, once the file is known")
    sha1 = serializers.CharField(allow_blank=True)
    sha256 = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    file_status = serializers.CharField()
    downloads = serializers.IntegerField()
    download_url = serializers.URLField()


class AdapterDependencySerializer(serializers.Serializer):
    key = serializers.CharField(help_text="as written in the card: org/name or task/subtask@org")
    description = serializers.CharField(allow_blank=True)
    adapter = serializers.CharField(allow_null=True, help_text="@org/name when the key resolves")
    api_url = serializers.URLField(allow_null=True)


class FileProblemSerializer(serializers.Serializer):
    file = serializers.CharField()
    line = serializers.IntegerField(allow_null=True, required=False)
    field = serializers.CharField(allow_null=True, required=False)
    message = serializers.CharField()


class AdapterDetailSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="unique id @org/name")
    org = serializers.CharField()
    name = serializers.CharField()
    identifier = serializers.CharField(help_text="task/subtask@org")
    status = serializers.CharField(help_text="active or yanked")
    type = serializers.CharField()
    type_displayname = serializers.CharField()
    task = serializers.CharField()
    task_displayname = serializers.CharField()
    subtask = serializers.CharField()
    subtask_displayname = serializers.CharField()
    language = serializers.CharField(allow_blank=True)
    model_type = serializers.CharField()
    model_name = serializers.CharField()
    model_class = serializers.CharField(allow_blank=True)
    has_head = serializers.BooleanField()
    hidden_size = serializers.IntegerField(allow_null=True)
    architecture = serializers.CharField()
    architecture_displayname = serializers.CharField()
    config = serializers.DictField(child=serializers.JSONField(), help_text="the full config")
    config_id = serializers.CharField(help_text="config hash, 16 hex")
    default_version = serializers.CharField()
    versions = AdapterVersionSerializer(many=True)
    author = serializers.CharField()
    email = serializers.CharField(allow_blank=True)
    url = serializers.CharField(allow_blank=True)
    github = serializers.CharField(allow_blank=True)
    github_url = serializers.CharField(allow_blank=True)
    twitter = serializers.CharField(allow_blank=True)
    twitter_url = serializers.CharField(allow_blank=True)
    citation = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    dependencies = AdapterDependencySerializer(many=True)
    warnings = FileProblemSerializer(many=True)
    downloads = serializers.IntegerField()
    created = serializers.DateTimeField()
    updated = serializers.DateTimeField()
    load_snippet = serializers.CharField()

    def to_representation(self, detail: dict) -> dict:
        # `selectors.adapter_detail` already builds exactly these fields; only the timestamps
        # need rendering. Skips DRF's per-request deep copy of ~40 declared fields.
        return {
            **detail,
            "created": render_datetime(detail["created"]),
            "updated": render_datetime(detail["updated"]),
        }


class FacetValueSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="the filter value to pass back")
    label = serializers.CharField()
    count = serializers.IntegerField()


class FacetsSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="adapters matching every filter")
    facets = serializers.DictField(
        child=FacetValueSerializer(many=True), help_text="filter name -> counted values"
    )


class TaskSerializer(serializers.Serializer):
    type = serializers.CharField(source="type_id")
    task = serializers.CharField()
    displayname = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    adapter_count = serializers.IntegerField()


class SubtaskSerializer(serializers.Serializer):
    type = serializers.CharField(source="task__type_id")
    task = serializers.CharField(source="task__task")
    subtask = serializers.CharField()
    displayname = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    url = serializers.CharField(allow_blank=True)
    citation = serializers.CharField(allow_blank=True)
    language = serializers.CharField(allow_blank=True)
    hf_datasets_id = serializers.CharField(allow_blank=True)
    metric_name = serializers.CharField(allow_blank=True)
    metric_higher_is_better = serializers.BooleanField(allow_null=True)
    adapter_count = serializers.IntegerField()


class ArchitectureSerializer(serializers.Serializer):
    name = serializers.CharField()
    displayname = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    citation = serializers.CharField(allow_blank=True)
    config = serializers.DictField(child=serializers.JSONField())
    config_id = serializers.CharField(source="config_hash")
    adapter_count = serializers.IntegerField()


class ModelSerializer(serializers.Serializer):
    model_name = serializers.CharField()
    model_type = serializers.CharField()
    adapter_count = serializers.IntegerField()


class SyncRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.SerializerMethodField(help_text="repository URL, credentials removed")
    branch = serializers.CharField(allow_blank=True)
    full = serializers.BooleanField()
    status = serializers.CharField()
    previous_commit = serializers.CharField(allow_blank=True)
    commit = serializers.CharField(allow_blank=True)
    added = serializers.IntegerField()
    updated = serializers.IntegerField()
    removed = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))
    errors = FileProblemSerializer(many=True)
    warnings = FileProblemSerializer(many=True)
    message = serializers.CharField(allow_blank=True)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)

    def get_source(self, run) -> str:
        # A remote URL may carry a token (https://user:token@host/...): never publish it.
        parts = urlsplit(run.source)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urlunsplit(parts._replace(netloc=netloc))
        return run.source


class SyncRequestSerializer(serializers.Serializer):
    full = serializers.BooleanField(default=False, help_text="re-read every file")


class SyncQueuedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    task_id = serializers.CharField()
    run_id = serializers.IntegerField(
        allow_null=True, help_text="the finished run, when tasks run eagerly (no broker)"
    )
    runs_url = serializers.URLField()


class SyncIgnoredSerializer(serializers.Serializer):
    detail = serializers.CharField()
