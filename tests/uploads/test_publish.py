"""A published upload is in the catalogue, in storage and in the Hub git repository, and the three
agree; a later sync of that repository counts the card unchanged."""

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


def test_catalogue_storage_and_git_agree_and_sync_is_a_no_op(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    up = _publish(alice, tiny_adapter, django_capture_on_commit_callbacks)
    version = up.adapter_version
    adapter = Adapter.objects.get(pk=version.adapter_id)
    repo = demo_repository_path()
    # git: the card on main, at the path the sync expects, with the stored archive's hashes
    assert up.git_branch == "main"
    assert git(repo, "rev-parse", "main") == up.git_commit
    text = git(repo, "show", f"main:adapters/alice-lab/{adapter.name}.yaml")
    card = yaml.safe_load(text)
    assert card["files"] == [
        {"version": "1", "url": version.url, "sha1": version.sha1, "sha256": version.sha256}
    ]
    assert card["description"] == "A test adapter" and card["author"] == "alice-lab"
    # storage: the archive and every member, by content
    assert storage.hash_blob(version.storage_key).sha256 == version.sha256
    for f in version.files.all():
        assert storage.hash_blob(f.storage_key).sha256 == f.sha256
    # the work tree is clean (the card was committed, not left staged)
    assert git(repo, "status", "--porcelain") == ""
    # catalogue: the sync reads the card and finds nothing to change
    before = {k: getattr(adapter, k) for k in ADAPTER_FIELDS} | {"blob": adapter.source_blob}
    run = sync_hub_repository(str(repo))
    assert run.status == "succeeded", run.message
    assert run.counts["adapter"]["added"] == 0 and run.counts["adapter"]["updated"] == 0
    assert not run.errors
    adapter.refresh_from_db()
    assert {k: getattr(adapter, k) for k in ADAPTER_FIELDS} | {
        "blob": adapter.source_blob
    } == before
    # a full sync as well: nothing withdrawn, nothing updated
    run = sync_hub_repository(str(repo), full=True)
    assert run.counts["adapter"]["updated"] == 0 and run.counts["adapter"]["removed"] == 0
    adapter.refresh_from_db()
    assert adapter.status == "active"


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
