"""`manage.py publish_adapter DIR --task T --subtask S --org O`: host an adapter folder here."""

import json

from django.core.management.base import BaseCommand, CommandError

from hub_server.uploads.publishing import PublishError, publish_adapter_folder


class Command(BaseCommand):
    help = "Publish an adapter folder written by save_adapter as a version hosted by this hub."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # --version is the adapter's version here, replacing Django's own --version.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("folder")
        parser.add_argument("--task", required=True)
        parser.add_argument("--subtask", required=True)
        parser.add_argument("--org", required=True)
        parser.add_argument("--name", help="default: <model>_<task>_<subtask>_<architecture>")
        parser.add_argument("--version", dest="adapter_version", help="default: the next integer")
        parser.add_argument("--type", default="text_task", help="adapter type (text_task)")
        parser.add_argument(
            "--card", default="{}", help='extra card fields as JSON, e.g. {"author": "..."}'
        )

    def handle(self, *args, **options):
        try:
            extra = json.loads(options["card"])
        except ValueError as exc:
            raise CommandError(f"--card is not JSON: {exc}") from None
        try:
            version = publish_adapter_folder(
                options["folder"],
                task=options["task"],
                subtask=options["subtask"],
                org=options["org"],
                name=options["name"],
                version=options["adapter_version"],
                type=options["type"],
                card_extra=extra,
            )
        except PublishError as exc:
            raise CommandError(str(exc)) from None
        adapter = version.adapter
        self.stdout.write(
            f"published {adapter.unique_id} version {version.version}: {version.size} bytes, "
            f"sha256 {version.sha256}, {version.files.count()} files, {version.url}"
        )
