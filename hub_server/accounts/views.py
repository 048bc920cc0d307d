"""API tokens of the signed-in user: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from hub_server.accounts import selectors, services
from hub_server.accounts.authentication import (
    ApiTokenAuthentication,
    BasicAuthentication,
    TokenScopePermission,
)
from hub_server.accounts.models import ApiToken
from hub_server.accounts.serializers import ApiTokenSerializer, NewApiTokenSerializer

# Basic auth too, so that `adapterhub login --username` can trade a password for a token.
AUTHENTICATION = [ApiTokenAuthentication, SessionAuthentication, BasicAuthentication]


class TokenViewMixin:
    authentication_classes = AUTHENTICATION
    permission_classes = [TokenScopePermission]

    def get_exception_handler(self):
        from hub_server.api.exceptions import api_exception_handler

        return api_exception_handler


class TokenListView(TokenViewMixin, APIView):
    @extend_schema(responses=ApiTokenSerializer(many=True))
    def get(self, request):
        tokens = selectors.tokens_of(request.user)
        return Response(ApiTokenSerializer(tokens, many=True).data)

    @extend_schema(request=ApiTokenSerializer, responses={201: NewApiTokenSerializer})
    def post(self, request):
        body = ApiTokenSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, secret = services.create_token(
            request.user,
            name=body.validated_data.get("name", ""),
            scope=body.validated_data.get("scope", ApiToken.Scope.READ),
        )
        token.token = secret
        return Response(NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)


class TokenDetailView(TokenViewMixin, APIView):
    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        get_object_or_404(selectors.tokens_of(request.user), pk=token_id)
        services.revoke_token(request.user, token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
