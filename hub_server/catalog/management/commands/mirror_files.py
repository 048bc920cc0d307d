"""`manage.py mirror_files [--adapter org/name] [--limit N]`: host the files cards link to."""

from django.core.management.base import BaseCommand

from hub_server.catalog.mirror import mirror_files


class Command(BaseCommand):
    help = "Download the external files of the catalogue, verify their checksums and host them."

    def add_arguments(self, parser):
        parser.add_argument("--adapter", help="only this adapter, as org/name")
        parser.add_argument("--limit", type=int, help="at most this many versions")
        parser.add_argument(
            "--recheck", action="store_true", help="also retry versions with a checksum mismatch"
        )

    def handle(self, *args, **options):
        results = mirror_files(
            adapter=options["adapter"],
            limit=options["limit"],
            recheck=options["recheck"],
            progress=self.stdout.write,
        )
        counts: dict[str, int] = {}
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        self.stdout.write(f"{len(results)} versions: {summary or 'nothing to mirror'}")
