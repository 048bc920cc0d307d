"""End to end with a real Celery worker process on Redis and PostgreSQL: a contributor logs in and
pushes with the CLI against a live server, the worker validates and publishes, a second user
downloads through /hf/ (huggingface_hub) and through load_adapter, with the same outputs. And a
worker killed (SIGKILL) mid-validation: after a restart the upload still reaches a final status."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import torch
from django.contrib.auth.models import User

from hub_server.accounts import services as accounts
from hub_server.catalog.demo import load_demo_catalogue
from hub_server.uploads.models import Upload
from tests.conftest import PYTHONPATH, ROOT

from .conftest import TINY_BERT, save_tiny_adapter, zip_folder
from .worker import Worker, close_other_sessions, restore_broker, use_broker  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_factory(tmp_path):
    workers: list[Worker] = []
    saved = None

    def make(**env) -> Worker:
        nonlocal saved
        worker = Worker(tmp_path, env)
        saved = saved or use_broker(worker.queue)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
        worker.flush()
    if saved:
        restore_broker(saved)


def cli(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_server.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def logits_with(folder) -> torch.Tensor:
    from adapters_core import AutoAdapterModel

    model = AutoAdapterModel.from_pretrained(str(TINY_BERT))
    model.eval()
    name = model.load_adapter(str(folder))
    model.set_active_adapters(name)
    ids = torch.tensor([[2, 45, 99, 300, 7, 12]])
    with torch.no_grad():
        return model(input_ids=ids, head=name).logits


def test_push_validate_publish_and_download_with_a_real_worker(
    live_server, worker_factory, tmp_path, monkeypatch
):
    load_demo_catalogue()
    worker = worker_factory().start()
    alice = User.objects.create_user("alice", password="correct horse battery staple")
    accounts.create_organisation("lab", owner=alice)
    folder = save_tiny_adapter(tmp_path / "trained")
    env = {"ADAPTERHUB_URL": live_server.url, "XDG_CONFIG_HOME": str(tmp_path / "config")}

    login = cli("login", "--username", "alice", env={**env, "ADAPTERHUB_PASSWORD": "correct horse battery staple"})  # fmt: skip
    assert login.returncode == 0, login.stderr
    token_file = tmp_path / "config" / "adapterhub" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().startswith("ahub_")

    started = time.monotonic()
    push = cli(
        "push", str(folder), "--task", "sentiment", "--subtask", "demo-reviews", "--org", "lab",
        "--description", "trained for the end-to-end test", "--wait", "--timeout", "100", env=env,
    )  # fmt: skip
    assert push.returncode == 0, (
        f"{push.stdout}\n{push.stderr}\n{list(Upload.objects.values())}\n{worker.output()}"
    )
    assert "status: published" in push.stdout
    upload = Upload.objects.get()
    assert upload.status == "published" and upload.attempts == 1
    assert "Task hub_server.uploads.tasks.validate_upload_task[" in worker.output()
    print(f"push --wait took {time.monotonic() - started:.1f}s")
    name = upload.adapter_version.adapter.name
    expected = logits_with(folder)

    # a second user, anonymous: /hf/ with huggingface_hub
    from huggingface_hub import snapshot_download

    snap = snapshot_download(
        repo_id=f"lab/{name}", endpoint=f"{live_server.url}/hf", cache_dir=str(tmp_path / "hf")
    )
    assert torch.allclose(logits_with(snap), expected, atol=1e-6)

    # ... through load_adapter and the hub's legacy index
    from adapters_core import AutoAdapterModel

    monkeypatch.setenv("ADAPTERHUB_URL", live_server.url)
    monkeypatch.setenv("ADAPTERS_CORE_CACHE", str(tmp_path / "ac-cache"))
    model = AutoAdapterModel.from_pretrained(str(TINY_BERT))
    model.eval()
    loaded = model.load_adapter("sentiment/demo-reviews@lab", model_name="tiny-bert")
    model.set_active_adapters(loaded)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([[2, 45, 99, 300, 7, 12]]), head=loaded).logits
    assert torch.allclose(got, expected, atol=1e-6)

    # ... and the CLI's download and search
    download = cli("download", f"lab/{name}", "-o", str(tmp_path / "dl"), env=env)
    assert download.returncode == 0, download.stderr
    assert torch.allclose(logits_with(tmp_path / "dl"), expected, atol=1e-6)
    search = cli("search", "demo-reviews", env=env)
    assert f"@lab/{name}" in search.stdout, search.stdout + search.stderr


def test_a_worker_killed_mid_validation_leaves_nothing_stuck(
    live_server, worker_factory, tmp_path, django_user_model
):
    load_demo_catalogue()
    env = {
        "HUB_VALIDATION_TEST_DELAY": "4",
        "HUB_BROKER_VISIBILITY_TIMEOUT": "3",
        "HUB_VALIDATION_LEASE_SECONDS": "3",
    }
    first = worker_factory(**env).start()
    bob = User.objects.create(username="bob")
    accounts.create_organisation("lab", owner=bob)
    _, secret = accounts.create_token(bob, scope="write")
    data = zip_folder(save_tiny_adapter(tmp_path / "trained"))
    import requests

    response = requests.post(
        f"{live_server.url}/api/v1/uploads/",
        headers={"Authorization": f"Bearer {secret}"},
        data={"task": "sentiment", "subtask": "demo-reviews", "org": "lab"},
        files={"archive": ("a.zip", data)},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    upload_id = response.json()["id"]
    first.kill_mid_validation(upload_id)
    assert Upload.objects.get(pk=upload_id).status == "validating"

    second = Worker(tmp_path, env)
    second.queue, second.env = first.queue, first.env
    second.start()
    try:
        deadline = time.monotonic() + 90
        while not (up := Upload.objects.get(pk=upload_id)).is_final:
            assert time.monotonic() < deadline, second.output()
            time.sleep(0.5)
    finally:
        second.stop()
    assert up.status == "published", up.report
    assert up.attempts == 2
