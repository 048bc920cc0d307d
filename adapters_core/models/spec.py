"""The shape of an architecture table (v2): where generic code finds each part of a model.

One table per architecture (``models/<name>.py``) says, as data:

- its layer stacks (``encoder`` / ``decoder`` / ``layers``), numbered as the reference library
  numbers them: the stacks are counted one after the other, so an encoder-decoder's decoder
  layers continue after the encoder's (``leave_out=[2]`` on a 2+2 layer BART is the first
  decoder layer);
- per stack, the bottleneck adapter locations and how each is attached: ``swap`` (the sub-block
  class computes ``LN(dropout(dense(h)) + x)`` and gets a subclass running the adapters there:
  BERT-style) or ``hook`` (forward hooks around the model's own modules that leave the model's
  residual and norm in place: DistilBERT, BART, GPT-2, T5, Llama...);
- per stack, the linear layers LoRA-style methods wrap (:class:`LinearSpec`);
- where invertible adapters live, how heads pool a sequence, and which head classes exist.

A table is validated when it is defined: a wrong value raises :class:`ArchitectureSpecError`
naming the field. Paths are dotted attribute paths; layer-relative paths start at one element
of the stack's ``path``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import AdapterError


class ArchitectureSpecError(AdapterError):
    """An architecture table has an invalid field (the message names it)."""


LOCATION_KEYS = ("mh_adapter", "output_adapter", "cross_adapter")
ATTACH_MODES = ("swap", "hook")
LINEAR_LOCATIONS = ("selfattn", "crossattn", "intermediate", "output")
ATTENTION_MATRICES = ("q", "k", "v", "o")
POOLING = ("first", "last", "eos")
STACK_NAMES = ("encoder", "decoder", "layers")
KINDS = ("encoder", "decoder", "encoder-decoder")
ENCODER_HEADS = (
    "classification",
    "multilabel_classification",
    "tagging",
    "multiple_choice",
    "question_answering",
    "dependency_parsing",
    "masked_lm",
    "causal_lm",
)
ALL_HEAD_TYPES = (*ENCODER_HEADS, "seq2seq_lm")
DECODER_HEADS = ("classification", "multilabel_classification", "tagging", "causal_lm")
SEQ2SEQ_HEADS = (
    "classification",
    "multilabel_classification",
    "question_answering",
    "seq2seq_lm",
)


def _fail(where: str, message: str) -> None:
    raise ArchitectureSpecError(f"{where}: {message}")


def _check_path(where: str, value: Any, allow_empty: bool = False) -> None:
    if not isinstance(value, str) or (not value and not allow_empty):
        _fail(where, f"expected a dotted attribute path, got {value!r}")
    if value and any(not part.isidentifier() and not part.isdigit() for part in value.split(".")):
        _fail(where, f"{value!r} is not a dotted attribute path")


def _check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(where, f"{value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class LinearSpec:
    """A linear layer that LoRA-style methods (LoRA, IA3, DoRA, VeRA) wrap.

    ``location`` and ``matrix`` are the reference's names for it (LoRA configs select by them:
    ``selfattn_lora`` / ``attn_matrices=["q", "v"]``, ``intermediate_lora``, ``output_lora``).
    A fused projection (GPT-2 ``c_attn``, ModernBERT ``Wqkv``) has ``matrix=None`` and lists in
    ``fused`` the matrices its output concatenates, in order, in equal parts. ``conv1d``: the
    module is a transformers ``Conv1D`` whose weight is stored (in_features, out_features).
    """

    path: str  # relative to one layer of the stack
    location: str  # "selfattn" | "crossattn" | "intermediate" | "output"
    matrix: str | None = None  # "q" | "k" | "v" | "o" for attention; None otherwise
    fused: tuple[str, ...] = ()
    conv1d: bool = False

    def validate(self, where: str) -> None:
        _check_path(f"{where}.path", self.path)
        _check_choice(f"{where}.location", self.location, LINEAR_LOCATIONS)
        attention = self.location in ("selfattn", "crossattn")
        if self.fused:
            if self.matrix is not None:
                _fail(f"{where}.matrix", "a fused projection has matrix=None")
            if not attention:
                _fail(f"{where}.fused", "only attention projections can be fused")
            for m in self.fused:
                _check_choice(f"{where}.fused", m, ATTENTION_MATRICES)
        elif attention:
            _check_choice(f"{where}.matrix", self.matrix, ATTENTION_MATRICES)
        elif self.matrix is not None:
            _fail(f"{where}.matrix", f"{self.location} layers have no matrix name")

    @property
    def matrices(self) -> tuple[str, ...]:
        """The attention matrices this module computes (one, several if fused, none)."""
        if self.fused:
            return self.fused
        return (self.matrix,) if self.matrix else ()


@dataclass(frozen=True)
class AdapterLocation:
    """Where one bottleneck location (``mh_adapter``, ``output_adapter``, ``cross_adapter``) sits.

    ``container`` (relative to a layer) is the module that holds ``adapters.<name>`` and
    ``adapter_fusion_layer.<name>``: this fixes the weight names. With ``attach="hook"`` a
    missing container is created as a new submodule (``attention_adapters``...).

    swap: ``container`` computes ``LN(dropout(dense(h)) + x)`` in ``forward(h, x)``; its class
    is swapped for a subclass running the adapters there (``dense``, ``dropout``,
    ``layer_norm`` are relative to the container).

    hook: a forward hook on ``output`` (its output, or output[0], is the sub-block result ``h``)
    runs the adapters; the residual ``x`` is the first input of ``residual`` ("" = the layer),
    or its output when ``residual_from="output"``; ``layer_norm`` (relative to the layer, or
    None for pre-norm layers) is the post-norm the model applies to ``h + x``.
    The hook returns the adapter output before the model's own residual and norm, which the
    model then applies as it always does.
    """

    key: str
    container: str
    attach: str
    dense: str = "dense"
    dropout: str = "dropout"
    layer_norm: str | None = None
    output: str = ""
    residual: str = ""
    residual_from: str = "input"

    def validate(self, where: str) -> None:
        _check_choice(f"{where}.key", self.key, LOCATION_KEYS)
        _check_path(f"{where}.container", self.container)
        _check_choice(f"{where}.attach", self.attach, ATTACH_MODES)
        if self.layer_norm is not None:
            _check_path(f"{where}.layer_norm", self.layer_norm)
        if self.attach == "swap":
            _check_path(f"{where}.dense", self.dense)
            _check_path(f"{where}.dropout", self.dropout)
            if self.layer_norm is None:
                _fail(f"{where}.layer_norm", "a swapped sub-block needs its LayerNorm")
        else:
            _check_path(f"{where}.output", self.output)
            _check_path(f"{where}.residual", self.residual, allow_empty=True)
            _check_choice(f"{where}.residual_from", self.residual_from, ("input", "output"))


@dataclass(frozen=True)
class LayerStack:
    """One ``nn.ModuleList`` of transformer layers and what adapters find in each layer."""

    name: str  # "encoder" | "decoder" | "layers" (decoder-only and encoder-only models)
    path: str  # relative to the base model
    locations: tuple[AdapterLocation, ...] = ()
    linears: tuple[LinearSpec, ...] = ()

    def validate(self, where: str) -> None:
        _check_choice(f"{where}.name", self.name, STACK_NAMES)
        _check_path(f"{where}.path", self.path)
        keys = [loc.key for loc in self.locations]
        if len(set(keys)) != len(keys):
            _fail(f"{where}.locations", f"duplicate location keys {keys}")
        for i, loc in enumerate(self.locations):
            if not isinstance(loc, AdapterLocation):
                _fail(f"{where}.locations[{i}]", "expected an AdapterLocation")
            loc.validate(f"{where}.locations[{i}]")
        seen: set[tuple[str, str | None]] = set()
        for i, lin in enumerate(self.linears):
            if not isinstance(lin, LinearSpec):
                _fail(f"{where}.linears[{i}]", "expected a LinearSpec")
            lin.validate(f"{where}.linears[{i}]")
            for m in lin.matrices or (None,):
                if (lin.location, m) in seen:
                    _fail(f"{where}.linears[{i}]", f"{lin.location}/{m} is listed twice")
                seen.add((lin.location, m))

    def location(self, key: str) -> AdapterLocation | None:
        return next((loc for loc in self.locations if loc.key == key), None)

    def linear(self, location: str, matrix: str | None = None) -> LinearSpec | None:
        """The linear layer for ``location`` (and attention ``matrix``), fused ones included."""
        for lin in self.linears:
            if lin.location == location and (matrix is None or matrix in lin.matrices):
                return lin
        return None


@dataclass(frozen=True)
class StaticHeadSpec:
    """How a task-specific HF class's head maps onto a flexible head (static -> flex)."""

    head_config: dict[str, Any]
    # static weight key prefix -> flex head Sequential index, in order
    layers: dict[str, int]


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str
    base_model_prefix: str
    base_model_class: str  # "transformers:BertModel"
    stacks: tuple[LayerStack, ...]
    # invertible adapters: forward hook on this module's output (relative to the base model);
    # "<path>:input" = forward pre-hook replacing its first input instead
    embeddings: str
    kind: str = "encoder"  # "encoder" | "decoder" | "encoder-decoder"
    invertible_stack: str | None = None  # the stack the invertible adapter feeds (None: first)
    pooling: str = "first"  # heads on a sequence: first token, last non-padding token, EOS
    hidden_size_attr: str = "hidden_size"
    has_pooler: bool = False
    head_types: tuple[str, ...] = ENCODER_HEADS
    static_heads: dict[str, StaticHeadSpec] = field(default_factory=dict)
    # written through the reference's plugin interface: adapters load into the plain
    # transformers model after init(model); adapter folders carry adapter_interface.json
    plugin: bool = False
    # the plain class with an LM head that generation uses for plugin models
    lm_model_class: str | None = None
    # configs of these reference methods are refused on this architecture, with the reason
    unsupported: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"architecture table {self.model_type!r}"
        if not isinstance(self.model_type, str) or not self.model_type:
            _fail("architecture table", f"model_type: expected a name, got {self.model_type!r}")
        _check_path(f"{where}.base_model_prefix", self.base_model_prefix)
        if not isinstance(self.base_model_class, str) or ":" not in self.base_model_class:
            _fail(
                f"{where}.base_model_class",
                f"expected 'module:Class', got {self.base_model_class!r}",
            )
        if not isinstance(self.stacks, tuple) or not self.stacks:
            _fail(f"{where}.stacks", "expected a non-empty tuple of LayerStack")
        names = [s.name for s in self.stacks]
        if len(set(names)) != len(names):
            _fail(f"{where}.stacks", f"duplicate stack names {names}")
        for i, stack in enumerate(self.stacks):
            if not isinstance(stack, LayerStack):
                _fail(f"{where}.stacks[{i}]", "expected a LayerStack")
            stack.validate(f"{where}.stacks[{i}]")
        emb_path, _, mode = self.embeddings.partition(":")
        _check_path(f"{where}.embeddings", emb_path)
        if mode not in ("", "input"):
            _fail(f"{where}.embeddings", f"suffix {mode!r} is not ':input'")
        _check_choice(f"{where}.kind", self.kind, KINDS)
        if self.invertible_stack is not None and self.invertible_stack not in names:
            _fail(f"{where}.invertible_stack", f"{self.invertible_stack!r} is not a stack name")
        _check_choice(f"{where}.pooling", self.pooling, POOLING)
        for h in self.head_types:
            _check_choice(f"{where}.head_types", h, ALL_HEAD_TYPES)
        if self.kind == "encoder-decoder" and names != ["encoder", "decoder"]:
            _fail(f"{where}.stacks", "an encoder-decoder has stacks 'encoder' then 'decoder'")
        if self.plugin and self.lm_model_class is not None and ":" not in self.lm_model_class:
            _fail(f"{where}.lm_model_class", "expected 'module:Class'")

    # --- lookups ---------------------------------------------------------------------------

    def stack(self, name: str) -> LayerStack:
        for s in self.stacks:
            if s.name == name:
                return s
        raise ArchitectureSpecError(f"{self.model_type}: no layer stack named {name!r}")

    @property
    def layers(self) -> str:
        """Path of the first stack (encoder-only and decoder-only models have one)."""
        return self.stacks[0].path

    @property
    def is_decoder(self) -> bool:
        return self.kind == "decoder"

    @property
    def is_encoder_decoder(self) -> bool:
        return self.kind == "encoder-decoder"


# --- building blocks shared by the tables --------------------------------------------------


def bert_style_locations(
    attention_output: str = "attention.output", ffn_output: str = "output"
) -> tuple[AdapterLocation, ...]:
    """BERT-style sub-blocks ``LN(dropout(dense(h)) + x)``, attached by class swap."""
    return (
        AdapterLocation("mh_adapter", attention_output, "swap", layer_norm="LayerNorm"),
        AdapterLocation("output_adapter", ffn_output, "swap", layer_norm="LayerNorm"),
    )


def qkv_linears(
    prefix: str, names: tuple[str, str, str, str], location: str = "selfattn"
) -> tuple[LinearSpec, ...]:
    """Separate q, k, v, o projections ``<prefix>.<name>``."""
    return tuple(
        LinearSpec(f"{prefix}.{n}" if prefix else n, location, m)
        for n, m in zip(names, ATTENTION_MATRICES, strict=True)
    )


def hooked(
    key: str,
    container: str,
    output: str,
    residual: str,
    layer_norm: str | None = None,
) -> AdapterLocation:
    """A hooked location: adapters on ``output``'s output, residual at ``residual``'s input."""
    return AdapterLocation(
        key,
        container,
        "hook",
        layer_norm=layer_norm,
        output=output,
        residual=residual,
    )
