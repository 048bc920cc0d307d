"""Browsing in a real browser: home, explore, the adapter list with facets, search and an adapter
page, against the live server with the real snapshot synced."""

from __future__ import annotations

import re

import pytest

from tests.frontend.conftest import (
    ids,
    screenshot,
    shown_adapters,
    snapshot_cards,
    snapshot_yaml,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SST2_PFEIFFER = "@ukp/bert-base-uncased_sentiment_sst-2_pfeiffer"


def test_home_shows_counts_search_and_recent_adapters(page):
    cards = snapshot_cards()
    tasks = snapshot_yaml("tasks")
    page.goto("/")
    assert page.locator('[data-stat="adapters"]').inner_text() == str(len(cards))
    text_tasks = snapshot_yaml("tasks/text_task")
    languages = snapshot_yaml("tasks/text_lang")
    assert len(text_tasks) + len(languages) == len(tasks)
    assert page.locator('[data-stat="tasks"]').inner_text() == str(len(text_tasks))
    assert page.locator('[data-stat="languages"]').inner_text() == str(len(languages))
    models = {c["model_name"] for c in cards}
    assert page.locator('[data-stat="models"]').inner_text() == str(len(models))
    assert page.locator("[data-adapter]").count() == 6
    screenshot(page, "home")
    page.get_by_role("searchbox", name="Search adapters").fill("sst-2")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/search/\?q=sst-2$"))


def test_explore_filters_cards_as_you_type(page):
    page.goto("/explore/")
    all_cards = page.locator("[data-card]").count()
    assert all_cards == len(snapshot_yaml("tasks"))
    screenshot(page, "explore", height=1500)
    page.get_by_label("Filter tasks and languages").fill("sentiment")
    visible = page.locator("[data-card]:visible")
    assert 1 <= visible.count() < all_cards
    assert "Sentiment Analysis" in visible.first.inner_text()
    assert page.url.endswith("/explore/?q=sentiment")
    # The same URL, loaded fresh, shows the same filtered cards (the server filters too).
    page.goto("/explore/?q=sentiment")
    assert page.locator("[data-card]:visible").count() == visible.count()
    page.get_by_label("Filter tasks and languages").fill("")
    assert page.locator("[data-card]:visible").count() == all_cards
    page.get_by_role("link", name=re.compile(r"^SST-2")).first.click()
    page.wait_for_url("**/explore/sentiment/sst-2/")


def test_filtering_by_task_then_model_narrows_the_list_in_place(page):
    cards = snapshot_cards()
    page.goto("/adapters/")
    page.evaluate("window.__samePage = true")  # survives only if no full reload happens
    assert page.locator("[data-total]").inner_text() == str(len(cards))

    page.locator('[data-facet="task"] a[data-facet-value="sentiment"]').click()
    page.wait_for_url(re.compile(r"/adapters/\?task=sentiment$"))
    sentiment = [c for c in cards if c["task"] == "sentiment"]
    expect_total(page, len(sentiment))
    # Only the models of sentiment adapters are offered now, with their counts.
    model_counts = {}
    for c in sentiment:
        model_counts[c["model_name"]] = model_counts.get(c["model_name"], 0) + 1
    offered = page.locator('[data-facet="model_name"] a[data-facet-value]')
    assert {
        v: int(
            page.locator(f'[data-facet="model_name"] a[data-facet-value="{v}"] .count').inner_text()
        )
        for v in offered.evaluate_all("els => els.map(e => e.dataset.facetValue)")
    } == model_counts

    page.locator('[data-facet="model_name"] a[data-facet-value="bert-base-uncased"]').click()
    page.wait_for_url(re.compile(r"/adapters/\?model_name=bert-base-uncased&task=sentiment$"))
    expected = ids(c for c in sentiment if c["model_name"] == "bert-base-uncased")
    expect_total(page, len(expected))
    assert shown_adapters(page) == expected
    assert page.evaluate("window.__samePage") is True

    # Back goes to the task-only list; the URL alone rebuilds the same view in a new page.
    page.go_back()
    page.wait_for_url(re.compile(r"/adapters/\?task=sentiment$"))
    expect_total(page, len(sentiment))
    page.goto("/adapters/?task=sentiment&model_name=bert-base-uncased")
    assert shown_adapters(page) == expected


def test_the_same_filters_work_without_javascript(no_js_page):
    cards = snapshot_cards()
    no_js_page.goto("/adapters/")
    no_js_page.locator('[data-facet="task"] a[data-facet-value="sentiment"]').click()
    no_js_page.locator('[data-facet="model_name"] a[data-facet-value="bert-base-uncased"]').click()
    assert "task=sentiment" in no_js_page.url and "model_name=bert-base-uncased" in no_js_page.url
    expected = ids(
        c for c in cards if c["task"] == "sentiment" and c["model_name"] == "bert-base-uncased"
    )
    assert shown_adapters(no_js_page) == expected
    no_js_page.select_option("#sort", "name")
    no_js_page.get_by_role("button", name="Apply").click()
    assert "sort=name" in no_js_page.url
    names = no_js_page.locator("[data-adapter] h3").all_inner_texts()
    assert names == sorted(names)


def test_subtask_page_filters_by_model_type(page):
    cards = [c for c in snapshot_cards() if (c["task"], c["subtask"]) == ("sentiment", "sst-2")]
    page.goto("/explore/sentiment/sst-2/")
    assert shown_adapters(page) == ids(cards)
    page.locator('[data-facet="model_type"] a[data-facet-value="bert"]').click()
    page.wait_for_url(re.compile(r"/explore/sentiment/sst-2/\?model_type=bert$"))
    expected = ids(c for c in cards if c["model_type"] == "bert")
    expect_total(page, len(expected))
    assert shown_adapters(page) == expected
    screenshot(page, "subtask")


def test_search_finds_sst2(page):
    page.goto("/")
    page.get_by_role("searchbox", name="Search adapters").fill("sst-2")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"/search/\?q=sst-2$"))
    assert page.get_by_role("link", name=re.compile(r"Sentiment Analysis · SST-2")).is_visible()
    sst2 = ids(c for c in snapshot_cards() if c["subtask"] == "sst-2")
    assert int(page.locator("[data-total]").inner_text()) >= len(sst2)
    page.locator('[data-facet="subtask"] a[data-facet-value="sst-2"]').click()
    page.wait_for_url(re.compile(r"/search/\?q=sst-2&subtask=sst-2$"))
    expect_total(page, len(sst2))
    assert shown_adapters(page) == sst2


def test_adapter_page_shows_the_full_config_and_copies_the_snippet(page):
    cards = {f"@{c['org']}/{c['name']}": c for c in snapshot_cards()}
    archs = {a["name"]: a for a in snapshot_yaml("architectures")}
    # A card that overrides its architecture's config: the page shows the merged values.
    unique_id, card = next((k, c) for k, c in sorted(cards.items()) if set(c["config"]) - {"using"})
    expected = {**archs[card["config"]["using"]]["config"]}
    expected.update({k: v for k, v in card["config"].items() if k != "using"})
    org, name = unique_id[1:].split("/")
    page.goto(f"/adapters/{org}/{name}/")
    shown = dict(
        page.locator("[data-config] tbody tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.key, r.querySelector('[data-value]').textContent])"
        )
    )
    assert set(shown) == set(expected)
    for key, value in expected.items():
        assert shown[key] == _as_card_writes(value), key
    assert "null" not in shown.values()

    page.goto("/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/")
    assert page.locator("#adapter-identifier").inner_text() == "sentiment/sst-2@ukp"
    sst2 = cards[SST2_PFEIFFER]
    config = archs["pfeiffer"]["config"]
    assert page.locator('[data-key="reduction_factor"] [data-value]').inner_text() == str(
        config["reduction_factor"]
    )
    snippet = page.locator("#snippet-core").inner_text()
    assert 'load_adapter("sentiment/sst-2@ukp", config="pfeiffer")' in snippet
    assert 'from_pretrained("bert-base-uncased")' in snippet
    page.locator('button[data-copy-target="#snippet-core"]').click()
    page.wait_for_function("window.hubLastCopied !== undefined")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.strip() == snippet.strip()
    page.get_by_role("button", name="Copy unique id").click()
    page.wait_for_function(f"window.hubLastCopied === {SST2_PFEIFFER!r}")
    assert page.evaluate("navigator.clipboard.readText()") == SST2_PFEIFFER

    # Author links: `github: calpt` (a handle) and `twitter: clifapt` become profile URLs.
    assert page.locator('[data-author-link="github"]').get_attribute("href") == (
        f"https://github.com/{sst2['github']}"
    )
    assert page.locator('[data-author-link="twitter"]').get_attribute("href") == (
        f"https://twitter.com/{sst2['twitter'].lstrip('@')}"
    )
    versions = page.locator("[data-version]")
    assert versions.count() == len(sst2["files"])
    href = page.locator("[data-version] a[data-download]").first.get_attribute("href")
    assert href.endswith(
        "/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/versions/1/download"
    )
    assert page.locator("[data-size-chart]").is_visible()
    screenshot(page, "adapter")


def test_author_urls_and_dependencies_link_to_working_pages(page):
    cards = snapshot_cards()
    with_url = next(c for c in cards if str(c.get("github", "")).startswith("https://"))
    page.goto(f"/adapters/{with_url['org']}/{with_url['name']}/")
    assert page.locator('[data-author-link="github"]').get_attribute("href") == with_url["github"]

    dependent = next(c for c in cards if c.get("dependencies"))
    page.goto(f"/adapters/{dependent['org']}/{dependent['name']}/")
    link = page.locator(".dep-list a").first
    link.click()
    page.wait_for_url(re.compile(r"/adapters/[^/]+/[^/]+/$"))
    # `ar/wiki@ukp` names the language adapter of the same base model.
    assert page.locator("#adapter-identifier").inner_text() == dependent["dependencies"][0]["key"]
    assert page.locator(".tag-model").first.inner_text() == dependent["model_name"]


def expect_total(page, total: int) -> None:
    page.wait_for_function(
        "n => document.querySelector('[data-total]').textContent === String(n)", arg=total
    )


def _as_card_writes(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_as_card_writes(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)
