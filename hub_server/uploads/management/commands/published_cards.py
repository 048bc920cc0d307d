"""`manage.py published_cards [--export DIR] [--check]`: the adapters published on this hub."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from hub_server import storage
from hub_server.catalog.models import Adapter, AdapterVersion
from hub_server.uploads.publishing import card_path, render_card_yaml


class Command(BaseCommand):
    help = (
        "List the adapters published on this hub (their cards are their rows, in PostgreSQL); "
        "--export writes each card as adapters/<org>/<name>.yaml under DIR (a readable copy, or "
        "files for a pull request upstream); --check fails unless every hosted file of them is "
        "in the file storage (run it after a restore)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--export", metavar="DIR", help="write every card under DIR")
        parser.add_argument(
            "--check", action="store_true", help="check every hosted archive is in the storage"
        )

    def handle(self, *args, **options):
        adapters = (
            Adapter.objects.filter(origin=Adapter.Origin.PUBLISHED)
            .select_related("task", "subtask", "architecture")
            .prefetch_related("versions", "dependencies")
            .order_by("org", "name")
        )
        target = Path(options["export"]) if options["export"] else None
        missing = []
        for adapter in adapters:
            versions = list(adapter.versions.all())
            hosted = [v for v in versions if v.file_status == AdapterVersion.FileStatus.HOSTED]
            self.stdout.write(
                f"{adapter.unique_id} {adapter.status} versions "
                f"{','.join(v.version for v in versions)}"
            )
            if options["check"]:
                missing += [
                    f"{adapter.unique_id}@{v.version}"
                    for v in hosted
                    if not storage.blob_exists(v.storage_key)
                ]
            if target is not None:
                path = target / card_path(adapter)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render_card_yaml(adapter), encoding="utf-8")
        self.stdout.write(f"{len(adapters)} adapters published on this hub")
        if missing:
            raise CommandError(
                f"{len(missing)} hosted archives are not in the file storage: "
                f"{', '.join(missing[:20])}; restore the files backup"
            )
