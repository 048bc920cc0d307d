"""GET /api/v1/adapters/ and its detail on the real snapshot: every expectation is computed from
the YAML cards, not from the API."""

import base64
import json
from collections import Counter
from urllib.parse import urlsplit

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hub_server.catalog import hubformat
from hub_server.catalog.cache import forget_responses
from hub_server.catalog.models import Adapter
from tests.api.conftest import ids, snapshot_cards
from tests.conftest import SNAPSHOT

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

CARDS = snapshot_cards()
LIST = "/api/v1/adapters/"
SST2 = "@ukp/bert-base-uncased_sentiment_sst-2_pfeiffer"


def fetch_all(client, url: str, **params) -> list[dict]:
    """Every result of a listing, following `next` links."""
    response = client.get(url, {"page_size": 100, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    results = body["results"]
    while body["next"]:
        parts = urlsplit(body["next"])
        body = client.get(f"{parts.path}?{parts.query}").json()
        results += body["results"]
    return results


def listed_ids(client, **params) -> set[str]:
    results = fetch_all(client, LIST, **params)
    found = [r["id"] for r in results]
    assert len(found) == len(set(found)), "a card was listed twice"
    return set(found)


def full_config_ids() -> dict[str, str]:
    archs = {}
    for path in (SNAPSHOT / "architectures").glob("*.y*ml"):
        data = yaml.safe_load(path.read_text())
        archs[data["name"]] = data["config"]
    return {
        f"@{c['org']}/{c['name']}": hubformat.config_hash(
            hubformat.full_config(archs[c["config"]["using"]], c["config"])
        )
        for c in CARDS
    }


def test_lists_every_card_with_a_count(client):
    body = client.get(LIST).json()
    assert body["count"] == len(CARDS) == 291
    assert len(body["results"]) == 20
    assert listed_ids(client) == ids(CARDS)


def test_task_and_model_name_filters_give_exactly_the_snapshot_cards(client):
    expected = ids(
        c for c in CARDS if c["task"] == "sentiment" and c["model_name"] == "bert-base-uncased"
    )
    assert SST2 in expected and len(expected) >= 3
    assert listed_ids(client, task="sentiment", model_name="bert-base-uncased") == expected


@pytest.mark.parametrize(
    "param,value,matches",
    [
        ("type", "text_lang", lambda c: c["type"] == "text_lang"),
        ("task", "nli", lambda c: c["task"] == "nli"),
        ("subtask", "wiki", lambda c: c["subtask"] == "wiki"),
        ("model_type", "xlm-roberta", lambda c: c["model_type"] == "xlm-roberta"),
        ("model_name", "roberta-base", lambda c: c["model_name"] == "roberta-base"),
        ("architecture", "houlsby", lambda c: c["config"]["using"] == "houlsby"),
        ("org", "ukp", lambda c: c["org"] == "ukp"),
        ("has_head", "true", lambda c: bool(c.get("prediction_head"))),
        ("has_head", "false", lambda c: not c.get("prediction_head")),
    ],
)
def test_each_filter_matches_the_yaml(client, param, value, matches):
    expected = ids(c for c in CARDS if matches(c))
    assert expected, f"no card for {param}={value}: a useless case"
    assert listed_ids(client, **{param: value}) == expected


def test_config_id_filter_uses_the_full_config_hash(client):
    hashes = full_config_ids()
    for config_id in ("9076f36a74755ac4", "d345095bcb01e325"):
        expected = {i for i, h in hashes.items() if h == config_id}
        assert expected
        assert listed_ids(client, config_id=config_id) == expected


def test_filters_combine(client):
    expected = ids(
        c
        for c in CARDS
        if c["model_name"] == "bert-base-uncased" and c["config"]["using"] == "pfeiffer"
        and c["type"] == "text_task"
    )  # fmt: skip
    assert (
        listed_ids(
            client, model_name="bert-base-uncased", architecture="pfeiffer", type="text_task"
        )
        == expected
    )


def searchable(card) -> str:
    return (
        " ".join(
            str(card.get(k) or "")
            for k in ("task", "subtask", "model_name", "description", "author")
        ).lower()
        + f" {card['org']}/{card['name']}".lower()
    )


@pytest.mark.parametrize("term", ["sst-2", "SST-2", "Clifton Poth", "wiki", "xlm-roberta", "ukp/"])
def test_search_finds_the_cards_that_mention_the_term(client, term):
    expected = ids(c for c in CARDS if term.lower() in searchable(c))
    assert expected
    assert listed_ids(client, q=term) == expected


@pytest.mark.parametrize("term", ["en", "AR", "t5", "ukp"[:2]])
def test_short_search_terms_match_names_exactly(client, term):
    t = term.lower()
    expected = ids(
        c for c in CARDS if t in (str(c["task"]), str(c["subtask"]), c["org"], c["model_type"])
    )
    assert listed_ids(client, q=term) == expected


def test_search_sst2_finds_the_sst2_cards(client):
    found = listed_ids(client, q="sst-2")
    sst2_cards = ids(c for c in CARDS if c["subtask"] == "sst-2")
    assert SST2 in found and sst2_cards <= found


def test_search_uses_the_trigram_index():
    if connection.vendor != "postgresql":
        pytest.skip("the trigram index exists on PostgreSQL only")
    from hub_server.catalog.filters import search_adapters

    # 291 rows are too few for the planner to prefer any index on its own: forbid the plain scans
    # to prove the expression matches the index (the benchmark shows the choice at 100,000 rows).
    queryset = search_adapters(Adapter.objects.all(), "sst-2").order_by().values("id")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = queryset.explain()
    assert "adapter_search_trgm" in plan, plan


def test_search_and_filters_combine(client):
    expected = ids(c for c in CARDS if "sst-2" in searchable(c) and c["model_type"] == "roberta")
    assert expected
    assert listed_ids(client, q="sst-2", model_type="roberta") == expected


def test_ordering_by_name_both_ways(client):
    names = [r["name"] for r in fetch_all(client, LIST, ordering="name")]
    assert names == sorted(c["name"] for c in CARDS)
    names = [r["name"] for r in fetch_all(client, LIST, ordering="-name")]
    assert names == sorted((c["name"] for c in CARDS), reverse=True)


def test_ordering_by_downloads_and_updated(client):
    for i, adapter in enumerate(Adapter.objects.filter(org="ukp").order_by("name")[:5]):
        Adapter.objects.filter(pk=adapter.pk).update(downloads=100 - i)
    ranked = [r["downloads"] for r in fetch_all(client, LIST, ordering="-downloads")]
    assert ranked[:5] == [100, 99, 98, 97, 96] and set(ranked[5:]) == {0}
    ranked = [r["downloads"] for r in fetch_all(client, LIST, ordering="downloads")]
    assert ranked[-5:] == [96, 97, 98, 99, 100]
    assert client.get(LIST).json()["results"][0]["downloads"] == 100  # the default ordering
    updated = [r["updated"] for r in fetch_all(client, LIST, ordering="-updated")]
    assert updated == sorted(updated, reverse=True)


def test_unknown_ordering_is_a_json_400(client):
    response = client.get(LIST, {"ordering": "password"})
    assert response.status_code == 400
    assert "ordering" in response.json()["errors"]


@pytest.mark.parametrize("ordering", ["-downloads", "name", "-name", "-updated", "updated"])
def test_cursor_paging_walks_every_card_once_in_order(client, ordering):
    Adapter.objects.filter(org="ukp", name__startswith="bert").update(downloads=7)
    by_page = [r["id"] for r in fetch_all(client, LIST, ordering=ordering)]
    by_cursor = [r["id"] for r in fetch_all(client, LIST, ordering=ordering, cursor="")]
    assert Counter(by_cursor) == Counter(ids(CARDS))
    assert by_cursor == by_page


def test_cursor_pages_have_no_count_and_bad_cursors_are_400(client):
    body = client.get(LIST, {"cursor": "", "page_size": 5}).json()
    assert "count" not in body and len(body["results"]) == 5 and "cursor=" in body["next"]

    def token(values) -> str:
        return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")

    # Out of bigint range or with a NUL, a cursor value once reached PostgreSQL: a 500.
    wrong = [[1, 2, 3], ["x", "y"], [1e30, 1], [10**20, 1], ["\x00", 1], [None, 1], [[1], 1]]
    for bad in ["abc", *map(token, wrong)]:
        response = client.get(LIST, {"cursor": bad})
        assert response.status_code == 400, bad
        assert response.json()["errors"]["cursor"]


def test_page_size_is_capped(client):
    assert len(client.get(LIST, {"page_size": 1000}).json()["results"]) == 100


@pytest.mark.parametrize(
    "params",
    [{}, {"model_name": "bert-base-multilingual-cased"}, {"q": "ukp", "type": "text_task"},
     {"cursor": ""}, {"cursor": "", "q": "wiki"}],
)  # fmt: skip
def test_query_count_does_not_grow_with_page_size(client, params, django_assert_max_num_queries):
    assert client.get(LIST, params).json().get("count", 51) > 50  # both sizes page
    counts = []
    for size in (5, 50):
        # statements are PREPAREd once per connection and shape: counted from the second use
        client.get(LIST, {**params, "page_size": size})
        forget_responses()  # the next request renders again
        with CaptureQueriesContext(connection) as queries:
            assert client.get(LIST, {**params, "page_size": size}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]
    with django_assert_max_num_queries(4):
        client.get(LIST, {**params, "page_size": 49})


def test_a_list_page_from_the_search_index_needs_no_query(client, django_assert_num_queries):
    from hub_server.catalog.filters import reference_ids

    reference_ids()  # loaded once per catalogue generation and process (3 small queries)
    # The first list builds the index; the stored response is forgotten, so the next renders.
    client.get(LIST, {"task": "sentiment", "page_size": 5})
    forget_responses()
    with django_assert_num_queries(0):  # page, count and items from the index
        body = client.get(LIST, {"task": "sentiment", "page_size": 5, "q": "sst"}).json()
    assert body["count"] == 12 and len(body["results"]) == 5 and "page=2" in body["next"]
    assert all("sst" in r["subtask"] for r in body["results"])
    with django_assert_num_queries(0):
        body = client.get(LIST, {"task": "sentiment", "page_size": 5}).json()
    assert body["count"] == 17 and len(body["results"]) == 5


def test_without_the_index_a_list_that_fits_one_page_needs_no_count_query(
    client, django_assert_num_queries, settings
):
    from hub_server.catalog.filters import reference_ids

    settings.HUB_SEARCH_INDEX = False
    reference_ids()  # loaded once per catalogue generation and process (3 small queries)
    # The first list of each combination of filters PREPAREs its statements (once per
    # connection); the stored response is forgotten, so the next request renders again.
    client.get(LIST, {"task": "sentiment", "model_name": "bert-base-uncased"})
    forget_responses()
    with django_assert_num_queries(1):
        body = client.get(LIST, {"task": "sentiment", "model_name": "bert-base-uncased"}).json()
    assert body["count"] == len(body["results"]) == 3
    client.get(LIST, {"task": "sentiment", "page_size": 5})
    forget_responses()
    with django_assert_num_queries(2):  # not the last page: COUNT + SELECT
        body = client.get(LIST, {"task": "sentiment", "page_size": 5}).json()
    assert body["count"] == 17 and len(body["results"]) == 5
    with django_assert_num_queries(1):  # the last page: the count follows from its offset
        body = client.get(LIST, {"task": "sentiment", "page_size": 5, "page": 4}).json()
    assert body["count"] == 17 and len(body["results"]) == 2 and body["next"] is None
    assert "page=3" in body["previous"]


def test_pages_out_of_range_are_json_404(client):
    # 9223372036854775809 once reached PostgreSQL as an OFFSET out of bigint range: a 500.
    for page in ("99", "0", "x", "9223372036854775809", "50001"):
        response = client.get(LIST, {"page": page})
        assert response.status_code == 404, page
        assert response.json()["detail"].startswith("Invalid page")


def test_fast_list_items_equal_the_declared_fields():
    from rest_framework import serializers

    from hub_server.api.serializers import AdapterListItemSerializer
    from hub_server.catalog import selectors

    item = AdapterListItemSerializer(context={"api_root": "http://hub/api/v1/"})
    for row in selectors.adapter_rows()[:50]:
        assert item.to_representation(row) == serializers.Serializer.to_representation(item, row)


def test_fast_detail_equals_the_declared_fields():
    from rest_framework import serializers

    from hub_server.api.serializers import AdapterDetailSerializer
    from hub_server.catalog import selectors

    for org, name in [
        ("ukp", "bert-base-uncased_sentiment_sst-2_pfeiffer"),
        next((c["org"], c["name"]) for c in CARDS if c.get("dependencies")),
    ]:
        detail = selectors.adapter_detail(org, name, "http://hub/api/v1/", "http://hub")
        item = AdapterDetailSerializer(detail)
        assert item.data == serializers.Serializer.to_representation(item, detail)


def test_withdrawn_and_yanked_adapters_are_hidden(client):
    Adapter.objects.filter(org="ukp", name="bert-base-uncased_sentiment_sst-2_pfeiffer").update(
        status=Adapter.Status.WITHDRAWN
    )
    Adapter.objects.filter(org="ukp", name="bert-base-uncased_sentiment_sst-2_houlsby").update(
        status=Adapter.Status.YANKED
    )
    found = listed_ids(client, q="sst-2")
    assert SST2 not in found and "@ukp/bert-base-uncased_sentiment_sst-2_houlsby" not in found
    assert client.get(LIST).json()["count"] == 289


# -- detail ------------------------------------------------------------------------------------


def card(org: str, name: str) -> dict:
    return next(c for c in CARDS if (c["org"], c["name"]) == (org, name))


def test_detail_of_the_sst2_adapter(client):
    response = client.get("/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/")
    assert response.status_code == 200
    body = response.json()
    yml = card("ukp", "bert-base-uncased_sentiment_sst-2_pfeiffer")
    assert body["id"] == SST2
    assert body["identifier"] == "sentiment/sst-2@ukp"
    assert (body["type"], body["task"], body["subtask"]) == ("text_task", "sentiment", "sst-2")
    assert body["task_displayname"] == "Sentiment Analysis" and body["subtask_displayname"]
    assert (body["model_type"], body["model_name"]) == ("bert", "bert-base-uncased")
    assert body["model_class"] == yml["model_class"]
    assert body["has_head"] is True
    assert body["architecture"] == "pfeiffer"
    assert body["config_id"] == "9076f36a74755ac4"
    assert body["config"]["reduction_factor"] == 16
    assert body["default_version"] == yml["default_version"] == "1"
    (version,) = body["versions"]
    assert version["sha256"] == yml["files"][0]["sha256"]
    assert version["sha1"] == yml["files"][0]["sha1"]
    assert version["is_default"] is True and version["file_status"] == "external"
    assert version["download_url"] == (
        "http://testserver/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer"
        "/versions/1/download"
    )
    assert (body["author"], body["email"]) == (yml["author"], yml["email"])
    assert body["github_url"] == "https://github.com/calpt"
    assert body["twitter_url"] == "https://twitter.com/clifapt"
    assert body["citation"].startswith("@article{pfeiffer2020AdapterHub")
    assert body["description"].startswith("Adapter in Pfeiffer architecture")
    assert body["status"] == "active" and body["downloads"] == 0
    snippet = body["load_snippet"]
    assert 'load_adapter("sentiment/sst-2@ukp", config="pfeiffer")' in snippet
    assert "ADAPTERHUB_URL=http://testserver" in snippet
    assert 'from_pretrained("bert-base-uncased")' in snippet


def test_detail_download_url_is_routed(client):
    body = client.get("/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/").json()
    path = urlsplit(body["versions"][0]["download_url"]).path
    response = client.get(path)
    # An external, not yet mirrored file: the download view redirects to the card's link.
    assert response.status_code in (200, 302), response.content


def test_detail_versions_follow_the_card(client):
    many = max(CARDS, key=lambda c: len(c["files"]))
    body = client.get(f"/api/v1/adapters/{many['org']}/{many['name']}/").json()
    assert [v["version"] for v in body["versions"]] == [str(f["version"]) for f in many["files"]]
    assert len(body["versions"]) == 141


def test_social_urls_from_handles_and_full_urls(client):
    handles = {"@PfeiffJo": "https://twitter.com/PfeiffJo"}
    urls = [c for c in CARDS if str(c.get("github", "")).startswith("https://")]
    assert urls
    for c in urls:
        body = client.get(f"/api/v1/adapters/{c['org']}/{c['name']}/").json()
        assert body["github_url"] == c["github"]
        assert body["twitter_url"].startswith("https://twitter.com/")
    at = next(c for c in CARDS if c.get("twitter") == "@PfeiffJo")
    body = client.get(f"/api/v1/adapters/{at['org']}/{at['name']}/").json()
    assert body["twitter_url"] == handles["@PfeiffJo"]


def test_dependencies_resolve_to_known_adapters(client):
    dependent = [c for c in CARDS if c.get("dependencies")]
    assert dependent
    for c in dependent:
        body = client.get(f"/api/v1/adapters/{c['org']}/{c['name']}/").json()
        keys = [d["key"] for d in body["dependencies"]]
        assert keys == [d["key"] for d in c["dependencies"]]
        for dep in body["dependencies"]:
            task_subtask, org = dep["key"].split("@")
            task, subtask = task_subtask.split("/")
            assert dep["adapter"], dep
            target = client.get(urlsplit(dep["api_url"]).path).json()
            assert (target["task"], target["subtask"], target["org"]) == (task, subtask, org)
            assert target["model_name"] == c["model_name"]


def test_unknown_adapter_is_a_json_404(client):
    assert client.get("/api/v1/adapters/ukp/a%00b/").status_code == 404  # NUL: not a 500
    response = client.get("/api/v1/adapters/ukp/no-such-adapter/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"] == "No adapter @ukp/no-such-adapter."


def test_withdrawn_adapter_is_a_json_410_and_yanked_still_shown(client):
    Adapter.objects.filter(org="ukp", name="bert-base-uncased_sentiment_sst-2_pfeiffer").update(
        status=Adapter.Status.WITHDRAWN
    )
    response = client.get("/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/")
    assert response.status_code == 410
    assert "withdrawn" in response.json()["detail"]
    Adapter.objects.filter(org="ukp", name="bert-base-uncased_sentiment_sst-2_houlsby").update(
        status=Adapter.Status.YANKED
    )
    response = client.get("/api/v1/adapters/ukp/bert-base-uncased_sentiment_sst-2_houlsby/")
    assert response.status_code == 200 and response.json()["status"] == "yanked"


def test_detail_is_a_fixed_number_of_queries(client, django_assert_num_queries):
    many = max(CARDS, key=lambda c: len(c["files"]))
    path = f"/api/v1/adapters/{many['org']}/{many['name']}/"
    client.get(path)  # PREPAREs the statement on this connection
    forget_responses()
    with django_assert_num_queries(1):  # the adapter with its joins and its versions
        assert len(client.get(path).json()["versions"]) == len(many["files"])
    dependent = next(c for c in CARDS if c.get("dependencies"))
    with django_assert_num_queries(3):  # + the dependencies, + the adapters they name
        assert client.get(f"/api/v1/adapters/{dependent['org']}/{dependent['name']}/").json()[
            "dependencies"
        ]


@pytest.mark.parametrize("ordering", ["-downloads", "downloads", "-updated", "updated", "name"])
def test_search_pages_keep_the_order_whichever_way_they_are_read(client, ordering, monkeypatch):
    """A search reads its page by sorting the matches when they are few and by walking the
    order's index when they are many: both give the same pages."""
    from hub_server.api import selectors

    def pages(**params):
        found = []
        for page in (1, 2, 3):
            response = client.get(
                LIST, {"q": "sst-2", "ordering": ordering, "page_size": 4, "page": page, **params}
            )
            found.append([a["id"] for a in response.json()["results"]])
        return found

    sorted_pages = pages()
    monkeypatch.setattr(selectors, "SEARCH_SORT_MATCHES", 0)  # every search walks the index
    walked_pages = pages(_walk=1)
    assert sorted_pages == walked_pages and all(len(p) == 4 for p in sorted_pages)
