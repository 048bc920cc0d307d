"""Cross-cutting behaviour: cached responses and their invalidation, JSON errors, throttling,
the OpenAPI schema and its docs page."""

import shutil

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import SNAPSHOT, commit_all, make_git_repo

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

SST2_PATH = "adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.yaml"
SST2_DETAIL = "/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/"
SST2_LIST = "/api/v1/adapters/?q=sst-2&model_name=bert-base-uncased"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/adapters/?task=sentiment",
        SST2_DETAIL,
        "/api/v1/facets/?model_type=bert",
        "/api/v1/tasks/",
        "/api/v1/subtasks/?task=nli",
        "/api/v1/architectures/",
        "/api/v1/models/",
        "/api/v1/schema/",
    ],
)
def test_warm_reads_touch_no_database(client, url):
    first = client.get(url)
    assert first.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        second = client.get(url)
    assert len(queries) == 0
    assert second.content == first.content and second["ETag"] == first["ETag"]
    assert client.get(url, headers={"If-None-Match": first["ETag"]}).status_code == 304


def test_cache_varies_by_host(client, settings):
    settings.ALLOWED_HOSTS = ["testserver", "hub.example.org"]
    client.get(SST2_DETAIL)
    other = client.get(SST2_DETAIL, headers={"Host": "hub.example.org"}).json()
    assert other["versions"][0]["download_url"].startswith("http://hub.example.org/")


def test_a_sync_that_changes_a_card_changes_cached_list_and_detail(client, tmp_path):
    before_list = client.get(SST2_LIST).json()
    before_detail = client.get(SST2_DETAIL).json()
    assert before_detail["author"] == "Clifton Poth"
    assert any(r["author"] == "Clifton Poth" for r in before_list["results"])

    repo = make_git_repo(SNAPSHOT, tmp_path / "edited")
    card_path = repo / SST2_PATH
    card = yaml.safe_load(card_path.read_text())
    card["author"] = "Someone Else"
    card["description"] = "Rewritten description."
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    commit_all(repo, "edit the sst-2 card")
    run = sync_hub_repository(str(repo), full=True)
    assert run.updated == 1, run.message

    detail = client.get(SST2_DETAIL).json()
    assert detail["author"] == "Someone Else" and detail["description"] == "Rewritten description."
    listed = client.get(SST2_LIST).json()
    row = next(r for r in listed["results"] if r["name"].endswith("sst-2_pfeiffer"))
    assert row["author"] == "Someone Else"

    # Removing the card withdraws it: the detail is a 410 and the list drops it at once.
    (repo / SST2_PATH).unlink()
    commit_all(repo, "remove the card")
    sync_hub_repository(str(repo))
    assert client.get(SST2_DETAIL).status_code == 410
    assert all(
        not r["name"].endswith("sst-2_pfeiffer") for r in client.get(SST2_LIST).json()["results"]
    )
    shutil.rmtree(repo)


def test_unknown_api_paths_are_json_404(client):
    for path in ("/api/v1/nothing-here/", "/api/v1/adapters", "/api/v1/adapters/ukp/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json"
        assert set(response.json()) == {"detail", "errors"}
    assert "/api/v1/adapters/" in client.get("/api/v1/adapters").json()["detail"]


def test_a_bug_in_a_view_is_a_logged_json_500(client, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("hub_server.catalog.selectors.adapter_detail", broken)
    client.raise_request_exception = False
    response = client.get(SST2_DETAIL)
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "errors": {}}
    assert "boom" in caplog.text


def test_a_failure_outside_drf_is_a_json_500(client, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("database down")

    # The generation is read before any view runs (a cache outage no longer fails: it is
    # skipped, tests/faults/test_redis_down.py).
    monkeypatch.setattr("hub_server.catalog.cache.clock.current", broken)
    client.raise_request_exception = False
    response = client.get("/api/v1/tasks/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"


def test_anonymous_clients_are_throttled_with_retry_after(client, monkeypatch):
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": None})
    # Distinct URLs: cached pages are served before throttling, misses pay for it.
    statuses = [client.get("/api/v1/adapters/", {"page": n}).status_code for n in (1, 2, 3, 4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/sync/runs/")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["detail"].startswith("Request was throttled")


def test_authenticated_clients_have_their_own_rate(client, monkeypatch):
    from django.contrib.auth.models import User

    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"anon": None, "user": "2/min"})
    client.force_login(User.objects.create_user("bob", password="pw"))
    statuses = [client.get("/api/v1/sync/runs/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_schema_and_docs_are_served_without_a_cdn(client):
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path in (
        "/api/v1/adapters/",
        "/api/v1/adapters/{org}/{name}/",
        "/api/v1/facets/",
        "/api/v1/tasks/",
        "/api/v1/subtasks/",
        "/api/v1/architectures/",
        "/api/v1/models/",
        "/api/v1/sync/",
        "/api/v1/sync/runs/",
    ):
        assert path in paths, path
    params = {p["name"] for p in paths["/api/v1/adapters/"]["get"]["parameters"]}
    assert {"type", "task", "subtask", "model_type", "model_name", "architecture"} <= params
    assert {"config_id", "org", "has_head", "q", "ordering", "page", "cursor"} <= params
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html


def test_api_answers_json_whatever_the_accept_header(client):
    # The cache serves the same bytes to every client, so the uncached path must too.
    for accept in ("text/html", "application/xml", "*/*", ""):
        response = client.get("/api/v1/adapters/?page_size=2", HTTP_ACCEPT=accept)
        assert response.status_code == 200, accept
        assert response["Content-Type"] == "application/json"
        assert len(response.json()["results"]) == 2


DIST_INDEX = "/dist/v2/index/bert-base-uncased.json"


def test_clients_that_accept_gzip_get_the_same_json_compressed(client):
    import gzip

    plain = client.get(DIST_INDEX)
    assert "Content-Encoding" not in plain and "Accept-Encoding" in plain["Vary"]
    # what requests (the adapters libraries) and huggingface_hub send on a GET
    packed = client.get(DIST_INDEX, headers={"Accept-Encoding": "gzip, deflate"})
    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    assert gzip.decompress(packed.content) == plain.content
    assert len(packed.content) < len(plain.content) / 4
    assert packed["ETag"] != plain["ETag"]  # two representations, two validators
    revalidate = {"Accept-Encoding": "gzip", "If-None-Match": packed["ETag"]}
    assert client.get(DIST_INDEX, headers=revalidate).status_code == 304
    stale = {"Accept-Encoding": "gzip", "If-None-Match": plain["ETag"]}
    assert client.get(DIST_INDEX, headers=stale).content == packed.content
    for refused in ("identity", "gzip;q=0, deflate", "br", "*;q=0", ""):
        assert client.get(DIST_INDEX, headers={"Accept-Encoding": refused}).content == (
            plain.content
        ), refused
    for accepted in ("*", "br;q=1, gzip;q=0.5", "GZIP", "x-gzip"):
        response = client.get(DIST_INDEX, headers={"Accept-Encoding": accepted})
        assert response.content == packed.content, accepted
    # a small body is sent as it is, whatever the client accepts
    small = client.get("/api/v1/", headers={"Accept-Encoding": "gzip"})
    assert len(small.content) < 1024 and "Content-Encoding" not in small
    assert "Accept-Encoding" not in small.get("Vary", "")
