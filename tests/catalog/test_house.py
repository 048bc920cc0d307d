"""The catalogue is the floor of the house: it never reads the faces above it, and the files a
hosted version serves (VersionFile) are its own, moved from uploads without losing a row."""

import ast
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.conftest import ROOT

CATALOG = ROOT / "hub_server" / "catalog"
# Above the catalogue: the faces (api, pages) and the apps that write through it.
ABOVE_CATALOG = ("hub_server.uploads", "hub_server.api", "hub_server.accounts", "frontend")
UPLOADS = ROOT / "hub_server" / "uploads"
# The faces: uploads writes through the catalogue and answers errors through hub_server/errors.py.
FACES = ("hub_server.api", "hub_server.frontend", "frontend")


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def upward_imports(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if name.startswith(forbidden):
                found.append(f"{folder.name}/{path.relative_to(folder)} imports {name}")
    return found


def test_the_catalogue_imports_nothing_above_it():
    assert upward_imports(CATALOG, ABOVE_CATALOG) == []


def test_uploads_import_neither_face():
    """Publishing fixes a version's /hf/ revision through catalog/hf_revision.py and the upload
    views share the API's JSON errors through hub_server/errors.py, never through the api layer."""
    assert upward_imports(UPLOADS, FACES) == []


def test_the_pages_read_the_catalogue_not_the_api():
    """The reads the pages share with the API live in the catalogue, below both faces."""
    assert (
        upward_imports(ROOT / "frontend", ("hub_server.api.selectors", "hub_server.api.filters"))
        == []
    )


def test_hosting_is_read_from_the_catalogue():
    hf = imported_modules(ROOT / "hub_server/api/hf.py")
    assert "hub_server.catalog.models.VersionFile" in hf
    assert not any(n.startswith("hub_server.uploads") for n in hf)
    # /hf/ serves the revision publishing fixed: one computation, the catalogue's
    assert "hub_server.catalog.hf_revision.freeze_revision" in hf
    mirror = imported_modules(CATALOG / "mirror.py")
    assert "hub_server.catalog.hosting.prepare_folder" in mirror


def test_the_import_check_sees_an_import_inside_a_function(tmp_path):
    """The check itself: the mirror once imported uploads inside a function."""
    (tmp_path / "m.py").write_text("def f():\n    from hub_server.uploads.models import Upload\n")
    assert upward_imports(tmp_path, ABOVE_CATALOG) == [
        f"{tmp_path.name}/m.py imports hub_server.uploads.models",
        f"{tmp_path.name}/m.py imports hub_server.uploads.models.Upload",
    ]
    (tmp_path / "m.py").write_text("def f():\n    from hub_server.api.hf import freeze_revision\n")
    assert upward_imports(tmp_path, FACES) == [
        f"{tmp_path.name}/m.py imports hub_server.api.hf",
        f"{tmp_path.name}/m.py imports hub_server.api.hf.freeze_revision",
    ]


BEFORE = [
    ("catalog", "0006_adapterversion_frozen_hf_revision"),
    ("uploads", "0003_upload_claim_queue_and_purge"),
]


@pytest.mark.django_db(transaction=True)
def test_migrating_keeps_every_hosted_file_and_marks_what_uploads_published():
    """A database of the release before the move keeps its VersionFile rows through `migrate`,
    and the adapters its uploads published become the hub's own (origin `published`)."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = MigrationExecutor(connection).loader.project_state(BEFORE).apps
    Adapter = old.get_model("catalog", "Adapter")
    AdapterVersion = old.get_model("catalog", "AdapterVersion")
    AdapterType = old.get_model("catalog", "AdapterType")
    Task = old.get_model("catalog", "Task")
    Subtask = old.get_model("catalog", "Subtask")
    Architecture = old.get_model("catalog", "Architecture")
    OldFile = old.get_model("uploads", "VersionFile")
    t = AdapterType.objects.create(id="text_task", displayname="Text task")
    task = Task.objects.create(type=t, task="sst", displayname="SST")
    sub = Subtask.objects.create(task=task, subtask="sst-2", displayname="SST-2")
    arch = Architecture.objects.create(name="pfeiffer", displayname="P", config={}, config_hash="x")
    adapter = Adapter.objects.create(
        org="lab", name="a", type=t, task=task, subtask=sub, architecture=arch,
        model_type="bert", model_name="bert-base-uncased", config={}, config_hash="h",
    )  # fmt: skip
    version = AdapterVersion.objects.create(adapter=adapter, version="1", position=0)
    Adapter.objects.create(
        org="lab", name="synced", type=t, task=task, subtask=sub, architecture=arch,
        model_type="bert", model_name="bert-base-uncased", config={}, config_hash="s",
    )  # fmt: skip
    # The adapter came from a published upload (before origins were recorded); `synced` did not.
    org = old.get_model("accounts", "Organisation").objects.create(name="lab")
    old.get_model("uploads", "Upload").objects.create(
        organisation=org, task="sst", subtask="sst-2", archive_key="k", archive_sha256="0" * 64,
        archive_size=1, status="published", adapter_version_id=version.pk,
    )  # fmt: skip
    rows = [("adapter_config.json", 12, "a" * 64), ("pytorch_adapter.bin", 345, "b" * 64)]
    for path, size, sha in rows:
        OldFile.objects.create(
            version=version, path=path, size=size, sha256=sha, git_oid="c" * 40,
            storage_key=f"sha256/{sha}",
        )  # fmt: skip

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from hub_server.catalog.models import AdapterVersion as Current
    from hub_server.catalog.models import VersionFile

    moved = Current.objects.get(pk=version.pk).files.order_by("path")
    assert [(f.path, f.size, f.sha256) for f in moved] == rows
    assert VersionFile._meta.db_table == "catalog_versionfile"
    VersionFile.objects.create(
        version_id=version.pk,
        path="head_config.json",
        size=1,
        sha256="d" * 64,
        git_oid="e" * 40,
        storage_key="k",
    )  # fmt: skip: the id sequence came along with the table
    assert VersionFile.objects.count() == 3
    # uploads 0005: what uploads published is the hub's own, so no sync withdraws it
    from hub_server.catalog.models import Adapter as CurrentAdapter

    assert dict(CurrentAdapter.objects.values_list("name", "origin")) == {
        "a": "published",
        "synced": "repository",
    }
