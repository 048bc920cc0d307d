"""The JSON error shape every route under /api/v1/ answers with, `{"detail": ..., "errors": {...}}`
and the right status, 500 included.

It sits beside the project's settings, below the apps, because the API's own views and the views
that uploads and accounts add under /api/v1/ all answer errors this way and uploads must not import
the API layer (docs/architecture.md, tests/catalog/test_house.py).
"""

from __future__ import annotations

import functools
import logging

from django.http import JsonResponse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

log = logging.getLogger(__name__)


def _flatten_errors(data) -> dict:
    """DRF's field errors ({field: [messages]}) as the `errors` object; anything else under `detail`."""
    if isinstance(data, dict):
        return {
            key: value if isinstance(value, list) else [value]
            for key, value in data.items()
            if key != "detail"
        }
    if isinstance(data, list):
        return {"non_field_errors": data}
    return {}


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is None:
        # Not an API exception: log it with the request and answer JSON, never an HTML page.
        request = context.get("request")
        log.exception("unhandled API error on %s", getattr(request, "path", "?"), exc_info=exc)
        return Response(
            {"detail": "Internal server error.", "errors": {}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    data = response.data
    if isinstance(exc, ValidationError):
        detail = "Invalid request."
        if isinstance(data, dict) and "detail" in data:
            detail = str(data["detail"])
    elif isinstance(data, dict) and "detail" in data:
        detail = str(data["detail"])
    else:
        detail = str(exc)
    response.data = {"detail": detail, "errors": _flatten_errors(data)}
    return response


def json_error(status_code: int, detail: str, errors: dict | None = None) -> JsonResponse:
    return JsonResponse({"detail": detail, "errors": errors or {}}, status=status_code)


def json_errors(view):
    """Outermost wrapper of an API route: whatever escapes the view (a cache outage, a bug in a
    decorator) is logged and answered with a JSON 500."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except Exception:
            log.exception("unhandled error on %s", request.path)
            return json_error(500, "Internal server error.")

    return wrapper
