"""Fixtures of the upload tests: the demo catalogue (synced from its git repository, which is also
where published cards are committed), a file store per test, the tiny BERT of the interop fixtures
registered as a base model, and adapter folders/zips saved by adapters_core or adapters 1.3.0."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from tests.conftest import INTEROP

TINY_BERT = INTEROP / "models" / "tiny-bert"
REFERENCE_SEQ_BN = INTEROP / "tiny-bert" / "seq_bn" / "a"


@pytest.fixture(autouse=True)
def upload_settings(tmp_path, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "adapter_files": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files")},
        },
    }
    settings.HUB_PUBLIC_URL = ""
    settings.HUB_PUBLISH_REPO = ""
    settings.HUB_PUBLISH_BRANCH = ""
    settings.HUB_PUBLISH_REMOTE = ""
    settings.HUB_BASE_MODELS = {"tiny-bert": str(TINY_BERT)}
    return settings


@pytest.fixture
def demo_catalogue(db):
    from hub_server.catalog.demo import load_demo_catalogue

    run = load_demo_catalogue()
    assert run.status == "succeeded", run.message
    return run


@pytest.fixture
def alice(demo_catalogue):
    """A user who owns the organisation alice-lab, on the demo catalogue."""
    from django.contrib.auth.models import User

    from hub_server.accounts import services as accounts

    user = User.objects.create(username="alice", email="alice@example.org")
    accounts.create_organisation("alice-lab", owner=user)
    return user


def save_tiny_adapter(
    folder: Path,
    *,
    config: str = "seq_bn",
    hidden_size: int | None = None,
    head: bool = True,
    steps: int = 3,
    seed: int = 0,
    use_safetensors: bool = True,
) -> Path:
    """An adapter (and head) trained a few steps with adapters_core on the tiny BERT."""
    from transformers import BertConfig

    from adapters_core import AutoAdapterModel

    torch.manual_seed(seed)
    if hidden_size is None:
        model = AutoAdapterModel.from_pretrained(str(TINY_BERT))
    else:
        cfg = BertConfig.from_pretrained(str(TINY_BERT))
        cfg.hidden_size = hidden_size
        model = AutoAdapterModel.from_config(cfg)
    model.config._name_or_path = "tiny-bert"
    model.add_adapter("a", config=config)
    if head:
        model.add_classification_head("a", num_labels=2)
    model.train_adapter("a")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    ids = torch.randint(5, 1000, (4, 10))
    labels = torch.tensor([0, 1, 0, 1])
    for _ in range(steps):
        out = model(input_ids=ids, labels=labels) if head else None
        loss = out.loss if head else model.base_model(input_ids=ids).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_adapter(str(folder), "a", with_head=head, use_safetensors=use_safetensors)
    return folder


def zip_folder(folder: Path, target: Path | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    data = buffer.getvalue()
    if target is not None:
        target.write_bytes(data)
    return data


@pytest.fixture
def tiny_adapter(tmp_path) -> Path:
    return save_tiny_adapter(tmp_path / "tiny-adapter")


@pytest.fixture
def reference_adapter(tmp_path) -> Path:
    target = tmp_path / "reference-seq-bn"
    shutil.copytree(REFERENCE_SEQ_BN, target)
    for p in target.iterdir():
        p.chmod(0o644)
    target.chmod(0o755)
    return target
