"""The catalogue: what the Hub repository's YAML cards describe, as rows.

Every row synced from git remembers the file it came from (`source_path`) and that file's git blob
id (`source_blob`), so a sync can tell added, changed, unchanged and removed cards apart.
"""

from django.db import models


class AdapterType(models.Model):
    id = models.SlugField(primary_key=True, max_length=50)
    displayname = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    source_path = models.CharField(max_length=500, blank=True)
    source_blob = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return self.id


class Task(models.Model):
    type = models.ForeignKey(AdapterType, on_delete=models.PROTECT, related_name="tasks")
    task = models.CharField(max_length=100)
    displayname = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    source_path = models.CharField(max_length=500, blank=True)
    source_blob = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["type", "task"], name="uniq_task_per_type")]
        ordering = ["type_id", "task"]

    def __str__(self) -> str:
        return f"{self.type_id}/{self.task}"


class Subtask(models.Model):
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="subtasks")
    subtask = models.CharField(max_length=100)
    displayname = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    url = models.CharField(max_length=1000, blank=True)
    citation = models.TextField(blank=True)
    language = models.CharField(max_length=100, blank=True, db_index=True)
    hf_datasets_id = models.CharField(max_length=200, blank=True)
    metric_name = models.CharField(max_length=100, blank=True)
    metric_higher_is_better = models.BooleanField(null=True)
    source_path = models.CharField(max_length=500, blank=True)
    source_blob = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "subtask"], name="uniq_subtask_per_task")
        ]
        ordering = ["task_id", "subtask"]

    def __str__(self) -> str:
        return f"{self.task.task}/{self.subtask}"


class Architecture(models.Model):
    name = models.CharField(max_length=100, unique=True)
    displayname = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    citation = models.TextField(blank=True)
    config = models.JSONField()
    config_v1 = models.JSONField(null=True, blank=True)
    config_hash = models.CharField(max_length=16)
    source_path = models.CharField(max_length=500, blank=True)
    source_blob = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Adapter(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        # The card left the repository: hidden from listings, its page says so (410 on the API).
        WITHDRAWN = "withdrawn", "withdrawn"
        # Unpublished by a moderator: hidden from search, still downloadable by exact version.
        YANKED = "yanked", "yanked"

    class Origin(models.TextChoices):
        # Its card is a file of the synced Hub repository (HUB_REPO_URL): the sync writes it.
        REPOSITORY = "repository", "Hub repository"
        # Published through this hub (an upload): the row is the card, kept in this database and
        # rendered as YAML from it. No sync of the Hub repository writes or withdraws it.
        PUBLISHED = "published", "published here"

    org = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    type = models.ForeignKey(AdapterType, on_delete=models.PROTECT, related_name="adapters")
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="adapters")
    subtask = models.ForeignKey(Subtask, on_delete=models.PROTECT, related_name="adapters")
    model_type = models.CharField(max_length=100)
    model_name = models.CharField(max_length=200)
    model_class = models.CharField(max_length=200, blank=True)
    has_head = models.BooleanField(default=False)
    architecture = models.ForeignKey(
        Architecture, on_delete=models.PROTECT, related_name="adapters"
    )
    # The card's own `config` block (with `using`) and the full config it resolves to.
    config_overrides = models.JSONField(default=dict)
    config = models.JSONField(default=dict)
    config_hash = models.CharField(max_length=16)
    author = models.CharField(max_length=500, blank=True)
    email = models.CharField(max_length=300, blank=True)
    url = models.CharField(max_length=1000, blank=True)
    github = models.CharField(max_length=300, blank=True)
    twitter = models.CharField(max_length=300, blank=True)
    citation = models.TextField(blank=True)
    description = models.TextField(blank=True)
    default_version = models.CharField(max_length=100)
    hidden_size = models.PositiveIntegerField(null=True, blank=True)
    # Format-check findings (a bad email or URL) that do not keep the card out.
    warnings = models.JSONField(default=list, blank=True)
    downloads = models.PositiveBigIntegerField(default=0)
    source_path = models.CharField(max_length=500, blank=True)
    source_blob = models.CharField(max_length=64, blank=True)
    origin = models.CharField(max_length=12, choices=Origin.choices, default=Origin.REPOSITORY)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="uniq_adapter_id")]
        indexes = [
            # The list's filters, each paired with the default ordering so a filtered page is
            # an index range scan, not a sort.
            models.Index(fields=["status", "-downloads", "id"], name="adapter_status_dl"),
            models.Index(fields=["status", "-updated_at", "id"], name="adapter_status_upd"),
            models.Index(fields=["task", "subtask", "-downloads"], name="adapter_task_sub_dl"),
            models.Index(fields=["model_name", "-downloads"], name="adapter_model_dl"),
            models.Index(fields=["model_type", "-downloads"], name="adapter_mtype_dl"),
            models.Index(fields=["architecture", "-downloads"], name="adapter_arch_dl"),
            models.Index(fields=["config_hash"], name="adapter_config_hash"),
            models.Index(fields=["org", "-downloads"], name="adapter_org_dl"),
            models.Index(fields=["type", "-downloads"], name="adapter_type_dl"),
            models.Index(fields=["has_head", "-downloads"], name="adapter_head_dl"),
            models.Index(fields=["source_path"], name="adapter_source_path"),
        ]
        ordering = ["org", "name"]

    def __str__(self) -> str:
        return self.unique_id

    @property
    def unique_id(self) -> str:
        return f"@{self.org}/{self.name}"

    @property
    def identifier(self) -> str:
        return f"{self.task.task}/{self.subtask.subtask}@{self.org}"


class AdapterVersion(models.Model):
    class FileStatus(models.TextChoices):
        EXTERNAL = "external", "external link, not yet mirrored"
        HOSTED = "hosted", "hosted here"
        CHECKSUM_MISMATCH = "checksum_mismatch", "checksum mismatch"
        DEAD_LINK = "dead_link", "dead link"

    adapter = models.ForeignKey(Adapter, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    url = models.CharField(max_length=2000, blank=True)
    sha1 = models.CharField(max_length=40, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    description = models.TextField(blank=True)
    score = models.FloatField(null=True, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    storage_key = models.CharField(max_length=500, blank=True)
    file_status = models.CharField(
        max_length=20, choices=FileStatus.choices, default=FileStatus.EXTERNAL
    )
    file_error = models.TextField(blank=True)
    downloads = models.PositiveBigIntegerField(default=0)
    # The /hf/ view of this version, frozen when first published (or first read, for versions
    # older than these fields): its README.md (the one a client pushed, else one generated from
    # the catalogue) and its commit sha, so `revision=<sha>` keeps resolving to the same bytes
    # whatever later happens to the adapter's card.
    hf_readme = models.TextField(blank=True)
    hf_sha = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["adapter", "version"], name="uniq_version_per_adapter")
        ]
        ordering = ["adapter_id", "position"]

    def __str__(self) -> str:
        return f"{self.adapter_id}@{self.version}"


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


class AdapterDependency(models.Model):
    adapter = models.ForeignKey(Adapter, on_delete=models.CASCADE, related_name="dependencies")
    # As written in the card: `org/file` or an identifier such as `en/wiki@ukp`.
    key = models.CharField(max_length=300)
    description = models.CharField(max_length=300, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["adapter_id", "position"]

    def __str__(self) -> str:
        return self.key


class SyncRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        NOOP = "noop", "nothing to do"
        FAILED = "failed", "failed"
        LOCKED = "locked", "another sync was running"

    source = models.CharField(max_length=1000)
    branch = models.CharField(max_length=200, blank=True)
    full = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    previous_commit = models.CharField(max_length=40, blank=True)
    commit = models.CharField(max_length=40, blank=True)
    added = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    # Per kind: {"adapters": {"added": n, ...}, "tasks": {...}, ...}
    counts = models.JSONField(default=dict, blank=True)
    # Every per-file problem: [{"file", "line", "field", "message"}]
    errors = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    # Who runs it: host, pid and its start, database session; the next sync reaps a run whose
    # owner is gone (hub_server/catalog/sync_runs.py).
    owner = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["source", "branch", "-id"], name="syncrun_source")]

    def __str__(self) -> str:
        return f"sync {self.pk} {self.status} {self.commit[:10]}"


class SyncLock(models.Model):
    """One row; a sync holds it with SELECT ... FOR UPDATE NOWAIT for its whole transaction."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)


class CatalogGeneration(models.Model):
    """One row: the catalogue generation, the version every cached read is stored under.

    Every committed catalogue change (sync, publish, yank, mirror) sets a new value
    (hub_server/catalog/cache.py), and each web process re-reads it at most every
    HUB_CATALOG_RECHECK_SECONDS: the database, not a cache, is where a change is announced, so
    a change made by any process reaches every process whether or not Redis is there."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"catalogue generation {self.value}"
