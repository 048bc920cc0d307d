"""Base models fetched on first use from a Hugging-Face-compatible endpoint: the real
scripts/hf_model_endpoint.py in a subprocess serves tiny models; validators fetch an allowed one
once into the bounded cache, refuse what is not allowed or only pickled, wait (not reject) while
the endpoint is down, and two processes fetching at once download it once."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from django.core.management import CommandError, call_command
from safetensors.torch import load_file

from hub_server.uploads import basemodel_cache, basemodels, services
from hub_server.uploads.models import Upload
from tests.conftest import PYTHONPATH, ROOT, SNAPSHOT

from .conftest import TINY_BERT, zip_folder
from .modelendpoint import ModelEndpoint, make_model_root, model_bytes


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return make_model_root(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def endpoint(model_root, tmp_path_factory):
    served = ModelEndpoint(model_root, tmp_path_factory.mktemp("endpoint") / "requests.log").start()
    yield served
    served.stop()


@pytest.fixture(autouse=True)
def fetch_settings(settings, endpoint):
    settings.HUB_BASE_MODEL_ENDPOINT = endpoint.url
    settings.HUB_BASE_MODEL_ALLOW = ["org/*", "other/*", "pickles/*"]
    settings.HUB_BASE_MODEL_CACHE_DIR = ""
    settings.HUB_BASE_MODEL_CACHE_MAX_BYTES = 10 * 1024**2
    settings.HUB_BASE_MODEL_MAX_BYTES = 5 * 1024**2
    basemodels.clear_cache()
    yield settings
    basemodels.clear_cache()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_first_use_fetches_the_safetensors_once_then_the_cache_answers(endpoint):
    before = endpoint.downloads("model.safetensors")
    source = basemodels.resolve_base_model("org/tiny-bert")
    folder = basemodel_cache.cache_dir() / "org--tiny-bert"
    assert source.cached and source.pretrained and source.location == str(folder)
    assert source.model_type == "bert"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]
    assert endpoint.downloads("model.safetensors") == before + 1
    # The fetched weights are the served ones, and validation loads them.
    model = basemodels.load_base_model(source)
    served = load_file(TINY_BERT / "model.safetensors")
    name = next(k for k in served if k.endswith("word_embeddings.weight"))
    ours = dict(model.named_parameters())
    loaded = next(v for k, v in ours.items() if k.endswith("word_embeddings.weight"))
    assert torch.equal(loaded, served[name])
    # A second worker process (a fresh per-process cache) reads the folder: no new download.
    basemodels.clear_cache()
    again = basemodels.resolve_base_model("org/tiny-bert")
    basemodels.load_base_model(again)
    assert endpoint.downloads("model.safetensors") == before + 1
    assert not [p for p in basemodel_cache.cache_dir().iterdir() if p.name.startswith(".tmp-")]


def test_a_model_not_allowed_is_refused_with_how_to_allow_it(endpoint):
    with pytest.raises(basemodels.BaseModelNotAllowed) as caught:
        basemodels.resolve_base_model("elsewhere/tiny-bert")
    message = str(caught.value)
    assert "base model elsewhere/tiny-bert is not allowed" in message
    assert "HUB_BASE_MODEL_ALLOW" in message and "HUB_BASE_MODELS" in message
    assert basemodel_cache.cached_folder("elsewhere/tiny-bert") is None


def test_default_allow_list_is_the_catalogues_base_models(settings):
    settings.HUB_BASE_MODEL_ALLOW = []
    names = set()
    for path in (SNAPSHOT / "adapters").rglob("*.yaml"):
        card = yaml.safe_load(path.read_text())
        if isinstance(card, dict) and basemodels.is_hub_id(str(card.get("model_name") or "")):
            names.add(card["model_name"])
    assert {"bert-base-uncased", "roberta-base", "xlm-roberta-large", "gpt2"} <= names
    assert [n for n in sorted(names) if not basemodel_cache.is_allowed(n)] == []
    assert not basemodel_cache.is_allowed("org/tiny-bert")
    assert "default allow-list" in basemodel_cache.not_allowed_message("org/tiny-bert")


def test_pickle_only_weights_are_refused_and_never_downloaded(endpoint):
    before = endpoint.downloads("pytorch_model.bin")
    with pytest.raises(basemodels.BaseModelUnavailable) as caught:
        basemodels.resolve_base_model("pickles/only-bin")
    assert "only pickle weights (pytorch_model.bin)" in str(caught.value)
    assert "never fetches or unpickles" in str(caught.value)
    assert endpoint.downloads("pytorch_model.bin") == before
    assert basemodel_cache.cached_folder("pickles/only-bin") is None


def test_a_missing_model_names_the_model_and_the_endpoint(endpoint):
    with pytest.raises(basemodels.BaseModelUnavailable) as caught:
        basemodels.resolve_base_model("org/no-such-model")
    assert not isinstance(caught.value, basemodels.BaseModelFetchDelayed)
    assert f"base model org/no-such-model was not found on {endpoint.url}" in str(caught.value)
    assert "RepoNotFound" in str(caught.value)


def test_an_endpoint_that_is_down_is_a_delay_naming_model_and_endpoint(settings):
    settings.HUB_BASE_MODEL_ENDPOINT = down = closed_port_url()
    with pytest.raises(basemodels.BaseModelFetchDelayed) as caught:
        basemodels.resolve_base_model("org/tiny-bert")
    assert f"base model org/tiny-bert could not be fetched from {down}" in str(caught.value)


def test_a_model_over_the_byte_cap_is_refused_and_leaves_nothing(settings, model_root):
    settings.HUB_BASE_MODEL_MAX_BYTES = 100_000  # the tiny BERT's weights are ~470 kB
    with pytest.raises(basemodels.BaseModelUnavailable) as caught:
        basemodels.resolve_base_model("org/tiny-bert")
    assert "model.safetensors is 467952 bytes, over its cap of" in str(caught.value)
    assert "HUB_BASE_MODEL_MAX_BYTES" in str(caught.value)
    assert basemodel_cache.cached_models() == []
    leftovers = [p for p in basemodel_cache.cache_dir().iterdir() if p.name != ".locks"]
    assert leftovers == []


def test_the_cache_keeps_its_byte_bound_least_recently_used_out(settings, model_root):
    one = model_bytes("org/tiny-bert", model_root)
    settings.HUB_BASE_MODEL_CACHE_MAX_BYTES = int(one * 1.5)  # room for one model
    basemodel_cache.ensure_model("org/tiny-bert")
    basemodel_cache.ensure_model("other/tiny-bert")
    assert [m.model_id for m in basemodel_cache.cached_models()] == ["other/tiny-bert"]
    assert sum(m.bytes for m in basemodel_cache.cached_models()) <= int(one * 1.5)
    # A model in use (a process reading it holds its lock shared) is never removed.
    with basemodel_cache.model_lock("other/tiny-bert", shared=True):
        basemodel_cache.ensure_model("org/tiny-bert")
    assert sorted(m.model_id for m in basemodel_cache.cached_models()) == [
        "org/tiny-bert",
        "other/tiny-bert",
    ]
    # Once free, the next fetch brings the cache back within its bound: the older one goes.
    os.utime(basemodel_cache.model_folder("other/tiny-bert") / basemodel_cache.LAST_USED, (1, 1))
    assert basemodel_cache.evict() == ["other/tiny-bert"]


def manage(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "base_models", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_fetching_one_model_download_it_once(model_root, tmp_path):
    slow = ModelEndpoint(model_root, tmp_path / "requests.log", delay=1.5).start()
    try:
        env = {
            "HUB_BASE_MODEL_ENDPOINT": slow.url,
            "HUB_BASE_MODEL_ALLOW": "org/*",
            "HUB_BASE_MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "DATABASE_URL": "sqlite:///" + str(tmp_path / "unused.sqlite3"),
        }
        first, second = (
            manage("fetch", "org/tiny-bert", env=env),
            manage("fetch", "org/tiny-bert", env=env),
        )
        outputs = [proc.communicate(timeout=120) for proc in (first, second)]
    finally:
        slow.stop()
    assert [first.returncode, second.returncode] == [0, 0], outputs
    verbs = sorted(out.split(": ")[1].split(",")[0] for out, _ in outputs)
    assert verbs == ["already cached", "fetched"], outputs
    assert slow.downloads("model.safetensors") == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".locks", "org--tiny-bert"]


def test_management_command_fetches_and_lists(model_root):
    out = io.StringIO()
    call_command("base_models", "fetch", "org/tiny-bert", stdout=out, stderr=io.StringIO())
    size = model_bytes("org/tiny-bert", model_root)
    assert f"org/tiny-bert: fetched, {size} bytes at " in out.getvalue()
    listing = io.StringIO()
    call_command("base_models", "list", stdout=listing)
    lines = listing.getvalue().splitlines()
    assert lines[0].startswith(f"org/tiny-bert\t{size} bytes\tlast used 20")
    assert lines[-1] == (
        f"1 base model(s), {size} of {10 * 1024**2} bytes (HUB_BASE_MODEL_CACHE_MAX_BYTES) in "
        f"{basemodel_cache.cache_dir()}"
    )
    with pytest.raises(CommandError) as caught:
        call_command(
            "base_models", "fetch", "elsewhere/x", stdout=io.StringIO(), stderr=io.StringIO()
        )
    assert "base model elsewhere/x is not allowed" in str(caught.value)


# -- through an upload (eager validation) ---------------------------------------------------------


def upload_for(user, folder, base: str, django_capture_on_commit_callbacks) -> Upload:
    with django_capture_on_commit_callbacks(execute=True):
        created = services.create_upload(
            user=user,
            archive=io.BytesIO(zip_folder(folder)),
            task="sentiment",
            subtask="demo-reviews",
            org="alice-lab",
            card={"model_name": base},
        )
    created.refresh_from_db()
    return created


@pytest.mark.django_db
def test_an_upload_waits_while_the_endpoint_is_down_then_publishes(
    alice, tiny_adapter, settings, endpoint, django_capture_on_commit_callbacks
):
    settings.HUB_BASE_MODEL_ENDPOINT = closed_port_url()
    up = upload_for(alice, tiny_adapter, "org/tiny-bert", django_capture_on_commit_callbacks)
    assert up.status == "pending" and up.attempts == 0 and up.validation_delayed, up.message
    assert up.message.startswith(
        "validation delayed: base model org/tiny-bert could not be fetched"
    )
    assert settings.HUB_BASE_MODEL_ENDPOINT in up.message
    settings.HUB_BASE_MODEL_ENDPOINT = endpoint.url
    with django_capture_on_commit_callbacks(execute=True):
        services.validate_upload(up.pk)
    up.refresh_from_db()
    assert up.status == "published", up.report
    config = next(e for e in up.report if e["name"] == "config")
    assert "for org/tiny-bert (bert, pretrained weights)" in config["message"]


@pytest.mark.django_db
def test_an_upload_for_a_model_not_allowed_is_rejected_saying_how_to_allow_it(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    up = upload_for(alice, tiny_adapter, "elsewhere/tiny-bert", django_capture_on_commit_callbacks)
    assert up.status == "rejected"
    failed = next(e for e in up.report if e["ok"] is False)
    assert failed["name"] == "config"
    assert "base model elsewhere/tiny-bert is not allowed on this hub" in failed["message"]
    assert "HUB_BASE_MODEL_ALLOW" in failed["message"]


def test_a_fetch_cut_short_is_resumed_with_a_range_request(endpoint, model_root):
    plan = basemodel_cache.plan_fetch("org/tiny-bert", endpoint.url)
    staging = basemodel_cache.staging_folder("org/tiny-bert")
    staging.mkdir(parents=True)
    (staging / ".sha").write_text(plan.sha)
    weights = (model_root / "org/tiny-bert/model.safetensors").read_bytes()
    (staging / "model.safetensors").write_bytes(weights[:100_000])
    (staging / "config.json").write_bytes((model_root / "org/tiny-bert/config.json").read_bytes())
    full, ranged, configs = (
        endpoint.downloads("model.safetensors"),
        endpoint.downloads("model.safetensors", 206),
        endpoint.downloads("config.json"),
    )
    folder = basemodel_cache.ensure_model("org/tiny-bert")
    assert (folder / "model.safetensors").read_bytes() == weights
    assert endpoint.downloads("model.safetensors", 206) == ranged + 1
    assert endpoint.downloads("model.safetensors") == full
    assert endpoint.downloads("config.json") == configs  # complete already: not fetched again
    assert not staging.exists()


def test_partial_files_of_another_revision_are_not_resumed(endpoint, model_root):
    staging = basemodel_cache.staging_folder("org/tiny-bert")
    staging.mkdir(parents=True)
    (staging / ".sha").write_text("0" * 40)
    (staging / "model.safetensors").write_bytes(b"\0" * 100_000)
    folder = basemodel_cache.ensure_model("org/tiny-bert")
    assert (folder / "model.safetensors").read_bytes() == (
        model_root / "org/tiny-bert/model.safetensors"
    ).read_bytes()


def test_bytes_that_do_not_match_their_sha256_are_refused(endpoint, monkeypatch):
    real = basemodel_cache.plan_fetch

    def lying_plan(model_id, source):
        plan = real(model_id, source)
        for item in plan.files:
            if item.name == "model.safetensors":
                item.sha256 = "f" * 64
        return plan

    monkeypatch.setattr(basemodel_cache, "plan_fetch", lying_plan)
    with pytest.raises(basemodels.BaseModelUnavailable) as caught:
        basemodels.resolve_base_model("org/tiny-bert")
    assert "model.safetensors: the bytes from" in str(caught.value)
    assert f"do not match their sha256 {'f' * 64}" in str(caught.value)
    assert basemodel_cache.cached_folder("org/tiny-bert") is None
    assert not basemodel_cache.staging_folder("org/tiny-bert").exists()


@pytest.mark.django_db
def test_an_upload_out_of_time_while_fetching_is_delayed_and_the_fetch_resumes(
    alice, tiny_adapter, endpoint, monkeypatch, django_capture_on_commit_callbacks
):
    from celery.exceptions import SoftTimeLimitExceeded

    real = basemodel_cache.fetch_file

    def out_of_time(plan, item, folder, so_far, *, progress):
        if item.name == "model.safetensors":
            (folder / item.name).write_bytes(b"")  # as if the limit fired at the first byte
            raise SoftTimeLimitExceeded()
        return real(plan, item, folder, so_far, progress=progress)

    monkeypatch.setattr(basemodel_cache, "fetch_file", out_of_time)
    configs = endpoint.downloads("config.json")
    up = upload_for(alice, tiny_adapter, "org/tiny-bert", django_capture_on_commit_callbacks)
    assert up.status == "pending" and up.attempts == 0, up.report
    assert "was still being fetched from" in up.message and "resumes at the next" in up.message
    assert (basemodel_cache.staging_folder("org/tiny-bert") / "config.json").is_file()
    monkeypatch.setattr(basemodel_cache, "fetch_file", real)
    services.validate_upload(up.pk)
    up.refresh_from_db()
    assert up.status == "published", up.report
    assert endpoint.downloads("config.json") == configs + 1  # kept from the first attempt


def test_the_local_endpoint_speaks_the_hub_layout_to_huggingface_hub(endpoint, tmp_path):
    """What the docker smoke and offline operators rely on: huggingface_hub itself downloads a
    model from scripts/hf_model_endpoint.py, and unknown names get the Hub's error codes."""
    import huggingface_hub
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=endpoint.url, token=False)
    info = api.model_info("org/tiny-bert", files_metadata=True)
    assert len(info.sha) == 40
    assert {s.rfilename: s.size for s in info.siblings} == {
        p.name: p.stat().st_size for p in TINY_BERT.iterdir()
    }
    try:
        folder = Path(snapshot_download("org/tiny-bert", endpoint=endpoint.url,
                                        cache_dir=tmp_path, token=False))  # fmt: skip
    finally:
        huggingface_hub.utils.close_session()
    assert folder.name == info.sha
    for path in TINY_BERT.iterdir():
        assert (folder / path.name).read_bytes() == path.read_bytes()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/tiny-bert", revision="v9")


def test_a_worker_fetch_logs_its_progress(endpoint, monkeypatch, caplog):
    monkeypatch.setattr(basemodel_cache, "PROGRESS_LOG_SECONDS", -1)  # every chunk
    monkeypatch.setattr(basemodel_cache, "CHUNK", 100_000)
    with caplog.at_level("INFO", logger="hub_server.uploads.basemodel_cache"):
        basemodel_cache.ensure_model("org/tiny-bert")
    lines = [r.getMessage() for r in caplog.records]
    assert "base model org/tiny-bert: model.safetensors: 100000 of 467952 bytes" in lines
    assert any(
        line.startswith(f"base model org/tiny-bert fetched from {endpoint.url} at ")
        and "2 files, 468522 bytes in" in line
        for line in lines
    ), lines
