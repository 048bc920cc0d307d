"""The API's errors: the shared JSON shape (hub_server/errors.py, below every app that answers
under /api/v1/) and the JSON 404 for paths under /api/v1/ that name no endpoint."""

from __future__ import annotations

from django.urls import Resolver404, resolve

from hub_server.catalog.selectors import Gone  # noqa: F401 - raised by the catalogue's reads
from hub_server.errors import api_exception_handler, json_error, json_errors

__all__ = ["Gone", "api_exception_handler", "api_not_found", "json_error", "json_errors"]


def api_not_found(request, *args, **kwargs):
    """Any path under /api/v1/ that names no endpoint: a JSON 404 (with a hint for a missing slash)."""
    detail = "Not found."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            detail = f"Not found. Did you mean {request.path}/ ?"
    return json_error(404, detail)
