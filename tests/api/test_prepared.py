"""Prepared catalogue reads (hub_server/catalog/prepared.py) give exactly the ORM's rows, on the
real snapshot."""

import pytest
from django.db import connection
from django.db.models import Count

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
