"""A PEFT LoRA folder (what PeftModel.save_pretrained / push_to_hub write) is accepted by the upload
checks: adapters_core's PEFT reader loads it into the base model (check `peft`), it is converted to
the adapters format and published like any adapter. Eager validation (the worker's code path)
here; the real Celery worker behind the CLI and behind the HF-compatible write path in
test_peft_upload_worker.py."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from django.contrib.auth.models import User

from hub_server import storage
from hub_server.accounts import services as accounts
from hub_server.uploads import services

from .conftest import TINY_BERT, zip_folder
from .test_new_methods import LORA_CONFIG, add_architecture

peft = pytest.importorskip("peft")

pytestmark = pytest.mark.django_db

IDS = torch.tensor([[2, 45, 99, 300, 7, 12]])


def save_peft_lora(folder: Path, base_name: str = "tiny-bert", **config) -> torch.Tensor:
    """A PEFT LoRA of tiny-bert with non-zero weights, saved by peft; returns PEFT's output."""
    from transformers import AutoModel

    torch.manual_seed(0)
    base = AutoModel.from_pretrained(str(TINY_BERT)).eval()
    base.name_or_path = base_name  # PEFT writes it as base_model_name_or_path
    kwargs = {"r": 8, "lora_alpha": 8, "target_modules": ["query", "value"], **config}
    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**kwargs))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    model.save_pretrained(folder)
    with torch.no_grad():
        return model(input_ids=IDS).last_hidden_state


def hidden_with(folder: Path) -> torch.Tensor:
    from adapters_core import AutoAdapterModel

    model = AutoAdapterModel.from_pretrained(str(TINY_BERT)).eval()
    name = model.load_adapter(str(folder))
    model.set_active_adapters(name)
    with torch.no_grad():
        return model.base_model(input_ids=IDS).last_hidden_state


@pytest.fixture
def alice(demo_catalogue):
    user = User.objects.create(username="alice", email="alice@example.org")
    accounts.create_organisation("alice-lab", owner=user)
    return user


def upload(user, data: bytes, capture):
    fields = {"task": "sentiment", "subtask": "demo-reviews", "org": "alice-lab"}
    with capture(execute=True):
        created = services.create_upload(user=user, archive=io.BytesIO(data), **fields)
    created.refresh_from_db()
    return created


def test_peft_lora_folder_is_converted_validated_and_published(
    alice, tmp_path, django_capture_on_commit_callbacks
):
    add_architecture("lora", LORA_CONFIG)
    folder = tmp_path / "peft"
    want = save_peft_lora(folder)
    assert (folder / "README.md").is_file()  # PEFT's card travels in the zip: ignored
    up = upload(alice, zip_folder(folder), django_capture_on_commit_callbacks)
    assert up.status == "published", up.report
    checks = {e["name"]: e["message"] for e in up.report}
    assert "PEFT LORA adapter for tiny-bert read as a lora adapter (r=8" in checks["peft"]
    assert "the adapter changes them" in checks["run"]
    version = up.adapter_version
    assert version.adapter.unique_id == "@alice-lab/tiny-bert_sentiment_demo-reviews_lora"
    paths = set(version.files.values_list("path", flat=True))
    assert "adapter.safetensors" in paths and "adapter_model.safetensors" not in paths

    # what a user downloads is the adapters format, with PEFT's outputs
    published = tmp_path / "published"
    published.mkdir()
    for row in version.files.all():
        with storage.open_blob(row.storage_key) as fh:
            (published / row.path).write_bytes(fh.read())
    saved = json.loads((published / "adapter_config.json").read_text())
    assert saved["model_name"] == "tiny-bert" and saved["config"]["architecture"] == "lora"
    assert (hidden_with(published) - want).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"modules_to_save": ["pooler"]}, "modules_to_save=['pooler']"),
        ({"bias": "lora_only"}, "bias='lora_only'"),
        ({"target_modules": ["query", "dense"]}, None),  # pooler.dense: not an adapter layer
    ],
)
def test_peft_folders_that_do_not_fit_are_rejected_naming_why(
    alice, tmp_path, django_capture_on_commit_callbacks, config, message
):
    add_architecture("lora", LORA_CONFIG)
    save_peft_lora(tmp_path / "peft", **config)
    up = upload(alice, zip_folder(tmp_path / "peft"), django_capture_on_commit_callbacks)
    assert up.status == "rejected"
    failed = next(e for e in up.report if e["ok"] is False)
    assert failed["name"] == "peft"
    assert "cannot be read" in failed["message"]
    if message:
        assert message in failed["message"]
    else:
        assert "pooler.dense" in failed["message"]


def test_peft_weights_without_a_peft_config_are_rejected(
    alice, tmp_path, django_capture_on_commit_callbacks
):
    folder = tmp_path / "peft"
    save_peft_lora(folder)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    up = upload(alice, zip_folder(folder), django_capture_on_commit_callbacks)
    failed = next(e for e in up.report if e["ok"] is False)
    assert failed["name"] == "archive" and "no peft_type" in failed["message"]


def test_peft_base_model_must_be_a_hub_id(alice, tmp_path, django_capture_on_commit_callbacks):
    """PEFT writes whatever path the base model came from; the hub takes model ids only."""
    folder = tmp_path / "peft"
    save_peft_lora(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(TINY_BERT)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    up = upload(alice, zip_folder(folder), django_capture_on_commit_callbacks)
    failed = next(e for e in up.report if e["ok"] is False)
    assert failed["name"] == "peft"
    assert "base_model_name_or_path" in failed["message"] and "not a model id" in failed["message"]
