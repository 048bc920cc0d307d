"""The adapter list answered in each web process's memory: exact counts and pages of any filter
combination, `?q=` search included, in any ordering, mostly in well under a millisecond.

The API's search is a case-insensitive substring match over the text of `AdapterSearchText`
(id, model, author, description) plus task and subtask names. A trigram index in PostgreSQL finds
the matches, but it has to visit every one to count them: 2-4 ms for an ordinary term, 100-300 ms
for one found in most descriptions, and a page needs that count. This index gives the same
answers from arrays in memory, rebuilt from the database whenever the catalogue generation moves
(sync, publish). For 100,000 cards it takes about 120 MB per process (77 MB of it the
pre-rendered list items) and 4.5 s to build.

How a term is found, exactly:

- Every card's search text (as the database lowercases it) is split at whitespace into tokens.
  A term without whitespace occurs in a text if and only if it occurs inside one of its tokens.
- The distinct tokens are joined with NUL into one byte string, and every byte position of it is
  filed under the trigram that starts there (positions sorted, per trigram). A term's occurrences
  are the positions where its trigrams at offsets 0, 3, 6, ... and len-3 all start at the right
  distance: every byte of the term is then compared, so there are no false matches, and none
  span two tokens (NUL is in no term).
- Tokens map to the cards that contain them (a CSR array); the orderings are ranks that the
  database computed with its own collation, so pages come out in the order SQL would give.

The other filters compare columns held as arrays (exact values as codes, reference ids, the
head flag). Each row's list item is rendered once per build, so a page is spliced from bytes in
memory: no query, no COUNT, no serializer. A term with whitespace or NUL, a cursor, or a value no
filter accepts goes to the SQL path.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from time import perf_counter

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from rest_framework.renderers import JSONRenderer

from hub_server.catalog.filters import (
    EXACT_FILTERS,
    MIN_SUBSTRING,
    ORDERINGS,
    REFERENCE_FILTERS,
    AdapterSearchText,
    ReferenceIds,
    matching_names,
    normalise_term,
)

log = logging.getLogger(__name__)

# Each pair of opposite orderings is one rank read backwards (ORDERINGS reverses the tie-break too).
_RANKED = ("-downloads", "-updated", "name")
_OPPOSITE = {"downloads": "-downloads", "updated": "-updated", "-name": "name"}


@dataclass(frozen=True)
class SearchIndex:
    generation: int
    ids: np.ndarray  # adapter primary keys, one per row
    exact: dict  # filter name -> (codes per row, {value: code})
    reference: dict  # filter name -> ids per row (task_id, ...)
    has_head: np.ndarray
    ranks: dict  # ordering -> rank per row (0 = first)
    vocabulary: bytes  # the distinct tokens, NUL-separated
    token_starts: np.ndarray  # byte offset of each token in `vocabulary`
    trigrams: np.ndarray  # sorted distinct trigram codes
    trigram_bounds: np.ndarray  # positions of trigram i: positions[bounds[i]:bounds[i + 1]]
    positions: np.ndarray
    posting_bounds: np.ndarray  # rows of token i: postings[bounds[i]:bounds[i + 1]]
    postings: np.ndarray
    rendered: list  # each row's list item as the API renders it, API root as a placeholder
    built: float = 0.0  # time.monotonic() when its rows were read

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        arrays = [self.ids, self.has_head, self.token_starts, self.trigrams, self.positions]
        arrays += [self.trigram_bounds, self.posting_bounds, self.postings]
        arrays += [codes for codes, _ in self.exact.values()] + list(self.reference.values())
        arrays += list(self.ranks.values())
        return len(self.vocabulary) + sum(a.nbytes for a in arrays) + sum(map(len, self.rendered))

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, generation: int) -> SearchIndex:
        """The index of every active adapter as the database holds it now."""
        from hub_server.catalog.selectors import ADAPTER_LIST_FIELDS, adapter_rows

        built = time.monotonic()
        rank_columns = {
            f"rank_{i}": Window(RowNumber(), order_by=[_order(f) for f in ORDERINGS[ordering]])
            for i, ordering in enumerate(_RANKED)
        }
        reference_columns = {name: f"{name}_id" for name in REFERENCE_FILTERS}
        fields = dict.fromkeys(
            [*ADAPTER_LIST_FIELDS, "search_text", *reference_columns.values(), *rank_columns]
        )
        list_rows = list(
            adapter_rows()
            .annotate(search_text=AdapterSearchText(), **rank_columns)
            .values(*fields)
            .order_by("id")
        )
        n = len(list_rows)
        columns = {f: [row[f] for row in list_rows] for f in fields}
        rendered = _render_items(list_rows)
        del list_rows
        exact = {}
        for name, column in EXACT_FILTERS.items():
            values: dict[str, int] = {}
            codes = np.fromiter(
                (values.setdefault(v, len(values)) for v in columns[column]), np.int32, count=n
            )
            exact[name] = (codes, values)
        reference = {
            name: np.array(columns[column], dtype=np.int64)
            for name, column in reference_columns.items()
        }
        ranks = {
            ordering: np.array(columns[column], dtype=np.int32) - 1
            for ordering, column in zip(_RANKED, rank_columns, strict=True)
        }
        for ordering, ranked in _OPPOSITE.items():
            ranks[ordering] = (n - 1) - ranks[ranked]

        # Tokens -> rows (the loops stay in C: this is most of the build's time).
        token_sets = [set(text.split()) for text in columns["search_text"]]
        per_row = np.fromiter(map(len, token_sets), dtype=np.int64, count=n)
        occurrences = list(itertools.chain.from_iterable(token_sets))
        number = {token: i for i, token in enumerate(dict.fromkeys(occurrences))}
        tokens = np.fromiter(
            map(number.__getitem__, occurrences), dtype=np.int32, count=len(occurrences)
        )
        order = np.argsort(tokens, kind="stable")  # rows stay ascending within a token
        postings = np.repeat(np.arange(n, dtype=np.int32), per_row)[order]
        posting_bounds = np.searchsorted(tokens[order], np.arange(len(number) + 1))

        # The vocabulary and its positional trigrams.
        encoded = [token.encode() for token in number]
        vocabulary = b"\x00".join(encoded)
        lengths = np.fromiter((len(t) + 1 for t in encoded), dtype=np.int64, count=len(encoded))
        token_starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if encoded else lengths
        data = np.frombuffer(vocabulary, dtype=np.uint8).astype(np.uint32)
        codes = (data[:-2] << 16) | (data[1:-1] << 8) | data[2:]
        positions = np.argsort(codes, kind="stable").astype(np.int32)
        ordered = codes[positions]
        starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1  # sorted: no second sort
        trigrams = ordered[np.concatenate(([0], starts))] if len(ordered) else ordered
        trigram_bounds = np.concatenate(([0], starts, [len(ordered)]))[: len(trigrams) + 1]
        return cls(
            generation=generation,
            ids=np.array(columns["id"], dtype=np.int64),
            exact=exact,
            reference=reference,
            has_head=np.array(columns["has_head"], dtype=bool),
            ranks=ranks,
            vocabulary=vocabulary,
            token_starts=token_starts,
            trigrams=trigrams,
            trigram_bounds=trigram_bounds,
            positions=positions,
            posting_bounds=posting_bounds,
            postings=postings,
            rendered=rendered,
            built=built,
        )

    # -- reading -------------------------------------------------------------------------------

    def select(self, cleaned: dict, ids: ReferenceIds) -> np.ndarray | None:
        """Rows (a boolean mask) matching the cleaned list filters, `q` included; None where the
        term is one the index cannot answer exactly."""
        mask = np.ones(self.size, dtype=bool)
        for name in EXACT_FILTERS:
            if value := cleaned.get(name):
                codes, values = self.exact[name]
                code = values.get(value)
                if code is None:
                    return np.zeros(self.size, dtype=bool)
                mask &= codes == code
        for name in REFERENCE_FILTERS:
            if value := cleaned.get(name):
                mask &= np.isin(self.reference[name], getattr(ids, name).get(value, []))
        if has_head := cleaned.get("has_head"):
            mask &= self.has_head if has_head == "true" else ~self.has_head
        term = normalise_term(cleaned.get("q") or "")
        if term:
            found = self.matching(term, ids)
            if found is None:
                return None
            mask &= found
        return mask

    def matching(self, term: str, ids: ReferenceIds) -> np.ndarray | None:
        """The rows `search_adapters` would find for a normalised, non-empty term."""
        found = np.zeros(self.size, dtype=bool)
        if len(term) < MIN_SUBSTRING:
            exact = lambda name: name == term  # noqa: E731
            for column in ("org", "model_type"):
                codes, values = self.exact[column]
                if (code := values.get(term)) is not None:
                    found |= codes == code
        else:
            if "\x00" in term or any(c.isspace() for c in term):
                return None
            found[self._rows_containing(term.encode())] = True
            exact = lambda name: term in name  # noqa: E731
        for name in ("task", "subtask"):
            if pks := matching_names(getattr(ids, name), exact):
                found |= np.isin(self.reference[name], pks)
        return found

    def _rows_containing(self, term: bytes) -> np.ndarray:
        offsets = list(range(0, len(term) - 2, 3))
        if offsets[-1] != len(term) - 3:
            offsets.append(len(term) - 3)
        lists = []
        for k in offsets:
            code = (term[k] << 16) | (term[k + 1] << 8) | term[k + 2]
            i = int(np.searchsorted(self.trigrams, code))
            if i == len(self.trigrams) or self.trigrams[i] != code:
                return np.empty(0, dtype=np.int32)
            lists.append((k, self.positions[self.trigram_bounds[i] : self.trigram_bounds[i + 1]]))
        lists.sort(key=lambda item: len(item[1]))
        k0, first = lists[0]
        starts = first - k0
        for k, positions in lists[1:]:
            wanted = starts + k
            at = np.minimum(np.searchsorted(positions, wanted), len(positions) - 1)
            starts = starts[positions[at] == wanted]
            if not len(starts):
                return np.empty(0, dtype=np.int32)
        tokens = np.unique(np.searchsorted(self.token_starts, starts, side="right") - 1)
        lo, hi = self.posting_bounds[tokens], self.posting_bounds[tokens + 1]
        lengths = hi - lo
        shift = np.repeat(lo - (np.cumsum(lengths) - lengths), lengths)
        return self.postings[shift + np.arange(lengths.sum())]

    def page_positions(
        self, mask: np.ndarray, ordering: str, offset: int, limit: int
    ) -> np.ndarray:
        """Rows [offset, offset + limit) of `mask` in `ordering`, as positions in the index."""
        rows = np.flatnonzero(mask)
        ranks = self.ranks[ordering][rows]
        end = offset + limit
        if end < len(rows):
            head = np.argpartition(ranks, end - 1)[:end]
            chosen = head[np.argsort(ranks[head])]
        else:
            chosen = np.argsort(ranks)
        return rows[chosen[offset:end]]

    def page(self, mask: np.ndarray, ordering: str, offset: int, limit: int) -> list[int]:
        """Adapter ids of rows [offset, offset + limit) of `mask` in `ordering`."""
        return self.ids[self.page_positions(mask, ordering, offset, limit)].tolist()

    def render_page(self, envelope: dict, positions, api_root: str) -> bytes:
        """The JSON of a list page: `envelope` (count, next, previous, results=[]) as DRF renders
        it, with the rendered items of `positions` spliced into its (last) `results`."""
        head = _JSON.render(envelope)
        if not head.endswith(b"[]}"):
            raise ValueError("the envelope must end with an empty results list")
        items = b",".join([self.rendered[p] for p in positions])
        items = items.replace(_ROOT_RENDERED, _JSON.render(api_root)[1:-1])
        return head[:-2] + items + b"]}"


# The API root in pre-rendered items, replaced per request: NUL is in no database text, and
# JSON escapes it, so these bytes occur nowhere else in an item.
_ROOT_PLACEHOLDER = "\x00api-root\x00"
_JSON = JSONRenderer()
_ROOT_RENDERED = _JSON.render(_ROOT_PLACEHOLDER)[1:-1]


def _render_items(rows: list[dict]) -> list[bytes]:
    from hub_server.api.serializers import AdapterListItemSerializer

    item = AdapterListItemSerializer(context={"api_root": _ROOT_PLACEHOLDER}).to_representation
    return [_JSON.render(item(row)) for row in rows]


def _order(field: str):
    return F(field[1:]).desc() if field.startswith("-") else F(field).asc()


# -- the process's index -------------------------------------------------------------------------

_lock = threading.Lock()
_current: SearchIndex | None = None
_building: int | None = None  # the generation a background build is reading


def index_for(generation: int) -> SearchIndex | None:
    """The index of `generation`, or None while it is being built.

    Staleness: an index is of one catalogue generation, so a catalogue change is seen as soon as
    the caller's generation moves (catalog.cache: within HUB_CATALOG_RECHECK_SECONDS). Download
    counts and the -downloads ranks move without a new generation: an index older than
    HUB_SEARCH_INDEX_MAX_AGE (default HUB_RESPONSE_MAX_AGE) is rebuilt, so they are at most that
    old (plus one background build).

    The first index of a process, and any index of a small catalogue
    (HUB_SEARCH_INDEX_INLINE_MAX adapters), is built within the request; a large one is rebuilt
    in a thread, while the SQL path answers for a new generation and the aged index of the same
    generation keeps answering for one past its age. A failed build logs and leaves SQL to
    answer; the next request tries again."""
    if not settings.HUB_SEARCH_INDEX:
        return None
    index = _current
    same = index is not None and index.generation == generation
    if same and time.monotonic() - index.built < settings.HUB_SEARCH_INDEX_MAX_AGE:
        return index
    if index is None or index.size <= settings.HUB_SEARCH_INDEX_INLINE_MAX:
        return _install(SearchIndex.build(generation))
    global _building
    with _lock:
        if _building != generation:
            _building = generation
            threading.Thread(
                target=_build_in_background, args=(generation,), name="search-index", daemon=True
            ).start()
    return index if same else None


def _install(index: SearchIndex) -> SearchIndex:
    global _current
    with _lock:
        if _current is None or (index.generation, index.built) >= (
            _current.generation,
            _current.built,
        ):
            _current = index
    return index


def _build_in_background(generation: int) -> None:
    global _building
    try:
        started = perf_counter()
        index = _install(SearchIndex.build(generation))
        log.info(
            "search index of %d adapters built in %.1f s (%.0f MB)",
            index.size,
            perf_counter() - started,
            index.nbytes / 1e6,
        )
    except Exception:  # noqa: BLE001 - the SQL path answers; the next request tries again
        log.exception("could not build the search index")
    finally:
        connection.close()  # this thread's own connection
        with _lock:
            if _building == generation:
                _building = None


def forget() -> None:
    global _current
    with _lock:
        _current = None
