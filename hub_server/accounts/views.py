"""API tokens of the signed-in user: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from hub_server.accounts import selectors, services
from hub_server.accounts.authentication import (
    ApiTokenAuthentication,
    BasicAuthentication,
    TokenScopePermission,
)
from hub_server.accounts.models import ApiToken
from hub_server.accounts.serializers import (
    ApiTokenRequestSerializer,
    ApiTokenSerializer,
    NewApiTokenSerializer,
)
from hub_server.api.serializers import ErrorSerializer

# Basic auth too, so that `adapterhub login --username` can trade a password for a token.
AUTHENTICATION = [ApiTokenAuthentication, SessionAuthentication, BasicAuthentication]


class TokenViewMixin:
    authentication_classes = AUTHENTICATION
    permission_classes = [TokenScopePermission]

    def get_exception_handler(self):
        from hub_server.errors import api_exception_handler

        return api_exception_handler


class TokenListView(TokenViewMixin, APIView):
    @extend_schema(responses=ApiTokenSerializer(many=True))
    def get(self, request):
        tokens = selectors.tokens_of(request.user)
        return Response(ApiTokenSerializer(tokens, many=True).data)

    @extend_schema(
        request=ApiTokenRequestSerializer,
        responses={
            201: NewApiTokenSerializer,
            **{code: ErrorSerializer for code in (400, 401, 403, 429)},
        },
        description="Only a signed-in session or a password (HTTP Basic) may create a token; a "
        "request authenticated by an API token is refused (403).",
    )
    def post(self, request):
        if isinstance(request.auth, ApiToken):
            # A leaked token must not mint tokens that outlive its revocation.
            raise PermissionDenied(
                "API tokens cannot create tokens: sign in on the tokens page, or send your "
                "username and password (HTTP Basic, `adapterhub login --username`)."
            )
        body = ApiTokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            token, secret = services.create_token(
                request.user,
                name=body.validated_data.get("name", ""),
                scope=body.validated_data.get("scope", ApiToken.Scope.READ),
                expires_at=body.validated_data.get("expires_at"),
                organisation=body.validated_data.get("organisation") or None,
            )
        except services.AccountError as exc:
            raise ValidationError({exc.field or "non_field_errors": [str(exc)]}) from None
        token.token = secret
        return Response(NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)


class TokenDetailView(TokenViewMixin, APIView):
    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        get_object_or_404(selectors.tokens_of(request.user), pk=token_id)
        services.revoke_token(request.user, token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
