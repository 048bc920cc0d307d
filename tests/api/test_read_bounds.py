"""The staleness bounds and sizes of the read path's stores (hub_server/catalog/cache.py,
hub_server/api/search_index.py), in one process. Across processes: test_live_reads.py."""

import time

import pytest
from django.db.models import F

from hub_server.catalog import cache as read_cache
from hub_server.catalog.cache import (
    GenerationClock,
    ResponseMemo,
    advance_generation,
    entry_cost,
    memo,
)
from hub_server.catalog.models import Adapter

pytestmark = pytest.mark.django_db

LIST = "/api/v1/adapters/"


def test_a_generation_set_elsewhere_is_read_within_the_recheck_bound(settings):
    settings.HUB_CATALOG_RECHECK_SECONDS = 0.3
    clock = GenerationClock()
    first = clock.current()
    changed = advance_generation()  # as another process does: this clock is not told
    assert changed > first
    time.sleep(0.35)
    assert clock.current() == changed
    clock.bumped(advance_generation())  # this process's own change: known at once
    assert clock.current() > changed


def test_generations_never_repeat_after_a_rolled_back_change():
    from django.db import transaction

    before = read_cache.read_generation()
    with pytest.raises(RuntimeError), transaction.atomic():
        inside = advance_generation()
        raise RuntimeError("the change is rolled back")
    assert read_cache.read_generation() == before
    assert advance_generation() not in (before, inside)


def entry(generation, body=b"", headers=None, rendered=None):
    return (generation, time.time() if rendered is None else rendered, body, headers or {}, '"e"')


def test_the_memo_serves_only_entries_of_the_current_generation_and_age(settings):
    settings.HUB_RESPONSE_MAX_AGE = 60
    small = ResponseMemo(max_bytes=100_000)
    small.put("a", entry(1, b"x" * 100))
    assert small.get("a", 1)[2] == b"x" * 100
    assert small.get("a", 2) is None  # rendered before the last change: never served
    small.put("old", entry(1, b"y", rendered=time.time() - 61))
    assert small.get("old", 1) is None  # older than HUB_RESPONSE_MAX_AGE
    assert small.used_bytes == len(small) == 0  # both dropped


def test_the_memo_counts_headers_and_keys_not_only_bodies():
    budget = 20_000
    small = ResponseMemo(max_bytes=budget)
    for i in range(200):  # empty bodies, as a 304-prone page is not, but headers and keys cost
        small.put(f"resp:key:{i:0>100}", entry(1, b"", {"Link": "<https://x/>" * 40}))
    assert small.used_bytes <= budget
    assert 0 < len(small) < 200
    per_entry = entry_cost("resp:key:" + "0" * 100, entry(1, b"", {"Link": "<https://x/>" * 40}))
    assert len(small) == budget // per_entry
    small.put("huge", entry(1, b"z" * (budget // 8)))  # over an eighth of the budget: not kept
    assert small.get("huge", 1) is None


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(
    "path, variants",
    [
        (LIST, ["?task=sentiment&ordering=name", "?ordering=name&task=sentiment",
                "?task=sentiment&utm_source=x&ordering=name&_n=7"]),
        ("/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/", ["", "?_n=1", "?a=b"]),
        ("/api/v1/tasks/", ["?type=text_task", "?type=text_task&junk=1"]),
        ("/dist/v2/architectures.json", ["", "?v=2"]),
        ("/hf/api/models", ["?search=ukp&limit=2", "?limit=2&search=ukp&x=1"]),
        ("/adapters/", ["?task=sentiment&sort=name", "?sort=name&task=sentiment&fbclid=1"]),
    ],
)  # fmt: skip
def test_unknown_parameters_and_their_order_make_no_new_entries(client, path, variants):
    responses = [client.get(path + variants[0])]
    entries = len(memo)
    responses += [client.get(path + v) for v in variants[1:]]
    assert len(memo) == entries
    bodies = {r.content for r in responses}
    assert len(bodies) == 1 and responses[0].status_code == 200
    for junk in (b"utm_source", b"_n=", b"junk", b"fbclid", b"x=1"):
        assert junk not in responses[-1].content  # links hold no parameter a client made up


@pytest.mark.usefixtures("catalog")
def test_download_counts_in_lists_and_details_move_within_the_max_age(client, settings):
    """Counts change without a catalogue change (no new generation): lists, searches and details
    show them within HUB_RESPONSE_MAX_AGE, from the response stores and the list index alike."""
    settings.HUB_RESPONSE_MAX_AGE = settings.HUB_SEARCH_INDEX_MAX_AGE = 1.0
    urls = {
        "list": f"{LIST}?ordering=-downloads&page_size=1",
        "search": f"{LIST}?q=sst-2&ordering=-downloads&page_size=1",
        "page": "/adapters/?sort=-downloads",
    }
    before = {name: client.get(url) for name, url in urls.items()}
    sst2 = Adapter.objects.filter(status="active", subtask__subtask="sst-2")
    adapter = sst2.order_by("downloads", "-id").first()  # the last of them by -downloads, id
    top = Adapter.objects.order_by("-downloads").values_list("downloads", flat=True).first()
    Adapter.objects.filter(pk=adapter.pk).update(downloads=F("downloads") + top + 1000)
    expected = f"@{adapter.org}/{adapter.name}"
    assert adapter.name.encode() not in before["page"].content
    assert client.get(urls["list"]).content == before["list"].content  # still the stored page
    time.sleep(1.05)
    for name in ("list", "search"):
        first = client.get(urls[name]).json()["results"][0]
        assert first["id"] == expected, name
        assert first["downloads"] == adapter.downloads + top + 1000
    assert adapter.name.encode() in client.get(urls["page"]).content
    detail = client.get(f"/api/v1/adapters/{adapter.org}/{adapter.name}/").json()
    assert detail["downloads"] == adapter.downloads + top + 1000
