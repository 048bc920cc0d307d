"""Response headers that Django's SecurityMiddleware does not send: the Content-Security-Policy
and the Permissions-Policy (settings.HUB_CONTENT_SECURITY_POLICY, HUB_PERMISSIONS_POLICY).

Every page loads its scripts and styles from this host as files (frontend/static/), never inline,
so the policy allows no inline script, no inline style attribute and no other origin; a card's
text can then never run as script even if a template forgot to escape it. A view that sets its
own header keeps it.
"""

from __future__ import annotations

from django.conf import settings


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.headers = {
            name: value
            for name, value in (
                ("Content-Security-Policy", settings.HUB_CONTENT_SECURITY_POLICY),
                ("Permissions-Policy", settings.HUB_PERMISSIONS_POLICY),
            )
            if value
        }

    def __call__(self, request):
        response = self.get_response(request)
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        return response


# -- Password guessing (django-axes) ----------------------------------------------------------------


def client_ip(request) -> str:
    """The client's address as the proxies in front say, trusting exactly HUB_TRUSTED_PROXIES of
    them: each appends the address it received from to X-Forwarded-For, so the client is the
    entry that many places from the right. Anything further left was written by the client
    and is ignored; with no trusted proxy the header is ignored altogether (REMOTE_ADDR)."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.HUB_TRUSTED_PROXIES
    if proxies <= 0:
        return remote
    chain = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    chain = [a for a in chain if a]
    if not chain:
        return remote
    return chain[-min(proxies, len(chain))]


def lockout_message() -> str:
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    return (
        f"Too many failed sign-ins for this account or from this address: locked for "
        f"{minutes} minute(s) after the last failure, even with the right password."
    )


def lockout_response(request, original_response=None, credentials=None):
    """What django-axes answers a locked-out sign-in with: 429 and Retry-After; the sign-in page
    with the reason for a browser, JSON for the API."""
    from django.http import JsonResponse
    from django.shortcuts import render

    message = lockout_message()
    if request.path.startswith("/api/") or "HTTP_AUTHORIZATION" in request.META:
        response = JsonResponse({"detail": message, "errors": {}}, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
