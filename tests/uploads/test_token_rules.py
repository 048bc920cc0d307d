"""API tokens: only a session or a password creates one (a leaked token cannot mint successors),
an expiry refuses a token with a message saying so, an organisation scope confines uploads, and
the last use is recorded without a write per request."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from hub_server.accounts import services as accounts
from hub_server.accounts.models import ApiToken
from hub_server.uploads.models import Upload

from .test_api import form

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture
def alice(demo_catalogue, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = User.objects.create_user("alice", password=PASSWORD)
    accounts.create_organisation("alice-lab", owner=user)
    accounts.create_organisation("alice-home", owner=user)
    accounts.create_organisation("someone-else")
    return user


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_a_write_token_cannot_create_tokens(alice):
    token, secret = accounts.create_token(alice, scope="write")
    refused = bearer(secret).post("/api/v1/tokens/", {"scope": "write"}, format="json")
    assert refused.status_code == 403
    assert "API tokens cannot create tokens" in refused.json()["detail"]
    assert list(ApiToken.objects.all()) == [token]


def test_a_password_or_a_session_can_create_tokens(alice):
    basic = APIClient()
    credentials = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    basic.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert basic.post("/api/v1/tokens/", {"scope": "write"}, format="json").status_code == 201
    session = APIClient()
    session.force_login(alice)
    assert session.post("/api/v1/tokens/", {"scope": "read"}, format="json").status_code == 201


def test_an_expired_token_is_refused_with_a_message_that_says_so(alice):
    session = APIClient()
    session.force_login(alice)
    soon = timezone.now() + timedelta(days=1)
    created = session.post(
        "/api/v1/tokens/", {"scope": "read", "expires_at": soon.isoformat()}, format="json"
    ).json()
    client = bearer(created["token"])
    assert client.get("/api/v1/tokens/").status_code == 200
    ApiToken.objects.filter(pk=created["id"]).update(expires_at=timezone.now() - timedelta(1))
    refused = client.get("/api/v1/tokens/")
    assert refused.status_code == 401
    assert (
        "expired at" in refused.json()["detail"] and created["prefix"] in refused.json()["detail"]
    )
    whoami = client.get("/hf/api/whoami-v2")
    assert whoami.status_code == 401 and "expired" in whoami.json()["error"]
    past = session.post(
        "/api/v1/tokens/",
        {"scope": "read", "expires_at": (timezone.now() - timedelta(1)).isoformat()},
        format="json",
    )
    assert past.status_code == 400 and "expires_at" in past.json()["errors"]


def test_an_organisation_token_uploads_only_to_its_organisation(alice, tiny_adapter):
    session = APIClient()
    session.force_login(alice)
    created = session.post(
        "/api/v1/tokens/", {"scope": "write", "organisation": "alice-lab"}, format="json"
    ).json()
    assert created["organisation"] == "alice-lab"
    client = bearer(created["token"])
    other = client.post(
        "/api/v1/uploads/", form(tiny_adapter, org="alice-home"), format="multipart"
    )
    assert other.status_code == 403
    assert "only to organisation 'alice-lab'" in other.json()["errors"]["org"][0]
    default = client.post("/api/v1/uploads/", form(tiny_adapter, org=""), format="multipart")
    assert default.status_code == 202 and default.json()["org"] == "alice-lab"
    own = client.post("/api/v1/uploads/", form(tiny_adapter, org="alice-lab"), format="multipart")
    assert own.status_code == 202
    assert set(Upload.objects.values_list("organisation__name", flat=True)) == {"alice-lab"}
    # An unscoped token of the same user still reaches every organisation of hers.
    _, any_org = accounts.create_token(alice, scope="write")
    home = bearer(any_org).post(
        "/api/v1/uploads/", form(tiny_adapter, org="alice-home"), format="multipart"
    )
    assert home.status_code == 202


def test_a_token_can_be_scoped_only_to_ones_own_organisation(alice):
    session = APIClient()
    session.force_login(alice)
    for org in ("someone-else", "no-such-org"):
        refused = session.post(
            "/api/v1/tokens/", {"scope": "write", "organisation": org}, format="json"
        )
        assert refused.status_code == 400
        assert refused.json()["errors"]["organisation"] == [
            "organisation must be one of your organisations"
        ]
    assert not ApiToken.objects.exists()


def test_last_use_is_recorded_at_most_once_a_minute(alice, django_assert_num_queries):
    token, secret = accounts.create_token(alice, scope="read")
    client = bearer(secret)
    assert client.get("/api/v1/tokens/").status_code == 200
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=5)
    # Within the minute: the token lookup and the list, no UPDATE.
    with django_assert_num_queries(2) as captured:
        assert client.get("/api/v1/tokens/").status_code == 200
    assert not any(q["sql"].startswith("UPDATE") for q in captured.captured_queries)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/v1/tokens/")
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first


def test_the_tokens_page_creates_expiring_scoped_tokens_and_shows_last_use(alice, client):
    client.force_login(alice)
    response = client.post(
        "/accounts/tokens/",
        {"name": "ci", "scope": "write", "expires": "30", "organisation": "alice-lab"},
        follow=True,
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="ci")
    assert token.organisation.name == "alice-lab"
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    secret = response.context["secret"]
    bearer(secret).get("/api/v1/tokens/")
    page = client.get("/accounts/tokens/").content.decode()
    row = page[page.index(f'data-token="{token.prefix}"') :]
    row = row[: row.index("</tr>")]
    assert "alice-lab" in row and token.expires_at.strftime("%-d %b %Y") in row
    assert "never" not in row and "ago" in row  # last used: moments ago
