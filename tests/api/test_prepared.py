"""Prepared catalogue reads (hub_server/catalog/prepared.py) give exactly the ORM's rows, on the
real snapshot."""

import pytest
from django.db import connection
from django.db.models import Count

from hub_server.catalog.cache import forget_responses
from hub_server.catalog.models import Adapter
from hub_server.catalog.prepared import PreparedQuery


def by_org(org):
    return (
        Adapter.objects.filter(org=org)
        .annotate(version_count=Count("versions"))
        .order_by("name")
        .values("name", "task__task", "config", "updated_at", "has_head", "version_count")
    )


@pytest.mark.django_db
def test_prepared_rows_equal_the_orm_rows_for_every_value(catalog):
    prepared = PreparedQuery(by_org, org=str)
    orgs = sorted(set(Adapter.objects.values_list("org", flat=True)))
    assert len(orgs) > 5
    for org in [*orgs, "no-such-org", "it's; -- %s %%"]:
        assert prepared.rows(org=org) == list(by_org(org)), org
    # JSON arrives decoded and timestamps aware, as from the ORM
    row = prepared.rows(org=orgs[0])[0]
    assert isinstance(row["config"], dict) and row["updated_at"].tzinfo is not None


def test_prepared_query_survives_a_reconnect(catalog, django_db_blocker):
    prepared = PreparedQuery(by_org, org=str)
    with django_db_blocker.unblock():
        org = Adapter.objects.values_list("org", flat=True).first()
        expected = list(by_org(org))
        assert expected and prepared.rows(org=org) == expected
        connection.close()  # a new session knows none of the old one's prepared statements
        assert prepared.rows(org=org) == expected


@pytest.mark.django_db
def test_a_value_the_orm_rewrites_cannot_be_prepared(catalog):
    prepared = PreparedQuery(
        lambda term: Adapter.objects.filter(name__icontains=term).values("id"), term=str
    )
    with pytest.raises(ValueError, match="unchanged"):
        prepared.rows(term="sst")


LIST_QUERIES = [
    "",
    "page=2",
    "page=3&page_size=7",
    "page_size=100",
    "page_size=1000",  # capped at 100
    "page_size=abc",  # the default size
    "task=sentiment",
    "task=sentiment&model_name=bert-base-uncased",
    "task=%20sentiment%20&model_name=bert-base-uncased&ordering=name",
    "subtask=sst-2&ordering=-updated",
    "architecture=pfeiffer&has_head=true&ordering=downloads",
    "architecture=houlsby&has_head=false&page=2&page_size=5",
    "type=text_lang&ordering=-name",
    "model_type=bert&org=ukp&ordering=updated",
    "org=ukp&task=",
    "task=no-such-task",
    "task=sentiment&task=nli",  # the last one wins
    "config_id=0000000000000000",
    "unknown=1&task=nli",
    "ordering=",
    "has_head=",
    "page=999",  # 404
    "page=0",  # 404
    "has_head=maybe",  # 400, from the filter
    "ordering=-nope",  # 400, from the filter
    "org=a%00b",  # 400, from the filter
]


@pytest.mark.django_db
@pytest.mark.parametrize("query", LIST_QUERIES)
def test_indexed_and_prepared_lists_answer_exactly_as_the_filter(
    catalog, client, monkeypatch, settings, query
):
    from hub_server.api import search_index, selectors

    url = f"/api/v1/adapters/?{query}"
    indexed = client.get(url)  # the search index (hub_server/api/search_index.py)
    settings.HUB_SEARCH_INDEX = False
    real = selectors.prepared_adapter_list
    used = []
    monkeypatch.setattr(selectors, "prepared_adapter_list", lambda *a: used.append(real(*a)))
    forget_responses()  # each request renders
    prepared = client.get(url)
    monkeypatch.setattr(
        selectors, "prepared_adapter_list", lambda *a: used.append(real(*a)) or None
    )
    forget_responses()
    filtered = client.get(url)
    assert indexed.status_code == prepared.status_code == filtered.status_code
    assert indexed["Content-Type"] == prepared["Content-Type"] == filtered["Content-Type"]
    assert indexed.content == prepared.content == filtered.content
    if indexed.status_code == 200:
        assert indexed.json()["results"] or query.startswith(("task=no-such", "config_id"))
    # the prepared path served every request it can serve
    can_serve = used[0] is not None
    assert can_serve == (not any(bad in query for bad in ("maybe", "nope", "%00")))
    assert (search_index._current is not None) == can_serve  # built and asked for the first


def test_fast_datetime_rendering_is_drf_rendering():
    from datetime import UTC, datetime, timedelta, timezone

    from rest_framework import serializers

    from hub_server.api.serializers import render_datetime

    drf = serializers.DateTimeField()
    for value in (
        datetime(2024, 5, 1, 12, 3, 4, 123456, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 3, 4, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2024, 2, 29, 0, 0, tzinfo=timezone(timedelta(hours=-8))),
        None,
    ):
        assert render_datetime(value) == drf.to_representation(value), value


@pytest.mark.django_db
def test_detail_in_one_query_equals_the_portable_two(
    catalog, monkeypatch, django_assert_num_queries
):
    from hub_server.catalog import selectors

    adapters = list(Adapter.objects.values_list("org", "name"))
    assert len(adapters) > 250

    def details():
        return [
            selectors.adapter_detail(o, n, "http://hub/api/v1/", "http://hub")
            for o, n in adapters
            if Adapter.objects.get(org=o, name=n).status != Adapter.Status.WITHDRAWN
        ]

    one = details()
    monkeypatch.setattr(selectors, "VERSIONS_INLINE", False)
    two = details()
    assert one == two
    assert sum(len(d["versions"]) for d in one) > len(one)  # some cards list several versions
    org, name = next(d["id"].lstrip("@").split("/") for d in one if not d["dependencies"])
    selectors.adapter_detail(org, name, "http://hub/api/v1/", "http://hub")
    monkeypatch.setattr(selectors, "VERSIONS_INLINE", True)
    selectors.adapter_detail(org, name, "http://hub/api/v1/", "http://hub")  # prepared
    with django_assert_num_queries(1):
        selectors.adapter_detail(org, name, "http://hub/api/v1/", "http://hub")


def test_statement_names_stay_unique_under_threaded_workers():
    """Threaded gunicorn workers prepare statements at once: naming them must neither fail
    ("generator already executing") nor hand one name out twice."""
    import sys
    import threading

    from hub_server.catalog import prepared

    names: list[str] = []
    errors: list[BaseException] = []

    def prepare_many():
        try:
            mine = [prepared.statement_name() for _ in range(20_000)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        else:
            names.extend(mine)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=prepare_many) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    assert len(names) == len(set(names)) == 8 * 20_000
