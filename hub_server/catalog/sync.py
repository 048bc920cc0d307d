"""Where a YAML card becomes a row: `sync_hub_repository`, the one service that writes the catalogue
from a Hub git repository.

A run first fetches (outside any lock or transaction, under HUB_SYNC_FETCH_TIMEOUT_SECONDS), then
writes in one database transaction under a row lock, so two syncs never both write. The first run
(or `full=True`) reads every file at the fetched commit; later runs read the files that `git diff`
says changed since the last synced commit, plus every file whose outcome a changed file can
decide (see `_plan_incremental`), so both reach the same catalogue. A file with a problem is
reported in the run's `errors` and never stops the others, nor deletes what it described before.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from hub_server.catalog import hubformat
from hub_server.catalog.gitsource import GitSource, SourceError
from hub_server.catalog.hubformat import FileProblem, ParsedFile
from hub_server.catalog.models import (
    Adapter,
    AdapterType,
    Architecture,
    Subtask,
    SyncLock,
    SyncRun,
    Task,
)
from hub_server.catalog.signals import catalog_changed
from hub_server.catalog.sync_cards import (  # noqa: F401 - ADAPTER_FIELDS, VERSION_FIELDS re-exported
    ADAPTER_FIELDS,
    VERSION_FIELDS,
    CardSync,
    column_problems,
)
from hub_server.catalog.sync_runs import current_owner, finish, reap_stale_runs

log = logging.getLogger(__name__)

# A file is read only up to this many bytes; a bigger one is an error of that file.
DEFAULT_MAX_FILE_BYTES = 256 * 1024


class SyncLocked(Exception):
    pass


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0


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
    progress = progress or (lambda msg: None)
    reap_stale_runs()
    run = SyncRun.objects.create(
        source=source, branch=branch or "", full=full, owner=current_owner()
    )
    started = time.perf_counter()
    changed = False
    try:
        src = GitSource(source, branch, Path(settings.HUB_DATA_DIR))
        progress(f"fetching {source}")
        # Before the lock: a slow or hanging remote holds up neither another sync nor a write.
        fetched = src.fetch(timeout=settings.HUB_SYNC_FETCH_TIMEOUT_SECONDS)
        progress(f"fetched {fetched[:12]}")
        with transaction.atomic():
            _lock()
            changed = _Sync(run, src, progress).execute()
    except SyncLocked:
        run.status = SyncRun.Status.LOCKED
        run.message = "another sync is running; this one wrote nothing"
    except SourceError as exc:
        run.status = SyncRun.Status.FAILED
        run.message = str(exc)
    except (OperationalError, InterfaceError) as exc:
        # The database went away (restart, terminated session): the transaction is gone with it.
        run.status = SyncRun.Status.FAILED
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        run.message = (
            f"the database connection failed during the sync; nothing was written "
            f"({type(exc).__name__}: {reason})"
        )
        log.warning("sync %s failed: %s", run.pk, run.message)
    except Exception as exc:
        run.status = SyncRun.Status.FAILED
        run.message = f"sync failed, nothing was written: {type(exc).__name__}: {exc}"
        log.exception("sync %s failed", run.pk)
        finish(run, started)
        raise
    finish(run, started)
    if changed:
        catalog_changed.send(sender=SyncRun, run=run)
    return run


def _lock() -> None:
    SyncLock.objects.get_or_create(id=1)
    try:
        SyncLock.objects.select_for_update(nowait=True).get(id=1)
    except DatabaseError as exc:
        # PostgreSQL says "lock not available" (55P03); a lost connection is not a lock.
        if connection.vendor == "postgresql" and getattr(exc.__cause__, "pgcode", "") != "55P03":
            raise
        raise SyncLocked() from exc


def _twins(paths) -> set[str]:
    """The other-suffix names of adapter cards: `X.yml` for `X.yaml` and back."""
    twins = set()
    for path in paths:
        kind = hubformat.classify(path)
        if kind and kind[0] == "adapter":
            p = PurePosixPath(path)
            twins.update(str(p.with_suffix(s)) for s in hubformat.YAML_SUFFIXES if s != p.suffix)
    return twins


class _Sync(CardSync):
    def __init__(self, run: SyncRun, src: GitSource, progress: Callable[[str], None]):
        self.run = run
        self.src = src
        self.progress = progress
        self.errors: list[FileProblem] = []
        self.warnings: list[FileProblem] = []
        self.counts: dict[str, Counts] = defaultdict(Counts)
        # Rows removed from the repository but kept because withdrawn cards point to them.
        self.kept_for_history: dict[str, set[int]] = defaultdict(set)
        # Per kind, rows whose file left the repository (or now defines another id) in this run.
        self.going: dict[str, set] = defaultdict(set)

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> bool:
        run, src = self.run, self.src
        # Resolved again under the lock: a sync that fetched later and wrote first is not undone.
        commit = src.head()
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
            state = self._plan_incremental(previous, commit)
        else:
            state = self._plan_full(commit)
        self.progress(f"reading {len(state.to_read)} files at {commit[:12]}")
        parsed = self._read(state)
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
        files = f"{len(state.to_read)} file{'' if len(state.to_read) == 1 else 's'} read"
        run.message = (
            f"synced {commit[:12]}: {run.added} added, {run.updated} updated, "
            f"{run.removed} removed, {run.unchanged} unchanged, {len(run.errors)} errors "
            f"({files})"
        )
        return bool(run.added or run.updated or run.removed)

    def _plan_full(self, commit: str) -> _State:
        files = self.src.list_files(commit)
        catalogue = {p: b for p, b in files.items() if hubformat.classify(p)}
        known_paths = set()
        for model in (AdapterType, Task, Subtask, Architecture):
            known_paths.update(model.objects.values_list("source_path", flat=True))
        # Only the repository's own cards can leave it: a card published here has no file there.
        known_paths.update(
            Adapter.objects.exclude(status=Adapter.Status.WITHDRAWN)
            .exclude(origin=Adapter.Origin.PUBLISHED)
            .values_list("source_path", flat=True)
        )
        removed = {p for p in known_paths if p and p not in catalogue}
        return _State(commit, sorted(catalogue), removed, catalogue)

    def _plan_incremental(self, previous: SyncRun, new: str) -> _State:
        """The changed files, and every file whose outcome a change can decide.

        A file's outcome depends on other files only where the last run reported a problem (a
        card refused for a missing task, as a duplicate or beside its twin; a removed task kept
        while in use), through its twin name, or through its architecture (whose config is part of
        the card's unique key). So: every reported file is read again, or taken as removed when it
        is gone; the twin of every changed card is read with it; and so is every card of a
        changed architecture.
        """
        changes = [c for c in self.src.changes(previous.commit, new) if hubformat.classify(c.path)]
        to_read = {c.path for c in changes if c.status != "D"}
        removed = {c.path for c in changes if c.status == "D"}
        reported = {e["file"] for e in previous.errors if hubformat.classify(e["file"])}
        noted = {w["file"] for w in previous.warnings if hubformat.classify(w["file"])}
        twins = _twins(to_read | removed)
        present = self.src.blob_ids(new, reported | noted | twins)
        to_read |= (reported | twins) & present.keys()
        removed |= (reported | noted) - present.keys()
        # An architecture's config is part of every using card's config hash, hence of its
        # unique key: its cards are planned again with it.
        archs = [p for p in to_read if hubformat.classify(p)[0] == "architecture"]
        if archs:
            users = set(
                Adapter.objects.exclude(status=Adapter.Status.WITHDRAWN)
                .exclude(origin=Adapter.Origin.PUBLISHED)
                .filter(architecture__source_path__in=archs)
                .values_list("source_path", flat=True)
            )
            to_read |= self.src.blob_ids(new, users - removed).keys()
        return _State(new, sorted(to_read), removed, self.src.blob_ids(new, to_read))

    def _read(self, state: _State) -> dict[str, list[ParsedFile]]:
        by_kind: dict[str, list[ParsedFile]] = defaultdict(list)
        limit = getattr(settings, "HUB_YAML_MAX_BYTES", DEFAULT_MAX_FILE_BYTES)
        for path in state.to_read:
            parsed = self._read_one(path, state.blobs[path], limit)
            self.warnings.extend(parsed.warnings)
            by_kind[parsed.kind].append(parsed)
        return by_kind

    def _read_one(self, path: str, blob: str, limit: int) -> ParsedFile:
        """One file, parsed; whatever is wrong with it is a problem of that file only."""
        kind, folder = hubformat.classify(path)
        size = self.src.blob_size(blob)
        if size > limit:
            message = f"the file is {size} bytes; at most {limit} are read (HUB_YAML_MAX_BYTES)"
        else:
            try:
                return hubformat.parse_file(path, self.src.read_blob(blob))
            except (RecursionError, MemoryError, ValueError, TypeError) as exc:
                log.warning("sync: %s could not be parsed", path, exc_info=True)
                message = f"the file could not be parsed ({type(exc).__name__})"
        return ParsedFile(kind, path, {}, folder, errors=[FileProblem(path, message)])

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
        gone = {}
        for kind, model, key_of_data, key_of_row, values_of, _ in references:
            orphans = self._upsert_reference(
                kind, model, parsed[kind], key_of_data, key_of_row, values_of
            )
            # Rows whose file is gone: only what already uses them may go on using them.
            gone[kind] = list(model.objects.filter(source_path__in=removed[kind])) + orphans
            self.going[kind] = {row.pk for row in gone[kind]}
        self._sync_adapters(parsed["adapter"], removed["adapter"])
        # Removals of referenced rows last (most dependent first), once the adapters that may
        # still use them are known.
        for kind, _, _, _, _, relations in reversed(references):
            self._remove_reference(kind, gone[kind], relations)
        for kind, model, *_ in references:
            c = self.counts[kind]
            c.unchanged = model.objects.count() - c.added - c.updated
        c = self.counts["adapter"]
        c.unchanged = (
            Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() - c.added - c.updated
        )

    # -- reference tables (types, tasks, subtasks, architectures) ------------------------------

    def _upsert_reference(self, kind, model, files, key_of_data, key_of_row, values_of):
        """Write the files of one reference kind; return rows whose file now defines another id.

        The file that defines an id keeps it while it exists and does not define another one (a
        file that cannot be read keeps what it described); among new claims the first path wins.
        """
        if not files:
            return []
        manager = model.objects.select_related("task") if model is Subtask else model.objects
        rows = {key_of_row(r): r for r in manager.all()}
        by_path = defaultdict(list)
        for row in rows.values():
            by_path[row.source_path].append(row)
        valid = []
        for parsed in files:
            if parsed.errors:
                self.errors.extend(parsed.errors)
                continue
            values = values_of(parsed)
            if values is None:
                continue
            unfit = column_problems(model, values)
            for name, problem in unfit:
                self.errors.append(FileProblem(parsed.path, problem, field=name))
            if not unfit:
                valid.append((parsed, key_of_data(parsed), values))
        claims = {parsed.path: key for parsed, key, _ in valid}
        claimed: dict[tuple, str] = {}
        orphans = []
        for parsed, key, values in valid:
            row = rows.get(key)
            holder = row.source_path if row is not None else ""
            owner = claimed.get(key)
            if owner is None and holder not in ("", parsed.path):
                if holder not in self.state.removed_paths and claims.get(holder, key) == key:
                    owner = holder
            if owner is not None:
                self.errors.append(FileProblem(
                    parsed.path, f"{kind} {'/'.join(key)} is already defined by {owner}",
                    field=kind))  # fmt: skip
                continue
            claimed[key] = parsed.path
            values["source_path"] = parsed.path
            values["source_blob"] = self.state.blobs[parsed.path]
            orphans.extend(r for r in by_path[parsed.path] if key_of_row(r) != key)
            self._write_reference(kind, model, row, values)
        return [r for r in orphans if key_of_row(r) not in claimed]

    def _write_reference(self, kind, model, row, values):
        if row is None:
            row = model(**values)
            row.save()
            self.counts[kind].added += 1
            return
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
        known = AdapterType.objects.filter(id=parsed.folder).exists()
        if known and parsed.folder in self.going["adapter_type"]:
            known = Task.objects.filter(type_id=parsed.folder, task=d["task"]).exists()
        if not known:
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
        if task is not None and task.pk in self.going["task"]:
            task = task if task.subtasks.filter(subtask=d["subtask"]).exists() else None
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
        done = set()
        for row in rows:
            if row.pk in done:
                continue
            done.add(row.pk)
            users = {rel: self._live_users(row, rel) for rel in relations}
            if any(users.values()):
                used = ", ".join(f"{n} {rel}" for rel, n in users.items() if n)
                self.errors.append(FileProblem(
                    row.source_path, f"{kind} {row} was removed from the repository but is still "
                    f"used by {used}; kept until they are removed", field=kind))  # fmt: skip
                continue
            if any(getattr(row, rel).exists() for rel in relations):
                # Only withdrawn cards (or rows kept for them) point here: their pages and
                # download counts outlive the file, and they come back if the card does.
                self.warnings.append(FileProblem(
                    row.source_path, f"{kind} {row} was removed from the repository; kept "
                    "because withdrawn adapters still refer to it", field=kind))  # fmt: skip
                self.kept_for_history[f"{kind}s"].add(row.pk)
                continue
            row.delete()
            self.counts[kind].removed += 1

    def _live_users(self, row, relation: str) -> int:
        users = getattr(row, relation).all()
        if relation == "adapters":
            return users.exclude(status=Adapter.Status.WITHDRAWN).count()
        return users.exclude(pk__in=self.kept_for_history[relation]).count()
