from __future__ import annotations

import json

import yaml
from rest_framework import serializers

from hub_server.catalog import safe_yaml
from hub_server.uploads.models import Upload


class CardField(serializers.Field):
    """The card fields as a JSON or YAML object (a string in a multipart form, or an object)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            too_large = safe_yaml.blob_too_large(len(data.encode("utf-8")))
            if too_large:
                raise serializers.ValidationError(f"the card: {too_large}")
            try:
                data = json.loads(data) if data.strip().startswith("{") else safe_yaml.load(data)
            except RecursionError:
                raise serializers.ValidationError("the card is nested too deeply") from None
            except safe_yaml.YAMLRefused as exc:
                line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
                raise serializers.ValidationError(f"the card, line {line}: {exc.problem}") from None
            except (ValueError, yaml.YAMLError) as exc:
                raise serializers.ValidationError(
                    safe_yaml.clip(f"not JSON or YAML: {exc}", 300)
                ) from None
        if data in (None, ""):
            return {}
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be an object of card fields")
        return data

    def to_representation(self, value):
        return value


class UploadRequestSerializer(serializers.Serializer):
    archive = serializers.FileField(required=False, help_text="zip of the adapter folder")
    files = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="or the folder's files"
    )
    task = serializers.CharField(max_length=100)
    subtask = serializers.CharField(max_length=100)
    type = serializers.CharField(max_length=50, default="text_task")
    org = serializers.CharField(max_length=100, required=False, allow_blank=True)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    version = serializers.CharField(max_length=100, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    card = CardField(required=False)

    def validate(self, attrs):
        if not attrs.get("archive") and not attrs.get("files"):
            raise serializers.ValidationError(
                {"archive": ["upload a zip of the adapter folder as `archive` (or its files)"]}
            )
        return attrs


class UploadSerializer(serializers.ModelSerializer):
    org = serializers.CharField(source="organisation.name")
    user = serializers.CharField(source="user.username", default=None)
    adapter = serializers.SerializerMethodField()
    status_url = serializers.SerializerMethodField()
    validation_delayed = serializers.BooleanField(
        read_only=True,
        help_text="stored, but the task queue was unavailable: validated once it is back",
    )

    class Meta:
        model = Upload
        fields = [
            "id",
            "status",
            "status_url",
            "user",
            "org",
            "type",
            "task",
            "subtask",
            "name",
            "version",
            "card",
            "filename",
            "archive_size",
            "archive_sha256",
            "validation_delayed",
            "message",
            "report",
            "attempts",
            "adapter",
            "git_branch",
            "git_commit",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_status_url(self, upload) -> str:
        request = self.context.get("request")
        path = f"/api/v1/uploads/{upload.pk}/"
        return request.build_absolute_uri(path) if request else path

    def get_adapter(self, upload) -> dict | None:
        version = upload.adapter_version
        if version is None:
            return None
        adapter = version.adapter
        return {
            "id": adapter.unique_id,
            "identifier": adapter.identifier,
            "org": adapter.org,
            "name": adapter.name,
            "version": version.version,
            "status": adapter.status,
            "sha256": version.sha256,
            "download_url": version.url,
        }
