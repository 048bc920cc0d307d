"""Moderation of uploads in the Django admin: see every upload and its report, re-run the
validation, unpublish (yank) or restore the adapter an upload published, delete uploads."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from hub_server.catalog.models import Adapter
from hub_server.uploads import services
from hub_server.uploads.models import Upload


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "organisation", "name", "version", "task", "subtask", "user",
                    "created_at", "finished_at", "adapter_status"]  # fmt: skip
    list_filter = ["status", "organisation"]
    search_fields = ["name", "task", "subtask", "user__username", "organisation__name", "message"]
    readonly_fields = [f.name for f in Upload._meta.fields] + ["report_table", "card_json"]
    exclude = ["report", "card"]
    actions = ["rerun_validation", "yank_adapters", "restore_adapters"]
    list_select_related = ["organisation", "user", "adapter_version__adapter"]

    def has_add_permission(self, request) -> bool:
        return False  # uploads come through the service, never typed in

    @admin.display(description="adapter")
    def adapter_status(self, upload: Upload) -> str:
        version = upload.adapter_version
        return f"{version.adapter.unique_id} ({version.adapter.status})" if version else "-"

    @admin.display(description="report")
    def report_table(self, upload: Upload) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            (
                (e["name"], {True: "ok", False: "FAILED", None: "skipped"}[e["ok"]],
                 e["duration_ms"], e["message"])
                for e in upload.report
            ),
        )  # fmt: skip
        return format_html("<table>{}</table>", rows) if upload.report else "-"

    @admin.display(description="card")
    def card_json(self, upload: Upload) -> str:
        return format_html("<pre>{}</pre>", json.dumps(upload.card, indent=2))

    @admin.action(description="Re-run the validation")
    def rerun_validation(self, request, queryset):
        count = 0
        for upload in queryset:
            if upload.status == Upload.Status.PUBLISHED:
                continue  # a published version is immutable; yank it instead
            try:
                services.revalidate_upload(upload)
            except services.UploadRefused as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            count += 1
        self.message_user(request, f"{count} upload(s) queued for validation", messages.SUCCESS)

    @admin.action(description="Unpublish (yank) the adapter: hidden from search, downloadable")
    def yank_adapters(self, request, queryset):
        adapters = Adapter.objects.filter(versions__uploads__in=queryset).distinct()
        for adapter in adapters:
            services.yank_adapter(adapter)
        self.message_user(request, f"{len(adapters)} adapter(s) yanked", messages.SUCCESS)

    @admin.action(description="Restore the yanked adapter")
    def restore_adapters(self, request, queryset):
        adapters = Adapter.objects.filter(
            versions__uploads__in=queryset, status=Adapter.Status.YANKED
        ).distinct()
        for adapter in adapters:
            services.restore_adapter(adapter)
        self.message_user(request, f"{len(adapters)} adapter(s) restored", messages.SUCCESS)
