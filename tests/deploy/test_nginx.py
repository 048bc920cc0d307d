"""docker/nginx/default.conf.template with the local nginx (Debian's nginx-light), as in the compose
file: syntax, and in front of the local stack: downloads handed over by X-Accel-Redirect with
Django's headers kept, Range, static files, the body-size cap answered in JSON, gzip for JSON, and
the X-Forwarded-Proto chain with SECURE_SSL_REDIRECT on."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil

import pytest
import requests

from tests.conftest import SNAPSHOT, make_git_repo
from tests.deploy.stack import LocalNginx, LocalStack
from tests.deploy.test_stack import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx is not installed (apt-get install nginx-light)"
)
HTTPS = {"X-Forwarded-Proto": "https"}  # what the TLS load balancer in front would add


def test_config_is_valid_nginx(tmp_path):
    stack = LocalStack(tmp_path / "stack", port=8000, db_name="unused", redis_db=0)
    result = LocalNginx(stack, port=free_port(), nginx=NGINX).test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.fixture
def served(tmp_path):
    """A stack with the compose file's proxy settings, a synced and published catalogue, nginx."""
    repo = make_git_repo(SNAPSHOT, tmp_path / "hub-repo")
    stack = LocalStack(
        tmp_path / "stack",
        port=free_port(),
        db_name=f"adapterhub_nginx_{os.getpid()}",
        redis_db=15,
        env={
            "HUB_ACCEL_REDIRECT_PREFIX": "/_files",
            "DJANGO_BEHIND_PROXY": "1",
            "DJANGO_SECURE_SSL_REDIRECT": "1",
            "DJANGO_SECURE_HSTS_SECONDS": "31536000",
            "HUB_REPO_URL": str(repo),
            "HUB_REPO_BRANCH": "main",
        },
    )
    nginx = LocalNginx(stack, port=free_port(), max_body="1m", nginx=NGINX)
    stack.create_database()
    stack.flush_redis()
    try:
        stack.start()
        stack.wait_ready()
        stack.manage("sync_hub")
        from tests.hosting.conftest import make_adapter_folder

        folder = make_adapter_folder(tmp_path / "adapter", seed=3)
        stack.manage(
            "publish_adapter", str(folder), "--task", "sentiment", "--subtask", "sst-2",
            "--org", "nginxtest", "--name", "tiny", "--version", "1",
        )  # fmt: skip
        nginx.start()
        yield stack, nginx
    finally:
        nginx.stop()
        stack.stop()
        stack.drop_database()
        stack.flush_redis()


@pytest.mark.slow
def test_nginx_in_front_of_the_stack(served):
    stack, nginx = served
    detail_path = "/api/v1/adapters/nginxtest/tiny/"

    # Plain http is redirected to https, except the probes; the forwarded scheme is trusted.
    redirect = requests.get(nginx.url + detail_path, allow_redirects=False, timeout=30)
    assert redirect.status_code == 301
    assert redirect.headers["Location"].startswith("https://")
    assert requests.get(nginx.url + "/healthz", timeout=30).status_code == 200
    detail = requests.get(nginx.url + detail_path, headers=HTTPS, timeout=30)
    assert detail.status_code == 200, detail.text
    assert detail.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    (version,) = detail.json()["versions"]

    # Downloads: Django answers with X-Accel-Redirect and no body; nginx sends the bytes.
    download_path = f"{detail_path}versions/1/download"
    direct = requests.get(stack.url + download_path, headers=HTTPS, timeout=30)
    assert direct.headers["X-Accel-Redirect"].startswith("/_files/sha256/")
    assert direct.content == b""
    archive = requests.get(nginx.url + download_path, headers=HTTPS, timeout=30)
    assert archive.status_code == 200
    assert hashlib.sha256(archive.content).hexdigest() == version["sha256"]
    assert int(archive.headers["Content-Length"]) == version["size"] == len(archive.content)
    assert archive.headers["ETag"] == f'"{version["sha256"]}"'
    assert archive.headers["Content-Type"] == "application/zip"
    assert archive.headers["Content-Disposition"].startswith("attachment;")
    assert "Content-Encoding" not in archive.headers
    part = requests.get(
        nginx.url + download_path, headers={**HTTPS, "Range": "bytes=0-9"}, timeout=30
    )
    assert part.status_code == 206
    assert part.content == archive.content[:10]
    cached = requests.get(
        nginx.url + download_path,
        headers={**HTTPS, "If-None-Match": archive.headers["ETag"]},
        timeout=30,
    )
    assert cached.status_code == 304
    # The files location is internal: not reachable from outside.
    key = direct.headers["X-Accel-Redirect"].removeprefix("/_files/")
    assert requests.get(f"{nginx.url}/_files/{key}", headers=HTTPS, timeout=30).status_code == 404

    # JSON is gzipped for clients that accept it.
    listing = requests.get(
        nginx.url + "/api/v1/adapters/?page_size=100",
        headers={**HTTPS, "Accept-Encoding": "gzip"},
        stream=True,
        timeout=30,
    )
    assert listing.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(listing.raw.read()))["count"] > 250

    # Static files come from the collected folder, hashed names cached for good.
    manifest = json.loads((stack.data_dir / "var" / "static" / "staticfiles.json").read_text())
    hashed = next(iter(manifest["paths"].values()))
    static = requests.get(f"{nginx.url}/static/{hashed}", headers=HTTPS, timeout=30)
    assert static.status_code == 200
    assert "immutable" in static.headers["Cache-Control"]
    assert "gunicorn" not in static.headers.get("Server", "")

    # Over the body-size cap: 413 in JSON, before gunicorn reads anything.
    big = requests.post(
        nginx.url + "/api/v1/uploads/", data=b"x" * (2 * 1024 * 1024), headers=HTTPS, timeout=30
    )
    assert big.status_code == 413
    assert big.headers["Content-Type"].startswith("application/json")
    assert "too large" in big.json()["detail"]
