"""Fixtures of the hosting tests: a throw-away file store, the catalogue rows a publish needs, and
an adapter folder saved by adapters_core from a tiny BERT (or copied from the interop fixtures)."""

from __future__ import annotations

import shutil
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hub_server.catalog import hubformat
from hub_server.catalog.models import AdapterType, Architecture, Subtask, Task
from tests.conftest import INTEROP, ROOT

DEMO_HUB = ROOT / "hub_server" / "catalog" / "demo_hub"
TASK, SUBTASK, ORG = "sentiment", "sst-2", "alice"


@pytest.fixture(autouse=True)
def adapter_files(tmp_path, settings) -> Path:
    """Every test stores its files under its own temp dir."""
    location = tmp_path / "files"
    settings.STORAGES = {
        **settings.STORAGES,
        "adapter_files": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    settings.HUB_ACCEL_REDIRECT_PREFIX = ""
    settings.HUB_PUBLIC_URL = ""
    return location


@pytest.fixture(autouse=True)
def short_lived_db_connections():
    """Live-server threads close their database connection after each request, so keep-alive
    HTTP connections of a client do not keep sessions open on the test database."""
    from django.db import connections

    config = connections.settings["default"]
    previous = config.get("CONN_MAX_AGE")
    config["CONN_MAX_AGE"] = 0
    yield
    config["CONN_MAX_AGE"] = previous


def eventually(read, expected, seconds: float = 5.0):
    """`read()` once it equals `expected` (or its last value after `seconds`): a download is
    counted just after the server wrote its last chunk, which can be after the client read it."""
    deadline = time.monotonic() + seconds
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def _load(path: Path) -> dict:
    parsed = hubformat.parse_file(str(path.relative_to(DEMO_HUB)), path.read_bytes())
    assert not parsed.errors, parsed.errors
    return parsed.data


@pytest.fixture
def catalogue(db):
    """Type text_task, task sentiment, subtask sst-2 and the demo architectures, as rows."""
    AdapterType.objects.create(id="text_task", displayname="Task adapter")
    task = Task.objects.create(type_id="text_task", task=TASK, displayname="Sentiment")
    Subtask.objects.create(
        task=task, subtask=SUBTASK, displayname="SST-2", hf_datasets_id="glue", language="en"
    )
    Subtask.objects.create(task=task, subtask="imdb", displayname="IMDB")
    for path in sorted((DEMO_HUB / "architectures").glob("*.yaml")):
        data = _load(path)
        Architecture.objects.create(
            name=data["name"],
            displayname=data["displayname"],
            config=data["config"],
            config_hash=hubformat.config_hash(data["config"]),
        )


def _save_with_adapters_core(folder: Path, seed: int, config: str) -> bool:
    try:
        import torch
        from transformers import BertConfig

        from adapters_core import AutoAdapterModel
    except ImportError:
        return False
    torch.manual_seed(seed)
    model = AutoAdapterModel.from_config(
        BertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            vocab_size=100,
        )
    )
    model.config.name_or_path = "tiny-bert"
    model.add_adapter("a", config=config)
    model.add_classification_head("a", num_labels=2)
    with torch.no_grad():  # non-zero weights, so two seeds give two different adapters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    model.save_adapter(str(folder), "a")
    return True


def make_adapter_folder(folder: Path, seed: int = 0, config: str = "seq_bn") -> Path:
    folder.mkdir(parents=True)
    if not _save_with_adapters_core(folder, seed, config):
        source = INTEROP / "tiny-bert" / "seq_bn" / "a"
        for item in source.iterdir():
            shutil.copyfile(item, folder / item.name)
    return folder


@pytest.fixture(scope="session")
def saved_adapter(tmp_path_factory) -> Path:
    """An adapter folder as save_adapter writes it (safetensors + head), never modified."""
    return make_adapter_folder(tmp_path_factory.mktemp("saved") / "adapter", seed=0)


@pytest.fixture(scope="session")
def other_adapter(tmp_path_factory) -> Path:
    """Another adapter of the same config with other weights."""
    return make_adapter_folder(tmp_path_factory.mktemp("saved") / "adapter", seed=1)


@pytest.fixture
def adapter_folder(saved_adapter, tmp_path) -> Path:
    """A private copy of `saved_adapter` a test may change."""
    target = tmp_path / "folder"
    shutil.copytree(saved_adapter, target)
    return target


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over a temp folder: (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
