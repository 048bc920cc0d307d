"""The in-process search index (hub_server/api/search_index.py) answers `?q=` exactly as the SQL
search does, on the real snapshot, and follows the catalogue when it changes."""

import random
import time

import pytest
from django.test import override_settings

from hub_server.api import search_index
from hub_server.catalog import filters
from hub_server.catalog import selectors as catalog_selectors
from hub_server.catalog.cache import forget_responses, generation
from hub_server.catalog.filters import ORDERINGS, reference_ids, search_adapters
from hub_server.catalog.models import Adapter, Subtask, Task
from hub_server.catalog.signals import catalog_changed

pytestmark = pytest.mark.django_db

FILTERS = [
    {},
    {"model_type": "bert"},
    {"has_head": "true"},
    {"task": "sentiment", "has_head": "false"},
    {"org": "ukp", "architecture": "pfeiffer"},
    {"model_name": "no-such-model"},
]


def snapshot_terms() -> list[str]:
    """Names of every kind, pieces of real search texts (across `/`, `_`, `-`), short, odd,
    unicode and upper-case terms."""
    rng = random.Random(5)
    terms = set(Task.objects.values_list("task", flat=True))
    terms |= set(Subtask.objects.values_list("subtask", flat=True))
    for row in Adapter.objects.values("org", "name", "model_name", "model_type", "author"):
        terms |= {row["org"], row["model_name"], row["model_type"], f"{row['org']}/{row['name']}"}
        terms |= set(row["author"].split())
    texts = [
        f"{a['org']}/{a['name']} {a['model_name']} {a['author']} {a['description']}".lower()
        for a in Adapter.objects.values("org", "name", "model_name", "author", "description")
    ]
    for text in rng.sample(texts, 60):
        for _ in range(5):
            start = rng.randrange(len(text))
            terms.add(text[start : start + rng.randint(1, 14)])
    terms |= {"Sentiment", "@ukp/", "ukp/bert", "sst-2_", "en", "t5", "ar", "x", "100%", "a_b"}
    terms |= {"%", "_", "\\", "ä", "ünïcödé", "über", "  padded  ", "zzzz-nothing"}
    return sorted(t for t in terms if t.strip())


def sql_ids(term, cleaned, ids, ordering):
    queryset = search_adapters(catalog_selectors.active_adapters(), term, ids)
    for name in ("type", "model_type", "model_name", "org"):
        if value := cleaned.get(name):
            field = {"type": "type_id"}.get(name, name)
            queryset = queryset.filter(**{field: value})
    for name in ("task", "subtask", "architecture"):
        if value := cleaned.get(name):
            queryset = queryset.filter(**{f"{name}_id__in": getattr(ids, name).get(value, [])})
    if head := cleaned.get("has_head"):
        queryset = queryset.filter(has_head=head == "true")
    return list(queryset.order_by(*ORDERINGS[ordering]).values_list("id", flat=True))


def test_index_finds_exactly_what_the_sql_search_finds(catalog):
    index = search_index.SearchIndex.build(generation=1)
    assert index.size == Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() > 250
    ids = reference_ids()
    terms = snapshot_terms()
    assert len(terms) > 500
    rng = random.Random(11)
    answered = found_something = 0
    for term in terms:
        filters = FILTERS if rng.random() < 0.1 else [rng.choice(FILTERS)]
        for extra in filters:
            ordering = rng.choice(list(ORDERINGS))
            mask = index.select({"q": term, **extra}, ids)
            expected = sql_ids(term, extra, ids, ordering)
            if mask is None:  # whitespace inside the term: the SQL path answers
                assert any(c.isspace() for c in term.strip()), term
                continue
            answered += 1
            found_something += bool(expected)
            assert int(mask.sum()) == len(expected), (term, extra)
            assert index.page(mask, ordering, 0, len(expected) + 5) == expected, (term, ordering)
            if len(expected) > 3:  # a page from the middle
                assert index.page(mask, ordering, 2, 2) == expected[2:4], (term, ordering)
    assert answered > 500 and found_something > 400


QUERIES = [
    "q=sentiment",
    "q=SST-2&ordering=name",
    "q=ukp/bert&page=2&page_size=5",
    "q=@ukp/&ordering=-updated&page_size=100",
    "q=en",
    "q=bert&model_type=bert&has_head=true&ordering=downloads",
    "q=pfeiffer&task=sentiment&ordering=-name",
    "q=zzzz-nothing",
    "q=100%25",
    "q=sentiment analysis",  # whitespace: the SQL path
    "q=bert&page=999",  # 404
    "q=bert&ordering=-nope",  # 400
]


@pytest.mark.parametrize("query", QUERIES)
def test_search_responses_are_the_same_bytes_from_the_index(catalog, client, query):
    url = f"/api/v1/adapters/?{query}"
    indexed = client.get(url)
    forget_responses()  # the second request renders too
    with override_settings(HUB_SEARCH_INDEX=False):
        plain = client.get(url)
    assert indexed.status_code == plain.status_code
    assert indexed.content == plain.content
    if indexed.status_code == 200 and not any(z in query for z in ("nothing", "100%")):
        assert indexed.json()["count"] > 0
    if indexed.status_code != 400:  # the index was asked (and built), whoever answered
        assert search_index._current.generation == generation()


def test_search_follows_a_catalogue_change(catalog, client):
    assert client.get("/api/v1/adapters/?q=quokka-detector").json()["count"] == 0
    adapter = Adapter.objects.filter(status=Adapter.Status.ACTIVE).order_by("id").first()
    adapter.description = "Finds the Quokka-Detector dataset's marsupials."
    adapter.save(update_fields=["description"])
    catalog_changed.send(sender=Adapter, adapter=adapter)
    found = client.get("/api/v1/adapters/?q=quokka-detector").json()
    assert [r["id"] for r in found["results"]] == [f"@{adapter.org}/{adapter.name}"]
    adapter.status = Adapter.Status.WITHDRAWN
    adapter.save(update_fields=["status"])
    catalog_changed.send(sender=Adapter, adapter=adapter)
    assert client.get("/api/v1/adapters/?q=quokka-detector").json()["count"] == 0


@override_settings(HUB_SEARCH_INDEX_INLINE_MAX=0)
def test_a_large_index_is_rebuilt_in_the_background_while_sql_answers(catalog, client, monkeypatch):
    url = "/api/v1/adapters/?q=sentiment&ordering=name"
    first = client.get(url).json()  # no index yet: built within the request
    assert search_index._current.generation == generation()
    sql_answers = []
    real = filters.search_adapters
    monkeypatch.setattr(filters, "search_adapters", lambda *a: sql_answers.append(1) or real(*a))
    catalog_changed.send(sender=Adapter)  # a new generation: the index is stale
    meanwhile = client.get(url).json()
    assert sql_answers == [1]  # the stale index was not used
    deadline = time.monotonic() + 30
    while search_index._building is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # the thread has installed its index and closed its connection
    assert search_index._current.generation == generation()
    forget_responses()
    after = client.get(url).json()
    assert sql_answers == [1]  # the rebuilt one was
    assert first["results"] == meanwhile["results"] == after["results"] and first["count"] > 5
