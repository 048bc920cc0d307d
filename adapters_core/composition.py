"""Composition blocks: tiny value objects that say how several adapters combine in a layer.

A setup is validated once when it is activated (:func:`parse_composition`); methods declare
which blocks they support (``supported_compositions``) and are checked against them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Union

from .errors import CompositionError

SetupLike = Union["AdapterCompositionBlock", str, Sequence[Any]]


class AdapterCompositionBlock(Sequence):
    """Base class of all blocks; children are adapter names or nested blocks."""

    def __init__(self, *children: AdapterCompositionBlock | str) -> None:
        if not children:
            raise CompositionError(f"{type(self).__name__} needs at least one child.")
        self.children: list[AdapterCompositionBlock | str] = [
            parse_composition(c, level=None) for c in children
        ]

    def __getitem__(self, key: int) -> Any:
        return self.children[key]

    def __len__(self) -> int:
        return len(self.children)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.children)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and self.children == other.children  # type: ignore[attr-defined]
            and self._kwargs() == other._kwargs()  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))

    def __repr__(self) -> str:
        inner = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in self.children)
        extra = "".join(f", {k}={v!r}" for k, v in self._kwargs().items())
        return f"{type(self).__name__}[{inner}{extra}]"

    def _kwargs(self) -> dict[str, Any]:
        return {}

    def first(self) -> str:
        c = self.children[0]
        return c if isinstance(c, str) else c.first()

    def last(self) -> str:
        c = self.children[-1]
        return c if isinstance(c, str) else c.last()

    @property
    def parallel_channels(self) -> int:
        return max(c.parallel_channels if not isinstance(c, str) else 1 for c in self.children)

    def flatten(self) -> set[str]:
        return set(
            itertools.chain.from_iterable(
                [c] if isinstance(c, str) else c.flatten() for c in self.children
            )
        )

    def flatten_ordered(self) -> list[str]:
        """All adapter names in order of first appearance."""
        out: list[str] = []
        for c in self.children:
            for n in [c] if isinstance(c, str) else c.flatten_ordered():
                if n not in out:
                    out.append(n)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Serialize as in ``adapter_setup.json`` of the reference library."""
        return {
            "type": type(self).__name__,
            "children": [
                {"type": "single", "children": [c]} if isinstance(c, str) else c.to_dict()
                for c in self.children
            ],
            "kwargs": self._kwargs(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> AdapterCompositionBlock | str:
        """Inverse of :meth:`to_dict`; also accepts a plain adapter name."""
        if isinstance(data, str):
            return data
        kind = data.get("type")
        children = data.get("children", [])
        if kind == "single":
            return children[0]
        block_cls = BLOCKS_BY_NAME.get(str(kind))
        if block_cls is None:
            raise CompositionError(f"Unknown composition block type {kind!r}.")
        return block_cls(*[cls.from_dict(c) for c in children], **data.get("kwargs", {}))


class Parallel(AdapterCompositionBlock):
    """Replicate the input and run each child (and its head) on its own copy."""

    @property
    def parallel_channels(self) -> int:
        return len(self.children)


class Stack(AdapterCompositionBlock):
    """Apply the children one after another in each layer."""


class Fuse(AdapterCompositionBlock):
    """AdapterFusion over the outputs of the children (needs a fusion layer)."""

    def __init__(self, *children: AdapterCompositionBlock | str, name: str | None = None) -> None:
        super().__init__(*children)
        self._name = name

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        return ",".join(c if isinstance(c, str) else c.last() for c in self.children)

    def _kwargs(self) -> dict[str, Any]:
        return {"name": self._name} if self._name else {}


class Split(AdapterCompositionBlock):
    """Split the sequence positions between the children."""

    def __init__(self, *children: AdapterCompositionBlock | str, splits: list[int] | int) -> None:
        super().__init__(*children)
        self.splits = list(splits) if isinstance(splits, list | tuple) else [splits] * len(children)
        if len(self.splits) != len(self.children):
            raise CompositionError("Split needs one split size per child.")

    def _kwargs(self) -> dict[str, Any]:
        return {"splits": self.splits}


class BatchSplit(AdapterCompositionBlock):
    """Split the batch between the children."""

    def __init__(
        self, *children: AdapterCompositionBlock | str, batch_sizes: list[int] | int
    ) -> None:
        super().__init__(*children)
        self.batch_sizes = (
            list(batch_sizes)
            if isinstance(batch_sizes, list | tuple)
            else [batch_sizes] * len(children)
        )
        if len(self.batch_sizes) != len(self.children):
            raise CompositionError("BatchSplit needs one batch size per child.")

    def _kwargs(self) -> dict[str, Any]:
        return {"batch_sizes": self.batch_sizes}


class Average(AdapterCompositionBlock):
    """Weighted average of the children's outputs (weights normalized to sum 1 by default)."""

    def __init__(
        self,
        *children: AdapterCompositionBlock | str,
        weights: list[float] | None = None,
        normalize_weights: bool = True,
    ) -> None:
        super().__init__(*children)
        if weights is None:
            self.weights = [1 / len(children)] * len(children)
        else:
            if len(weights) != len(self.children):
                raise CompositionError("Average needs one weight per child.")
            total = sum(weights) if normalize_weights else 1.0
            if normalize_weights and total == 0:
                raise CompositionError("Average weights sum to zero.")
            self.weights = [w / total for w in weights]

    def _kwargs(self) -> dict[str, Any]:
        return {"weights": self.weights, "normalize_weights": False}


class MultiTask(AdapterCompositionBlock):
    """Each example goes to one child, chosen by the forward's ``task_ids`` (MTL-LoRA)."""


BLOCKS_BY_NAME: dict[str, type[AdapterCompositionBlock]] = {
    b.__name__: b for b in (Stack, Fuse, Split, Parallel, BatchSplit, Average, MultiTask)
}

# Which children each block may hold (the reference library's ALLOWED_NESTINGS).
ALLOWED_NESTINGS: dict[type, tuple[type, ...]] = {
    Stack: (str, Fuse, Split, Parallel, BatchSplit, Average),
    Fuse: (str, Stack),
    Split: (str, Split, Stack, BatchSplit, Average),
    Parallel: (str, Stack, BatchSplit, Average),
    BatchSplit: (str, Stack, Split, BatchSplit, Average),
    Average: (str, Stack, Split, BatchSplit),
    MultiTask: (str, Stack, Average, Fuse),
}
ALLOWED_NESTINGS[Stack] += (MultiTask,)

# Blocks only some architectures support.
SUPPORTED_MODELS: dict[type, tuple[str, ...]] = {
    Parallel: ("albert", "bert", "roberta", "distilbert", "deberta-v2", "deberta", "bart")
    + ("mbart", "mt5", "plbart", "gpt2", "gptj", "t5", "vit", "xlm-roberta")
    + ("bert-generation", "llama", "mistral", "electra", "whisper", "xmod"),
}


def validate_composition(
    setup: AdapterCompositionBlock | str, level: int = 0, model_type: str | None = None
) -> None:
    """Raise :class:`CompositionError` for nestings the reference library rejects."""
    if level > 1 and not isinstance(setup, Stack | str):
        raise CompositionError(
            f"Adapter setup is too deep: cannot have {setup} at level {level} "
            "(below level 1 only Stack or a single adapter is allowed)."
        )
    if isinstance(setup, str):
        return
    block = type(setup)
    if model_type and block in SUPPORTED_MODELS and model_type not in SUPPORTED_MODELS[block]:
        raise CompositionError(
            f"Models of type {model_type} don't support composition with {block.__name__}."
        )
    allowed = ALLOWED_NESTINGS[block]
    for child in setup:
        if not isinstance(child, str) and type(child) not in allowed:
            names = ", ".join("str" if t is str else t.__name__ for t in allowed)
            raise CompositionError(
                f"Cannot nest {type(child).__name__} inside {block.__name__}; "
                f"allowed children: {names}."
            )
        validate_composition(child, level=level + 1, model_type=model_type)


def parse_composition(
    setup: SetupLike | None, level: int | None = 0, model_type: str | None = None
) -> AdapterCompositionBlock | str | None:
    """Turn user input into a block: a string is one adapter (``Stack(name)`` at the top),
    a list a Stack, a list nested in a list a Fuse. ``level=None`` skips validation."""
    if setup is None or (isinstance(setup, str | list | tuple) and len(setup) == 0):
        return None
    if isinstance(setup, AdapterCompositionBlock):
        if level is not None:
            validate_composition(setup, level=level, model_type=model_type)
        return setup
    if isinstance(setup, str):
        return Stack(setup) if level == 0 else setup
    if isinstance(setup, list | tuple):
        block_cls: type[AdapterCompositionBlock] = Fuse if level == 1 else Stack
        next_level = level + 1 if level is not None else None
        block = block_cls(*[parse_composition(c, next_level) for c in setup])
        if level is not None:
            validate_composition(block, level=level, model_type=model_type)
        return block
    raise CompositionError(f"Cannot interpret {setup!r} as an adapter setup.")


def parse_heads_from_composition(
    setup: AdapterCompositionBlock | str | None, reference_heads: Sequence[str] | None = None
) -> str | list[str] | BatchSplit | None:
    """The head(s) implied by an adapter setup, as the reference library derives them."""
    final = setup
    if isinstance(final, Stack):
        final = final.children[-1]
    if isinstance(final, str):
        return final if reference_heads is None or final in reference_heads else None
    if isinstance(final, Parallel):
        return [c if isinstance(c, str) else c.last() for c in final.children]
    if isinstance(final, BatchSplit):
        heads = [c if isinstance(c, str) else c.last() for c in final.children]
        if reference_heads is not None and not all(h in reference_heads for h in heads):
            raise CompositionError(f"Missing a head for the BatchSplit setup; expected {heads}.")
        return BatchSplit(*heads, batch_sizes=final.batch_sizes)
    return None


def check_supported(setup: AdapterCompositionBlock | str, supported: Sequence[type]) -> None:
    """Raise if ``setup`` uses a block outside ``supported`` (a method's declared blocks)."""
    if isinstance(setup, str):
        return
    if type(setup) not in supported:
        names = ", ".join(t.__name__ for t in supported)
        raise CompositionError(
            f"{type(setup).__name__} composition is not supported by this adapter method "
            f"(supported: {names})."
        )
    for child in setup:
        check_supported(child, supported)


__all__ = [
    "AdapterCompositionBlock",
    "Stack",
    "Fuse",
    "Split",
    "BatchSplit",
    "Parallel",
    "Average",
    "MultiTask",
    "ALLOWED_NESTINGS",
    "SUPPORTED_MODELS",
    "parse_composition",
    "validate_composition",
    "parse_heads_from_composition",
    "check_supported",
]
