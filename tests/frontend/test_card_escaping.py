"""A card's strings holding HTML are text on every page that shows them, and every response
carries the security headers (CSP without inline script, nosniff, referrer, framing, features)."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.cache import cache
from django.test import override_settings

from hub_server.catalog.models import SyncRun
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import ROOT, SNAPSHOT, commit_all, make_git_repo

CARD = SNAPSHOT / "adapters" / "ukp" / "bert-base-uncased_sentiment_sst-2_pfeiffer.yaml"
ORG, NAME = "ukp", "bert-base-uncased_sentiment_sst-2_pfeiffer"
MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def hostile_catalog(db, tmp_path, client):
    repo = make_git_repo(SNAPSHOT, tmp_path / "hub-repo")
    card = yaml.safe_load(CARD.read_text())
    for key in ("author", "description", "citation", "github", "twitter"):
        card[key] = f"{key} {MARKUP}"
    card["email"] = 'a"><script>alert(1)</script>@example.org'
    (repo / CARD.relative_to(SNAPSHOT)).write_text(yaml.safe_dump(card))
    commit_all(repo, "a card full of markup")
    with override_settings(HUB_DATA_DIR=tmp_path / "hub-data"):
        run = sync_hub_repository(str(repo))
    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    cache.clear()
    yield client
    cache.clear()


PAGES = [f"/adapters/{ORG}/{NAME}/", "/adapters/?q=sst-2", "/search/?q=sst-2"]


def test_markup_in_a_card_is_escaped_on_every_page(hostile_catalog):
    for url in [*PAGES, "/explore/sentiment/sst-2/", "/"]:
        response = hostile_catalog.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body, url
        assert "onerror=alert(1)>" not in body, url
        if url in PAGES:  # the pages that show this card
            assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body, url
    body = hostile_catalog.get(PAGES[0]).content.decode()
    for key in ("author", "description", "citation"):
        assert f"{key} &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body, key


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@pytest.mark.parametrize("url", ["/", "/api/v1/", "/api/v1/docs/", "/accounts/login/", "/healthz"])
def test_every_response_carries_the_security_headers(client, db, url):
    response = client.get(url)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert "camera=()" in response.headers["Permissions-Policy"]
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP in tests


def test_hsts_is_sent_over_https_when_configured(client, db, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = False
    settings.SECURE_HSTS_PRELOAD = False
    response = client.get("/", secure=True)
    assert response.headers["Strict-Transport-Security"] == "max-age=3600"


INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE
)


def test_no_template_has_inline_script_style_or_handler():
    """What the policy would block (and the browser tests would only see on the pages visited)."""
    for template in (ROOT / "frontend" / "templates").rglob("*.html"):
        found = INLINE.findall(template.read_text())
        assert not found, f"{template.relative_to(ROOT)} has {found}"
