"""A small Hub repository written file by file, and a dump of everything a sync writes.

Used by the incremental-equals-full tests: a handful of types, tasks, subtasks, architectures and
cards, so a random sequence of commits stays fast.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from django.db import transaction

from hub_server.catalog import models
from hub_server.catalog.models import Adapter, SyncRun
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import commit_all, git

TYPE = "text_task"


def type_doc(type_id: str = TYPE) -> dict:
    return {"id": type_id, "displayname": type_id.title()}


def task_doc(task: str, displayname: str | None = None) -> dict:
    return {"task": task, "displayname": displayname or task.title(), "description": "a task"}


def subtask_doc(task: str, subtask: str, displayname: str | None = None) -> dict:
    return {"task": task, "subtask": subtask, "description": "a subtask",
            "displayname": displayname or subtask.upper()}  # fmt: skip


def arch_doc(name: str, reduction_factor: int = 16) -> dict:
    return {"name": name, "displayname": name.title(), "description": "an architecture",
            "config": {"non_linearity": "relu", "reduction_factor": reduction_factor}}  # fmt: skip


def card_doc(
    task: str = "sentiment",
    subtask: str = "sst-2",
    model_name: str = "bert-base-uncased",
    using: str = "pfeiffer",
    description: str = "an adapter",
    type_id: str = TYPE,
) -> dict:
    return {
        "type": type_id,
        "task": task,
        "subtask": subtask,
        "model_type": "bert",
        "model_name": model_name,
        "author": "Test",
        "config": {"using": using},
        "default_version": "1",
        "files": [{"version": "1", "url": "https://example.org/a.zip", "sha1": "a" * 40}],
        "description": description,
    }


class MiniHub:
    """A git repository holding a small Hub; each `commit` is one commit of whatever changed."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")
        self.write(f"adapter_types/{TYPE}.yaml", type_doc())
        self.write("architectures/pfeiffer.yaml", arch_doc("pfeiffer"))
        self.write(f"tasks/{TYPE}/sentiment.yaml", task_doc("sentiment"))
        self.write(f"subtasks/{TYPE}/sentiment_sst-2.yaml", subtask_doc("sentiment", "sst-2"))
        self.write("README.md", "a small hub\n")

    def write(self, rel: str, doc: dict | str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
        target.write_text(text)

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def delete(self, rel: str) -> None:
        (self.path / rel).unlink()

    def rename(self, old: str, new: str) -> None:
        (self.path / new).parent.mkdir(parents=True, exist_ok=True)
        (self.path / old).rename(self.path / new)

    def exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def files(self, folder: str) -> list[str]:
        base = self.path / folder
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.path)) for p in base.rglob("*") if p.is_file())

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "-A")
        if not git(self.path, "status", "--porcelain"):
            git(self.path, "commit", "-q", "--allow-empty", "-m", message)
            return git(self.path, "rev-parse", "HEAD")
        return commit_all(self.path, message)


def catalogue_dump() -> dict:
    """Every table a sync writes, by natural keys (no primary keys, no timestamps)."""
    adapter_fields = [
        "status", "type_id", "task__task", "subtask__subtask", "architecture__name",
        "model_type", "model_name", "model_class", "has_head", "config_overrides", "config",
        "config_hash", "author", "email", "url", "github", "twitter", "citation", "description",
        "default_version", "hidden_size", "warnings", "source_path", "source_blob",
    ]  # fmt: skip
    return {
        "types": sorted(
            models.AdapterType.objects.values_list(
                "id", "displayname", "description", "source_path"
            )
        ),
        "tasks": sorted(
            models.Task.objects.values_list(
                "type_id", "task", "displayname", "description", "source_path", "source_blob"
            )  # fmt: skip
        ),
        "subtasks": sorted(
            models.Subtask.objects.values_list(
                "task__type_id",
                "task__task",
                "subtask",
                "displayname",
                "source_path",
                "source_blob",
            )  # fmt: skip
        ),
        "architectures": sorted(
            (a.name, a.displayname, repr(a.config), a.config_hash, a.source_path)
            for a in models.Architecture.objects.all()
        ),
        "adapters": sorted(
            (row["org"], row["name"], *(repr(row[f]) for f in adapter_fields))
            for row in Adapter.objects.values("org", "name", *adapter_fields)
        ),
        "versions": sorted(
            models.AdapterVersion.objects.values_list(
                "adapter__org",
                "adapter__name",
                "version",
                "position",
                "url",
                "sha1",
                "sha256",
                "file_status",
            )  # fmt: skip
        ),
        "dependencies": sorted(
            models.AdapterDependency.objects.values_list(
                "adapter__org", "adapter__name", "key", "position"
            )  # fmt: skip
        ),
    }


def problems(run) -> list[tuple]:
    """A run's errors and warnings as comparable tuples."""
    return sorted(
        (kind, p["file"], p.get("field") or "", p["message"])
        for kind, found in (("error", run.errors), ("warning", run.warnings))
        for p in found
    )


class _Rollback(Exception):
    pass


def full_sync_result(hub: MiniHub) -> tuple[dict, list]:
    """What `--full` makes of the same commit from the same database, without keeping it."""
    try:
        with transaction.atomic():
            run = sync_hub_repository(str(hub.path), full=True)
            assert run.status == SyncRun.Status.SUCCEEDED, run.message
            result = catalogue_dump(), problems(run)
            raise _Rollback
    except _Rollback:
        pass
    return result


def sync_and_compare(hub: MiniHub) -> SyncRun:
    """Sync incrementally, then check that a full sync would change nothing and report the same."""
    run = sync_hub_repository(str(hub.path))
    assert run.status in (SyncRun.Status.SUCCEEDED, SyncRun.Status.NOOP), run.message
    incremental = catalogue_dump(), problems(run)
    full = full_sync_result(hub)
    assert incremental == full, _difference(incremental, full)
    return run


def _difference(incremental: tuple, full: tuple) -> str:
    lines = []
    tables = [*((name, incremental[0][name], full[0][name]) for name in incremental[0]),
              ("problems", incremental[1], full[1])]  # fmt: skip
    for name, mine, theirs in tables:
        for row in sorted(set(mine) - set(theirs), key=repr):
            lines.append(f"{name}: only incremental: {row}")
        for row in sorted(set(theirs) - set(mine), key=repr):
            lines.append(f"{name}: only full: {row}")
    return "\n".join(lines)


def publish_here(org: str, name: str, doc: dict, path: str) -> Adapter:
    """An adapter as this hub's publishing leaves it (origin `published`, the card's path and git
    blob recorded), written straight into the catalogue: the sync only sees the rows."""
    from hub_server.catalog import hubformat
    from hub_server.uploads.hubrepo import blob_id

    arch = models.Architecture.objects.get(name=doc["config"]["using"])
    config = hubformat.full_config(arch.config, doc["config"])
    subtask = models.Subtask.objects.get(task__task=doc["task"], subtask=doc["subtask"])
    adapter = Adapter.objects.create(
        org=org, name=name, origin=Adapter.Origin.PUBLISHED, type_id=doc["type"],
        task=subtask.task, subtask=subtask, model_type=doc["model_type"],
        model_name=doc["model_name"], architecture=arch, config_overrides=doc["config"],
        config=config, config_hash=hubformat.config_hash(config), author=doc["author"],
        description=doc["description"], default_version="1", source_path=path,
        source_blob=blob_id(yaml.safe_dump(doc, sort_keys=False)),
    )  # fmt: skip
    models.AdapterVersion.objects.create(
        adapter=adapter, version="1", position=0, url=f"/api/v1/adapters/{org}/{name}/versions/1/download",
        sha256="b" * 64, file_status=models.AdapterVersion.FileStatus.HOSTED, storage_key="k",
    )  # fmt: skip
    return adapter
