"""With HUB_STORAGE=s3, downloads are redirects to presigned URLs of the objects, served by a real
S3-compatible server (moto in server mode, on a local port): the hub answers the metadata (HEAD,
ETag, X-Repo-Commit, X-Linked-*), the bytes come from S3, and huggingface_hub and the REST client
get the right files, checksums included."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import huggingface_hub
import pytest
import requests
from huggingface_hub import hf_hub_download

from hub_server.catalog.models import AdapterVersion
from hub_server.uploads.publishing import publish_adapter_folder
from tests.hosting.conftest import ORG, SUBTASK, TASK, eventually

moto_server = pytest.importorskip("moto.server")

BUCKET = "adapterhub-test"
REPO = f"{ORG}/tiny-bert_sentiment_sst-2_pfeiffer"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(autouse=True)
def on_s3(settings, s3_endpoint, monkeypatch):
    settings.HUB_STORAGE = "s3"
    settings.STORAGES = {
        **settings.STORAGES,
        "adapter_files": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "default_acl": None,
                "file_overwrite": False,
                "querystring_auth": True,
                **CREDENTIALS,
            },
        },
    }
    settings.HUB_S3_DOWNLOAD_REDIRECT = True
    settings.HUB_S3_URL_EXPIRY_SECONDS = 300
    settings.HUB_S3_PUBLIC_ENDPOINT_URL = ""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield settings
    huggingface_hub.utils.close_session()


@pytest.fixture
def published(catalogue, saved_adapter):
    return publish_adapter_folder(saved_adapter, task=TASK, subtask=SUBTASK, org=ORG)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hf_download_is_a_redirect_to_s3_with_the_metadata_of_the_file(
    published, live_server, saved_adapter, s3_endpoint, tmp_path
):
    url = f"{live_server.url}/hf/{REPO}/resolve/main/adapter.safetensors"
    local = (saved_adapter / "adapter.safetensors").read_bytes()
    head = requests.head(url, allow_redirects=False, timeout=10)
    assert head.status_code == 200 and "Location" not in head.headers
    commit = head.headers["X-Repo-Commit"]
    assert head.headers["ETag"] == f'"{sha256(local)}"'
    assert head.headers["Content-Length"] == str(len(local))

    get = requests.get(url, allow_redirects=False, timeout=10)
    assert get.status_code == 302, get.content[:200]
    location = get.headers["Location"]
    assert location.startswith(f"{s3_endpoint}/{BUCKET}/sha256/")
    query = parse_qs(urlparse(location).query)
    assert query["X-Amz-Expires"] == ["300"] and "X-Amz-Signature" in query
    assert get.headers["X-Repo-Commit"] == commit
    assert get.headers["X-Linked-Etag"] == get.headers["ETag"] == f'"{sha256(local)}"'
    assert get.headers["X-Linked-Size"] == str(len(local))
    assert get.headers["Cache-Control"] == "no-store"
    assert get.content == b""  # not one byte through the hub
    from_s3 = requests.get(location, timeout=10)
    assert from_s3.status_code == 200 and from_s3.content == local

    path = Path(
        hf_hub_download(REPO, "adapter.safetensors", endpoint=f"{live_server.url}/hf",
                        cache_dir=tmp_path, token=False)
    )  # fmt: skip
    assert sha256(path.read_bytes()) == sha256(local)
    assert path.parent.name == commit
    # the client stored the blob under the sha256 the hub gave, not S3's own ETag (an MD5)
    assert (tmp_path / f"models--{REPO.replace('/', '--')}" / "blobs" / sha256(local)).exists()
    config = hf_hub_download(REPO, "adapter_config.json", endpoint=f"{live_server.url}/hf",
                             cache_dir=tmp_path, token=False)  # fmt: skip
    assert Path(config).read_bytes() == (saved_adapter / "adapter_config.json").read_bytes()
    # the counted file of a revision is adapter_config.json: one download, counted at the redirect
    assert eventually(lambda: AdapterVersion.objects.get(pk=published.pk).downloads, 1) == 1


def test_api_archive_download_redirects_with_its_checksum_and_file_name(published, live_server):
    url = f"{live_server.url}/api/v1/adapters/{ORG}/{published.adapter.name}/versions/1/download"
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert answer.headers["ETag"] == f'"{published.sha256}"'
    followed = requests.get(url, timeout=10)
    assert followed.status_code == 200 and followed.url.startswith("http://127.0.0.1")
    assert urlparse(followed.url).port != urlparse(live_server.url).port  # S3 answered
    assert sha256(followed.content) == published.sha256
    assert followed.headers["Content-Type"] == "application/zip"
    disposition = followed.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="{published.adapter.name}.zip"')
    # a HEAD answers from the catalogue, and If-None-Match still gets its 304 without S3
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(published.size)
    cached = requests.get(url, headers={"If-None-Match": f'"{published.sha256}"'}, timeout=10)
    assert cached.status_code == 304
    assert eventually(lambda: AdapterVersion.objects.get(pk=published.pk).downloads, 2) == 2


def test_a_range_request_is_redirected_and_s3_serves_the_range(published, live_server):
    url = f"{live_server.url}/hf/{REPO}/resolve/main/adapter.safetensors"
    whole = requests.get(url, timeout=10).content
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == whole[10:20]


def test_the_presigned_urls_expiry_is_the_setting(published, live_server, settings):
    # (S3 itself refuses the URL once expired; moto does not check expiry, so only the signed
    # expiry is checked here.)
    settings.HUB_S3_URL_EXPIRY_SECONDS = 1
    url = f"{live_server.url}/hf/{REPO}/resolve/main/adapter.safetensors"
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    assert parse_qs(urlparse(location).query)["X-Amz-Expires"] == ["1"]


def test_urls_are_signed_for_the_public_endpoint(published, live_server, settings, s3_endpoint):
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    settings.HUB_S3_PUBLIC_ENDPOINT_URL = public
    url = f"{live_server.url}/hf/{REPO}/resolve/main/adapter.safetensors"
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    assert location.startswith(f"{public}/{BUCKET}/")
    assert requests.get(location, timeout=10).status_code == 200


def test_with_the_redirect_off_the_hub_streams_from_s3(published, live_server, settings):
    settings.HUB_S3_DOWNLOAD_REDIRECT = False
    url = f"{live_server.url}/hf/{REPO}/resolve/main/adapter.safetensors"
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 200 and "Location" not in answer.headers
    assert answer.headers["ETag"] == f'"{sha256(answer.content)}"'


def test_dist_v2_file_urls_lead_to_s3_with_the_cards_checksum(published, live_server):
    from tests.conftest import clear_read_caches

    clear_read_caches()
    name = published.adapter.name
    document = requests.get(f"{live_server.url}/dist/v2/adapters/{ORG}/{name}.json", timeout=10)
    assert document.status_code == 200, document.content[:300]
    entry = document.json()["files"]["1"]
    answer = requests.get(entry["url"], allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and "X-Amz-Signature=" in answer.headers["Location"]
    assert sha256(requests.get(entry["url"], timeout=10).content) == entry["sha256"]
