"""In Chromium: a stored `javascript:` URL never becomes a link, and the Content-Security-Policy
(no inline script or style) breaks no page: no violation is reported and the API docs render."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from hub_server.catalog.models import Adapter, Subtask

SST2 = ("ukp", "bert-base-uncased_sentiment_sst-2_pfeiffer")
PASSWORD = "correct horse battery staple"

# Registered before any page script runs; CSP does not apply to scripts the browser injects.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@pytest.fixture
def watched(page):
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.on("dialog", lambda dialog: page.console_errors.append(f"dialog: {dialog.message}"))
    return page


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


def test_a_stored_javascript_url_is_shown_as_text_not_as_a_link(watched):
    # What validation now refuses, already in the database (from before the fix, or by hand).
    Adapter.objects.filter(org=SST2[0], name=SST2[1]).update(
        url="javascript:alert(1)", github="javascript:alert(2)"
    )
    Subtask.objects.filter(subtask="sst-2").update(url="javascript:alert(3)")
    cache.clear()
    watched.goto(f"/adapters/{SST2[0]}/{SST2[1]}/")
    assert watched.locator("[data-unlinked-url]").inner_text() == "Website: javascript:alert(1)"
    assert watched.locator('a[href^="javascript:" i]').count() == 0
    hrefs = watched.eval_on_selector_all("a[href]", "links => links.map(a => a.protocol)")
    assert set(hrefs) <= {"http:", "https:", "mailto:"}, hrefs
    watched.goto("/explore/sentiment/sst-2/")
    assert watched.locator("[data-unlinked-url] code").inner_text() == "javascript:alert(3)"
    assert watched.locator('a[href^="javascript:" i]').count() == 0
    assert violations(watched) == []


MAIN_PAGES = [
    "/",
    "/explore/",
    "/explore/sentiment/sst-2/",
    "/adapters/",
    "/search/?q=sst",
    f"/adapters/{SST2[0]}/{SST2[1]}/",
    "/accounts/login/",
    "/admin/login/",
    "/api/v1/sync/runs/",
]


def test_main_pages_report_no_policy_violation(watched):
    for url in MAIN_PAGES:
        response = watched.goto(url)
        assert "script-src 'self'" in response.headers["content-security-policy"], url
        watched.wait_for_load_state("load")
        assert violations(watched) == [], url
    # The error page too (its 404 is the one console error expected here).
    watched.goto("/no-such-page/")
    assert violations(watched) == []
    watched.console_errors.clear()
    # Scripts from files still run: js-flag.js marked the page before it was painted.
    watched.goto("/explore/")
    assert watched.evaluate("document.documentElement.className") == "js"


def test_signed_in_pages_report_no_policy_violation(watched):
    get_user_model().objects.create_superuser("ada", "ada@example.org", PASSWORD)
    watched.goto("/accounts/login/")
    watched.get_by_label("Username").fill("ada")
    watched.get_by_label("Password").fill(PASSWORD)
    watched.get_by_role("button", name="Sign in").click()
    watched.wait_for_url(re.compile(r"/accounts/adapters/$"))
    pages = ("/accounts/adapters/", "/accounts/tokens/", "/upload/", "/admin/")
    admin = (
        "/admin/accounts/apitoken/",
        "/admin/accounts/organisation/add/",
        "/admin/uploads/upload/",
    )
    # The admin names no icon, so the browser asks for /favicon.ico (a 404 here; not the test).
    watched.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    for url in (*pages, *admin):
        watched.goto(url)
        watched.wait_for_load_state("load")
        assert violations(watched) == [], url


def test_api_docs_work_under_the_policy(watched):
    watched.goto("/api/v1/docs/")
    # Swagger UI renders the schema: its start script is a file, not inline.
    watched.locator(".swagger-ui .info .title").wait_for()
    assert "AdapterHub API" in watched.locator(".swagger-ui .info .title").inner_text()
    watched.locator(".opblock-summary-path", has_text="/api/v1/adapters/").first.wait_for()
    assert violations(watched) == []
