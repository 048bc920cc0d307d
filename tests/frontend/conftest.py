"""Fixtures of the page tests: the real Hub snapshot synced, a headless Chromium (one per session)
and a page per test that fails the test on any console error or uncaught exception.

Browser tests use pytest-django's `live_server`, which makes them transactional: every table is
emptied after each test, so `synced_catalog` syncs the snapshot again for each (about a second).
Expectations are computed from the YAML files, never from the pages or the API.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from hub_server.catalog.models import SyncRun
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import ROOT, SNAPSHOT, clear_read_caches, make_git_repo

# Playwright's sync API runs an event loop in this thread; Django's ORM calls made by the test
# itself (fixtures, assertions) are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def snapshot_cards() -> list[dict]:
    """Every adapter card of the snapshot as its YAML says, with `org` and `name` added."""
    cards = []
    for path in sorted((SNAPSHOT / "adapters").glob("*/*.y*ml")):
        data = yaml.safe_load(path.read_text())
        data["org"], data["name"] = path.parent.name, path.stem
        cards.append(data)
    return cards


def snapshot_yaml(folder: str) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted((SNAPSHOT / folder).rglob("*.y*ml"))]


def ids(cards) -> set[str]:
    return {f"@{c['org']}/{c['name']}" for c in cards}


@pytest.fixture(scope="module")
def snapshot_git(tmp_path_factory) -> Path:
    return make_git_repo(SNAPSHOT, tmp_path_factory.mktemp("frontend-hub") / "hub-repo")


@pytest.fixture
def synced_catalog(snapshot_git, transactional_db) -> Path:
    run = sync_hub_repository(str(snapshot_git))
    assert run.status == SyncRun.Status.SUCCEEDED and not run.errors, run.message
    clear_read_caches()
    yield snapshot_git
    clear_read_caches()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class ConsoleErrors(list):
    def check(self) -> None:
        assert not self, "console errors:\n" + "\n".join(self)


def _watch(page, errors: ConsoleErrors) -> None:
    page.on(
        "console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))


@pytest.fixture
def page(browser, live_server, synced_catalog):
    """A fresh browser context (clipboard allowed) on the live server; no console errors allowed."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1280, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(15_000)
    errors = ConsoleErrors()
    page = context.new_page()
    _watch(page, errors)
    page.console_errors = errors
    yield page
    context.close()
    errors.check()


@pytest.fixture
def no_js_page(browser, live_server, synced_catalog):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str, height: int | None = None) -> Path:
    """Save a screenshot as a test artefact (docs/screenshots/ holds chosen copies): the full page,
    or its top `height` pixels for pages too long to read whole."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if height:
        page.screenshot(
            path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": height}
        )
    else:
        page.screenshot(path=str(path), full_page=True)
    return path


def shown_adapters(page) -> set[str]:
    return set(
        page.locator("[data-listing] [data-adapter]").evaluate_all(
            "els => els.map(e => e.dataset.adapter)"
        )
    )
