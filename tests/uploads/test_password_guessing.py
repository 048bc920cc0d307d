"""Password guessing: failures are counted per account and per client address on every path that
takes a password (the sign-in form, HTTP Basic on the API); a locked account or address is
answered 429 even with the right password until the lock expires; the client address is what the
trusted proxies say, never what the client wrote into X-Forwarded-For."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from hub_server.accounts.models import ApiToken
from hub_server.security import client_ip

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
LIMIT = 3


@pytest.fixture(autouse=True)
def lockout_settings(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.HUB_TRUSTED_PROXIES = 0
    return settings


@pytest.fixture
def ada():
    return User.objects.create_user("ada", "ada@example.org", PASSWORD)


def sign_in(client: Client, username: str, password: str, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def mint_token(username: str, password: str, **extra):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(username, password), **extra)
    return client.post("/api/v1/tokens/", {"name": "cli", "scope": "read"}, format="json")


def expire_locks() -> None:
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.first().attempt_time - timedelta(minutes=16)
    )


def test_the_sign_in_form_locks_an_account_even_for_the_right_password(ada, client):
    for _ in range(LIMIT - 1):
        assert sign_in(client, "ada", "wrong").status_code == 200  # the form again, with an error
    locked = sign_in(client, "ada", "wrong")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    right = sign_in(client, "ada", PASSWORD)
    assert right.status_code == 429 and int(right["Retry-After"]) == 15 * 60
    assert "_auth_user_id" not in client.session
    expire_locks()
    assert sign_in(client, "ada", PASSWORD).status_code == 302
    assert client.session["_auth_user_id"] == str(ada.pk)


def test_basic_auth_on_the_api_is_counted_and_locked(ada):
    for _ in range(LIMIT - 1):
        assert mint_token("ada", "wrong").status_code == 401
    assert mint_token("ada", "wrong").status_code == 429  # the failure that reaches the limit
    locked = mint_token("ada", PASSWORD)
    assert locked.status_code == 429, locked.content
    assert "Too many failed sign-ins" in locked.json()["detail"]
    assert not ApiToken.objects.exists()
    expire_locks()
    assert mint_token("ada", PASSWORD).status_code == 201


def test_failures_on_the_form_and_the_api_add_up_for_one_account(ada, client):
    other_address = {"REMOTE_ADDR": "203.0.113.9"}
    sign_in(client, "ada", "wrong")
    mint_token("ada", "wrong", **other_address)
    sign_in(client, "ada", "wrong", **other_address)
    # A third address, never seen failing: the account itself is locked.
    assert mint_token("ada", PASSWORD, REMOTE_ADDR="198.51.100.7").status_code == 429


def test_one_address_guessing_many_accounts_is_locked_out(ada, client):
    for name in ("bob", "carol", "dave"):
        sign_in(client, name, "wrong")
    assert sign_in(client, "ada", PASSWORD).status_code == 429  # from that address: refused
    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    assert sign_in(elsewhere, "ada", PASSWORD).status_code == 302  # ada herself is not locked


def test_a_spoofed_forwarded_for_does_not_escape_the_address_lock(ada):
    # No trusted proxy: X-Forwarded-For is the client's own writing and is ignored.
    for n in range(LIMIT):
        client = Client(HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        sign_in(client, f"user{n}", "wrong")
    assert sign_in(Client(HTTP_X_FORWARDED_FOR="192.0.2.99"), "ada", PASSWORD).status_code == 429


def test_behind_one_proxy_the_address_is_what_the_proxy_appended(ada, settings):
    settings.HUB_TRUSTED_PROXIES = 1
    for n in range(LIMIT):  # the attacker varies what it writes, nginx appends its real address
        client = Client(HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.50", REMOTE_ADDR="10.0.0.2")
        sign_in(client, f"user{n}", "wrong")
    attacker = Client(HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.50", REMOTE_ADDR="10.0.0.2")
    assert sign_in(attacker, "ada", PASSWORD).status_code == 429
    # Everyone else comes through the same proxy (same REMOTE_ADDR) and is not locked.
    neighbour = Client(HTTP_X_FORWARDED_FOR="203.0.113.51", REMOTE_ADDR="10.0.0.2")
    assert sign_in(neighbour, "ada", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "1.1.1.1", "10.0.0.2"),
        (1, "", "10.0.0.2"),
        (1, "1.1.1.1", "1.1.1.1"),
        (1, "9.9.9.9, 1.1.1.1", "1.1.1.1"),
        (2, "9.9.9.9, 1.1.1.1, 172.16.0.1", "1.1.1.1"),
        (2, "1.1.1.1", "1.1.1.1"),
    ],
)
def test_client_address_counts_trusted_proxies_from_the_right(
    settings, proxies, forwarded, expected
):
    settings.HUB_TRUSTED_PROXIES = proxies
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", **extra)
    assert client_ip(request) == expected


def test_api_throttles_ignore_a_forwarded_for_without_trusted_proxies():
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.1.1.1")
    assert AnonRateThrottle().get_ident(request) == "10.0.0.2"
