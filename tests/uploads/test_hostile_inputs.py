"""Hostile upload inputs: the card (aliases, byte caps, types), each JSON file's cap, a model_name
that names a folder of the worker; and validation that tells the truth (a head that did not load,
non-finite values, an adapter that changes nothing)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient
from safetensors.torch import load_file, save_file

from hub_server.accounts import services as accounts
from hub_server.uploads.models import Upload
from tests.catalog.test_hostile_yaml import laughs

from .conftest import TINY_BERT, zip_folder
from .test_checks import failed, upload

pytestmark = pytest.mark.django_db


def post_card(user, folder, card: str):
    _, secret = accounts.create_token(user, scope="write")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    data = {
        "archive": SimpleUploadedFile("adapter.zip", zip_folder(folder)),
        "task": "sentiment",
        "subtask": "demo-reviews",
        "org": "alice-lab",
        "card": card,
    }
    return client.post("/api/v1/uploads/", data, format="multipart")


def card_error(response) -> str:
    assert response.status_code == 400, response.content[:300]
    assert Upload.objects.count() == 0
    (message,) = response.json()["errors"]["card"]
    assert len(message) < 400
    return message


def validate(user, folder, capture, **fields) -> Upload:
    return upload(user, zip_folder(folder), capture, **fields)


def edit_json(path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# -- the card ------------------------------------------------------------------------------------


def test_an_alias_card_is_refused_before_anything_is_stored(alice, tiny_adapter):
    """Five levels of aliases in 295 bytes were stored as 4.3 MB of card JSON; six levels in 339
    bytes as 39 MB."""
    card = laughs(5, "description")
    assert len(card) < 400
    message = card_error(post_card(alice, tiny_adapter, card))
    assert "YAML aliases are not allowed" in message and "line 2" in message


def test_a_card_over_the_yaml_cap_is_refused(alice, tiny_adapter, settings):
    settings.HUB_YAML_MAX_BYTES = 1000
    message = card_error(post_card(alice, tiny_adapter, "author: " + "a" * 1000))
    assert "1008 bytes" in message and "HUB_YAML_MAX_BYTES" in message


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
def test_a_card_field_over_its_cap_is_refused_by_name(alice, tiny_adapter, settings, as_json):
    settings.HUB_CARD_FIELD_MAX_BYTES = 500
    fields = {"author": "me", "citation": "x" * 501}
    text = json.dumps(fields) if as_json else "author: me\ncitation: " + "x" * 501
    message = card_error(post_card(alice, tiny_adapter, text))
    assert message.startswith("citation is 501 bytes") and "HUB_CARD_FIELD_MAX_BYTES" in message


def test_card_fields_are_strings_or_a_score(alice, tiny_adapter):
    message = card_error(post_card(alice, tiny_adapter, "description: [a, b]"))
    assert message == "description must be a string, not a list"
    message = card_error(post_card(alice, tiny_adapter, "score: high"))
    assert message == "score must be a number, not a string"
    message = card_error(post_card(alice, tiny_adapter, "score: .nan"))
    assert message == "score must be a finite number"
    message = card_error(post_card(alice, tiny_adapter, "1: one\nauthor: me"))
    assert message.startswith("unknown card field(s) ['1']")
    response = post_card(alice, tiny_adapter, "score: 0.93\ndescription: fine")
    assert response.status_code == 202, response.content


@pytest.mark.parametrize("name", ["/etc", "../../models/bert", "~/bert", "a/b/c", "a--b", ".."])
def test_a_card_model_name_must_be_a_hub_id(alice, tiny_adapter, name):
    message = card_error(post_card(alice, tiny_adapter, json.dumps({"model_name": name})))
    assert "is not a model id" in message


# -- worker inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adapter_config.json", "head_config.json"])
def test_each_json_file_has_its_own_byte_cap(
    alice, tiny_adapter, settings, django_capture_on_commit_callbacks, name
):
    settings.HUB_UPLOAD_MAX_JSON_BYTES = 4096
    path = tiny_adapter / name
    path.write_text(path.read_text() + " " * 5000)  # still valid JSON
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "archive"
    size = path.stat().st_size
    assert entry["message"] == (
        f"{name} is {size} bytes; a JSON file of an upload may be at most 4096 bytes "
        "(HUB_UPLOAD_MAX_JSON_BYTES)"
    )


def test_a_model_name_that_is_a_worker_path_is_failed(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    edit_json(tiny_adapter / "adapter_config.json", model_name=str(TINY_BERT))
    up = validate(alice, tiny_adapter, django_capture_on_commit_callbacks, name="tiny")
    entry = failed(up)
    assert entry["name"] == "card" and "is not a model id" in entry["message"]


def test_a_hub_id_is_never_read_as_a_folder_of_the_worker(
    alice, tiny_adapter, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    """'evil-bert' is a valid id, and a folder in the worker's working directory: not a model."""
    workdir = tmp_path / "worker-cwd"
    shutil.copytree(TINY_BERT, workdir / "evil-bert")
    monkeypatch.chdir(workdir)
    edit_json(tiny_adapter / "adapter_config.json", model_name="evil-bert")
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "config"
    assert "base model evil-bert is not available" in entry["message"]


def test_a_model_in_the_transformers_cache_is_found_by_id(
    alice, tiny_adapter, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from huggingface_hub import constants

    snapshot = tmp_path / "hf-cache/models--someone--tiny-bert/snapshots/0123abcd"
    shutil.copytree(TINY_BERT, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs/main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    edit_json(tiny_adapter / "adapter_config.json", model_name="someone/tiny-bert")
    up = validate(alice, tiny_adapter, django_capture_on_commit_callbacks)
    assert up.status == "published", up.report
    config_entry = next(e for e in up.report if e["name"] == "config")
    assert "for someone/tiny-bert (bert, pretrained weights)" in config_entry["message"]


# -- validation tells the truth ------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [{"config": None, "model_class": "NoSuchModelForThings"}, {"config": None}],
    ids=["unknown-model-class", "no-config"],
)
def test_a_head_that_does_not_load_rejects_the_upload(
    alice, tiny_adapter, django_capture_on_commit_callbacks, changes
):
    edit_json(tiny_adapter / "head_config.json", **changes)
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "load"
    assert entry["message"].startswith("head_config.json was not loaded")


def rewrite_weights(path, change) -> None:
    state = load_file(str(path))
    save_file({k: change(k, v) for k, v in state.items()}, str(path))


def test_nan_weights_are_failed(alice, tiny_adapter, django_capture_on_commit_callbacks):
    first = True

    def one_nan(key, tensor):
        nonlocal first
        if first:
            tensor = tensor.clone()
            tensor.view(-1)[0] = float("nan")
            first = False
        return tensor

    rewrite_weights(tiny_adapter / "adapter.safetensors", one_nan)
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "weights" and "holds NaN or infinite values" in entry["message"]


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ("adapter.safetensors", "the forward pass with the adapter gives NaN or infinite"),
        ("model_head.safetensors", "the prediction head gives NaN or infinite outputs"),
    ],
)
def test_finite_weights_that_overflow_are_failed(
    alice, tiny_adapter, django_capture_on_commit_callbacks, weights, words
):
    rewrite_weights(tiny_adapter / weights, lambda k, v: torch.full_like(v, 3e38))
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "run" and words in entry["message"]


def test_an_adapter_that_changes_nothing_is_failed(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    rewrite_weights(tiny_adapter / "adapter.safetensors", lambda k, v: torch.zeros_like(v))
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "run"
    assert entry["message"].startswith("the adapter does not change the model's outputs")


def test_a_deeply_nested_json_card_is_a_400(alice, tiny_adapter):
    card = '{"description": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert "nested too deeply" in card_error(post_card(alice, tiny_adapter, card))


def test_a_report_message_stays_short_whatever_the_input(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    path = tiny_adapter / "adapter.safetensors"
    state = load_file(str(path))
    state["x" * 20_000] = torch.tensor([float("nan")])
    save_file(state, str(path))
    entry = failed(validate(alice, tiny_adapter, django_capture_on_commit_callbacks))
    assert entry["name"] == "weights" and entry["message"].startswith("adapter.safetensors: tensor")
    assert len(entry["message"]) <= 1000
