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
