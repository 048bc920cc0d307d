"""GET/HEAD /api/v1/adapters/{org}/{name}/versions/{version}/download."""

import threading

import pytest
import requests

from hub_server.catalog.models import Adapter, AdapterVersion
from hub_server.uploads.publishing import publish_adapter_folder
from tests.hosting.conftest import ORG, SUBTASK, TASK, eventually


@pytest.fixture
def hosted(catalogue, saved_adapter, adapter_files):
    version = publish_adapter_folder(saved_adapter, task=TASK, subtask=SUBTASK, org=ORG)
    version.archive = (adapter_files / version.storage_key).read_bytes()
    version.path = f"/api/v1/adapters/{ORG}/{version.adapter.name}/versions/1/download"
    return version


def counts(version):
    v = AdapterVersion.objects.get(pk=version.pk)
    return v.downloads, Adapter.objects.get(pk=v.adapter_id).downloads


def body(response):
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_full_get(client, hosted):
    response = client.get(hosted.path)
    assert response.status_code == 200
    assert response["ETag"] == f'"{hosted.sha256}"'
    assert response["Content-Length"] == str(hosted.size)
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith(
        'attachment; filename="tiny-bert_sentiment_sst-2_pfeiffer.zip"'
    )
    assert counts(hosted) == (0, 0)  # nothing is counted before the body went out
    assert body(response) == hosted.archive
    assert counts(hosted) == (1, 1)


def test_head_304_and_ranges_are_not_counted(client, hosted):
    data, size = hosted.archive, hosted.size
    head = client.head(hosted.path)
    assert head.status_code == 200 and head["Content-Length"] == str(size) and head.content == b""
    not_modified = client.get(hosted.path, headers={"If-None-Match": f'"{hosted.sha256}"'})
    assert not_modified.status_code == 304 and not_modified["ETag"] == f'"{hosted.sha256}"'
    assert client.get(hosted.path, headers={"If-None-Match": '"other"'}).status_code == 200

    part = client.get(hosted.path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 10-19/{size}" and part["Content-Length"] == "10"
    assert body(part) == data[10:20]
    tail = client.get(hosted.path, headers={"Range": "bytes=-7"})
    assert (
        body(tail) == data[-7:] and tail["Content-Range"] == f"bytes {size - 7}-{size - 1}/{size}"
    )
    rest = client.get(hosted.path, headers={"Range": f"bytes={size - 100}-"})
    assert rest.status_code == 206 and body(rest) == data[-100:]
    clipped = client.get(hosted.path, headers={"Range": f"bytes=0-{size * 2}"})
    assert clipped.status_code == 206 and body(clipped) == data

    outside = client.get(hosted.path, headers={"Range": f"bytes={size}-"})
    assert outside.status_code == 416 and outside["Content-Range"] == f"bytes */{size}"
    several = client.get(hosted.path, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200  # several ranges: the whole body (RFC 9110 allows it)
    stale = client.get(hosted.path, headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert stale.status_code == 200
    assert counts(hosted) == (0, 0)  # the 200s above were never read to their end
    body(several)
    assert counts(hosted) == (1, 1)


def test_an_aborted_download_is_not_counted(client, hosted):
    response = client.get(hosted.path)
    chunks = iter(response.streaming_content)
    next(chunks)  # the client read part of the body and went away
    assert counts(hosted) == (0, 0)


def test_accel_redirect(client, hosted, settings):
    settings.HUB_ACCEL_REDIRECT_PREFIX = "/_protected/"
    response = client.get(hosted.path)
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == f"/_protected/{hosted.storage_key}"
    assert response["ETag"] == f'"{hosted.sha256}"'
    assert counts(hosted) == (1, 1)
    client.get(hosted.path, headers={"Range": "bytes=0-1"})
    assert counts(hosted) == (1, 1)


def test_not_hosted_versions(client, hosted):
    adapter = hosted.adapter
    base = f"/api/v1/adapters/{ORG}/{adapter.name}/versions"
    ext = AdapterVersion.objects.create(
        adapter=adapter, version="ext", url="https://files.example.org/a.zip", sha1="a" * 40
    )
    redirect = client.get(f"{base}/ext/download")
    assert redirect.status_code == 302 and redirect["Location"] == ext.url
    ext.file_status, ext.file_error = AdapterVersion.FileStatus.DEAD_LINK, "HTTP 404"
    ext.save()
    gone = client.get(f"{base}/ext/download")
    assert gone.status_code == 410 and gone.json()["file_error"] == "HTTP 404"
    ext.file_status = AdapterVersion.FileStatus.CHECKSUM_MISMATCH
    ext.save()
    assert client.get(f"{base}/ext/download").status_code == 409
    missing = client.get(f"{base}/9/download")
    assert missing.status_code == 404 and missing.json()["versions"] == ["1", "ext"]
    assert client.get(f"/api/v1/adapters/{ORG}/nope/versions/1/download").status_code == 404
    assert client.post(f"{base}/1/download").status_code == 405


def test_yanked_is_served_by_exact_version_with_a_warning(client, hosted):
    Adapter.objects.filter(pk=hosted.adapter_id).update(status=Adapter.Status.YANKED)
    response = client.get(hosted.path)
    assert response.status_code == 200 and response["X-Adapter-Yanked"] == "true"
    assert response["Warning"].startswith("299 ")
    assert body(response) == hosted.archive
    Adapter.objects.filter(pk=hosted.adapter_id).update(status=Adapter.Status.WITHDRAWN)
    assert client.get(hosted.path).status_code == 410


def test_concurrent_downloads_are_each_counted_once(live_server, hosted):
    url = live_server.url + hosted.path
    errors = []

    def fetch():
        try:
            for _ in range(3):
                with requests.get(url, timeout=30) as response:
                    assert response.status_code == 200
                    assert response.content == hosted.archive
                requests.head(url, timeout=30).raise_for_status()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert eventually(lambda: counts(hosted), (24, 24)) == (24, 24)
