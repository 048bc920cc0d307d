"""An incremental sync leaves the catalogue exactly as a full sync of the same commit would."""

from __future__ import annotations

import pytest

from hub_server.catalog import hubformat
from hub_server.catalog.models import Adapter, Subtask, SyncRun, Task
from hub_server.catalog.sync import sync_hub_repository
from tests.catalog.minihub import (
    TYPE,
    MiniHub,
    arch_doc,
    card_doc,
    subtask_doc,
    sync_and_compare,
    task_doc,
)

pytestmark = pytest.mark.django_db

CARD = "adapters/ukp/a.yaml"


@pytest.fixture
def hub(tmp_path) -> MiniHub:
    hub = MiniHub(tmp_path / "hub")
    hub.commit("a small hub")
    return hub


def active(org: str, name: str) -> Adapter | None:
    return Adapter.objects.filter(org=org, name=name, status=Adapter.Status.ACTIVE).first()


def test_card_rejected_for_a_missing_task_lands_once_the_task_is_committed(hub):
    hub.write("adapters/ukp/nli.yaml", card_doc(task="nli", subtask="rte"))
    hub.commit("a card whose task is not there yet")
    run = sync_and_compare(hub)
    assert [e["field"] for e in run.errors] == ["task"]
    assert active("ukp", "nli") is None

    hub.write(f"tasks/{TYPE}/nli.yaml", task_doc("nli"))
    hub.write(f"subtasks/{TYPE}/nli_rte.yaml", subtask_doc("nli", "rte"))
    hub.commit("the task arrives")
    run = sync_and_compare(hub)

    assert run.errors == []
    assert active("ukp", "nli").subtask.subtask == "rte"


def original_then_copy(hub: MiniHub, original: str, copy: str) -> SyncRun:
    """Sync a card, then a second card with the same unique key; the second run."""
    hub.write(f"adapters/ukp/{original}.yaml", card_doc())
    hub.commit("original")
    sync_and_compare(hub)
    hub.write(f"adapters/ukp/{copy}.yaml", card_doc())
    hub.commit("a duplicate")
    return sync_and_compare(hub)


def test_duplicate_lands_once_the_original_is_deleted(hub):
    run = original_then_copy(hub, "original", "copy")
    assert "duplicate adapter" in run.errors[0]["message"]
    assert active("ukp", "copy") is None

    hub.delete("adapters/ukp/original.yaml")
    hub.commit("the original goes")
    run = sync_and_compare(hub)

    assert run.errors == []
    assert active("ukp", "copy") is not None
    assert not Adapter.objects.get(name="original").status == Adapter.Status.ACTIVE


def test_a_newcomer_never_displaces_the_card_that_holds_its_key(hub):
    # "a-copy" sorts before "b-original": a full read used to let the newcomer win.
    run = original_then_copy(hub, "b-original", "a-copy")

    assert [e["file"] for e in run.errors] == ["adapters/ukp/a-copy.yaml"]
    assert active("ukp", "b-original") is not None
    assert Adapter.objects.filter(name="a-copy").count() == 0


def test_yml_beside_yaml_is_an_error_on_both_and_the_adapter_stays(hub):
    hub.write("adapters/ukp/x.yaml", card_doc(description="from yaml"))
    hub.commit("x")
    sync_and_compare(hub)

    hub.write("adapters/ukp/x.yml", card_doc(description="from yml"))
    hub.commit("x again, other suffix")
    run = sync_and_compare(hub)

    assert sorted(e["file"] for e in run.errors) == ["adapters/ukp/x.yaml", "adapters/ukp/x.yml"]
    assert all("@ukp/x" in e["message"] for e in run.errors)
    assert "adapters/ukp/x.yml" in run.errors[0]["message"]
    assert "adapters/ukp/x.yaml" in run.errors[1]["message"]
    assert active("ukp", "x").description == "from yaml"

    hub.delete("adapters/ukp/x.yml")
    hub.commit("the extra file goes")
    run = sync_and_compare(hub)

    assert run.errors == []
    assert active("ukp", "x").description == "from yaml"


def test_two_task_files_for_one_task_keep_the_first_owner(hub):
    sync_and_compare(hub)
    # "a_sentiment.yaml" sorts before the existing owner "sentiment.yaml".
    hub.write(f"tasks/{TYPE}/a_sentiment.yaml", task_doc("sentiment", "Impostor"))
    hub.commit("a second file for the same task")

    run = sync_and_compare(hub)

    assert [e["file"] for e in run.errors] == [f"tasks/{TYPE}/a_sentiment.yaml"]
    assert Task.objects.get(task="sentiment").displayname == "Sentiment"


def test_removed_task_in_use_goes_once_its_last_card_moves_away(hub):
    hub.write(f"tasks/{TYPE}/nli.yaml", task_doc("nli"))
    hub.write(f"subtasks/{TYPE}/nli_rte.yaml", subtask_doc("nli", "rte"))
    hub.write(CARD, card_doc())
    hub.commit("a card")
    sync_and_compare(hub)
    hub.delete(f"tasks/{TYPE}/sentiment.yaml")
    hub.delete(f"subtasks/{TYPE}/sentiment_sst-2.yaml")
    hub.commit("task removed while in use")
    run = sync_and_compare(hub)
    assert any("still used by" in e["message"] for e in run.errors)
    assert Task.objects.filter(task="sentiment").exists()

    hub.write(CARD, card_doc(task="nli", subtask="rte"))
    hub.commit("the card moves to another task")
    run = sync_and_compare(hub)

    assert run.errors == [] and run.warnings == []
    assert not Task.objects.filter(task="sentiment").exists()
    assert not Subtask.objects.filter(subtask="sst-2").exists()


def test_removing_a_subtask_keeps_withdrawn_cards_and_their_counts(hub):
    hub.write(CARD, card_doc())
    hub.commit("a card")
    sync_and_compare(hub)
    Adapter.objects.filter(name="a").update(downloads=42)
    hub.delete(CARD)
    hub.commit("the card is withdrawn")
    sync_and_compare(hub)

    hub.delete(f"subtasks/{TYPE}/sentiment_sst-2.yaml")
    hub.commit("its subtask goes too")
    run = sync_and_compare(hub)

    withdrawn = Adapter.objects.get(org="ukp", name="a")
    assert withdrawn.status == Adapter.Status.WITHDRAWN
    assert withdrawn.downloads == 42
    assert run.errors == []
    assert any("withdrawn" in w["message"] for w in run.warnings)
    # The card coming back finds its history.
    hub.write(f"subtasks/{TYPE}/sentiment_sst-2.yaml", subtask_doc("sentiment", "sst-2"))
    hub.write(CARD, card_doc())
    hub.commit("back")
    sync_and_compare(hub)
    assert active("ukp", "a").downloads == 42
    assert Subtask.objects.count() == 1


def test_an_incremental_sync_reads_only_what_changed(hub, monkeypatch):
    for i in range(6):
        hub.write(f"adapters/ukp/card{i}.yaml", card_doc(model_name=f"model-{i}"))
    hub.commit("six cards")
    sync_hub_repository(str(hub.path))
    read = []
    real_parse = hubformat.parse_file

    def counting_parse(path, content):
        read.append(path)
        return real_parse(path, content)

    monkeypatch.setattr(hubformat, "parse_file", counting_parse)
    hub.write("adapters/ukp/card3.yaml", card_doc(model_name="model-3", description="edited"))
    hub.commit("edit one card")

    run = sync_hub_repository(str(hub.path))

    assert run.counts["adapter"]["updated"] == 1
    assert read == ["adapters/ukp/card3.yaml"]
    assert "1 file read" in run.message


def test_a_reference_removed_by_the_same_commit_is_unknown_to_a_new_card(hub):
    hub.write("architectures/houlsby.yaml", arch_doc("houlsby"))
    hub.commit("houlsby")
    sync_and_compare(hub)
    hub.delete("architectures/houlsby.yaml")
    # Refused anyway (unknown subtask), so it never keeps houlsby alive.
    hub.write("adapters/ukp/late.yaml", card_doc(subtask="imdb", using="houlsby"))
    hub.commit("houlsby goes as a card for it arrives")

    run = sync_and_compare(hub)

    assert sorted(e["field"] for e in run.errors) == ["config.using", "subtask"]


def test_an_architecture_change_that_makes_two_cards_one_refuses_the_later(hub):
    hub.write("architectures/houlsby.yaml", arch_doc("houlsby", reduction_factor=8))
    hub.write("adapters/ukp/h.yaml", card_doc(using="houlsby"))
    hub.write("adapters/ukp/p.yaml", card_doc(using="pfeiffer"))
    hub.commit("two cards, two configs")
    assert sync_and_compare(hub).errors == []
    hub.write("architectures/pfeiffer.yaml", arch_doc("pfeiffer", reduction_factor=8))
    hub.commit("pfeiffer's config becomes houlsby's")

    run = sync_and_compare(hub)

    (error,) = run.errors
    assert error["file"] == "adapters/ukp/p.yaml"
    assert "duplicate adapter: @ukp/h" in error["message"]
