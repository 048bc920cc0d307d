"""The pages without a browser: status codes, fixed query counts (no N+1), the response cache,
the parameter formula of the size chart, and the error pages."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from frontend.sizes import KNOWN_BASE_MODELS, bottleneck_params, size_comparison
from hub_server.catalog.models import Adapter, SyncRun
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import SNAPSHOT, clear_read_caches, make_git_repo
from tests.frontend.conftest import snapshot_cards

SST2 = "/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/"
MANY_VERSIONS = "/adapters/ukp/bert-base-uncased_sts_stackexchange_pfeiffer/"


@pytest.fixture(scope="module")
def catalog(django_db_setup, django_db_blocker, tmp_path_factory):
    """The snapshot synced once for this module (committed), removed again afterwards."""
    root = tmp_path_factory.mktemp("pages-catalog")
    repo = make_git_repo(SNAPSHOT, root / "hub-repo")
    with django_db_blocker.unblock(), override_settings(HUB_DATA_DIR=root / "hub-data"):
        run = sync_hub_repository(str(repo))
        assert run.status == SyncRun.Status.SUCCEEDED, run.message
    yield repo
    from hub_server.catalog.models import AdapterType, Architecture, Subtask, SyncLock, Task

    with django_db_blocker.unblock():
        Adapter.objects.all().delete()
        for model in (Subtask, Task, Architecture, AdapterType, SyncRun, SyncLock):
            model.objects.all().delete()


@pytest.fixture
def pages(catalog, db, client):
    clear_read_caches()
    yield client
    clear_read_caches()


def queries_for(client, url: str) -> int:
    """Queries of a cold (uncached) render, after one render that warms per-process caches."""
    client.get(url)
    clear_read_caches(read_generation=True)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/explore/",
        "/explore/?q=ner",
        "/explore/sentiment/sst-2/",
        "/explore/sentiment/sst-2/?model_type=bert&sort=-score",
        "/adapters/",
        "/adapters/?task=sentiment&model_name=bert-base-uncased&sort=name&page=1",
        "/adapters/?has_head=true&sort=-updated",
        SST2,
        MANY_VERSIONS,
        "/search/?q=sst-2",
        "/search/",
        "/accounts/login/",
    ],
)
def test_pages_answer_200(pages, url):
    response = pages.get(url)
    assert response.status_code == 200
    assert b"<!doctype html>" in response.content[:100]


def test_list_queries_do_not_grow_with_the_rows_shown(pages):
    # One adapter, then a full page of 20: the same number of queries.
    one = queries_for(pages, "/adapters/?org=lohfink-rossi")
    full = queries_for(pages, "/adapters/")
    assert one == full <= 12
    assert queries_for(pages, "/adapters/?page=3") == full
    # A subtask page with 12 adapters and one with a single adapter.
    many = queries_for(pages, "/explore/sentiment/sst-2/")
    single = queries_for(pages, "/explore/sentiment/sst-2/?model_name=gpt2&architecture=pfeiffer")
    assert many == single <= 12


def test_adapter_page_queries_do_not_grow_with_versions_or_dependencies(pages):
    plain = queries_for(pages, SST2)
    assert queries_for(pages, MANY_VERSIONS) == plain  # 141 versions
    dependent = next(c for c in snapshot_cards() if c.get("dependencies"))
    with_deps = queries_for(pages, f"/adapters/{dependent['org']}/{dependent['name']}/")
    assert with_deps <= plain + 2  # the dependency rows and their targets: two queries for all
    print({"adapter page": plain, "with dependencies": with_deps})
    assert plain <= 6


def test_fixed_query_budgets(pages, django_assert_max_num_queries):
    for url, budget in [("/", 5), ("/explore/", 2), ("/search/?q=sst-2", 40)]:
        clear_read_caches(read_generation=True)
        with django_assert_max_num_queries(budget):
            assert pages.get(url).status_code == 200


def test_warm_pages_come_from_the_cache_without_queries(pages, django_assert_num_queries):
    pages.get("/explore/sentiment/sst-2/")
    with django_assert_num_queries(0):
        response = pages.get("/explore/sentiment/sst-2/")
    assert response.status_code == 200 and response["ETag"]
    with django_assert_num_queries(0):
        again = pages.get("/explore/sentiment/sst-2/", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_a_catalogue_change_invalidates_cached_pages(pages):
    assert b"A new description" not in pages.get(SST2).content
    adapter = Adapter.objects.get(org="ukp", name="bert-base-uncased_sentiment_sst-2_pfeiffer")
    adapter.description = "A new description"
    adapter.save()
    from hub_server.catalog.signals import catalog_changed

    catalog_changed.send(sender=Adapter)
    assert b"A new description" in pages.get(SST2).content


def test_signed_in_pages_are_not_served_from_the_anonymous_cache(pages, django_user_model):
    assert b"Sign in" in pages.get("/").content
    user = django_user_model.objects.create_user("bob", password="pw-for-bob-123")
    pages.force_login(user)
    response = pages.get("/")
    assert b"bob" in response.content and b"Sign in</a>" not in response.content
    assert response["Cache-Control"] == "private, no-cache"


def test_unknown_pages_and_adapters_are_404_pages(pages):
    for url in ["/explore/sentiment/nope/", "/adapters/ukp/nope/", "/no-such-page/"]:
        response = pages.get(url)
        assert response.status_code == 404
        assert b"This page does not exist" in response.content


def test_withdrawn_adapter_page_is_410(pages):
    Adapter.objects.filter(org="ukp", name="bert-base-uncased_sentiment_sst-2_pfeiffer").update(
        status=Adapter.Status.WITHDRAWN
    )
    response = pages.get(SST2)
    assert response.status_code == 410
    assert b"was withdrawn" in response.content


def test_bad_filter_values_widen_the_list_instead_of_failing(pages):
    response = pages.get("/adapters/?has_head=maybe&sort=bogus&page=999")
    assert response.status_code == 200
    assert b"adapters" in response.content


def test_contributor_pages_need_sign_in(pages):
    for url in ["/upload/", "/uploads/1/", "/accounts/tokens/", "/accounts/adapters/"]:
        response = pages.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_bottleneck_parameter_formula():
    bert = KNOWN_BASE_MODELS["bert-base-uncased"]
    pfeiffer = {"mh_adapter": False, "output_adapter": True, "reduction_factor": 16}
    houlsby = {"mh_adapter": True, "output_adapter": True, "reduction_factor": 16}
    # Per layer: 2*h*(h/rf) + h/rf + h = 2*768*48 + 48 + 768 = 74,544; times 12 layers.
    assert bottleneck_params(pfeiffer, bert.hidden_size, bert.layers) == 74_544 * 12
    assert bottleneck_params(houlsby, bert.hidden_size, bert.layers) == 2 * 74_544 * 12
    # reduction_factor 2.0 (a float in the real data) and leave_out
    assert (
        bottleneck_params({**pfeiffer, "reduction_factor": 2.0}, 768, 12)
        == (2 * 768 * 384 + 384 + 768) * 12
    )
    assert bottleneck_params({**houlsby, "leave_out": [0, 1, 11]}, 768, 12) == 2 * 74_544 * 9
    chart = size_comparison("bert-base-uncased", pfeiffer, None, None)
    params, size = chart["rows"]
    assert params["adapter"] == 894_528 and params["base"] == 110_000_000
    assert size["estimated"] and size["adapter"] == 894_528 * 4
    assert size_comparison("unknown/model", pfeiffer, None, None) is None
