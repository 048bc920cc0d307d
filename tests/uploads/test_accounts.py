"""Organisations, API tokens (hashed, scoped, shown once, revocable) and create_token."""

import hashlib
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

from hub_server.accounts import services
from hub_server.accounts.models import ApiToken, Organisation

pytestmark = pytest.mark.django_db


def test_token_is_stored_hashed_and_authenticates():
    user = User.objects.create(username="alice")
    token, secret = services.create_token(user, name="laptop", scope="write")
    assert secret.startswith("ahub_") and len(secret) > 40
    assert token.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {token.prefix, token.key_hash}
    assert services.authenticate_secret(secret) == token
    assert services.authenticate_secret(secret + "x") is None
    services.revoke_token(user, token.pk)
    assert services.authenticate_secret(secret) is None


def test_tokens_api_create_list_revoke():
    user = User.objects.create(username="bob")
    _, secret = services.create_token(user, scope="write")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    signed_in = APIClient()
    signed_in.force_login(user)
    created = signed_in.post("/api/v1/tokens/", {"name": "ci", "scope": "read"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["token"].startswith("ahub_")
    listed = client.get("/api/v1/tokens/").json()
    assert {t["name"] for t in listed} == {"ci", ""}
    assert all("token" not in t and "key_hash" not in t for t in listed)
    # a read token may list but not create
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {created.json()['token']}")
    assert reader.get("/api/v1/tokens/").status_code == 200
    assert reader.post("/api/v1/tokens/", {"scope": "write"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/tokens/{created.json()['id']}/").status_code == 204
    assert reader.get("/api/v1/tokens/").status_code == 401
    assert APIClient().get("/api/v1/tokens/").status_code in (401, 403)


def test_another_users_token_cannot_be_revoked():
    alice = User.objects.create(username="alice")
    bob = User.objects.create(username="bob")
    token, _ = services.create_token(alice)
    _, secret = services.create_token(bob, scope="write")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_create_token_command_creates_user_and_org():
    out = StringIO()
    call_command("create_token", "carol", "--org", "lab", "--write", stdout=out)
    secret = out.getvalue().strip()
    token = services.authenticate_secret(secret)
    assert token.user.username == "carol" and token.scope == "write"
    org = Organisation.objects.get(name="lab")
    assert org.membership_set.get(user=token.user).role == "owner"
    call_command("create_token", "dave", "--org", "lab", stdout=StringIO())
    assert org.membership_set.get(user__username="dave").role == "member"
    assert org.membership_set.get(user__username="carol").role == "owner"


def test_personal_organisation_of_someone_else_is_refused():
    alice = User.objects.create(username="alice")
    services.create_organisation("alice", owner=User.objects.create(username="mallory"))
    with pytest.raises(services.AccountError, match="belongs to other users"):
        services.ensure_personal_organisation(alice)
