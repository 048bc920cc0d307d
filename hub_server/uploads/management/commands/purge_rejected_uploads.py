"""`manage.py purge_rejected_uploads [--days N] [--dry-run]`: delete old rejected archives now."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hub_server.uploads.retention import purge_rejected_archives


class Command(BaseCommand):
    help = (
        "Delete the archives of uploads rejected more than HUB_REJECTED_RETENTION_DAYS days ago "
        "(beat does it hourly); their rows and reports stay."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"retention in days (default HUB_REJECTED_RETENTION_DAYS, now "
            f"{settings.HUB_REJECTED_RETENTION_DAYS})",
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, **options):
        days = options["days"]
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1")
        result = purge_rejected_archives(days=days, dry_run=options["dry_run"])
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{result.uploads} rejected upload(s) past retention; {verb} "
            f"{result.blobs} archive(s), {result.bytes} bytes"
        )
