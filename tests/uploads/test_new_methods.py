"""Uploads of the LoRA family and of the new architectures go through the same checks as a
bottleneck adapter and are published (eager validation: the worker's code path)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User

from hub_server.accounts import services as accounts
from hub_server.catalog import hubformat
from hub_server.catalog.models import Architecture
from hub_server.uploads import services
from tests.conftest import INTEROP

from .conftest import save_tiny_adapter, zip_folder

pytestmark = pytest.mark.django_db

LORA_CONFIG = {"architecture": "lora", "r": 8, "alpha": 8, "attn_matrices": ["q", "v"]}


def add_architecture(name: str, config: dict) -> Architecture:
    """What syncing an ``architectures/<name>.yaml`` of the Hub repository creates."""
    return Architecture.objects.create(
        name=name,
        displayname=name,
        config=config,
        config_hash=hubformat.config_hash(hubformat.full_config(config, {})),
    )


@pytest.fixture
def alice(demo_catalogue):
    user = User.objects.create(username="alice", email="alice@example.org")
    accounts.create_organisation("alice-lab", owner=user)
    return user


def upload(user, data: bytes, capture, **kwargs):
    fields = {"task": "sentiment", "subtask": "demo-reviews", "org": "alice-lab", **kwargs}
    with capture(execute=True):
        created = services.create_upload(user=user, archive=io.BytesIO(data), **fields)
    created.refresh_from_db()
    return created


def test_lora_adapter_is_validated_and_published(
    alice, tmp_path, django_capture_on_commit_callbacks
):
    add_architecture("lora", LORA_CONFIG)
    folder = save_tiny_adapter(tmp_path / "lora", config="lora")
    up = upload(alice, zip_folder(folder), django_capture_on_commit_callbacks)
    assert up.status == "published", up.report
    run = next(e for e in up.report if e["name"] == "run")
    assert "the adapter changes them" in run["message"]
    adapter = up.adapter_version.adapter
    assert adapter.unique_id == "@alice-lab/tiny-bert_sentiment_demo-reviews_lora"

    assert {"adapter.safetensors", "adapter_config.json"} <= set(
        up.adapter_version.files.values_list("path", flat=True)
    )


def test_lora_adapter_without_a_catalogue_architecture_is_rejected(
    alice, tmp_path, django_capture_on_commit_callbacks
):
    folder = save_tiny_adapter(tmp_path / "lora", config="lora")
    up = upload(alice, zip_folder(folder), django_capture_on_commit_callbacks)
    assert up.status == "rejected"
    entry = next(e for e in up.report if e["ok"] is False)
    assert (
        entry["name"] == "card" and "no architecture of the catalogue matches" in entry["message"]
    )


def save_arch_adapter(folder, arch: str, config: str):
    """An adapter (no head) with non-zero weights on one of the tiny interop base models."""
    import torch

    from adapters_core import AutoAdapterModel

    torch.manual_seed(0)
    model = AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch))
    model.config._name_or_path = arch
    model.add_adapter("a", config=config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters.a." in name or ".loras.a." in name:
                p.add_(torch.randn(p.shape) * 0.05)
    model.save_adapter(str(folder), "a", with_head=False)
    return folder


@pytest.mark.parametrize(
    ("arch", "config", "architecture"),
    [
        ("tiny-gpt2", "seq_bn", "pfeiffer"),
        ("tiny-bart", "lora", "lora"),
        ("tiny-gpt2", "lora", "lora"),
    ],
)
def test_gpt2_and_bart_adapters_are_validated_and_published(
    alice, tmp_path, settings, django_capture_on_commit_callbacks, arch, config, architecture
):
    settings.HUB_BASE_MODELS = {**settings.HUB_BASE_MODELS, arch: str(INTEROP / "models" / arch)}
    add_architecture("lora", LORA_CONFIG)
    folder = save_arch_adapter(tmp_path / arch, arch, config)
    up = upload(alice, zip_folder(folder), django_capture_on_commit_callbacks)
    assert up.status == "published", up.report
    checks = {e["name"]: e["message"] for e in up.report}
    model_type = arch.removeprefix("tiny-")
    assert f"for {arch} ({model_type}" in checks["config"]
    assert "the adapter changes them" in checks["run"]
    adapter = up.adapter_version.adapter
    assert adapter.unique_id == f"@alice-lab/{arch}_sentiment_demo-reviews_{architecture}"
