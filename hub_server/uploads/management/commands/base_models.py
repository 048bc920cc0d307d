"""`manage.py base_models fetch ID [ID ...]` fetches base models into the validators' cache ahead of
the first upload (with progress); `manage.py base_models list` shows what the cache holds."""

from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hub_server.uploads import basemodel_cache, basemodels


class Command(BaseCommand):
    help = (
        "Fetch base models from HUB_BASE_MODEL_ENDPOINT into the validators' cache "
        "(HUB_BASE_MODEL_CACHE_DIR), or list what it holds."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        fetch = sub.add_parser("fetch", help="fetch the models now (allowed ones only)")
        fetch.add_argument("model_ids", nargs="+", metavar="ID", help="Hugging Face model id")
        sub.add_parser("list", help="the cached models, their bytes and last use")

    def handle(self, *args, **options):
        if options["action"] == "fetch":
            self.fetch(options["model_ids"])
        else:
            self.list()

    def fetch(self, model_ids: list[str]) -> None:
        failed = []
        for model_id in model_ids:
            if not basemodels.is_hub_id(model_id):
                failed.append(f"{model_id}: {basemodels.not_a_hub_id(model_id)}")
                continue
            try:
                folder, fetched = basemodel_cache.fetch_model(model_id, progress=True)
            except basemodel_cache.BaseModelUnavailable as exc:
                failed.append(str(exc))
                self.stderr.write(f"failed: {exc}")
                continue
            manifest = next(m for m in basemodel_cache.cached_models() if m.folder == folder)
            verb = "fetched" if fetched else "already cached"
            self.stdout.write(
                f"{model_id}: {verb}, {manifest.bytes} bytes at {manifest.sha[:12]} in {folder}"
            )
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(model_ids)} not fetched: " + "; ".join(failed)
            )

    def list(self) -> None:
        models = basemodel_cache.cached_models()
        root = basemodel_cache.cache_dir()
        for model in sorted(models, key=lambda m: m.last_used, reverse=True):
            used = datetime.fromtimestamp(model.last_used, UTC).isoformat(timespec="seconds")
            self.stdout.write(
                f"{model.model_id}\t{model.bytes} bytes\tlast used {used}\t{model.sha[:12]}\t"
                f"{model.endpoint}"
            )
        total = sum(m.bytes for m in models)
        bound = settings.HUB_BASE_MODEL_CACHE_MAX_BYTES
        self.stdout.write(
            f"{len(models)} base model(s), {total} of {bound} bytes "
            f"(HUB_BASE_MODEL_CACHE_MAX_BYTES) in {root}"
        )
