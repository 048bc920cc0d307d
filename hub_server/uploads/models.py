"""Rows of the uploads app: the member files of every archive this hub hosts."""

from django.db import models

from hub_server.catalog.models import AdapterVersion


class VersionFile(models.Model):
    """One member of a hosted version's archive, stored content-addressed (hub_server.storage).

    These are the files /hf/ serves for the version's revision (plus a generated README.md).
    """

    version = models.ForeignKey(AdapterVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    # git blob id of the bytes: the `oid` of a Hugging Face tree entry.
    git_oid = models.CharField(max_length=40)
    storage_key = models.CharField(max_length=500)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="uniq_file_per_version")
        ]
        ordering = ["version_id", "path"]

    def __str__(self) -> str:
        return f"{self.version}:{self.path}"
