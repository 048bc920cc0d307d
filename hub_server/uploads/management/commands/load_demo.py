from django.core.management.base import BaseCommand, CommandError

from hub_server.catalog.demo import load_demo_catalogue
from hub_server.catalog.models import SyncRun


class Command(BaseCommand):
    # An uploads command: it syncs the demo catalogue, then publishes the demo adapters as uploads.
    help = "Create the demo Hub repository under HUB_DATA_DIR and sync it into the catalogue."

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-adapters", action="store_true", help="skip training/uploading the demo adapters"
        )

    def handle(self, *args, **options):
        run = load_demo_catalogue()
        if run.status in (SyncRun.Status.FAILED, SyncRun.Status.LOCKED):
            raise CommandError(run.message)
        for error in run.errors:
            self.stderr.write(f"error {error['file']}: {error['message']}")
        self.stdout.write(f"demo catalogue: {run.message}")
        if not options["no_adapters"]:
            # Here, not at the top: the demo adapters train with torch, only when asked for.
            from hub_server.uploads.demo_adapters import publish_demo_adapters

            publish_demo_adapters(self.stdout.write)
