"""FilterSets of the REST API: the list's filters, search and ordering, and the reference tables'.

The adapter filters are also the facets: `/api/v1/facets/` counts, per filter field, the values
`AdapterFilter` would accept, under every other filter of the request.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

import django_filters as filters
from django.db.models import F, Func, Q, TextField

from hub_server.catalog.cache import generation
from hub_server.catalog.models import Adapter, Architecture, Subtask, Task

# ordering parameter -> ORDER BY; every ordering ends in the primary key so pages are stable, in
# the direction that lets PostgreSQL walk the composite indexes (status, -downloads, id) and
# (status, -updated_at, id) forwards or backwards.
ORDERINGS = {
    "-downloads": ("-downloads", "id"),
    "downloads": ("downloads", "-id"),
    "-updated": ("-updated_at", "id"),
    "updated": ("updated_at", "-id"),
    "name": ("name", "id"),
    "-name": ("-name", "-id"),
}
DEFAULT_ORDERING = "-downloads"


class _Joined(Func):
    template = "%(expressions)s"
    output_field = TextField()


class AdapterSearchText(Func):
    """lower(org || '/' || name || ' ' || model_name || ' ' || author || ' ' || description).

    Written exactly as the trigram index `adapter_search_trgm` (catalog migration 0002), so a
    `LIKE '%term%'` on it is answered from that index on PostgreSQL.
    """

    template = "lower(%(expressions)s)"
    arg_joiner = " || ' ' || "
    output_field = TextField()

    def __init__(self):
        org_name = _Joined(F("org"), F("name"), arg_joiner=" || '/' || ")
        super().__init__(org_name, F("model_name"), F("author"), F("description"))


@dataclass
class ReferenceIds:
    """Primary keys of the small reference tables by name (a name may have several: `wiki`)."""

    task: dict[str, list[int]]
    subtask: dict[str, list[int]]
    architecture: dict[str, list[int]]
    generation: int
    loaded: float


_reference_ids: ReferenceIds | None = None
REFERENCE_IDS_TTL = 60.0


def reference_ids(catalog_generation: int | None = None) -> ReferenceIds:
    """Name -> ids of tasks, subtasks and architectures, kept per process for one catalogue
    generation (and at most a minute, should the cache lose its counter).

    Filters compare `task_id IN (<ids>)` instead of joining on the name: PostgreSQL then knows
    the values when planning, and walks an index in list order instead of sorting a join."""
    global _reference_ids
    if catalog_generation is None:
        catalog_generation = generation()
    now = time.monotonic()
    ids = _reference_ids
    if ids is None or ids.generation != catalog_generation or now - ids.loaded > REFERENCE_IDS_TTL:
        by_name = {}
        for kind, rows in (
            ("task", Task.objects.values_list("task", "pk")),
            ("subtask", Subtask.objects.values_list("subtask", "pk")),
            ("architecture", Architecture.objects.values_list("name", "pk")),
        ):
            by_name[kind] = defaultdict(list)
            for name, pk in rows:
                by_name[kind][name].append(pk)
        ids = _reference_ids = ReferenceIds(**by_name, generation=catalog_generation, loaded=now)
    return ids


def forget_reference_ids() -> None:
    global _reference_ids
    _reference_ids = None


MIN_SUBSTRING = 3  # the shortest term a trigram index can look up


def matching_names(names: dict[str, list[int]], test) -> list[int]:
    """Primary keys of the reference rows whose lowercased name passes `test`."""
    return [pk for name, pks in names.items() if test(name.lower()) for pk in pks]


def normalise_term(term: str) -> str:
    """A search term as it is matched: trimmed, without a leading @ (an id), lowercase."""
    return term.strip().lstrip("@").lower()


def search_adapters(queryset, term: str, ids: ReferenceIds | None = None):
    """Case-insensitive substring search over id, model, author, description, task and subtask
    (a term under 3 characters: an exact task, subtask, organisation or model type).

    `search_index.SearchIndex.matching` answers the same from memory; change both together."""
    term = normalise_term(term)
    if not term:
        return queryset
    # Task and subtask names live in small tables: matched against their ids in memory, so the
    # OR below is a union of index scans rather than a join evaluated on every adapter row.
    ids = ids or reference_ids()
    if len(term) < MIN_SUBSTRING:
        # Two letters occur in nearly every description and no trigram index can find them:
        # a short term is an exact task, subtask, organisation or model type (`en`, `ar`, `t5`).
        return queryset.filter(
            Q(task_id__in=matching_names(ids.task, lambda name: name == term))
            | Q(subtask_id__in=matching_names(ids.subtask, lambda name: name == term))
            | Q(org=term)
            | Q(model_type=term)
        )
    task_ids = matching_names(ids.task, lambda name: term in name)
    subtask_ids = matching_names(ids.subtask, lambda name: term in name)
    match = Q(search_text__contains=term)
    if task_ids:
        match |= Q(task_id__in=task_ids)
    if subtask_ids:
        match |= Q(subtask_id__in=subtask_ids)
    return queryset.alias(search_text=AdapterSearchText()).filter(match)


class AdapterFilter(filters.FilterSet):
    type = filters.CharFilter(field_name="type_id", help_text="adapter type, e.g. text_task")
    task = filters.CharFilter(method="filter_reference", help_text="task id, e.g. sentiment")
    subtask = filters.CharFilter(method="filter_reference", help_text="subtask id, e.g. sst-2")
    model_type = filters.CharFilter(help_text="e.g. bert")
    model_name = filters.CharFilter(help_text="e.g. bert-base-uncased")
    architecture = filters.CharFilter(
        method="filter_reference", help_text="config.using, e.g. pfeiffer"
    )
    config_id = filters.CharFilter(field_name="config_hash", help_text="16-hex config hash")
    org = filters.CharFilter(help_text="organisation (the folder of the card)")
    has_head = filters.ChoiceFilter(
        method="filter_has_head",
        choices=[("true", "true"), ("false", "false")],
        help_text="true: the adapter ships a prediction head",
    )
    q = filters.CharFilter(
        method="filter_q",
        help_text="search over id, task, subtask, model, description and author",
    )
    ordering = filters.ChoiceFilter(
        method="filter_ordering",
        choices=[(key, key) for key in ORDERINGS],
        empty_label=None,
        help_text=f"sort order (default {DEFAULT_ORDERING})",
    )

    # The fields counted by /api/v1/facets/: facet name -> the lookup each groups by.
    FACETS = {
        "type": "type_id",
        "task": "task__task",
        "subtask": "subtask__subtask",
        "model_type": "model_type",
        "model_name": "model_name",
        "architecture": "architecture__name",
        "config_id": "config_hash",
        "org": "org",
        "has_head": "has_head",
    }

    class Meta:
        model = Adapter
        fields: list[str] = []

    def get_form_class(self):
        # django-filter builds a new form class per request; the filters never change.
        cls = type(self)
        form_class = cls.__dict__.get("_form_class_cache")
        if form_class is None:
            form_class = cls._form_class_cache = super().get_form_class()
        return form_class

    @cached_property
    def reference_ids(self) -> ReferenceIds:
        # The caching wrapper has read the catalogue generation already: reuse it.
        return reference_ids(getattr(self.request, "catalog_generation", None))

    def filter_reference(self, queryset, name, value):
        ids = getattr(self.reference_ids, name).get(value, [])
        return queryset.filter(**{f"{name}_id__in": ids})

    def filter_q(self, queryset, name, value):
        return search_adapters(queryset, value, self.reference_ids)

    def filter_has_head(self, queryset, name, value):
        return queryset.filter(has_head=value == "true")

    def filter_ordering(self, queryset, name, value):
        return queryset.order_by(*ORDERINGS[value])

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if not self.form.cleaned_data.get("ordering"):
            queryset = queryset.order_by(*ORDERINGS[DEFAULT_ORDERING])
        return queryset


# AdapterFilter's own vocabulary, read from it: filters that are one exact column match (name ->
# column), and the filters on the small task/subtask/architecture tables (names mapped to ids in
# memory). The prepared list and the search index both answer exactly these.
EXACT_FILTERS = {
    name: f.field_name
    for name, f in AdapterFilter.base_filters.items()
    if isinstance(f, filters.CharFilter) and f.method is None
}
REFERENCE_FILTERS = tuple(
    name for name, f in AdapterFilter.base_filters.items() if f.method == "filter_reference"
)


class TaskFilter(filters.FilterSet):
    type = filters.CharFilter(field_name="type_id", help_text="adapter type, e.g. text_lang")

    class Meta:
        model = Task
        fields: list[str] = []


class SubtaskFilter(filters.FilterSet):
    type = filters.CharFilter(field_name="task__type_id", help_text="adapter type")
    task = filters.CharFilter(field_name="task__task", help_text="task id, e.g. sentiment")
    language = filters.CharFilter(help_text="language code, e.g. en")

    class Meta:
        model = Subtask
        fields: list[str] = []


class ArchitectureFilter(filters.FilterSet):
    class Meta:
        model = Architecture
        fields: list[str] = []


class ModelFilter(filters.FilterSet):
    model_type = filters.CharFilter(help_text="e.g. bert")

    class Meta:
        model = Adapter
        fields: list[str] = []
