"""Reads only the REST API makes: the list as prepared statements or from the search index, and
the reference tables. The reads the pages share (active adapters, list rows, facets, the detail)
are the catalogue's: `hub_server.catalog.selectors`.

Every read is a fixed number of queries, whatever the page size: the list is COUNT + one SELECT,
each reference table one annotated SELECT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    QuerySet,
    Value,
)

from hub_server.api import search_index
from hub_server.catalog.filters import (
    DEFAULT_ORDERING,
    EXACT_FILTERS,
    ORDERINGS,
    REFERENCE_FILTERS,
    AdapterFilter,
    ReferenceIds,
)
from hub_server.catalog.models import (
    Architecture,
    Subtask,
    SyncRun,
    Task,
)
from hub_server.catalog.prepared import PreparedQuery
from hub_server.catalog.selectors import ACTIVE, active_adapters, adapter_rows

# -- the list, prepared ----------------------------------------------------------------------

_MAX_LIST_SHAPES = 256


@dataclass
class PreparedPage:
    """The rows and count of one filtered, ordered list as prepared statements (see
    `prepared_adapter_list`); no statements for a reference filter that names nothing."""

    queries: tuple[PreparedQuery, PreparedQuery] | None
    values: dict

    def rows(self, offset: int, limit: int) -> list[dict]:
        if self.queries is None:
            return []
        return self.queries[0].rows(**self.values, offset=offset, limit=limit)

    def count(self) -> int:
        return self.queries[1].rows(**self.values)[0]["count"] if self.queries else 0


_list_shapes: dict[tuple, tuple[PreparedQuery, PreparedQuery]] = {}


def clean_list_params(params) -> dict | None:
    """AdapterFilter's values of a page-numbered list request, as it reads them (stripped, empty
    ones ignored, the last of a repeated parameter winning, other parameters ignored), with the
    ordering filled in; None for a cursor or a value the filter would reject (its 400 says why).
    """
    if "cursor" in params:
        return None
    cleaned = {name: (params.get(name) or "").strip() for name in AdapterFilter.base_filters}
    if any("\x00" in value for value in cleaned.values()):
        return None
    cleaned["ordering"] = cleaned["ordering"] or DEFAULT_ORDERING
    if cleaned["has_head"] not in ("", "true", "false") or cleaned["ordering"] not in ORDERINGS:
        return None
    return cleaned


def prepared_adapter_list(params, ids: ReferenceIds) -> PreparedPage | None:
    """The page-numbered adapter list of `params` as prepared statements, or None where the
    request needs AdapterFilter itself: a search, a cursor, a value the filter would reject, or a
    new combination of filters once `_MAX_LIST_SHAPES` are prepared."""
    cleaned = clean_list_params(params)
    if cleaned is None or cleaned["q"]:
        return None
    has_head, ordering = cleaned["has_head"], cleaned["ordering"]
    # shape: (lookup, slot name, number of values) per filter; the values go in the slots.
    values, shape, empty = {}, [], False
    for name, lookup in EXACT_FILTERS.items():
        if cleaned[name]:
            values[name] = cleaned[name]
            shape.append((lookup, name, 1))
    for name in REFERENCE_FILTERS:
        if cleaned[name]:
            pks = getattr(ids, name).get(cleaned[name], [])
            empty = empty or not pks
            values.update({f"{name}_{i}": pk for i, pk in enumerate(pks)})
            shape.append((f"{name}_id__in", name, len(pks)))
    if empty:
        return PreparedPage(None, {})
    key = (tuple(shape), has_head, ordering)
    queries = _list_shapes.get(key)
    if queries is None:
        if len(_list_shapes) >= _MAX_LIST_SHAPES:
            return None
        queries = _list_shapes.setdefault(key, _prepare_list_shape(*key))
    return PreparedPage(queries, values)


def _prepare_list_shape(
    shape: tuple[tuple[str, str, int], ...], has_head: str, ordering: str
) -> tuple[PreparedQuery, PreparedQuery]:
    slots = {}
    for lookup, name, n in shape:
        if lookup.endswith("__in"):
            slots.update({f"{name}_{i}": int for i in range(n)})
        else:
            slots[name] = str

    def filtered(**values):
        adapters = active_adapters()
        for lookup, name, n in shape:
            if lookup.endswith("__in"):
                adapters = adapters.filter(**{lookup: [values[f"{name}_{i}"] for i in range(n)]})
            else:
                adapters = adapters.filter(**{lookup: values[name]})
        if has_head:  # true or false: part of the shape, not a slot
            adapters = adapters.filter(has_head=has_head == "true")
        return adapters

    rows = PreparedQuery(
        lambda **v: adapter_rows(filtered(**v)).order_by(*ORDERINGS[ordering]), paged=True, **slots
    )
    # COUNT(*) over one constant group: no column beyond the filters' own, so a partial index
    # on them answers it with an index-only scan.
    count = PreparedQuery(
        lambda **v: (
            filtered(**v)
            .order_by()
            .annotate(_all=Value(1, IntegerField()))
            .values("_all")
            .annotate(count=Count("*"))
            .values("count")
        ),
        **slots,
    )
    return rows, count


# -- search ----------------------------------------------------------------------------------


@dataclass
class IndexedPage:
    """A list answered by the process's search index: the page's positions and the count from
    memory, its items pre-rendered (see `SearchIndex.render_page`): no query at all."""

    index: search_index.SearchIndex
    mask: object
    ordering: str

    def positions(self, offset: int, limit: int):
        return self.index.page_positions(self.mask, self.ordering, offset, limit).tolist()

    def count(self) -> int:
        return int(self.mask.sum())

    def render(self, envelope: dict, positions, api_root: str) -> bytes:
        return self.index.render_page(envelope, positions, api_root)


def indexed_adapter_list(params, ids: ReferenceIds, generation: int) -> IndexedPage | None:
    """A page-numbered list (any filters, a search, an ordering) answered from the process's
    search index, or None where SQL answers: a cursor, a rejected value, a term the index cannot
    match exactly, or an index still being built."""
    cleaned = clean_list_params(params)
    if cleaned is None:
        return None
    index = search_index.index_for(generation)
    if index is None:
        return None
    mask = index.select(cleaned, ids)
    if mask is None:
        return None
    return IndexedPage(index, mask, cleaned["ordering"])


# Up to this many matches, a search page is read by sorting the matches (about sqrt(21 x 100,000)
# for a first page of a 100,000-card catalogue: below it, sorting beats walking the index).
SEARCH_SORT_MATCHES = 2000

# The same order as filters.ORDERINGS by expressions no index provides, so the planner sorts.
_UNINDEXED = {
    "downloads": lambda: F("downloads") + 0,
    "updated_at": lambda: ExpressionWrapper(
        F("updated_at") + Value(timedelta(0), output_field=DurationField()),
        output_field=DateTimeField(),
    ),
}


def sorted_without_index(queryset: QuerySet) -> QuerySet:
    """`queryset` in its own order, by expressions an index cannot serve."""
    order = []
    for field in queryset.query.order_by:
        name = field.lstrip("-") if isinstance(field, str) else None
        if name in _UNINDEXED:
            expression = _UNINDEXED[name]()
            order.append(expression.desc() if field.startswith("-") else expression.asc())
        else:
            order.append(field)
    return queryset.order_by(*order)


# -- reference tables ------------------------------------------------------------------------

_ACTIVE_ADAPTERS = Q(adapters__status=ACTIVE)


def task_rows() -> QuerySet:
    return (
        Task.objects.values("type_id", "task", "displayname", "description")
        .annotate(adapter_count=Count("adapters", filter=_ACTIVE_ADAPTERS))
        .order_by("type_id", "task")
    )


def subtask_rows() -> QuerySet:
    return (
        Subtask.objects.values(
            "task__type_id",
            "task__task",
            "subtask",
            "displayname",
            "description",
            "url",
            "citation",
            "language",
            "hf_datasets_id",
            "metric_name",
            "metric_higher_is_better",
        )
        .annotate(adapter_count=Count("adapters", filter=_ACTIVE_ADAPTERS))
        .order_by("task__type_id", "task__task", "subtask")
    )


def architecture_rows() -> QuerySet:
    return (
        Architecture.objects.values(
            "name", "displayname", "description", "citation", "config", "config_hash"
        )
        .annotate(adapter_count=Count("adapters", filter=_ACTIVE_ADAPTERS))
        .order_by("name")
    )


def model_rows() -> QuerySet:
    """Distinct base models of active adapters, with their model type and adapter count."""
    return (
        active_adapters()
        .values("model_name", "model_type")
        .annotate(adapter_count=Count("id"))
        .order_by("model_name", "model_type")
    )


def sync_runs() -> QuerySet:
    return SyncRun.objects.order_by("-started_at", "-id")
