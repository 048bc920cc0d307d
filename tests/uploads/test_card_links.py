"""Links a card carries are absolute http(s) URLs: refused otherwise by the upload API and the
worker's card check (hubformat), whatever the scheme is dressed as."""

from __future__ import annotations

import json

import pytest
import yaml
from django.contrib.auth.models import User

from hub_server.accounts import services as accounts
from hub_server.catalog import hubformat
from hub_server.uploads.models import Upload

from .test_api import client_for, form

pytestmark = pytest.mark.django_db

NOT_WEB = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    "/relative/path",
    "ftp://example.org/file",
    "https://",
    "http://exa mple.org/",
]


@pytest.fixture
def alice(demo_catalogue):
    user = User.objects.create(username="alice")
    accounts.create_organisation("alice-lab", owner=user)
    return user


@pytest.mark.parametrize("url", NOT_WEB)
def test_the_upload_api_refuses_a_card_url_that_is_not_http(alice, tiny_adapter, url):
    response = client_for(alice).post(
        "/api/v1/uploads/", form(tiny_adapter, card=json.dumps({"url": url})), format="multipart"
    )
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["url"] == ["url must be an absolute http:// or https:// URL"]
    assert not Upload.objects.exists()


@pytest.mark.parametrize("field", ["github", "twitter"])
def test_a_profile_with_another_scheme_is_refused_a_handle_is_not(alice, tiny_adapter, field):
    client = client_for(alice)
    bad = {field: "javascript:alert(1)"}
    response = client.post(
        "/api/v1/uploads/", form(tiny_adapter, card=json.dumps(bad)), format="multipart"
    )
    assert response.status_code == 400
    assert field in response.json()["errors"]
    for good in ("@ada", "ada", f"https://{field}.com/ada"):
        card = {field: good, "url": "https://example.org/ada"}
        response = client.post(
            "/api/v1/uploads/", form(tiny_adapter, card=json.dumps(card)), format="multipart"
        )
        assert response.status_code == 202, response.content


def adapter_card(**changes) -> bytes:
    card = {
        "type": "text_task",
        "task": "sentiment",
        "subtask": "sst-2",
        "model_type": "bert",
        "model_name": "bert-base-uncased",
        "author": "Ada",
        "config": {"using": "pfeiffer"},
        "default_version": "1",
        "files": [{"version": "1", "url": "https://example.org/a.zip", "sha1": "a" * 40}],
        **changes,
    }
    return yaml.safe_dump(card).encode()


@pytest.mark.parametrize("url", NOT_WEB)
def test_a_hub_card_with_a_url_that_is_not_http_is_an_error(url):
    parsed = hubformat.parse_file("adapters/ada/x.yaml", adapter_card(url=url))
    assert [(p.field, p.message) for p in parsed.errors] == [
        ("url", "url must be an absolute http:// or https:// URL")
    ]
    files = [{"version": "1", "url": url, "sha1": "a" * 40}]
    parsed = hubformat.parse_file("adapters/ada/x.yaml", adapter_card(files=files))
    # A version's file may be a path on this hub (published here without HUB_PUBLIC_URL).
    assert [p.field for p in parsed.errors] == ([] if url == "/relative/path" else ["files.0.url"])
    subtask = {"task": "t", "subtask": "s", "description": "d", "url": url}
    parsed = hubformat.parse_file("subtasks/text_task/t_s.yaml", yaml.safe_dump(subtask).encode())
    assert [p.field for p in parsed.errors] == ["url"]


@pytest.mark.parametrize(
    "url", ["https://example.org/", " https://goo.gl/boolq", "", "HTTP://X.org"]
)
def test_web_urls_and_the_hubs_own_spaced_url_are_accepted(url):
    parsed = hubformat.parse_file("adapters/ada/x.yaml", adapter_card(url=url))
    assert parsed.errors == [] and parsed.warnings == []


@pytest.mark.parametrize("path", ["//evil.example/a.zip", "/\\evil.example/a.zip", "/a b.zip"])
def test_a_files_path_must_stay_on_this_hub(path):
    files = [{"version": "1", "url": path, "sha1": "a" * 40}]
    parsed = hubformat.parse_file("adapters/ada/x.yaml", adapter_card(files=files))
    assert [(p.field, p.message) for p in parsed.errors] == [
        (
            "files.0.url",
            "files.0.url must be an absolute http:// or https:// URL or a path on this hub",
        )
    ]
