"""A PEFT LoRA pushed to a live server, validated by a real Celery worker and published: through the
`adapterhub push` CLI (the upload API) and through huggingface_hub's upload_folder (the
HF-compatible write path). Downloads give PEFT's outputs."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from huggingface_hub import HfApi, snapshot_download

from hub_server.accounts import services as accounts
from hub_server.catalog.demo import load_demo_catalogue
from hub_server.uploads.models import Upload
from tests.hosting import test_hf

from . import test_worker_e2e
from .test_new_methods import LORA_CONFIG, add_architecture
from .test_peft_upload import hidden_with, save_peft_lora

pytest.importorskip("peft")

worker_factory = test_worker_e2e.worker_factory
close_other_sessions = test_worker_e2e.close_other_sessions
hf_client = test_hf.hf_client
cli = test_worker_e2e.cli

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

README = """---
base_model: tiny-bert
library_name: peft
tags:
- task:sentiment
- subtask:demo-reviews
---
A PEFT LoRA of tiny-bert.
"""


@pytest.fixture
def lab(live_server):
    load_demo_catalogue()
    add_architecture("lora", LORA_CONFIG)
    alice = User.objects.create_user("alice", password="correct horse battery staple")
    accounts.create_organisation("lab", owner=alice)
    _, secret = accounts.create_token(alice, scope="write")
    return secret


def test_peft_lora_pushed_with_the_cli_is_published_by_the_worker(
    lab, live_server, worker_factory, tmp_path
):
    worker = worker_factory().start()
    folder = tmp_path / "peft"
    want = save_peft_lora(folder)
    env = {"ADAPTERHUB_URL": live_server.url, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    login = cli("login", "--username", "alice", env={**env, "ADAPTERHUB_PASSWORD": "correct horse battery staple"})  # fmt: skip
    assert login.returncode == 0, login.stderr
    push = cli(
        "push", str(folder), "--task", "sentiment", "--subtask", "demo-reviews", "--org", "lab",
        "--wait", "--timeout", "100", env=env,
    )  # fmt: skip
    upload = Upload.objects.get()
    assert push.returncode == 0, (push.stdout, push.stderr, upload.report, worker.output())
    assert upload.status == "published"
    assert "validate_upload_task" in worker.output()
    peft_check = next(e for e in upload.report if e["name"] == "peft")
    assert "converted to the adapters format" in peft_check["message"]
    name = upload.adapter_version.adapter.name
    download = cli("download", f"lab/{name}", "-o", str(tmp_path / "dl"), env=env)
    assert download.returncode == 0, download.stderr
    assert (hidden_with(tmp_path / "dl") - want).abs().max() < 1e-5


def test_peft_lora_uploaded_with_huggingface_hub_is_published_by_the_worker(
    lab, live_server, worker_factory, tmp_path, monkeypatch
):
    worker = worker_factory().start()
    folder = tmp_path / "peft"
    want = save_peft_lora(folder)
    (folder / "README.md").write_text(README)  # the tags say task and subtask
    endpoint = f"{live_server.url}/hf"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    api = HfApi(endpoint=endpoint, token=lab)
    api.create_repo("lab/peft-lora", exist_ok=True)
    api.upload_folder(repo_id="lab/peft-lora", folder_path=str(folder))
    upload = Upload.objects.get()
    assert upload.status == "published", (upload.report, worker.output())
    assert upload.adapter_version.adapter.name == "peft-lora"
    snap = snapshot_download(
        repo_id="lab/peft-lora", endpoint=endpoint, cache_dir=str(tmp_path / "hf")
    )
    assert (hidden_with(snap) - want).abs().max() < 1e-5
