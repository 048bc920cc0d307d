"""Rows of the uploads app: a contributor's upload and its validation."""

from django.db import models

from hub_server.catalog.models import AdapterVersion


class Upload(models.Model):
    """A contributor's upload: the stored archive and card, then the validation's status and report.

    pending -> validating -> published | rejected. The report holds one entry per check
    ({name, ok, message, duration_ms}); a rejected upload keeps it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        VALIDATING = "validating", "validating"
        PUBLISHED = "published", "published"
        REJECTED = "rejected", "rejected"

    FINAL = (Status.PUBLISHED, Status.REJECTED)

    user = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, related_name="uploads"
    )
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.PROTECT, related_name="uploads"
    )
    type = models.CharField(max_length=50, default="text_task")
    task = models.CharField(max_length=100)
    subtask = models.CharField(max_length=100)
    # Empty: `<model>_<task>_<subtask>_<architecture>`, decided by the card check.
    name = models.CharField(max_length=200, blank=True)
    version = models.CharField(max_length=100, blank=True)
    # Card fields given with the upload: description, author, email, url, github, citation...
    card = models.JSONField(default=dict, blank=True)
    # The uploaded bytes, content-addressed in the adapter_files storage.
    archive_key = models.CharField(max_length=500)
    archive_sha256 = models.CharField(max_length=64)
    archive_size = models.PositiveBigIntegerField()
    filename = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    report = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    adapter_version = models.ForeignKey(
        AdapterVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="uploads"
    )
    # Where the card was committed: branch and commit of the Hub repository.
    git_branch = models.CharField(max_length=200, blank=True)
    git_commit = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the validation task reached the broker; empty while it could not be sent (the broker was
    # down: "validation delayed"), until the sweep sends it.
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The claim of the worker validating the upload: its token, and until when it holds (renewed
    # while the validation runs). Only the holder may finish the upload; an expired claim may be
    # taken again (services.claim_upload).
    claim_token = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When the retention purge deleted the archive of this rejected upload (the row stays).
    archive_purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "started_at"], name="upload_status_started")]

    def __str__(self) -> str:
        return f"upload {self.pk} {self.organisation_id}/{self.name or '?'} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def validation_delayed(self) -> bool:
        """Stored, but its validation task has not reached the broker yet."""
        return self.status == self.Status.PENDING and self.queued_at is None
