"""Reads of the accounts app."""

from __future__ import annotations

from django.db.models import QuerySet

from hub_server.accounts.models import ApiToken, Membership, Organisation


def tokens_of(user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).select_related(
        "organisation"
    )


def organisations_of(user) -> QuerySet[Organisation]:
    return Organisation.objects.filter(membership__user=user).distinct()


def is_member(user, org_name: str) -> bool:
    return Membership.objects.filter(user=user, organisation__name=org_name).exists()
