"""The cards this hub publishes are its own: a sync of the Hub repository, full or incremental,
never rewrites or withdraws them, whatever that repository holds; they live in PostgreSQL (the
documented backup), so workers on other hosts, with data directories of their own, publish into
the same store; the optional git export converges on one remote branch too."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import User

from hub_server.accounts import services as accounts
from hub_server.catalog.demo import demo_repository_path, load_demo_catalogue
from hub_server.catalog.models import Adapter
from hub_server.catalog.sync import ADAPTER_FIELDS, sync_hub_repository
from hub_server.uploads import services
from hub_server.uploads.models import Upload
from hub_server.uploads.publishing import render_card_yaml
from tests.conftest import ROOT, commit_all, git, make_git_repo

from .conftest import save_tiny_adapter, zip_folder
from .worker import Worker, close_other_sessions  # noqa: F401


def _publish(user, org: str, folder: Path, capture) -> Adapter:
    with capture(execute=True):
        up = services.create_upload(
            user=user, archive=io.BytesIO(zip_folder(folder)), task="sentiment",
            subtask="demo-reviews", org=org, card={"description": "published here"},
        )  # fmt: skip
    up.refresh_from_db()
    assert up.status == "published", up.report
    return Adapter.objects.get(pk=up.adapter_version.adapter_id)


def _state(adapter: Adapter) -> dict:
    adapter.refresh_from_db()
    versions = list(adapter.versions.values_list("version", "sha256", "file_status"))
    return {k: getattr(adapter, k) for k in ADAPTER_FIELDS} | {"versions": versions}


@pytest.mark.django_db
def test_syncs_of_the_hub_repository_never_touch_a_published_adapter(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    adapter = _publish(alice, "alice-lab", tiny_adapter, django_capture_on_commit_callbacks)
    published = _state(adapter)
    assert adapter.origin == "published"
    repo = demo_repository_path()
    card = render_card_yaml(adapter)
    path = f"adapters/alice-lab/{adapter.name}.yaml"

    # 1. The Hub repository has its own card for the adapter, edited: not read, and said so.
    edited = yaml.safe_load(card) | {"description": "an upstream edit"}
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(yaml.safe_dump(edited, sort_keys=False))
    # 2. A card under another name with the adapter's unique key: a duplicate, refused.
    (repo / "adapters/alice-lab/copy.yaml").write_text(card)
    # 3. An upstream card of the repository's own leaves it.
    gone = "adapters/demo/bert-base-uncased_nli_multinli_houlsby.yaml"
    (repo / gone).unlink()
    commit_all(repo, "upstream: edit, copy, remove")
    for full in (False, True):
        run = sync_hub_repository(str(repo), full=full)
        assert run.status == "succeeded", run.message
        assert _state(adapter) == published
        assert [w["file"] for w in run.warnings if "published by this hub" in w["message"]] == [
            path
        ]
        (duplicate,) = [e for e in run.errors if e["file"] == "adapters/alice-lab/copy.yaml"]
        assert f"@alice-lab/{adapter.name} already has" in duplicate["message"]
        assert not Adapter.objects.filter(org="alice-lab", name="copy").exists()
        assert Adapter.objects.get(source_path=gone).status == "withdrawn"

    # 4. The repository's card goes again: the published adapter stays, in every sync.
    (repo / path).unlink()
    commit_all(repo, "upstream: the edited card goes")
    for full in (False, True):
        run = sync_hub_repository(str(repo), full=full)
        assert run.status == "succeeded", run.message
        assert _state(adapter) == published and adapter.status == "active"
        assert not [w for w in run.warnings if "published by this hub" in w["message"]]
        # the copy still finds the key taken by the published adapter
        assert not Adapter.objects.filter(org="alice-lab", name="copy").exists()


@pytest.mark.django_db
def test_an_upstream_card_the_hub_publishes_a_version_of_becomes_the_hubs(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    """Publishing a version of an adapter the Hub repository described hands it to this hub: its
    card leaving that repository no longer withdraws the version published here."""
    first = _publish(alice, "alice-lab", tiny_adapter, django_capture_on_commit_callbacks)
    Adapter.objects.filter(pk=first.pk).update(origin="repository")  # as a synced card would be
    second = save_tiny_adapter(tiny_adapter.parent / "second", seed=1)
    again = _publish(alice, "alice-lab", second, django_capture_on_commit_callbacks)
    assert again.pk == first.pk and again.origin == "published"
    run = sync_hub_repository(str(demo_repository_path()), full=True)
    assert run.status == "succeeded", run.message
    again.refresh_from_db()
    assert again.status == "active" and again.versions.count() == 2


VALIDATE = (
    "import os; from hub_server.uploads import services; "
    "print(services.validate_upload(int(os.environ['UPLOAD_ID'])).status)"
)


@pytest.mark.django_db(transaction=True)
def test_two_workers_without_shared_disk_publish_into_one_store(tmp_path, settings):
    """Two worker processes, each with a data directory and a git clone of its own (containers on
    two hosts; only PostgreSQL, the file storage and the git remote are shared), validate one
    upload each at the same time. Both adapters are published in the one catalogue, both cards
    reach the remote branch, and a full sync of the Hub repository keeps both."""
    load_demo_catalogue()
    upstream = demo_repository_path()
    remote = tmp_path / "published.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = make_git_repo(upstream, tmp_path / "seed")
    git(seed, "push", "-q", str(remote), "main")

    uploads = []
    for i, org in enumerate(("lab-a", "lab-b")):
        user = User.objects.create(username=f"user-{org}")
        accounts.create_organisation(org, owner=user)
        folder = save_tiny_adapter(tmp_path / f"adapter-{org}", seed=i)
        from unittest import mock

        with mock.patch.object(services, "queue_validation"):  # validated by the processes below
            uploads.append(
                services.create_upload(
                    user=user,
                    archive=io.BytesIO(zip_folder(folder)),
                    task="sentiment",
                    subtask="demo-reviews",
                    org=org,
                )  # fmt: skip
            )
    procs = []
    for i, upload in enumerate(uploads):
        clone = tmp_path / f"host-{i}" / "clone"
        git(tmp_path, "clone", "-q", str(remote), str(clone))
        env = Worker(tmp_path, {}).env | {
            "HUB_DATA_DIR": str(tmp_path / f"host-{i}" / "data"),
            "HUB_PUBLISH_REPO": str(clone),
            "HUB_PUBLISH_BRANCH": "main",
            "HUB_PUBLISH_REMOTE": "origin",
            "UPLOAD_ID": str(upload.pk),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "shell", "-c", VALIDATE],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [o.strip().splitlines()[-1] for o in outputs] == ["published", "published"], outputs

    adapters = []
    for upload in uploads:
        upload.refresh_from_db()
        adapter = Adapter.objects.get(pk=upload.adapter_version.adapter_id)
        assert adapter.origin == "published" and upload.git_branch == "main"
        adapters.append(adapter)
    # One branch on the remote holds both cards (the later push went on top of the earlier one).
    cards = git(remote, "ls-tree", "-r", "--name-only", "main").splitlines()
    for adapter in adapters:
        assert f"adapters/{adapter.org}/{adapter.name}.yaml" in cards
    assert {u.git_commit for u in Upload.objects.filter(pk__in=[u.pk for u in uploads])} <= set(
        git(remote, "rev-list", "main").splitlines()
    )
    # The synced Hub repository has neither card: a full sync keeps both.
    before = [_state(a) for a in adapters]
    run = sync_hub_repository(str(upstream), full=True)
    assert run.status == "succeeded", run.message
    assert [_state(a) for a in adapters] == before
    assert all(a.status == "active" for a in adapters)


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_documented_backup_restores_every_published_adapter(
    tmp_path, settings, django_capture_on_commit_callbacks
):
    """docs/operations.md's backup (pg_dump -Fc, then a tar of the files) restored into a new
    database and file folder: the published adapter, its card and its files are back, and a full
    sync of a Hub repository that never had its card keeps it."""
    from django.db import connection

    load_demo_catalogue()
    user = User.objects.create(username="rita", email="rita@example.org")
    accounts.create_organisation("lab-r", owner=user)
    folder = save_tiny_adapter(tmp_path / "trained")
    adapter = _publish(user, "lab-r", folder, django_capture_on_commit_callbacks)
    card = render_card_yaml(adapter)

    db = connection.settings_dict
    pg = ["-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"]]
    files = Path(settings.STORAGES["adapter_files"]["OPTIONS"]["location"])
    subprocess.run(
        ["pg_dump", *pg, "-Fc", "-f", str(tmp_path / "hub.dump"), db["NAME"]], check=True
    )
    subprocess.run(["tar", "czf", str(tmp_path / "files.tgz"), "-C", str(files.parent), files.name],
                   check=True)  # fmt: skip

    restored = f"{db['NAME']}_restored"
    subprocess.run(["dropdb", *pg, "--if-exists", restored], check=True)
    subprocess.run(["createdb", *pg, restored], check=True)
    try:
        subprocess.run(
            ["pg_restore", *pg, "-d", restored, "--clean", "--if-exists", "--no-owner",
             str(tmp_path / "hub.dump")], check=True, capture_output=True,
        )  # fmt: skip
        (tmp_path / "new-host").mkdir()
        subprocess.run(["tar", "xzf", str(tmp_path / "files.tgz"), "-C", str(tmp_path / "new-host")],
                       check=True)  # fmt: skip
        env = Worker(tmp_path, {}).env | {
            "DATABASE_URL": Worker(tmp_path, {}).env["DATABASE_URL"].rsplit("/", 1)[0]
            + f"/{restored}",
            "HUB_DATA_DIR": str(tmp_path / "new-host" / "data"),
            "HUB_FILES_DIR": str(tmp_path / "new-host" / files.name),
        }
        upstream = make_git_repo(demo_repository_path(), tmp_path / "upstream")
        sync = _manage("sync_hub", str(upstream), "--full", env=env)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        listed = _manage("published_cards", "--check", "--export", str(tmp_path / "cards"), env=env)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert f"{adapter.unique_id} active versions 1\n" in listed.stdout
        exported = tmp_path / "cards" / "adapters" / "lab-r" / f"{adapter.name}.yaml"
        assert exported.read_text() == card
        # the check notices a files backup that was not restored
        shutil.rmtree(tmp_path / "new-host" / files.name)
        broken = _manage("published_cards", "--check", env=env)
        assert broken.returncode != 0 and "not in the file storage" in broken.stderr
    finally:
        subprocess.run(["dropdb", *pg, "--if-exists", restored], check=True)
