"""The adapter cards of a sync: which files become which rows, and which are refused.

Every rule here depends only on the files of the commit and on the rows the catalogue holds, never
on which files a run happened to re-read, so an incremental run and a full run of the same commit
reach the same catalogue (the planner in `sync.py` re-reads every file whose outcome another file
can change):

- Two files for one adapter (`X.yaml` and `X.yml` in one folder) are both errors naming each
  other; the adapter keeps what it was until one of them goes.
- A card whose (type, model, task, subtask, config hash, org) another card already has is an error.
  The card that holds the key keeps it (first come); among new claims the first path wins.
- A card whose values do not fit the catalogue's columns is an error, never a failed run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import connection, models

from hub_server.catalog import hubformat
from hub_server.catalog.hubformat import FileProblem, ParsedFile
from hub_server.catalog.models import (
    Adapter,
    AdapterDependency,
    AdapterType,
    AdapterVersion,
    Architecture,
    Subtask,
    Task,
)

PUBLISHED = Adapter.Origin.PUBLISHED
VERSION_FIELDS = ("version", "url", "sha1", "sha256", "description", "score")
DEPENDENCY_FIELDS = ("key", "description")
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


@dataclass
class CardPlan:
    """A valid adapter card, ready to be written."""

    parsed: ParsedFile
    blob: str
    values: dict[str, Any]
    versions: list[tuple]
    dependencies: list[tuple]
    key: tuple = ()


def _json_problem(value: Any) -> str | None:
    """Why PostgreSQL's json would refuse a value: a NUL character or a non-finite number."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return "contains a NUL character"
        if isinstance(item, float) and not math.isfinite(item):
            return "contains a number that is not finite"
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _value_problem(field: models.Field, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(field, models.JSONField):
        return _json_problem(value)
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character"
        if field.max_length and len(value) > field.max_length:
            return f"is {len(value)} characters long; at most {field.max_length} fit"
        return None
    if isinstance(value, bool):
        return None
    if isinstance(field, models.IntegerField) and isinstance(value, int):
        low, high = connection.ops.integer_field_range(field.get_internal_type())
        if (low is not None and value < low) or (high is not None and value > high):
            return f"is out of range (from {low} to {high})"
    if isinstance(field, models.FloatField) and isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return "is too large a number"
    return None


def column_problems(model: type[models.Model], values: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) for each value its column cannot hold. Messages never quote the value."""
    problems = []
    for name, value in values.items():
        problem = _value_problem(model._meta.get_field(name), value)
        if problem:
            problems.append((name, problem))
    return problems


def _key_text(key: tuple) -> str:
    return (f"type {key[0]}, model {key[1]}, task {key[2]}/{key[3]}, config {key[4]} and "
            f"org {key[5]}")  # fmt: skip


class CardSync:
    """The adapter half of `sync._Sync`: uses its `state`, `errors`, `counts` and `going`."""

    def _sync_adapters(self, files: list[ParsedFile], removed_paths: set[str]) -> None:
        by_ident: dict[tuple, list[ParsedFile]] = defaultdict(list)
        for parsed in files:
            by_ident[(parsed.folder, parsed.stem)].append(parsed)
        # Adapters published through this hub are not the repository's to write or withdraw.
        synced = Adapter.objects.exclude(origin=PUBLISHED)
        rows = {}
        for row in synced.filter(source_path__in=[p.path for p in files] + list(removed_paths)):
            rows[(row.org, row.name)] = row
        if len(by_ident) > len(rows):
            # Cards re-read under another path (renamed file) or new: look them up by id as well.
            for row in synced.filter(org__in={o for o, _ in by_ident}):
                if (row.org, row.name) in by_ident:
                    rows[(row.org, row.name)] = row
        published = {
            (org, name): blob
            for org, name, blob in Adapter.objects.filter(
                origin=PUBLISHED, org__in={o for o, _ in by_ident}
            ).values_list("org", "name", "source_blob")
        }

        references = self._card_references()
        candidates = []
        for (org, name), group in by_ident.items():
            if (org, name) in published:
                self._note_published_twin(org, name, group, published[(org, name)])
                continue
            if len(group) > 1:
                for parsed in group:
                    others = ", ".join(p.path for p in group if p is not parsed)
                    self.errors.append(FileProblem(
                        parsed.path, f"adapter @{org}/{name} is also defined by {others}; one "
                        "file per adapter: remove or rename one of them", field="file name"))  # fmt: skip
                continue
            plan = self._plan_card(group[0], references, rows.get((org, name)))
            if plan is not None:
                candidates.append(plan)
        plans = self._claim_unique_keys(candidates, removed_paths, set(by_ident))
        self._write_adapters(plans, rows)

        counts = self.counts["adapter"]
        for (org, name), row in rows.items():
            if (
                row.source_path in removed_paths
                and (org, name) not in by_ident
                and row.status != Adapter.Status.WITHDRAWN
            ):
                row.status = Adapter.Status.WITHDRAWN
                row.save(update_fields=["status", "updated_at"])
                counts.removed += 1

    def _note_published_twin(self, org: str, name: str, group: list[ParsedFile], blob: str):
        """A repository card for an adapter this hub published is not read: the hub's card (the
        row) stays. The very card the hub published (same blob, e.g. merged upstream) is quiet;
        any other is a warning, so its maintainer learns why an edit does not show."""
        for parsed in group:
            if self.state.blobs[parsed.path] != blob:
                self.warnings.append(FileProblem(
                    parsed.path, f"adapter @{org}/{name} is published by this hub: this card is "
                    "not read, the hub's own card is kept (docs/catalog-sync.md)",
                    field="file name"))  # fmt: skip

    def _card_references(self) -> tuple:
        types = set(AdapterType.objects.values_list("id", flat=True))
        tasks = {(t, n): pk for pk, t, n in Task.objects.values_list("pk", "type_id", "task")}
        subtasks = {
            (t, n, s): (pk, task_id)
            for pk, task_id, t, n, s in Subtask.objects.values_list(
                "pk", "task_id", "task__type_id", "task__task", "subtask"
            )
        }
        archs = {a.name: a for a in Architecture.objects.all()}
        return types, tasks, subtasks, archs

    def _claim_unique_keys(self, candidates: list[CardPlan], removed_paths: set[str],
                           ids_in_run: set[tuple]) -> dict[tuple, CardPlan]:  # fmt: skip
        """The candidates that may take their unique key; an error for each of the others."""
        planned = {(p.parsed.folder, p.parsed.stem) for p in candidates}
        held: dict[tuple, str] = {}  # keys of active rows that stay as they are in this run
        current: dict[tuple, tuple] = {}  # ident -> key of its active row
        for org, name, t, model_name, task, sub, h, path, origin in Adapter.objects.exclude(
            status=Adapter.Status.WITHDRAWN
        ).values_list("org", "name", "type_id", "model_name", "task__task", "subtask__subtask",
                      "config_hash", "source_path", "origin"):  # fmt: skip
            key = (t, model_name, task, sub, h, org)
            current[(org, name)] = key
            withdrawn_now = (
                path in removed_paths and (org, name) not in ids_in_run and origin != PUBLISHED
            )
            if (org, name) not in planned and not withdrawn_now:
                held[key] = f"@{org}/{name}"
        # The card whose row has the key keeps it; then the first path.
        order = sorted(candidates, key=lambda p: (
            current.get((p.parsed.folder, p.parsed.stem)) != p.key, p.parsed.path))  # fmt: skip
        while True:
            claimed: dict[tuple, CardPlan] = {}
            losers = []
            for plan in order:
                if plan.key in held or plan.key in claimed:
                    losers.append(plan)
                else:
                    claimed[plan.key] = plan
            # A refused card keeps its row, and with it the key that row has.
            kept = {}
            for plan in losers:
                org, name = plan.parsed.folder, plan.parsed.stem
                key = current.get((org, name))
                if key is not None and key != plan.key and key not in held:
                    kept[key] = f"@{org}/{name}"
            if not kept:
                break
            held.update(kept)
        for plan in losers:
            if plan.key in held:
                owner = held[plan.key]
            else:
                winner = claimed[plan.key].parsed
                owner = f"@{winner.folder}/{winner.stem}"
            self.errors.append(FileProblem(
                plan.parsed.path, f"duplicate adapter: {owner} already has {_key_text(plan.key)}",
                field="config"))  # fmt: skip
        return {(p.parsed.folder, p.parsed.stem): p for p in claimed.values()}

    def _plan_card(self, parsed: ParsedFile, references: tuple, row: Adapter | None):
        """The card's row values, or None (with its errors recorded)."""
        if parsed.errors:
            self.errors.extend(parsed.errors)
            return None
        types, tasks, subtasks, archs = references
        # A reference whose file left the repository in this run serves only the cards that
        # already use it (they keep it alive); to any other card it is unknown.
        uses = set()
        if row is not None and row.status != Adapter.Status.WITHDRAWN:
            uses = {("adapter_type", row.type_id), ("task", row.task_id),
                    ("subtask", row.subtask_id), ("architecture", row.architecture_id)}  # fmt: skip

        def known(kind, pk):
            return pk is not None and (pk not in self.going[kind] or (kind, pk) in uses)

        d = parsed.data
        problems = []
        subtask_ids = subtasks.get((d["type"], d["task"], d["subtask"]), (None, None))
        if not known("adapter_type", d["type"] if d["type"] in types else None):
            problems.append(("type", f"unknown adapter type {d['type']!r}"))
        elif not known("task", tasks.get((d["type"], d["task"]))):
            problems.append(("task", f"unknown task {d['task']!r} for type {d['type']!r}"))
        elif not known("subtask", subtask_ids[0]):
            problems.append(("subtask", f"unknown subtask {d['subtask']!r} of task {d['task']!r}"))
        using = d["config"]["using"]
        if not known("architecture", archs[using].pk if using in archs else None):
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
        unfit = column_problems(Adapter, {"org": parsed.folder, "name": parsed.stem, **values})
        for i, version in enumerate(versions):
            fields = dict(zip(VERSION_FIELDS, version, strict=True))
            unfit += [(f"files.{i}.{n}", p) for n, p in column_problems(AdapterVersion, fields)]
        for i, dep in enumerate(deps):
            fields = dict(zip(DEPENDENCY_FIELDS, dep, strict=True))
            unfit += [(f"dependencies.{i}.{n}", p)
                      for n, p in column_problems(AdapterDependency, fields)]  # fmt: skip
        if unfit:
            for fld, msg in unfit:
                fld = "file name" if fld in ("org", "name", "source_path") else fld
                self.errors.append(FileProblem(parsed.path, msg, field=fld.removesuffix("_id")))
            return None
        key = (d["type"], d["model_name"], d["task"], d["subtask"], values["config_hash"],
               parsed.folder)  # fmt: skip
        return CardPlan(parsed, self.state.blobs[parsed.path], values, versions, deps, key)

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
