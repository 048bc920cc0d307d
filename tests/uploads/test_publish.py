"""A published upload is in the catalogue and in storage, the two agree, and no sync of the Hub
repository changes it; with the git export on, its card is in that repository too."""

from __future__ import annotations

import io

import pytest
import yaml

from hub_server import storage
from hub_server.catalog.demo import demo_repository_path
from hub_server.catalog.models import Adapter
from hub_server.catalog.sync import ADAPTER_FIELDS, sync_hub_repository
from hub_server.uploads import hubrepo, services
from hub_server.uploads.models import Upload
from hub_server.uploads.publishing import render_card_yaml
from tests.conftest import git, make_git_repo

from .conftest import zip_folder

pytestmark = pytest.mark.django_db


def _publish(user, folder, capture, **kwargs) -> Upload:
    with capture(execute=True):
        up = services.create_upload(
            user=user,
            archive=io.BytesIO(zip_folder(folder)),
            task="sentiment",
            subtask="demo-reviews",
            org="alice-lab",
            card={"description": "A test adapter"},
            **kwargs,
        )
    up.refresh_from_db()
    assert up.status == "published", up.report
    return up


def test_catalogue_and_storage_agree_and_syncs_leave_the_adapter_alone(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    repo = demo_repository_path()
    head = git(repo, "rev-parse", "main")
    up = _publish(alice, tiny_adapter, django_capture_on_commit_callbacks)
    version = up.adapter_version
    adapter = Adapter.objects.get(pk=version.adapter_id)
    # the card is the row: published here, no git export by default
    assert adapter.origin == "published"
    assert (up.git_branch, up.git_commit) == ("", "")
    assert git(repo, "rev-parse", "main") == head
    card = yaml.safe_load(render_card_yaml(adapter))
    assert card["files"] == [
        {"version": "1", "url": version.url, "sha1": version.sha1, "sha256": version.sha256}
    ]
    assert card["description"] == "A test adapter" and card["author"] == "alice-lab"
    assert adapter.source_path == f"adapters/alice-lab/{adapter.name}.yaml"
    # storage: the archive and every member, by content
    assert storage.hash_blob(version.storage_key).sha256 == version.sha256
    for f in version.files.all():
        assert storage.hash_blob(f.storage_key).sha256 == f.sha256
    # the Hub repository has no file for it: neither sync changes or withdraws it
    before = {k: getattr(adapter, k) for k in ADAPTER_FIELDS} | {"blob": adapter.source_blob}
    for full in (False, True):
        run = sync_hub_repository(str(repo), full=full)
        assert run.status in ("succeeded", "noop"), run.message
        assert not run.errors
        adapter.refresh_from_db()
        assert {k: getattr(adapter, k) for k in ADAPTER_FIELDS} | {
            "blob": adapter.source_blob
        } == before


def test_per_upload_branch_leaves_the_checked_out_branch_alone(
    alice, tiny_adapter, tmp_path, settings, django_capture_on_commit_callbacks
):
    repo = make_git_repo(demo_repository_path(), tmp_path / "publish-repo")
    settings.HUB_PUBLISH_REPO = str(repo)
    main_before = git(repo, "rev-parse", "main")
    up = _publish(alice, tiny_adapter, django_capture_on_commit_callbacks)
    assert up.git_branch == f"upload/{up.pk}"
    assert git(repo, "rev-parse", "main") == main_before
    assert git(repo, "rev-parse", f"upload/{up.pk}^") == main_before
    path = f"adapters/alice-lab/{up.name}.yaml"
    assert hubrepo.read_card(repo, up.git_branch, path).startswith("type: text_task")
    assert git(repo, "status", "--porcelain") == ""

    # Until the review branch is merged, a full sync of main must not withdraw the adapter ...
    adapter = Adapter.objects.get(org="alice-lab", name=up.name)
    assert sync_hub_repository(str(repo), branch="main", full=True).status == "succeeded"
    adapter.refresh_from_db()
    assert adapter.status == "active"
    # ... and once merged, the sync adopts the card for the published adapter.
    git(repo, "merge", "-q", "--ff-only", up.git_branch)
    run = sync_hub_repository(str(repo), branch="main")
    assert not run.errors and run.counts["adapter"]["added"] == 0
    adapter.refresh_from_db()
    assert (adapter.status, adapter.source_path) == ("active", path)
    assert adapter.versions.get().file_status == "hosted"


def test_publish_pushes_to_the_remote_when_configured(
    alice, tiny_adapter, tmp_path, settings, django_capture_on_commit_callbacks
):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo = make_git_repo(demo_repository_path(), tmp_path / "publish-repo")
    git(repo, "remote", "add", "origin", str(remote))
    settings.HUB_PUBLISH_REPO = str(repo)
    settings.HUB_PUBLISH_BRANCH = "main"
    settings.HUB_PUBLISH_REMOTE = "origin"
    up = _publish(alice, tiny_adapter, django_capture_on_commit_callbacks)
    assert git(remote, "rev-parse", "main") == up.git_commit


def test_rejected_upload_keeps_its_report_and_bytes(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        up = services.create_upload(
            user=alice, archive=io.BytesIO(b"not a zip"), task="sentiment", subtask="x"
        )
    up.refresh_from_db()
    assert up.status == "rejected" and up.report[0]["name"] == "archive"
    assert up.message.startswith("archive: the upload must be a zip archive")
    assert storage.hash_blob(up.archive_key).sha256 == up.archive_sha256
    assert Adapter.objects.filter(org="alice").count() == 0
