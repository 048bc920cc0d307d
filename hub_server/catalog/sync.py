"""Where a YAML card becomes a row: `sync_hub_repository`, the one service that writes the catalogue
from a Hub git repository.

One run = one database transaction, under a row lock so two syncs never both write. The first run
(or `full=True`) reads every file at the fetched commit; later runs read only the files that
`git diff` says changed since the last synced commit. A file with a problem is reported in the
run's `errors` and never stops the others, nor deletes what it described before.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from hub_server.catalog import hubformat
from hub_server.catalog.gitsource import GitSource, SourceError
from hub_server.catalog.hubformat import FileProblem, ParsedFile
from hub_server.catalog.models import (
    Adapter,
    AdapterDependency,
    AdapterType,
    AdapterVersion,
    Architecture,
    Subtask,
    SyncLock,
    SyncRun,
    Task,
)
from hub_server.catalog.signals import catalog_changed

log = logging.getLogger(__name__)

VERSION_FIELDS = ("version", "url", "sha1", "sha256", "description", "score")
ADAPTER_FIELDS = (
    "status",
    "type_id",
    "task_id",
    "subtask_id",
    "model_type",
    "model_name",
    "model_class",
    "has_head",
    "architecture_id",
    "config_overrides",
    "config",
    "config_hash",
    "author",
    "email",
    "url",
    "github",
    "twitter",
    "citation",
    "description",
    "default_version",
    "hidden_size",
    "warnings",
    "source_path",
)


class SyncLocked(Exception):
    pass


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0


@dataclass
class CardPlan:
    """A valid adapter card, ready to be written."""

    parsed: ParsedFile
    blob: str
    values: dict[str, Any]
    versions: list[tuple]
    dependencies: list[tuple]


@dataclass
class _State:
    commit: str
    to_read: list[str]
    removed_paths: set[str]
    blobs: dict[str, str] = field(default_factory=dict)


def resolve_source(source: str | None, branch: str | None) -> tuple[str, str | None]:
    if not source:
        return settings.HUB_REPO_URL, branch or settings.HUB_REPO_BRANCH
    if "://" not in source and not source.startswith("git@") and Path(source).exists():
        source = str(Path(source).resolve())
    return source, branch


def sync_hub_repository(
    source: str | None = None,
    branch: str | None = None,
    full: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SyncRun:
    """Sync the catalogue from a Hub repository (git URL or local path). Returns the recorded run."""
    source, branch = resolve_source(source, branch)
    run = SyncRun.objects.create(source=source, branch=branch or "", full=full)
    started = time.perf_counter()
    changed = False
    try:
        with transaction.atomic():
            _lock()
            changed = _Sync(run, progress or (lambda msg: None)).execute()
    except SyncLocked:
        run.status = SyncRun.Status.LOCKED
        run.message = "another sync is running; this one wrote nothing"
    except SourceError as exc:
        run.status = SyncRun.Status.FAILED
        run.message = str(exc)
    except Exception as exc:
        run.status = SyncRun.Status.FAILED
        run.message = f"sync failed, nothing was written: {type(exc).__name__}: {exc}"
        log.exception("sync %s failed", run.pk)
        _finish(run, started)
        raise
    _finish(run, started)
    if changed:
        catalog_changed.send(sender=SyncRun, run=run)
    return run


def _finish(run: SyncRun, started: float) -> None:
    run.finished_at = timezone.now()
    run.duration_ms = int((time.perf_counter() - started) * 1000)
    if run.status == SyncRun.Status.FAILED:
        # The transaction rolled back: the run's counts describe nothing that happened.
        run.added = run.updated = run.removed = run.unchanged = 0
        run.counts = {}
    run.save()


def _lock() -> None:
    SyncLock.objects.get_or_create(id=1)
    try:
        SyncLock.objects.select_for_update(nowait=True).get(id=1)
    except DatabaseError as exc:
        raise SyncLocked() from exc


class _Sync:
    def __init__(self, run: SyncRun, progress: Callable[[str], None]):
        self.run = run
        self.progress = progress
        self.errors: list[FileProblem] = []
        self.warnings: list[FileProblem] = []
        self.counts: dict[str, Counts] = defaultdict(Counts)
        self.changed_architectures: set[int] = set()

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> bool:
        run = self.run
        src = GitSource(run.source, run.branch or None, Path(settings.HUB_DATA_DIR))
        self.progress(f"fetching {run.source}")
        commit = src.fetch()
        run.commit = commit
        previous = (
            SyncRun.objects.filter(status__in=[SyncRun.Status.SUCCEEDED, SyncRun.Status.NOOP])
            .exclude(pk=run.pk)
            .order_by("-id")
            .first()
        )
        same_source = (
            previous is not None
            and previous.source == run.source
            and previous.branch == run.branch
            and previous.commit
            and src.has_commit(previous.commit)
        )
        run.previous_commit = previous.commit if previous else ""
        incremental = same_source and not run.full
        if incremental and previous.commit == commit:
            run.status = SyncRun.Status.NOOP
            run.message = f"already at {commit[:12]}: nothing changed"
            run.errors = previous.errors
            run.warnings = previous.warnings
            run.unchanged = Adapter.objects.filter(status=Adapter.Status.ACTIVE).count()
            return False

        if incremental:
            state = self._plan_incremental(src, previous.commit, commit)
        else:
            state = self._plan_full(src, commit)
        self.progress(f"reading {len(state.to_read)} files at {commit[:12]}")
        parsed = self._read(src, state)
        self._apply(parsed, state)

        if incremental:
            touched = set(state.to_read) | state.removed_paths
            carried_errors = [e for e in previous.errors if e["file"] not in touched]
            carried_warnings = [w for w in previous.warnings if w["file"] not in touched]
        else:
            carried_errors, carried_warnings = [], []
        run.errors = carried_errors + [e.as_dict() for e in self.errors]
        run.warnings = carried_warnings + [w.as_dict() for w in self.warnings]
        run.counts = {kind: vars(c) for kind, c in sorted(self.counts.items())}
        for name in ("added", "updated", "removed", "unchanged"):
            setattr(run, name, sum(getattr(c, name) for c in self.counts.values()))
        run.status = SyncRun.Status.SUCCEEDED
        run.message = (
            f"synced {commit[:12]}: {run.added} added, {run.updated} updated, "
            f"{run.removed} removed, {run.unchanged} unchanged, {len(run.errors)} errors"
        )
        return bool(run.added or run.updated or run.removed)

    def _plan_full(self, src: GitSource, commit: str) -> _State:
        files = src.list_files(commit)
        catalogue = {p: b for p, b in files.items() if hubformat.classify(p)}
        known_paths = set()
        for model in (AdapterType, Task, Subtask, Architecture):
            known_paths.update(model.objects.values_list("source_path", flat=True))
        known_paths.update(
            Adapter.objects.exclude(status=Adapter.Status.WITHDRAWN).values_list(
                "source_path", flat=True
            )
        )
        removed = {p for p in known_paths if p and p not in catalogue}
        return _State(commit, sorted(catalogue), removed, catalogue)

    def _plan_incremental(self, src: GitSource, old: str, new: str) -> _State:
        changes = [c for c in src.changes(old, new) if hubformat.classify(c.path)]
        to_read = sorted({c.path for c in changes if c.status != "D"})
        removed = {c.path for c in changes if c.status == "D"}
        return _State(new, to_read, removed, src.blob_ids(new, to_read))

    def _read(self, src: GitSource, state: _State) -> dict[str, list[ParsedFile]]:
        by_kind: dict[str, list[ParsedFile]] = defaultdict(list)
        for path in state.to_read:
            parsed = hubformat.parse_file(path, src.read_blob(state.blobs[path]))
            self.warnings.extend(parsed.warnings)
            by_kind[parsed.kind].append(parsed)
        return by_kind

    def _apply(self, parsed: dict[str, list[ParsedFile]], state: _State) -> None:
        self.state = state
        removed = defaultdict(set)
        for path in state.removed_paths:
            removed[hubformat.classify(path)[0]].add(path)
        references = (
            ("adapter_type", AdapterType, lambda p: (p.data["id"],), lambda r: (r.id,),
             self._adapter_type_values, ("adapters", "tasks")),
            ("task", Task, lambda p: (p.folder, p.data["task"]), lambda r: (r.type_id, r.task),
             self._task_values, ("adapters", "subtasks")),
            ("subtask", Subtask, lambda p: (p.folder, p.data["task"], p.data["subtask"]),
             lambda r: (r.task.type_id, r.task.task, r.subtask), self._subtask_values,
             ("adapters",)),
            ("architecture", Architecture, lambda p: (p.data["name"],), lambda r: (r.name,),
             self._architecture_values, ("adapters",)),
        )  # fmt: skip
        orphans = {}
        for kind, model, key_of_data, key_of_row, values_of, _ in references:
            orphans[kind] = self._upsert_reference(
                kind, model, parsed[kind], key_of_data, key_of_row, values_of
            )
        self._sync_adapters(parsed["adapter"], removed["adapter"])
        self._refresh_adapters_of_changed_architectures({p.path for p in parsed["adapter"]})
        # Removals of referenced rows last (most dependent first), once the adapters that may
        # still use them are known.
        for kind, model, _, _, _, relations in reversed(references):
            gone = list(model.objects.filter(source_path__in=removed[kind])) + orphans[kind]
            self._remove_reference(kind, gone, relations)
        for kind, model, *_ in references:
            c = self.counts[kind]
            c.unchanged = model.objects.count() - c.added - c.updated
        c = self.counts["adapter"]
        c.unchanged = (
            Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() - c.added - c.updated
        )

    # -- reference tables (types, tasks, subtasks, architectures) ------------------------------

    def _upsert_reference(self, kind, model, files, key_of_data, key_of_row, values_of):
        """Write the files of one reference kind; return rows whose file now defines another id."""
        if not files:
            return []
        manager = model.objects.select_related("task") if model is Subtask else model.objects
        rows = {key_of_row(r): r for r in manager.all()}
        by_path = {r.source_path: r for r in rows.values()}
        claimed: dict[tuple, str] = {}
        orphans = []
        for parsed in files:
            if parsed.errors:
                self.errors.extend(parsed.errors)
                continue
            key = key_of_data(parsed)
            row = rows.get(key)
            owner = claimed.get(key) or (row.source_path if row is not None else "")
            # Another file that is neither re-read nor removed in this run still defines this id.
            owner_stays = (
                owner not in ("", parsed.path)
                and (key in claimed or owner not in self.state.blobs)
                and owner not in self.state.removed_paths
            )
            if owner_stays:
                self.errors.append(FileProblem(
                    parsed.path, f"{kind} {'/'.join(key)} is already defined by {owner}",
                    field=kind))  # fmt: skip
                continue
            values = values_of(parsed)
            if values is None:
                continue
            claimed[key] = parsed.path
            values["source_path"] = parsed.path
            values["source_blob"] = self.state.blobs[parsed.path]
            previous = by_path.get(parsed.path)
            if previous is not None and key_of_row(previous) != key:
                orphans.append(previous)
            self._write_reference(kind, model, row, values)
        return orphans

    def _write_reference(self, kind, model, row, values):
        if row is None:
            row = model(**values)
            row.save()
            self.counts[kind].added += 1
            return
        if model is Architecture and row.config != values["config"]:
            self.changed_architectures.add(row.pk)
        differs = any(getattr(row, k) != v for k, v in values.items() if k != "source_blob")
        for k, v in values.items():
            setattr(row, k, v)
        row.save()
        if differs:
            self.counts[kind].updated += 1

    def _adapter_type_values(self, parsed):
        d = parsed.data
        return {
            "id": d["id"],
            "displayname": d["displayname"],
            "description": d.get("description") or "",
        }

    def _task_values(self, parsed):
        d = parsed.data
        if not AdapterType.objects.filter(id=parsed.folder).exists():
            self.errors.append(FileProblem(
                parsed.path, f"unknown adapter type {parsed.folder!r} (the folder tasks/"
                f"{parsed.folder}/ names it)", field="type"))  # fmt: skip
            return None
        return {
            "type_id": parsed.folder,
            "task": d["task"],
            "displayname": d["displayname"],
            "description": d.get("description") or "",
        }

    def _subtask_values(self, parsed):
        d = parsed.data
        task = Task.objects.filter(type_id=parsed.folder, task=d["task"]).first()
        if task is None:
            self.errors.append(FileProblem(
                parsed.path, f"unknown task {d['task']!r} for type {parsed.folder!r}",
                line=None, field="task"))  # fmt: skip
            return None
        metric = d.get("metric") or {}
        return {
            "task_id": task.pk,
            "subtask": d["subtask"],
            "displayname": d.get("displayname") or d["subtask"],
            "description": d.get("description") or "",
            "url": d.get("url") or "",
            "citation": d.get("citation") or "",
            "language": d.get("language") or "",
            "hf_datasets_id": d.get("hf_datasets_id") or "",
            "metric_name": metric.get("name") or "",
            "metric_higher_is_better": metric.get("higher_is_better"),
        }

    def _architecture_values(self, parsed):
        d = parsed.data
        return {
            "name": d["name"],
            "displayname": d["displayname"],
            "description": d.get("description") or "",
            "citation": d.get("citation") or "",
            "config": d["config"],
            "config_v1": d.get("config_v1"),
            "config_hash": hubformat.config_hash(d["config"]),
        }

    def _remove_reference(self, kind, rows, relations):
        for row in rows:
            users = {
                rel: getattr(row, rel).exclude(**self._withdrawn(rel)).count() for rel in relations
            }
            if any(users.values()):
                used = ", ".join(f"{n} {rel}" for rel, n in users.items() if n)
                self.errors.append(FileProblem(
                    row.source_path, f"{kind} {row} was removed from the repository but is still "
                    f"used by {used}; kept until they are removed", field=kind))  # fmt: skip
                continue
            if "adapters" in relations:
                row.adapters.all().delete()  # withdrawn cards that pointed here
            row.delete()
            self.counts[kind].removed += 1

    @staticmethod
    def _withdrawn(relation: str) -> dict:
        return {"status": Adapter.Status.WITHDRAWN} if relation == "adapters" else {}

    # -- adapter cards --------------------------------------------------------------------------

    def _sync_adapters(self, files: list[ParsedFile], removed_paths: set[str]) -> None:
        types = set(AdapterType.objects.values_list("id", flat=True))
        tasks = {(t, n): pk for pk, t, n in Task.objects.values_list("pk", "type_id", "task")}
        subtasks = {
            (t, n, s): (pk, task_id)
            for pk, task_id, t, n, s in Subtask.objects.values_list(
                "pk", "task_id", "task__type_id", "task__task", "subtask"
            )
        }
        archs = {a.name: a for a in Architecture.objects.all()}

        ids_in_run = {(p.folder, p.stem) for p in files}
        rows = {}
        for row in Adapter.objects.filter(
            source_path__in=[p.path for p in files] + list(removed_paths)
        ):
            rows[(row.org, row.name)] = row
        if len(ids_in_run) > len(rows):
            # Cards re-read under another path (renamed file) or new: look them up by id as well.
            for row in Adapter.objects.filter(org__in={o for o, _ in ids_in_run}):
                if (row.org, row.name) in ids_in_run:
                    rows[(row.org, row.name)] = row

        # Uniqueness is checked against every active card this run does not re-read or remove.
        replaced = {key for key in ids_in_run} | {
            (r.org, r.name) for r in rows.values() if r.source_path in removed_paths
        }
        unique_keys: dict[tuple, str] = {}
        for org, name, t, model_name, task, sub, h in Adapter.objects.exclude(
            status=Adapter.Status.WITHDRAWN
        ).values_list(
            "org", "name", "type_id", "model_name", "task__task", "subtask__subtask", "config_hash"
        ):
            if (org, name) not in replaced:
                unique_keys[(t, model_name, task, sub, h, org)] = f"@{org}/{name}"

        plans: dict[tuple, CardPlan] = {}
        seen_paths: dict[tuple, str] = {}
        for parsed in files:
            ident = (parsed.folder, parsed.stem)
            if ident in seen_paths:
                self.errors.append(FileProblem(
                    parsed.path, f"defines adapter @{ident[0]}/{ident[1]} again (also "
                    f"{seen_paths[ident]})", field="file name"))  # fmt: skip
                continue
            seen_paths[ident] = parsed.path
            if parsed.errors:
                self.errors.extend(parsed.errors)
                continue
            plan = self._plan_card(
                parsed, self.state.blobs[parsed.path], types, tasks, subtasks, archs
            )
            if plan is None:
                continue
            v = plan.values
            ukey = (v["type_id"], v["model_name"], parsed.data["task"], parsed.data["subtask"],
                    v["config_hash"], parsed.folder)  # fmt: skip
            if ukey in unique_keys:
                self.errors.append(FileProblem(
                    parsed.path, f"duplicate adapter: {unique_keys[ukey]} already has type "
                    f"{ukey[0]}, model {ukey[1]}, task {ukey[2]}/{ukey[3]}, config {ukey[4]} and "
                    f"org {ukey[5]}", field="config"))  # fmt: skip
                continue
            unique_keys[ukey] = f"@{ident[0]}/{ident[1]}"
            plans[ident] = plan

        self._write_adapters(plans, rows)

        counts = self.counts["adapter"]
        for (org, name), row in rows.items():
            if (
                row.source_path in removed_paths
                and (org, name) not in plans
                and (org, name) not in ids_in_run
                and row.status != Adapter.Status.WITHDRAWN
            ):
                row.status = Adapter.Status.WITHDRAWN
                row.save(update_fields=["status", "updated_at"])
                counts.removed += 1

    def _plan_card(self, parsed, blob, types, tasks, subtasks, archs) -> CardPlan | None:
        d = parsed.data
        problems = []
        if d["type"] not in types:
            problems.append(("type", f"unknown adapter type {d['type']!r}"))
        elif (d["type"], d["task"]) not in tasks:
            problems.append(("task", f"unknown task {d['task']!r} for type {d['type']!r}"))
        elif (d["type"], d["task"], d["subtask"]) not in subtasks:
            problems.append(("subtask", f"unknown subtask {d['subtask']!r} of task {d['task']!r}"))
        using = d["config"]["using"]
        if using not in archs:
            problems.append(("config.using", f"unknown architecture {using!r}"))
        if problems:
            for fld, msg in problems:
                self.errors.append(FileProblem(parsed.path, msg, field=fld))
            return None
        arch = archs[using]
        config = hubformat.full_config(arch.config, d["config"])
        subtask_id, task_id = subtasks[(d["type"], d["task"], d["subtask"])]
        values = {
            "status": Adapter.Status.ACTIVE,
            "type_id": d["type"],
            "task_id": task_id,
            "subtask_id": subtask_id,
            "model_type": d["model_type"],
            "model_name": d["model_name"],
            "model_class": d.get("model_class") or "",
            "has_head": bool(d.get("prediction_head")),
            "architecture_id": arch.pk,
            "config_overrides": d["config"],
            "config": config,
            "config_hash": hubformat.config_hash(config),
            "author": d["author"],
            "email": d.get("email") or "",
            "url": d.get("url") or "",
            "github": d.get("github") or "",
            "twitter": d.get("twitter") or "",
            "citation": d.get("citation") or "",
            "description": (d.get("description") or "").strip(),
            "default_version": d["default_version"],
            "hidden_size": d.get("hidden_size"),
            "warnings": [w.as_dict() for w in parsed.warnings],
            "source_path": parsed.path,
        }
        versions = [
            (
                str(f["version"]),
                f["url"],
                f.get("sha1") or "",
                f.get("sha256") or "",
                (f.get("description") or "").strip(),
                f.get("score"),
            )
            for f in d["files"]
        ]
        deps = [(dep["key"], dep.get("description") or "") for dep in d.get("dependencies") or []]
        return CardPlan(parsed, blob, values, versions, deps)

    def _write_adapters(self, plans: dict[tuple, CardPlan], rows: dict[tuple, Adapter]) -> None:
        counts = self.counts["adapter"]
        new_rows, new_plans = [], []
        for ident, plan in plans.items():
            row = rows.get(ident)
            if row is None:
                new_rows.append(
                    Adapter(org=ident[0], name=ident[1], source_blob=plan.blob, **plan.values)
                )
                new_plans.append(plan)
                continue
            was_active = row.status == Adapter.Status.ACTIVE
            differs = any(getattr(row, k) != v for k, v in plan.values.items())
            old_versions = list(row.versions.values_list(*VERSION_FIELDS))
            old_deps = list(row.dependencies.values_list("key", "description"))
            if row.status == Adapter.Status.YANKED:
                # A moderator's unpublish outlives edits of the card.
                plan.values["status"] = Adapter.Status.YANKED
                differs = any(getattr(row, k) != v for k, v in plan.values.items())
            if not differs and old_versions == plan.versions and old_deps == plan.dependencies:
                if row.source_blob != plan.blob:
                    row.source_blob = plan.blob
                    row.save(update_fields=["source_blob"])
                continue
            for k, v in plan.values.items():
                setattr(row, k, v)
            row.source_blob = plan.blob
            row.save()
            if old_versions != plan.versions:
                self._replace_versions(row, plan.versions)
            if old_deps != plan.dependencies:
                row.dependencies.all().delete()
                AdapterDependency.objects.bulk_create(
                    AdapterDependency(adapter=row, key=k, description=desc, position=i)
                    for i, (k, desc) in enumerate(plan.dependencies)
                )
            if was_active or row.status == Adapter.Status.YANKED:
                counts.updated += 1
            else:
                counts.added += 1  # a withdrawn card came back
        if not new_rows:
            return
        Adapter.objects.bulk_create(new_rows, batch_size=500)
        if any(r.pk is None for r in new_rows):
            ids = {
                (o, n): pk
                for pk, o, n in Adapter.objects.filter(
                    source_path__in=[r.source_path for r in new_rows]
                ).values_list("pk", "org", "name")
            }
            for r in new_rows:
                r.pk = ids[(r.org, r.name)]
        versions, deps = [], []
        for row, plan in zip(new_rows, new_plans, strict=True):
            versions.extend(
                AdapterVersion(
                    adapter_id=row.pk, position=i, **dict(zip(VERSION_FIELDS, v, strict=True))
                )
                for i, v in enumerate(plan.versions)
            )
            deps.extend(
                AdapterDependency(adapter_id=row.pk, key=k, description=desc, position=i)
                for i, (k, desc) in enumerate(plan.dependencies)
            )
        AdapterVersion.objects.bulk_create(versions, batch_size=1000)
        AdapterDependency.objects.bulk_create(deps, batch_size=1000)
        counts.added += len(new_rows)

    def _replace_versions(self, row: Adapter, versions: list[tuple]) -> None:
        existing = {v.version: v for v in row.versions.all()}
        wanted = {v[0] for v in versions}
        row.versions.exclude(version__in=wanted).delete()
        for i, values in enumerate(versions):
            fields = dict(zip(VERSION_FIELDS, values, strict=True))
            current = existing.get(values[0])
            if current is None:
                AdapterVersion.objects.create(adapter=row, position=i, **fields)
                continue
            # A hosted file is known by its checksums (its URL may be rewritten to point here);
            # an external one by URL and checksums.
            checksums_changed = (current.sha1, current.sha256) != values[2:4]
            url_changed = current.url != values[1]
            hosted = current.file_status == AdapterVersion.FileStatus.HOSTED
            for k, v in fields.items():
                setattr(current, k, v)
            current.position = i
            if checksums_changed or (url_changed and not hosted):
                # What was mirrored or checked described the old file; the new one is unchecked.
                current.file_status = AdapterVersion.FileStatus.EXTERNAL
                current.file_error = "the card now names another file; not yet mirrored"
                current.size = None
                current.storage_key = ""
                current.files.all().delete()
            current.save()

    def _refresh_adapters_of_changed_architectures(self, reread_paths: set[str]) -> None:
        if not self.changed_architectures:
            return
        archs = {a.pk: a for a in Architecture.objects.filter(pk__in=self.changed_architectures)}
        stale = []
        for row in Adapter.objects.filter(architecture_id__in=archs).exclude(
            source_path__in=reread_paths
        ):
            config = hubformat.full_config(archs[row.architecture_id].config, row.config_overrides)
            if config != row.config:
                row.config = config
                row.config_hash = hubformat.config_hash(config)
                stale.append(row)
        Adapter.objects.bulk_update(stale, ["config", "config_hash"], batch_size=500)
        self.counts["adapter"].updated += len(stale)
