"""Downloads stream: a 200 MB archive through a real gunicorn process leaves its memory flat."""

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hub_server import storage
from hub_server.catalog.models import Adapter, AdapterVersion, Architecture, Subtask
from tests.conftest import ROOT
from tests.hosting.conftest import SUBTASK, eventually

SIZE = 200 * 1024 * 1024


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def big_version(catalogue, transactional_db, tmp_path):
    blob_path = tmp_path / "big.zip"
    digest = hashlib.sha256()
    with blob_path.open("wb") as fh:
        for _ in range(SIZE // (1024 * 1024)):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            fh.write(chunk)
    blob = storage.store_path(blob_path)
    blob_path.unlink()
    subtask = Subtask.objects.get(subtask=SUBTASK)
    arch = Architecture.objects.get(name="pfeiffer")
    adapter = Adapter.objects.create(
        org="big", name="blob", type_id="text_task", task=subtask.task, subtask=subtask,
        model_type="bert", model_name="bert-base-uncased", architecture=arch,
        config=arch.config, config_hash=arch.config_hash, default_version="1",
    )  # fmt: skip
    return AdapterVersion.objects.create(
        adapter=adapter, version="1", sha256=blob.sha256, sha1=blob.digests.sha1,
        size=blob.size, storage_key=blob.key, file_status=AdapterVersion.FileStatus.HOSTED,
    )  # fmt: skip


@pytest.fixture
def gunicorn(adapter_files, tmp_path):
    from django.db import connection

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "HUB_FILES_DIR": str(adapter_files),
        "HUB_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "hub_server.settings",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "hub_server.wsgi", "-b", f"127.0.0.1:{port}",
         "-w", "1", "--threads", "2", "--timeout", "120"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                requests.get(f"{base}/healthz", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        workers = subprocess.run(
            ["pgrep", "-P", str(master.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) == 1, workers
        yield base, int(workers[0])
    finally:
        master.terminate()
        master.wait(timeout=30)


@pytest.mark.slow
def test_200mb_download_does_not_grow_the_server(big_version, gunicorn):
    base, worker = gunicorn
    url = f"{base}/api/v1/adapters/big/blob/versions/1/download"
    warm = requests.get(url, headers={"Range": "bytes=0-1023"}, timeout=30)
    assert warm.status_code == 206  # every module of the path is loaded now
    before = vm_kib(worker, "VmHWM")
    digest, received = hashlib.sha256(), 0
    started = time.perf_counter()
    with requests.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(SIZE)
        for chunk in response.iter_content(1024 * 1024):
            digest.update(chunk)
            received += len(chunk)
    elapsed = time.perf_counter() - started
    grown_mib = (vm_kib(worker, "VmHWM") - before) / 1024
    print(
        f"200 MB in {elapsed:.2f}s ({SIZE / elapsed / 2**20:.0f} MiB/s); peak RSS +{grown_mib:.1f} MiB"
    )
    assert received == SIZE and digest.hexdigest() == big_version.sha256
    assert grown_mib < 50
    assert eventually(lambda: AdapterVersion.objects.get(pk=big_version.pk).downloads, 1) == 1
