"""DRF authentication by API token: `Authorization: Bearer ahub_...` (what huggingface_hub sends)
or `Authorization: Token ahub_...`. `request.auth` is the ApiToken."""

from __future__ import annotations

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from hub_server.accounts.models import ApiToken
from hub_server.accounts.services import TokenExpired, authenticate_secret
from hub_server.security import lockout_message

KEYWORDS = ("bearer", "token")


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in KEYWORDS:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header: expected 'Bearer <token>'."
            )
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token: not ASCII.") from None
        try:
            token = authenticate_secret(secret)
        except TokenExpired as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class TokenScopePermission(permissions.BasePermission):
    """Authenticated; a token needs the write scope for anything but reads. A signed-in session
    (the web UI) acts with the user's full rights."""

    message = "This API token is read-only; create a token with the write scope."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        token = request.auth
        return not isinstance(token, ApiToken) or token.can_write


class LockedOut(exceptions.Throttled):
    default_code = "locked_out"

    def __init__(self):
        super().__init__(wait=settings.AXES_COOLOFF_TIME.total_seconds(), detail=lockout_message())


class BasicAuthentication(authentication.BasicAuthentication):
    """DRF's HTTP Basic, refusing credentials PostgreSQL cannot even look up (a NUL character
    made the user query raise, a 500) with the same 401 as any wrong password.

    The password is checked by django.contrib.auth.authenticate with the request, so
    django-axes counts each failure; a locked-out account or address gets 429 (LockedOut) even
    with the right password, not the 401 of a wrong one."""

    def authenticate_credentials(self, userid, password, request=None):
        if "\x00" in userid or "\x00" in password:
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        try:
            return super().authenticate_credentials(userid, password, request)
        except exceptions.AuthenticationFailed:
            if getattr(request, "axes_locked_out", False):
                raise LockedOut() from None
            raise
