"""Publishing with the Hugging Face clients people already use (huggingface_hub as installed, with
hf_xet present), against a live server and a real Celery worker: push_adapter_to_hub, upload_folder,
create_repo(exist_ok), a second push as a new version, revision= and the commits listing; refusals
(a failing folder, a hostile pickle, no task) raise in the client and publish nothing.
PEFT folders are accepted and converted: test_peft_upload_worker.py."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import redis
import torch
from django.contrib.auth.models import User
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hub_server.accounts import services as accounts
from hub_server.catalog.demo import load_demo_catalogue
from hub_server.catalog.models import Adapter, Subtask
from hub_server.uploads.models import Upload
from tests.hosting import test_hf

from . import test_worker_e2e
from .conftest import TINY_BERT, save_tiny_adapter

# The real worker's fixtures (and the live server's DB sessions ended at the end).
worker_factory = test_worker_e2e.worker_factory
close_other_sessions = test_worker_e2e.close_other_sessions
# Telemetry off, online, the client's keep-alive sessions closed after each test (autouse).
hf_client = test_hf.hf_client

TAGS = {"tags": ["task:sentiment", "subtask:demo-reviews"]}
CITED = "@misc{second-version}"
IDS = torch.tensor([[2, 45, 99, 300, 7, 12]])


@pytest.fixture
def hub(live_server, tmp_path, monkeypatch):
    """The demo catalogue, user alice of organisation lab with a write token; HF_ENDPOINT set."""
    load_demo_catalogue()
    alice = User.objects.create(username="alice")
    accounts.create_organisation("lab", owner=alice)
    _, secret = accounts.create_token(alice, scope="write")
    endpoint = f"{live_server.url}/hf"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("ADAPTERS_CORE_CACHE", str(tmp_path / "ac-cache"))
    return HfApi(endpoint=endpoint, token=secret), secret


def trained_model(seed: int):
    from adapters_core import AutoAdapterModel

    torch.manual_seed(seed)
    model = AutoAdapterModel.from_pretrained(str(TINY_BERT))
    model.config._name_or_path = "tiny-bert"
    model.add_adapter("a", config="seq_bn")
    model.add_classification_head("a", num_labels=2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapters" in name or "heads" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    return model


def logits(model, name: str = "a") -> torch.Tensor:
    model.set_active_adapters(name)
    with torch.no_grad():
        return model(input_ids=IDS, head=name).logits


def loaded(repo_id: str, version: str | None = None) -> torch.Tensor:
    from adapters_core import AutoAdapterModel

    model = AutoAdapterModel.from_pretrained(str(TINY_BERT))
    model.eval()
    name = model.load_adapter(repo_id, version=version)
    return logits(model, name)


pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.slow
def test_push_adapter_to_hub_publishes_versions_that_load_back(hub, worker_factory, tmp_path):
    import hf_xet  # noqa: F401  (present: the client takes its Xet upload pipeline)

    api, secret = hub
    worker = worker_factory().start()
    first = trained_model(seed=1)
    url = first.push_adapter_to_hub(
        "lab/tiny-sentiment", "a", token=secret, adapter_card_kwargs=TAGS
    )
    assert url.endswith("/hf/models/lab/tiny-sentiment")
    upload = Upload.objects.get()
    assert upload.status == "published", (upload.report, worker.output())
    assert "validate_upload_task" in worker.output()
    adapter = Adapter.objects.get(org="lab", name="tiny-sentiment")
    assert (adapter.task.task, adapter.subtask.subtask) == ("sentiment", "demo-reviews")
    assert torch.allclose(loaded("lab/tiny-sentiment"), logits(first), atol=1e-6)
    old_sha = api.model_info("lab/tiny-sentiment").sha
    first_readme = readme_at(api, old_sha, tmp_path / "r1")
    assert "task:sentiment" in first_readme and "AdapterHub identifier" not in first_readme

    # exist_ok: creating the published repo again is fine; without it, a conflict
    api.create_repo("lab/tiny-sentiment", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("lab/tiny-sentiment")
    assert exc.value.response.status_code == 409

    second = trained_model(seed=2)
    Adapter.objects.filter(pk=adapter.pk).update(description="Edited later on the hub.")
    second.push_adapter_to_hub(
        "lab/tiny-sentiment", "a", token=secret, adapter_card_kwargs={**TAGS, "citation": CITED}
    )
    versions = list(adapter.versions.order_by("position").values_list("version", flat=True))
    assert versions == ["1", "2"]
    assert torch.allclose(loaded("lab/tiny-sentiment"), logits(second), atol=1e-6)
    assert torch.allclose(loaded("lab/tiny-sentiment", version="1"), logits(first), atol=1e-6)
    assert torch.allclose(loaded("lab/tiny-sentiment", version=old_sha), logits(first), atol=1e-6)
    commits = api.list_repo_commits("lab/tiny-sentiment")
    assert [c.commit_id for c in commits][1:] == [old_sha]
    assert commits[0].commit_id == api.model_info("lab/tiny-sentiment").sha != old_sha
    assert commits[0].authors == ["alice"]
    # the pushed README of each version, under its sha for good
    assert readme_at(api, commits[0].commit_id, tmp_path / "r2").count(CITED) == 1
    assert readme_at(api, old_sha, tmp_path / "r3") == first_readme
    old = Path(
        snapshot_download(
            "lab/tiny-sentiment", revision=old_sha, endpoint=api.endpoint, cache_dir=tmp_path / "s"
        )
    )
    assert (old / "README.md").read_text() == first_readme
    assert sorted(p.name for p in old.iterdir()) == sorted(
        ["README.md", *(f.path for f in adapter.versions.get(version="1").files.all())]
    )


def readme_at(api, revision: str, cache) -> str:
    path = hf_hub_download(
        "lab/tiny-sentiment", "README.md", revision=revision, endpoint=api.endpoint, cache_dir=cache
    )
    return Path(path).read_text()


@pytest.mark.slow
def test_failing_folder_and_hostile_pickle_raise_in_the_client_and_publish_nothing(
    hub, worker_factory, tmp_path
):
    api, _ = hub
    worker_factory().start()
    folder = save_tiny_adapter(tmp_path / "bad")
    (folder / "README.md").write_text("---\ntags:\n- task:sentiment\n- subtask:demo-reviews\n---\n")
    (folder / "run_me.py").write_text("print('hi')\n")
    api.create_repo("lab/bad", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(repo_id="lab/bad", folder_path=str(folder))
    message = str(exc.value)
    assert exc.value.response.status_code == 422
    assert "Validation failed at check 'archive'" in message and "run_me.py" in message
    upload = Upload.objects.get()
    assert f"/uploads/{upload.pk}/" in message and upload.status == "rejected"
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("lab/bad")

    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile"
    shutil.copytree(folder, hostile)
    (hostile / "run_me.py").unlink()
    (hostile / "adapter.safetensors").unlink()
    (hostile / "pytorch_adapter.bin").write_bytes(
        pickle.dumps({"x": _CreatesFile(str(marker))}, protocol=2)
    )
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(repo_id="lab/bad", folder_path=str(hostile))
    assert "Validation failed at check 'weights'" in str(exc.value)
    assert "unpickling it would run code" in str(exc.value)
    assert not marker.exists()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("lab/bad")


class _CreatesFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_refusals_that_need_no_validation(hub, tmp_path, settings):
    api, secret = hub
    folder = save_tiny_adapter(tmp_path / "adapter", steps=1)

    # no task: the error says how to give it
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(repo_id="lab/no-task", folder_path=str(folder))
    assert exc.value.response.status_code == 422
    assert "no task given" in str(exc.value) and "task:<task>" in str(exc.value)

    # the wrong organisation, a read-only token, no token
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("someone-else/x")
    assert exc.value.response.status_code == 403
    _, read_only = accounts.create_token(User.objects.get(username="alice"), scope="read")
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(endpoint=api.endpoint, token=read_only).create_repo("lab/x")
    assert "read-only" in str(exc.value)
    assert api.create_repo("lab/new-repo").endswith("/hf/models/lab/new-repo")
    assert Upload.objects.count() == 0 and not Adapter.objects.filter(org="lab").exists()


def push_unconsumed(api, settings, repo_id: str, folder) -> HfHubHTTPError:
    """Push `folder` while no worker consumes the queue: past HUB_HF_COMMIT_WAIT (1 s) the
    client's error; the upload stays queued."""
    from .worker import BROKER_URL, restore_broker, use_broker

    settings.HUB_HF_COMMIT_WAIT = 1
    saved = use_broker("uploads-test-nobody-listens")
    try:
        with pytest.raises(HfHubHTTPError) as exc:
            api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    finally:
        restore_broker(saved)
        redis.Redis.from_url(BROKER_URL).delete("uploads-test-nobody-listens")
    return exc.value


def test_a_commit_still_validating_says_where_to_watch_it(hub, tmp_path, settings):
    """No worker consumes the queue here: past HUB_HF_COMMIT_WAIT the client gets an error that
    links the upload's status page, and nothing is served."""
    api, _ = hub
    folder = save_tiny_adapter(tmp_path / "adapter", steps=1)
    (folder / "README.md").write_text("---\ntags: [task:sentiment, subtask:demo-reviews]\n---\n")
    error = push_unconsumed(api, settings, "lab/slow", folder)
    upload = Upload.objects.get()
    assert error.response.status_code == 409
    assert "still running" in str(error) and f"/uploads/{upload.pk}/" in str(error)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("lab/slow")


def test_a_datasets_entry_matching_one_subtask_places_the_adapter(hub, tmp_path, settings):
    """No task/subtask tags: `datasets: [glue]` is sentiment/sst-2's dataset and only its."""
    api, _ = hub
    folder = save_tiny_adapter(tmp_path / "adapter", steps=1)
    (folder / "README.md").write_text("---\ndatasets: [glue]\ntags: [adapter-transformers]\n---\n")
    assert push_unconsumed(api, settings, "lab/by-dataset", folder).response.status_code == 409
    upload = Upload.objects.get()
    assert (upload.task, upload.subtask) == ("sentiment", "sst-2")


def test_a_datasets_entry_matching_no_or_several_subtasks_says_how_to_tag(hub, tmp_path):
    api, _ = hub
    folder = save_tiny_adapter(tmp_path / "adapter", steps=1)
    (folder / "README.md").write_text("---\ndatasets: [no-such-dataset]\n---\n")
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(repo_id="lab/by-dataset", folder_path=str(folder))
    assert exc.value.response.status_code == 422
    assert "no subtask has the Hugging Face dataset" in str(exc.value)
    assert "task:<task>" in str(exc.value) and "subtask:<subtask>" in str(exc.value)

    Subtask.objects.filter(subtask="multinli").update(hf_datasets_id="glue")
    (folder / "README.md").write_text("---\ndatasets: [glue]\n---\n")
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(repo_id="lab/by-dataset", folder_path=str(folder))
    assert exc.value.response.status_code == 422
    assert "match several subtasks" in str(exc.value) and "sentiment/sst-2" in str(exc.value)
    assert "task:<task>" in str(exc.value)
    assert Upload.objects.count() == 0 and not Adapter.objects.filter(org="lab").exists()
