"""One oversized or hostile file is an error of that file, never a failed run."""

from __future__ import annotations

import pytest

from hub_server.catalog.gitsource import GitSource
from hub_server.catalog.models import Adapter, Architecture, SyncRun
from hub_server.catalog.sync import sync_hub_repository
from tests.catalog.minihub import MiniHub, arch_doc, card_doc
from tests.conftest import git

pytestmark = pytest.mark.django_db


@pytest.fixture
def hub(tmp_path) -> MiniHub:
    hub = MiniHub(tmp_path / "hub")
    hub.write("adapters/ukp/good.yaml", card_doc())
    return hub


def sync(hub: MiniHub) -> SyncRun:
    hub.commit("change")
    run = sync_hub_repository(str(hub.path))
    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    assert Adapter.objects.filter(name="good", status=Adapter.Status.ACTIVE).exists()
    return run


def only_error(run: SyncRun, path: str) -> dict:
    (error,) = [e for e in run.errors if e["file"] == path]
    assert len(run.errors) == 1, run.errors
    return error


def test_an_oversized_file_is_refused_without_being_read(hub, settings, monkeypatch):
    settings.HUB_YAML_MAX_BYTES = 4096
    hub.write("adapters/ukp/huge.yaml", card_doc(model_name="m2", description="x" * 5000))
    read = []
    real_read = GitSource.read_blob
    monkeypatch.setattr(GitSource, "read_blob", lambda self, sha: read.append(sha) or
                        real_read(self, sha))  # fmt: skip

    run = sync(hub)

    error = only_error(run, "adapters/ukp/huge.yaml")
    assert "bytes" in error["message"] and "4096" in error["message"]
    huge_blob = git(hub.path, "rev-parse", "HEAD:adapters/ukp/huge.yaml")
    assert huge_blob not in read and len(read) == 5  # the five small files only
    assert not Adapter.objects.filter(name="huge").exists()


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"model_name": "m" * 300}, "model_name", "at most 200 fit"),
        ({"description": "nul \x00 inside"}, "description", "NUL character"),
        ({"hidden_size": 2**40}, "hidden_size", "out of range"),
        ({"author": "a" * 501}, "author", "at most 500 fit"),
    ],
    ids=["long-model-name", "nul", "huge-integer", "long-author"],
)
def test_a_value_that_does_not_fit_its_column_is_an_error_of_its_card(hub, change, field, words):
    doc = card_doc(model_name="other") | change
    hub.write("adapters/ukp/hostile.yaml", doc)

    run = sync(hub)

    error = only_error(run, "adapters/ukp/hostile.yaml")
    assert error["field"] == field
    assert words in error["message"]
    assert "m" * 50 not in error["message"]  # the message never quotes the value
    assert not Adapter.objects.filter(name="hostile").exists()


def test_a_version_or_file_name_that_does_not_fit_is_an_error(hub):
    doc = card_doc(model_name="other")
    doc["files"][0]["version"] = "v" * 150
    doc["default_version"] = "v" * 150
    hub.write("adapters/ukp/long-version.yaml", doc)
    hub.write(f"adapters/ukp/{'n' * 210}.yaml", card_doc(model_name="third"))

    hub.commit("two hostile cards")
    run = sync_hub_repository(str(hub.path))

    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    fields = sorted(e["field"] for e in run.errors)
    assert fields == ["default_version", "file name", "files.0.version"]
    assert Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() == 1


def test_an_architecture_that_does_not_fit_is_an_error_and_the_rest_syncs(hub):
    hub.write("architectures/long.yaml", arch_doc("x" * 150))
    nan = arch_doc("nan")
    nan["config"]["dropout"] = float("nan")
    hub.write("architectures/nan.yaml", nan)

    hub.commit("hostile architectures")
    run = sync_hub_repository(str(hub.path))

    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    problems = {e["file"]: e for e in run.errors}
    assert problems["architectures/long.yaml"]["field"] == "name"
    assert "not finite" in problems["architectures/nan.yaml"]["message"]
    assert sorted(Architecture.objects.values_list("name", flat=True)) == ["pfeiffer"]


def test_a_file_the_parser_chokes_on_is_an_error_of_that_file(hub, monkeypatch):
    from hub_server.catalog import hubformat

    real_parse = hubformat.parse_file

    def choking(path, content):
        if path.endswith("choke.yaml"):
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(path, content)

    monkeypatch.setattr(hubformat, "parse_file", choking)
    hub.write("adapters/ukp/choke.yaml", card_doc(model_name="x"))

    run = sync(hub)

    assert (
        "could not be parsed (RecursionError)"
        in only_error(run, "adapters/ukp/choke.yaml")["message"]
    )


def test_a_sync_that_fetched_earlier_never_undoes_one_that_wrote_first(hub):
    sync(hub)
    hub.write("adapters/ukp/first.yaml", card_doc(model_name="first"))
    hub.commit("first")

    def another_sync_gets_ahead(message):
        # Between this sync's fetch and its lock, another sync fetches a newer commit and writes.
        if message.startswith("fetched"):
            hub.write("adapters/ukp/second.yaml", card_doc(model_name="second"))
            hub.commit("second")
            assert sync_hub_repository(str(hub.path)).status == SyncRun.Status.SUCCEEDED

    run = sync_hub_repository(str(hub.path), progress=another_sync_gets_ahead)

    assert run.status == SyncRun.Status.NOOP, run.message
    assert Adapter.objects.filter(name="second", status=Adapter.Status.ACTIVE).exists()


def test_a_failing_lock_query_is_a_database_failure_not_another_sync(hub, monkeypatch):
    from django.db import OperationalError, connection

    from hub_server.catalog.models import SyncLock

    if connection.vendor != "postgresql":
        pytest.skip("the lock's error codes are PostgreSQL's")

    def connection_lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(SyncLock.objects, "select_for_update", connection_lost)
    hub.commit("change")

    run = sync_hub_repository(str(hub.path))

    assert run.status == SyncRun.Status.FAILED
    assert "database connection failed" in run.message
