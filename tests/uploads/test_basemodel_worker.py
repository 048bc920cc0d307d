"""With real Celery worker processes on Redis and PostgreSQL: an upload for an allowed base model
that no worker has yet is validated and published after the worker fetched the model from the
endpoint (scripts/hf_model_endpoint.py, a subprocess); and a prefork worker's child is replaced
once it passed HUB_WORKER_MAX_MEMORY_MB."""

from __future__ import annotations

import io
import re
import time

import pytest
from django.contrib.auth.models import User

from hub_server.accounts import services as accounts
from hub_server.catalog.demo import load_demo_catalogue
from hub_server.uploads import basemodel_cache, services
from hub_server.uploads.models import Upload

from .conftest import save_tiny_adapter, zip_folder
from .modelendpoint import ModelEndpoint, make_model_root
from .worker import Worker, close_other_sessions, restore_broker, use_broker  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers(tmp_path):
    started: list[Worker] = []
    saved = None

    def make(pool: str = "solo", **env) -> Worker:
        nonlocal saved
        worker = Worker(tmp_path, env, pool=pool)
        saved = saved or use_broker(worker.queue)
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.stop()
        worker.flush()
    if saved:
        restore_broker(saved)


def test_a_worker_fetches_the_allowed_base_model_then_publishes(workers, tmp_path, settings):
    served = ModelEndpoint(make_model_root(tmp_path / "models"), tmp_path / "requests.log").start()
    try:
        settings.HUB_BASE_MODEL_ENDPOINT = served.url
        settings.HUB_BASE_MODEL_ALLOW = ["org/*"]
        settings.HUB_BASE_MODEL_CACHE_DIR = str(tmp_path / "base-models")
        load_demo_catalogue()
        worker = workers()
        alice = User.objects.create_user("alice", email="alice@example.org")
        accounts.create_organisation("alice-lab", owner=alice)
        assert basemodel_cache.cached_folder("org/tiny-bert") is None
        up = services.create_upload(
            user=alice,
            archive=io.BytesIO(zip_folder(save_tiny_adapter(tmp_path / "adapter"))),
            task="sentiment",
            subtask="demo-reviews",
            org="alice-lab",
            card={"model_name": "org/tiny-bert"},
        )
        deadline = time.monotonic() + 180
        while Upload.objects.get(pk=up.pk).status not in Upload.FINAL:
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.3)
        up.refresh_from_db()
        assert up.status == "published", (up.report, worker.output())
        assert up.adapter_version.adapter.model_name == "org/tiny-bert"
        assert basemodel_cache.cached_folder("org/tiny-bert") is not None
        assert served.downloads("model.safetensors") == 1
        assert re.search(
            r"base model org/tiny-bert fetched from http://127\.0\.0\.1:\d+", worker.output()
        )
    finally:
        served.stop()


def child_names(log: str) -> list[str]:
    return re.findall(r"INFO/(ForkPoolWorker-\d+)\] Task hub_server\.uploads\.tasks\.validate", log)


def run_two_tasks(worker: Worker) -> list[str]:
    from hub_server.uploads.tasks import validate_upload_task

    for _ in range(2):
        validate_upload_task.delay(987654321)  # no such upload: the task returns at once
    deadline = time.monotonic() + 60
    while len(child_names(worker.output())) < 2:
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.2)
    return child_names(worker.output())


def test_a_worker_child_past_the_memory_limit_is_replaced(workers):
    # Any Python child with torch imported is past 1 MB: it is replaced after each task.
    worker = workers("prefork", HUB_WORKER_MAX_MEMORY_MB="1")
    first, second = run_two_tasks(worker)
    assert first != second, worker.output()


def test_without_a_memory_limit_the_child_stays(workers):
    worker = workers("prefork", HUB_WORKER_MAX_MEMORY_MB="0")
    first, second = run_two_tasks(worker)
    assert first == second, worker.output()
