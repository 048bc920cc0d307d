"""Writes of the accounts app: organisations, memberships, API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from hub_server.accounts.models import ApiToken, Membership, Organisation

TOKEN_PREFIX = "ahub_"
# 32 random bytes: brute force is out of reach, so one unsalted sha256 is enough to store it.
TOKEN_BYTES = 32
ORG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Writing last_used_at on every request would make each API call a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AccountError(ValueError):
    """A request the accounts services refuse; the message says why, `field` which input."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_organisation(name: str, *, owner=None, display_name: str = "") -> Organisation:
    if not ORG_NAME_RE.match(name or ""):
        raise AccountError(
            f"organisation name {name!r} must start with a letter or digit and contain only "
            "letters, digits, '.', '_' or '-'"
        )
    with transaction.atomic():
        org, _ = Organisation.objects.get_or_create(
            name=name, defaults={"display_name": display_name or name}
        )
        if owner is not None:
            add_member(org, owner, role=Membership.Role.OWNER)
    return org


def add_member(org: Organisation, user, role: str = Membership.Role.MEMBER) -> Membership:
    membership, created = Membership.objects.get_or_create(
        user=user, organisation=org, defaults={"role": role}
    )
    if not created and role == Membership.Role.OWNER and membership.role != role:
        membership.role = role  # promote only; never demote an owner by adding them again
        membership.save(update_fields=["role"])
    return membership


def ensure_personal_organisation(user) -> Organisation:
    """The organisation named after the user, created on first use; refused when another user
    already owns an organisation of that name."""
    org = Organisation.objects.filter(name=user.username).first()
    if org is None:
        return create_organisation(user.username, owner=user)
    if not Membership.objects.filter(user=user, organisation=org).exists():
        raise AccountError(
            f"organisation {org.name!r} belongs to other users; pass --org with one of yours"
        )
    return org


def create_token(
    user,
    *,
    name: str = "",
    scope: str = ApiToken.Scope.READ,
    expires_at: datetime | None = None,
    organisation: Organisation | str | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret. The secret is returned this once and stored only hashed.
    `expires_at`: refused from then on; `organisation`: one of the user's organisations, the
    only one the token may upload and publish to."""
    if scope not in ApiToken.Scope.values:
        raise AccountError(f"scope must be one of {ApiToken.Scope.values}, not {scope!r}")
    if expires_at is not None and expires_at <= timezone.now():
        raise AccountError("expires_at must be in the future", "expires_at")
    if organisation is not None:
        org_name = organisation if isinstance(organisation, str) else organisation.name
        organisation = Organisation.objects.filter(name=org_name, membership__user=user).first()
        if organisation is None:
            raise AccountError("organisation must be one of your organisations", "organisation")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        scope=scope,
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        key_hash=hash_token(secret),
        expires_at=expires_at,
        organisation=organisation,
    )
    return token, secret


def revoke_token(user, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is None:
        raise ApiToken.DoesNotExist(f"no token {token_id} of user {user}")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


class TokenExpired(AccountError):
    """The secret names a token whose expiry has passed."""

    def __init__(self, token: ApiToken):
        super().__init__(
            f"API token {token.prefix}… expired at {token.expires_at:%Y-%m-%d %H:%M} UTC; "
            "create a new one on the tokens page."
        )
        self.token = token


def authenticate_secret(secret: str) -> ApiToken | None:
    """The active token with this secret (its user and organisation loaded), or None; raises
    TokenExpired for an expired one. Records the use at most once per LAST_USED_RESOLUTION (one
    UPDATE a minute per busy token, not one per request), so `last_used_at` lags by up to that."""
    if not secret or not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user", "organisation")
        .filter(key_hash=hash_token(secret), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.is_expired(now):
        raise TokenExpired(token)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def get_or_create_user(username: str, email: str = ""):
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    return user
