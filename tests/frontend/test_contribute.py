"""Contributing in a real browser: sign in, create and revoke a token, upload an adapter through the
form (XHR with a progress bar) and watch it reach `published`, then download it from its page."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import pytest
from django.contrib.auth import get_user_model

from hub_server.catalog.models import AdapterVersion
from tests.conftest import INTEROP
from tests.frontend.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TINY_BERT = INTEROP / "models" / "tiny-bert"
REFERENCE_SEQ_BN = INTEROP / "tiny-bert" / "seq_bn" / "a"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def upload_settings(settings, tmp_path, synced_catalog):
    settings.STORAGES = {
        **settings.STORAGES,
        "adapter_files": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files")},
        },
    }
    settings.HUB_PUBLIC_URL = ""
    # Published cards are committed to the repository the catalogue was synced from.
    settings.HUB_PUBLISH_REPO = str(synced_catalog)
    settings.HUB_PUBLISH_BRANCH = ""
    settings.HUB_PUBLISH_REMOTE = ""
    settings.HUB_BASE_MODELS = {"tiny-bert": str(TINY_BERT)}
    return settings


@pytest.fixture
def signed_in(page, upload_settings):
    get_user_model().objects.create_user("ada", "ada@example.org", PASSWORD)
    page.goto("/upload/")
    page.wait_for_url(re.compile(r"/accounts/login/\?next=/upload/$"))
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/upload/$"))
    return page


def zipped_reference_adapter(tmp_path) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(REFERENCE_SEQ_BN.iterdir()):
            zf.write(path, path.name)
    target = tmp_path / "tiny-bert-seq-bn.zip"
    target.write_bytes(buffer.getvalue())
    return str(target)


def test_upload_through_the_form_reaches_published_and_offers_the_download(signed_in, tmp_path):
    page = signed_in
    page.get_by_label("Adapter archive (.zip)").set_input_files(zipped_reference_adapter(tmp_path))
    page.get_by_label("Task and dataset").select_option("text_task|sentiment|sst-2")
    page.get_by_label("Score").fill("91.5")
    page.get_by_text("Card details").click()
    page.get_by_label("Description").fill("A tiny adapter uploaded by the browser test.")
    page.get_by_label("GitHub").fill("https://github.com/ada")
    # Record the progress bar's values while the XHR runs (sessionStorage outlives the redirect).
    page.evaluate(
        """() => { const bar = document.querySelector('[role=progressbar]'), seen = [];
        new MutationObserver(() => { seen.push(bar.getAttribute('aria-valuenow'));
            sessionStorage.setItem('progress', JSON.stringify(seen)); })
          .observe(bar, {attributes: true}); }"""
    )
    page.get_by_role("button", name="Upload and validate").click()
    page.wait_for_url(re.compile(r"/uploads/\d+/$"), timeout=120_000)
    assert "100" in page.evaluate("JSON.parse(sessionStorage.getItem('progress'))")

    status = page.locator("[data-status]")
    page.wait_for_function(
        "() => document.querySelector('[data-status]').textContent.trim() === 'published'",
        timeout=120_000,
    )
    assert status.text_content().strip() == "published"
    checks = page.locator("[data-check]")
    assert checks.count() >= 5
    assert page.locator("[data-check].check-fail").count() == 0
    screenshot(page, "upload-status")

    state = page.request.get(page.url + "status.json").json()
    assert state["status"] == "published" and state["final"] is True
    download = page.locator("[data-download-link]")
    assert download.is_visible()
    href = download.get_attribute("href")
    response = page.request.get(href)
    assert response.status == 200
    version = AdapterVersion.objects.select_related("adapter").get(uploads__pk=state["id"])
    assert hashlib.sha256(response.body()).hexdigest() == version.sha256

    # The adapter's page offers the same download, and the /hf/ snippet (its files are hosted).
    page.locator("[data-adapter-link]").click()
    page.wait_for_url(re.compile(rf"/adapters/ada/{re.escape(version.adapter.name)}/$"))
    assert page.locator("#adapter-identifier").inner_text() == "sentiment/sst-2@ada"
    assert page.locator("[data-version] a[data-download]").first.get_attribute("href") == href
    page.get_by_role("tab", name="adapters (via /hf/)").click()
    assert f'load_adapter("ada/{version.adapter.name}")' in page.locator("#snippet-hf").inner_text()
    assert page.locator('[data-author-link="github"]').get_attribute("href") == (
        "https://github.com/ada"
    )
    page.goto("/accounts/adapters/")
    assert page.get_by_role("link", name=f"@ada/{version.adapter.name}").is_visible()


def test_a_bad_archive_shows_the_error_without_leaving_the_form(signed_in, tmp_path):
    page = signed_in
    bad = tmp_path / "notes.txt"
    bad.write_text("not an adapter")
    page.get_by_label("Adapter archive (.zip)").set_input_files(str(bad))
    page.get_by_label("Task and dataset").select_option("text_task|sentiment|sst-2")
    page.get_by_role("button", name="Upload and validate").click()
    error = page.locator('[data-errors-for="archive"] li')
    error.wait_for()
    assert ".zip" in error.inner_text()
    assert page.url.endswith("/upload/")


def test_tokens_are_shown_once_and_can_be_revoked(signed_in):
    page = signed_in
    page.goto("/accounts/tokens/")
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Scope").select_option("write")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text()
    assert secret.startswith("ahub_")
    page.get_by_role("button", name="Copy token").click()
    page.wait_for_function("s => window.hubLastCopied === s", arg=secret)
    prefix = page.locator("[data-token] code").first.inner_text().rstrip("…")
    assert secret.startswith(prefix)
    page.reload()
    assert page.locator("#new-token").count() == 0  # shown once
    page.get_by_role("button", name=f"Revoke token {prefix}").click()
    assert page.locator("[data-token]").count() == 0
    assert "revoked" in page.locator(".flash").inner_text()
