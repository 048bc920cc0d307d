"""The git sync on the real Hub snapshot: counts, hashes, incremental commits, bad input."""

import shutil
import threading
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection, connections

from hub_server.catalog.models import (
    Adapter,
    AdapterDependency,
    AdapterType,
    AdapterVersion,
    Architecture,
    Subtask,
    SyncRun,
    Task,
)
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import commit_all, git

pytestmark = pytest.mark.django_db

SST2 = "adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.yaml"


def catalogue_counts() -> dict[str, int]:
    return {
        "adapters": Adapter.objects.filter(status=Adapter.Status.ACTIVE).count(),
        "versions": AdapterVersion.objects.filter(adapter__status=Adapter.Status.ACTIVE).count(),
        "tasks": Task.objects.count(),
        "subtasks": Subtask.objects.count(),
        "architectures": Architecture.objects.count(),
        "types": AdapterType.objects.count(),
    }


def snapshot_state() -> dict:
    """Everything a sync could change, to prove that a run changed nothing."""
    return {
        "adapters": sorted(
            Adapter.objects.values_list("org", "name", "status", "config_hash", "updated_at")
        ),
        "versions": sorted(AdapterVersion.objects.values_list("adapter_id", "version", "sha1")),
        "tasks": sorted(Task.objects.values_list("type_id", "task", "description")),
        "subtasks": sorted(Subtask.objects.values_list("task_id", "subtask")),
        "deps": sorted(AdapterDependency.objects.values_list("adapter_id", "key")),
    }


def edit_yaml(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def errors_for(run: SyncRun, file: str) -> list[dict]:
    return [e for e in run.errors if e["file"] == file]


def test_snapshot_syncs_exactly(snapshot_repo):
    run = sync_hub_repository(str(snapshot_repo))

    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    assert run.errors == []
    assert catalogue_counts() == {
        "adapters": 291,
        "versions": 501,
        "tasks": 123,
        "subtasks": 188,
        "architectures": 5,
        "types": 2,
    }
    assert run.commit == git(snapshot_repo, "rev-parse", "HEAD")
    assert run.counts["adapter"]["added"] == 291
    assert run.duration_ms is not None and run.finished_at is not None


def test_config_hashes_match_the_original_hub(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))

    hashes = dict(Architecture.objects.values_list("name", "config_hash"))
    assert hashes["pfeiffer"] == "9076f36a74755ac4"
    assert hashes["houlsby"] == "b1017368d7a97b11"
    assert hashes["pfeiffer+inv"] == "9ed5b5a29de19b71"
    assert hashes["houlsby+inv"] == "bcdbfdc759d7abf1"
    sst2 = Adapter.objects.get(org="ukp", name="bert-base-uncased_sentiment_sst-2_pfeiffer")
    assert sst2.config_hash == "9076f36a74755ac4"
    assert sst2.identifier == "sentiment/sst-2@ukp"
    # A card overriding its architecture: pfeiffer with gelu and reduction factor 2.
    overridden = Adapter.objects.filter(
        architecture__name="pfeiffer",
        config_overrides__non_linearity="gelu",
        config_overrides__reduction_factor=2,
    ).first()
    assert overridden is not None
    assert overridden.config["non_linearity"] == "gelu"
    assert overridden.config_hash == "d345095bcb01e325"


def test_snapshot_facts_a_parser_must_survive(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))

    # The id inside a task file is not its file name.
    assert Task.objects.get(source_path="tasks/text_task/linguistic_acceptability.yaml").task == (
        "lingaccept"
    )
    biggest = max(Adapter.objects.all(), key=lambda a: a.versions.count())
    assert biggest.versions.count() == 141
    assert AdapterDependency.objects.filter(key="en/wiki@ukp").exists()
    assert Adapter.objects.filter(source_path__endswith=".yml").exists()


def test_second_sync_without_new_commit_changes_nothing(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    before = snapshot_state()

    run = sync_hub_repository(str(snapshot_repo))

    assert run.status == SyncRun.Status.NOOP
    assert "nothing changed" in run.message
    assert (run.added, run.updated, run.removed) == (0, 0, 0)
    assert run.unchanged == 291
    assert snapshot_state() == before


def test_full_resync_rereads_everything_and_finds_it_unchanged(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    before = snapshot_state()

    run = sync_hub_repository(str(snapshot_repo), full=True)

    assert run.status == SyncRun.Status.SUCCEEDED
    assert (run.added, run.updated, run.removed) == (0, 0, 0)
    assert run.counts["adapter"]["unchanged"] == 291
    assert snapshot_state() == before


def test_commit_that_edits_adds_and_deletes_cards(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    untouched = Adapter.objects.get(org="ukp", name="bert-base-uncased-imdb_pfeiffer")
    untouched_updated_at = untouched.updated_at

    edit_yaml(snapshot_repo / SST2, description="Retrained with a better schedule.")
    new_card = snapshot_repo / "adapters/ukp/roberta-base_sentiment_sst-2_pfeiffer_new.yaml"
    shutil.copy(snapshot_repo / SST2, new_card)
    edit_yaml(new_card, model_name="google-bert/bert-large-cased", model_type="bert")
    deleted = "adapters/ukp/bert-base-uncased_nli_rte_pfeiffer.yaml"
    (snapshot_repo / deleted).unlink()
    commit_all(snapshot_repo, "edit one, add one, delete one")

    run = sync_hub_repository(str(snapshot_repo))

    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    assert run.errors == []
    assert run.counts["adapter"] == {"added": 1, "updated": 1, "removed": 1, "unchanged": 289}
    assert Adapter.objects.get(source_path=SST2).description == "Retrained with a better schedule."
    added = Adapter.objects.get(org="ukp", name="roberta-base_sentiment_sst-2_pfeiffer_new")
    assert added.model_name == "google-bert/bert-large-cased"
    assert added.versions.count() == 1
    gone = Adapter.objects.get(org="ukp", name="bert-base-uncased_nli_rte_pfeiffer")
    assert gone.status == Adapter.Status.WITHDRAWN
    assert catalogue_counts()["adapters"] == 291
    untouched.refresh_from_db()
    assert untouched.updated_at == untouched_updated_at


def test_yaml_syntax_error_names_file_and_line_and_others_sync(snapshot_repo):
    broken = snapshot_repo / "adapters/ukp/bert-base-uncased-imdb_pfeiffer.yaml"
    lines = broken.read_text().splitlines()
    lines[5] = "task: sentiment: imdb"
    broken.write_text("\n".join(lines) + "\n")
    commit_all(snapshot_repo, "break one card")

    run = sync_hub_repository(str(snapshot_repo))

    (error,) = errors_for(run, "adapters/ukp/bert-base-uncased-imdb_pfeiffer.yaml")
    assert "YAML syntax error" in error["message"]
    assert error["line"] == 6
    assert len(run.errors) == 1
    assert catalogue_counts()["adapters"] == 290


def test_python_tag_is_an_error_and_never_executed(snapshot_repo, tmp_path):
    marker = tmp_path / "pwned"
    card = snapshot_repo / "adapters/ukp/evil.yaml"
    card.write_text(
        (snapshot_repo / SST2).read_text()
        + f'\nhidden: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    commit_all(snapshot_repo, "a hostile card")

    run = sync_hub_repository(str(snapshot_repo))

    (error,) = errors_for(run, "adapters/ukp/evil.yaml")
    assert "python/object/apply" in error["message"]
    assert error["line"] is not None
    assert not marker.exists()
    assert not Adapter.objects.filter(name="evil").exists()
    assert catalogue_counts()["adapters"] == 291


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"files": "not-a-list"}, "files", "must be an array, not a string"),
        ({"task": "no-such-task"}, "task", "unknown task 'no-such-task'"),
        ({"config": {"using": "no-such-arch"}}, "config.using", "unknown architecture"),
        ({"default_version": "9"}, "default_version", "is not one of the versions"),
        ({"type": "text_vision"}, "type", "unknown adapter type"),
    ],
    ids=["schema", "unknown-task", "unknown-architecture", "default-version", "unknown-type"],
)
def test_invalid_card_is_reported_and_the_rest_syncs(snapshot_repo, change, field, words):
    card = snapshot_repo / "adapters/ukp/bad.yaml"
    shutil.copy(snapshot_repo / SST2, card)
    edit_yaml(card, model_name="bert-base-cased", **change)
    commit_all(snapshot_repo, "a bad card")

    run = sync_hub_repository(str(snapshot_repo))

    errors = errors_for(run, "adapters/ukp/bad.yaml")
    assert errors, run.errors
    assert errors[0]["field"] == field
    assert words in errors[0]["message"]
    assert not Adapter.objects.filter(name="bad").exists()
    assert catalogue_counts()["adapters"] == 291


def test_duplicate_adapter_is_rejected(snapshot_repo):
    copy = snapshot_repo / "adapters/ukp/sst2-again.yaml"
    shutil.copy(snapshot_repo / SST2, copy)
    commit_all(snapshot_repo, "same adapter twice")

    run = sync_hub_repository(str(snapshot_repo))

    (error,) = errors_for(run, "adapters/ukp/sst2-again.yaml")
    assert "duplicate adapter" in error["message"]
    assert "@ukp/bert-base-uncased_sentiment_sst-2_pfeiffer" in error["message"]
    assert catalogue_counts()["adapters"] == 291


def test_card_broken_by_a_later_commit_keeps_what_it_described(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    edit_yaml(snapshot_repo / SST2, default_version="99", description="should not land")
    commit_all(snapshot_repo, "break sst-2")

    run = sync_hub_repository(str(snapshot_repo))

    assert errors_for(run, SST2)
    sst2 = Adapter.objects.get(source_path=SST2)
    assert sst2.status == Adapter.Status.ACTIVE
    assert sst2.default_version == "1"
    assert "should not land" not in sst2.description
    # The problem is still listed by the next (incremental) run, which does not re-read it.
    touch = snapshot_repo / "README.md"
    touch.write_text(touch.read_text() + "\n")
    commit_all(snapshot_repo, "unrelated")
    assert errors_for(sync_hub_repository(str(snapshot_repo)), SST2)


def test_unreachable_source_is_a_clear_error_and_changes_nothing(snapshot_repo, tmp_path):
    sync_hub_repository(str(snapshot_repo))
    before = snapshot_state()

    run = sync_hub_repository(str(tmp_path / "no-such-repo"))

    assert run.status == SyncRun.Status.FAILED
    assert "cannot fetch" in run.message and "no-such-repo" in run.message
    assert snapshot_state() == before
    with pytest.raises(CommandError, match="cannot fetch"):
        call_command("sync_hub", "http://127.0.0.1:9/nothing.git")
    assert snapshot_state() == before


def test_unknown_branch_is_a_clear_error(snapshot_repo):
    run = sync_hub_repository(str(snapshot_repo), branch="no-such-branch")
    assert run.status == SyncRun.Status.FAILED
    assert "no-such-branch" in run.message
    assert Adapter.objects.count() == 0


def test_architecture_change_rehashes_the_cards_using_it(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    arch = snapshot_repo / "architectures/houlsby.yaml"
    data = yaml.safe_load(arch.read_text())
    data["config"]["reduction_factor"] = 32
    arch.write_text(yaml.safe_dump(data))
    commit_all(snapshot_repo, "houlsby rf 32")

    run = sync_hub_repository(str(snapshot_repo))

    assert run.counts["architecture"]["updated"] == 1
    houlsby = Adapter.objects.filter(architecture__name="houlsby")
    inheriting = [a for a in houlsby if "reduction_factor" not in a.config_overrides]
    assert run.counts["adapter"]["updated"] == len(inheriting) > 0
    assert all(a.config["reduction_factor"] == 32 for a in inheriting)
    assert all(a.config_hash != "b1017368d7a97b11" for a in inheriting)


def test_removed_subtask_still_in_use_is_kept(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    (snapshot_repo / "subtasks/text_task/sentiment_sst-2.yaml").unlink()
    commit_all(snapshot_repo, "remove a used subtask")

    run = sync_hub_repository(str(snapshot_repo))

    (error,) = errors_for(run, "subtasks/text_task/sentiment_sst-2.yaml")
    assert "still used by" in error["message"]
    assert Subtask.objects.filter(subtask="sst-2").exists()


def test_sync_command_prints_the_summary(snapshot_repo, capsys):
    call_command("sync_hub", str(snapshot_repo))
    out = capsys.readouterr().out
    assert "291 added" not in out  # totals count every kind of row, not just adapters
    assert "609 added" in out and "0 errors" in out


def test_celery_task_runs_the_sync(snapshot_repo):
    from hub_server.catalog.tasks import sync_hub_task

    run_id = sync_hub_task.delay(str(snapshot_repo)).get()
    assert SyncRun.objects.get(pk=run_id).status == SyncRun.Status.SUCCEEDED
    assert catalogue_counts()["adapters"] == 291


@pytest.mark.django_db(transaction=True)
def test_two_syncs_at_once_do_not_both_write(snapshot_repo):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (CI runs this on PostgreSQL)")
    from hub_server.catalog.models import SyncLock

    SyncLock.objects.get_or_create(id=1)
    holding = threading.Event()
    release = threading.Event()

    def hold_the_lock():
        from django.db import transaction

        try:
            with transaction.atomic():
                SyncLock.objects.select_for_update().get(id=1)
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(10)
    try:
        run = sync_hub_repository(str(snapshot_repo))
    finally:
        release.set()
        holder.join()

    assert run.status == SyncRun.Status.LOCKED
    assert Adapter.objects.count() == 0
    assert sync_hub_repository(str(snapshot_repo)).status == SyncRun.Status.SUCCEEDED


def test_card_naming_another_file_resets_a_mirrored_version(snapshot_repo):
    sync_hub_repository(str(snapshot_repo))
    version = AdapterVersion.objects.get(adapter__source_path=SST2, version="1")
    version.file_status = AdapterVersion.FileStatus.HOSTED
    version.size, version.storage_key = 123, "sha256/ab/cd/abcd"
    version.save()

    edit_yaml(snapshot_repo / SST2, files=[
        {"version": "1", "url": version.url, "sha1": "b" * 40}
    ])  # fmt: skip
    commit_all(snapshot_repo, "same version, other file")
    sync_hub_repository(str(snapshot_repo))

    version.refresh_from_db()
    assert version.sha1 == "b" * 40
    assert version.file_status == AdapterVersion.FileStatus.EXTERNAL
    assert version.storage_key == "" and version.size is None
    assert "another file" in version.file_error
