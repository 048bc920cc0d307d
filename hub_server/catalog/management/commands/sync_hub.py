from django.core.management.base import BaseCommand, CommandError

from hub_server.catalog.models import SyncRun
from hub_server.catalog.sync import sync_hub_repository


class Command(BaseCommand):
    help = "Sync the catalogue from a Hub git repository (URL or local path; default HUB_REPO_URL)."

    def add_arguments(self, parser):
        parser.add_argument("source", nargs="?", help="git URL or local path of the repository")
        parser.add_argument("--branch", help="branch to sync (default: the remote's default)")
        parser.add_argument("--full", action="store_true", help="re-read every file")
        parser.add_argument(
            "--queue",
            action="store_true",
            help="send to the Celery workers instead of running here",
        )

    def handle(self, *args, source=None, branch=None, full=False, queue=False, **options):
        if queue:
            from hub_server.catalog.tasks import sync_hub_task

            result = sync_hub_task.delay(source, branch, full)
            self.stdout.write(f"queued sync task {result.id}")
            return
        verbose = options["verbosity"] > 1
        run = sync_hub_repository(
            source, branch, full, progress=(lambda m: self.stderr.write(m)) if verbose else None
        )
        for error in run.errors:
            where = error["file"] + (f":{error['line']}" if error.get("line") else "")
            field = f"{error['field']}: " if error.get("field") else ""
            self.stderr.write(f"error {where}: {field}{error['message']}")
        if verbose:
            for warning in run.warnings:
                self.stderr.write(f"warning {warning['file']}: {warning['message']}")
        if run.status in (SyncRun.Status.FAILED, SyncRun.Status.LOCKED):
            raise CommandError(run.message)
        self.stdout.write(f"{run.message} ({run.duration_ms} ms)")
