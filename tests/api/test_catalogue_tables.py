"""GET /api/v1/facets/ and the reference tables (tasks, subtasks, architectures, models)."""

from collections import Counter

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api.conftest import snapshot_cards
from tests.conftest import SNAPSHOT

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

CARDS = snapshot_cards()
FACETS = "/api/v1/facets/"


def facet_counts(body: dict, facet: str) -> dict[str, int]:
    return {v["value"]: v["count"] for v in body["facets"][facet]}


def test_facets_without_filters_count_the_yaml(client):
    body = client.get(FACETS).json()
    assert body["total"] == 291
    assert facet_counts(body, "task") == Counter(c["task"] for c in CARDS)
    assert facet_counts(body, "model_name") == Counter(c["model_name"] for c in CARDS)
    assert facet_counts(body, "architecture") == Counter(c["config"]["using"] for c in CARDS)
    assert facet_counts(body, "org") == Counter(c["org"] for c in CARDS)
    assert facet_counts(body, "has_head") == Counter(
        "true" if c.get("prediction_head") else "false" for c in CARDS
    )
    sentiment = next(v for v in body["facets"]["task"] if v["value"] == "sentiment")
    assert sentiment["label"] == "Sentiment Analysis"
    counts = [v["count"] for v in body["facets"]["task"]]
    assert counts == sorted(counts, reverse=True)


def test_every_facet_lists_every_filter():
    from hub_server.catalog.filters import AdapterFilter

    filters = set(AdapterFilter.base_filters) - {"q", "ordering"}
    assert set(AdapterFilter.FACETS) == filters


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"task": "sentiment"},
        {"model_name": "bert-base-uncased", "architecture": "pfeiffer"},
        {"q": "wiki", "has_head": "false"},
        {"type": "text_task", "org": "ukp", "model_type": "bert"},
    ],
)
def test_facet_counts_equal_filtered_list_counts(client, filters):
    body = client.get(FACETS, filters).json()
    assert body["total"] == client.get("/api/v1/adapters/", filters).json()["count"]
    for facet, values in body["facets"].items():
        assert values, facet
        for value in values:
            listed = client.get("/api/v1/adapters/", {**filters, facet: value["value"]}).json()
            assert listed["count"] == value["count"], (facet, value)


def test_a_facet_ignores_its_own_filter_but_applies_the_others(client):
    body = client.get(FACETS, {"task": "sentiment", "model_name": "bert-base-uncased"}).json()
    bert = [c for c in CARDS if c["model_name"] == "bert-base-uncased"]
    sentiment = [c for c in CARDS if c["task"] == "sentiment"]
    assert facet_counts(body, "task") == Counter(c["task"] for c in bert)
    assert facet_counts(body, "model_name") == Counter(c["model_name"] for c in sentiment)
    both = [c for c in sentiment if c["model_name"] == "bert-base-uncased"]
    assert body["total"] == len(both)
    assert facet_counts(body, "subtask") == Counter(c["subtask"] for c in both)


def test_facets_reject_bad_filter_values(client):
    response = client.get(FACETS, {"has_head": "maybe"})
    assert response.status_code == 400
    assert "has_head" in response.json()["errors"]


def test_facets_are_a_fixed_number_of_queries(client):
    from hub_server.catalog.filters import reference_ids

    reference_ids()  # loaded once per catalogue generation and process
    with CaptureQueriesContext(connection) as plain:
        client.get(FACETS)
    with CaptureQueriesContext(connection) as filtered:
        client.get(FACETS, {"task": "nli", "model_type": "bert"})
    assert len(plain) == len(filtered) == 10  # the total and 9 facets


# -- reference tables ----------------------------------------------------------------------------


def yaml_files(folder: str) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted((SNAPSHOT / folder).rglob("*.y*ml"))]


def all_rows(client, url, **params) -> list[dict]:
    body = client.get(url, {"page_size": 1000, **params}).json()
    assert body["next"] is None
    return body["results"]


def test_tasks_with_adapter_counts(client):
    rows = all_rows(client, "/api/v1/tasks/")
    assert len(rows) == len(yaml_files("tasks")) == 123
    counts = Counter((c["type"], c["task"]) for c in CARDS)
    for row in rows:
        assert row["adapter_count"] == counts[(row["type"], row["task"])], row
    assert {r["type"] for r in all_rows(client, "/api/v1/tasks/", type="text_task")} == {
        "text_task"
    }


def test_subtasks_filter_by_task_type_and_language(client):
    rows = all_rows(client, "/api/v1/subtasks/")
    assert len(rows) == 188
    counts = Counter((c["task"], c["subtask"]) for c in CARDS)
    for row in rows:
        assert row["adapter_count"] == counts[(row["task"], row["subtask"])], row
    sentiment = all_rows(client, "/api/v1/subtasks/", task="sentiment")
    expected = {d["subtask"] for d in yaml_files("subtasks") if d["task"] == "sentiment"}
    assert {r["subtask"] for r in sentiment} == expected and "sst-2" in expected
    english = all_rows(client, "/api/v1/subtasks/", language="english")
    assert english and {r["language"] for r in english} == {"english"}
    langs = all_rows(client, "/api/v1/subtasks/", type="text_lang")
    assert langs and {r["type"] for r in langs} == {"text_lang"}


def test_architectures_with_counts_and_hashes(client):
    rows = {r["name"]: r for r in all_rows(client, "/api/v1/architectures/")}
    assert rows["pfeiffer"]["config_id"] == "9076f36a74755ac4"
    assert rows["houlsby"]["config_id"] == "b1017368d7a97b11"
    counts = Counter(c["config"]["using"] for c in CARDS)
    assert {n: r["adapter_count"] for n, r in rows.items()} == {n: counts[n] for n in rows}


def test_models_are_distinct_with_counts(client):
    rows = all_rows(client, "/api/v1/models/")
    expected = Counter((c["model_name"], c["model_type"]) for c in CARDS)
    assert {(r["model_name"], r["model_type"]): r["adapter_count"] for r in rows} == expected
    roberta = all_rows(client, "/api/v1/models/", model_type="roberta")
    assert roberta and {r["model_type"] for r in roberta} == {"roberta"}


@pytest.mark.parametrize(
    "url", ["/api/v1/tasks/", "/api/v1/subtasks/", "/api/v1/architectures/", "/api/v1/models/"]
)
def test_reference_tables_are_at_most_two_queries_whatever_the_page_size(client, url):
    counts = []
    for size in (5, 50):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url, {"page_size": size}).status_code == 200
        counts.append(len(queries))
    # Two (COUNT + SELECT), or one when the page holds the last row (the count is then known).
    assert counts[1] <= counts[0] <= 2
