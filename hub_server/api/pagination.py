"""Pagination: page numbers with a total count by default (what a UI shows), keyset cursors for
clients that page deep (`?cursor=`: no COUNT, no OFFSET, constant cost per page)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

# OFFSET paging gets slower with depth; deeper than this, cursor paging is the way.
MAX_OFFSET = 1_000_000
_BIGINT = range(-(2**63), 2**63)


class CatalogPageNumberPagination(PageNumberPagination):
    """Page numbers with a total `count`. The page is read first (one row more than it shows):
    a page that holds the last row knows the count without a COUNT query, so a filtered list
    that fits one page costs one query."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        rows = _rows(view, queryset)
        return self.paginate(
            request, lambda offset, limit: list(rows[offset : offset + limit]), queryset.count
        )

    def paginate(self, request, fetch, count) -> list:
        """The page of `request`: `fetch(offset, limit)` reads rows, `count()` counts them all
        (only called when the page is full)."""
        self.request = request
        size = self.get_page_size(request)
        raw = request.query_params.get(self.page_query_param) or "1"
        try:
            number = int(raw)
            if number < 1:
                raise ValueError
        except ValueError:
            raise NotFound(f"Invalid page {raw!r}: pages are numbered from 1.") from None
        offset = (number - 1) * size
        if offset > MAX_OFFSET:
            raise NotFound(
                f"Invalid page {number}: page numbers reach {MAX_OFFSET:,} rows; "
                "use cursor paging (?cursor=) to go deeper."
            )
        rows = fetch(offset, size + 1)
        if not rows and number > 1:
            raise NotFound(f"Invalid page {number}: that page contains no results.")
        if len(rows) > size:
            self.count = count()
            rows = rows[:size]
        else:
            self.count = offset + len(rows)
        self.number, self.size = number, size
        return rows

    def get_next_link(self):
        if self.number * self.size >= self.count:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.page_query_param, self.number + 1)

    def get_previous_link(self):
        if self.number == 1:
            return None
        url = self.request.build_absolute_uri()
        if self.number == 2:
            return remove_query_param(url, self.page_query_param)
        return replace_query_param(url, self.page_query_param, self.number - 1)

    def get_paginated_response(self, data):
        return Response(
            {
                "count": self.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )


class ReferencePagination(CatalogPageNumberPagination):
    """The reference tables (tasks, subtasks, ...) are small: large pages, same shape."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def _rows(view, queryset):
    """The rows a page shows: `view.as_rows(queryset)` when the view has it. The COUNT runs on
    the filtered queryset itself, without the joins that only the shown columns need."""
    as_rows = getattr(view, "as_rows", None)
    return as_rows(queryset) if as_rows else queryset


def _encode(values: list) -> str:
    raw = json.dumps(
        [v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str, length: int) -> list:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError({"cursor": ["Invalid cursor."]}) from exc
    if not isinstance(values, list) or len(values) != length:
        raise ValidationError({"cursor": ["Invalid cursor (it belongs to another ordering)."]})
    for value in values:
        # Only what _encode writes: integers the database can compare, short NUL-free strings.
        valid_int = type(value) is int and value in _BIGINT
        valid_str = isinstance(value, str) and len(value) <= 1000 and "\x00" not in value
        if not (valid_int or valid_str):
            raise ValidationError({"cursor": ["Invalid cursor."]})
    return values


def keyset_after(ordering: tuple[str, ...], values: list) -> Q:
    """Rows strictly after `values` in `ordering`: (a > x) OR (a = x AND b > y) OR ..."""
    condition = Q()
    equal: dict = {}
    for field, value in zip(ordering, values, strict=True):
        name = field.lstrip("-")
        lookup = "lt" if field.startswith("-") else "gt"
        condition |= Q(**equal, **{f"{name}__{lookup}": value})
        equal[name] = value
    return condition


class KeysetPagination(BasePagination):
    """Forward-only keyset pages over a queryset of `.values()` rows ordered by `ordering`
    (its last field unique): the cursor holds the last row's ordering values."""

    page_size_pagination = CatalogPageNumberPagination

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.page_size_pagination().get_page_size(request)
        self.ordering = tuple(queryset.query.order_by)
        token = request.query_params.get("cursor", "")
        if token:
            values = _decode(token, len(self.ordering))
            try:
                queryset = queryset.filter(keyset_after(self.ordering, values))
            except (TypeError, ValueError, DjangoValidationError) as exc:
                raise ValidationError({"cursor": ["Invalid cursor."]}) from exc
        rows = list(_rows(view, queryset)[: self.page_size + 1])
        self.has_next = len(rows) > self.page_size
        rows = rows[: self.page_size]
        self.next_token = (
            _encode([rows[-1][f.lstrip("-")] for f in self.ordering]) if self.has_next else None
        )
        return rows

    def get_paginated_response(self, data):
        url = self.request.build_absolute_uri()
        next_url = (
            replace_query_param(remove_query_param(url, "page"), "cursor", self.next_token)
            if self.next_token
            else None
        )
        return Response({"next": next_url, "previous": None, "results": data})


class PageOrCursorPagination(BasePagination):
    """Page numbers (with `count`) unless the request has a `cursor` parameter; an empty
    `?cursor=` starts cursor paging at the first page."""

    def paginate_queryset(self, queryset, request, view=None):
        if "cursor" in request.query_params:
            self.active = KeysetPagination()
        else:
            self.active = CatalogPageNumberPagination()
        return self.active.paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        return self.active.get_paginated_response(data)

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "count": {
                    "type": "integer",
                    "description": "total matches (page-number paging only)",
                },
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": "page",
                "required": False,
                "in": "query",
                "description": "page number (page-number paging, the default)",
                "schema": {"type": "integer"},
            },
            {
                "name": "page_size",
                "required": False,
                "in": "query",
                "description": "results per page (default 20, at most 100)",
                "schema": {"type": "integer"},
            },
            {
                "name": "cursor",
                "required": False,
                "in": "query",
                "description": "keyset paging: empty for the first page, then the token of `next`",
                "schema": {"type": "string"},
            },
        ]
