"""What every adapter method family provides to the generic model code.

How a method plugs in
---------------------
A method (bottleneck, invertible; LoRA, IA3, DoRA, VeRA; prefix tuning, ReFT... later) is one
:class:`AdapterMethod` subclass, instantiated once in ``METHODS`` (``methods/__init__.py``).
``model_mixin.py`` knows no method by name: for every model it calls

1. ``attach(model)`` once, when adapter support is added to a model (class swaps, hooks,
   wrapping the linear layers the architecture table lists: :func:`iter_linears`);
2. per ``add_adapter``: ``handles(config)`` (does this method build modules for one part of
   the config?), then ``validate(model, name, config)`` for every method that handles it,
   before anything is built (raise :class:`AdapterConfigError` naming the problem, e.g. a
   config the architecture cannot take), then ``add_adapter(model, name, config)``;
   new modules are placed with :func:`place_like` on the device and dtype of the module they
   sit in (never move other adapters);
3. ``adapter_modules(model, name)``: ``{"<layer_idx>.<location>": module}``, what
   ``get_adapter``, ``adapter_to`` and ``adapter_summary`` report;
4. ``delete_adapter``; ``add_fusion`` / ``delete_fusion`` for methods supporting ``Fuse``;
5. ``validate_setup(model, setup)`` when a setup is activated (the default checks the
   composition blocks against ``supported_compositions``);
6. ``merge(model, name)`` / ``unmerge(model, name)`` (``merge_adapter`` / ``reset_adapter``);
   the default refuses with a clear error;
7. ``pre_save(model, name, state)`` right before the adapter's weights are written (e.g. write
   a tensor shared by several layers once) and ``pre_load(model, name, state)`` right after a
   file is read, before the strict copy into the model (the inverse).

``model`` is a :class:`ModelHandle`: the base model, its architecture table and the shared
adapter state. Layers are numbered as the reference library numbers them
(:func:`iter_layers`). Weight names are module paths, so a method's modules must sit where the
reference puts them (``...<linear>.loras.<name>.lora_A``); the key markers per method are in
``weights.ADAPTER_KEY_MARKERS``. Per-forward data (the active setup, prefix states, lengths) is
on :class:`adapters_core.context.ForwardContext`, opened on every forward of a model with
adapters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn
from transformers.activations import get_activation

from ..composition import AdapterCompositionBlock, check_supported
from ..errors import AdapterError, CompositionError

if TYPE_CHECKING:
    from ..configuration import AdapterConfig
    from ..model_mixin import ModelAdaptersConfig
    from ..models.spec import ArchitectureSpec, LayerStack, LinearSpec


class Activation(nn.Module):
    """Activation by name, as the reference library resolves it (transformers' ACT2FN)."""

    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.name = name
        if name is None:
            self.fn: Any = nn.Identity()
        elif name.lower() == "leakyrelu":
            self.fn = nn.functional.leaky_relu
        else:
            self.fn = get_activation(name.lower())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass
class ModelHandle:
    """What a method sees of a model: the base model, its table, the shared adapter state."""

    base_model: nn.Module
    spec: ArchitectureSpec
    state: ModelAdaptersConfig

    @property
    def hidden_size(self) -> int:
        return int(getattr(self.base_model.config, self.spec.hidden_size_attr))


class LayerSite(NamedTuple):
    idx: int  # the reference's layer number (stacks counted one after the other)
    stack: LayerStack
    layer: nn.Module


class LinearSite(NamedTuple):
    """One linear layer a LoRA-style method wraps: ``setattr(parent, attr, wrapper)``."""

    idx: int
    stack: LayerStack
    spec: LinearSpec
    parent: nn.Module
    attr: str
    module: nn.Module


def resolve(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        if part:
            obj = getattr(obj, part)
    return obj


def iter_layers(model: ModelHandle) -> Iterator[LayerSite]:
    """Every layer of every stack, numbered as the reference numbers them."""
    offset = 0
    for stack in model.spec.stacks:
        layers = resolve(model.base_model, stack.path)
        for i, layer in enumerate(layers):
            yield LayerSite(offset + i, stack, layer)
        offset += len(layers)


def iter_linears(model: ModelHandle) -> Iterator[LinearSite]:
    """Every linear layer the table lists, in every layer (wrapped modules included)."""
    for idx, stack, layer in iter_layers(model):
        for lin in stack.linears:
            parent_path, _, attr = lin.path.rpartition(".")
            parent = resolve(layer, parent_path)
            module = getattr(parent, attr, None)
            if module is not None:
                yield LinearSite(idx, stack, lin, parent, attr, module)


# module names under which methods keep adapter modules (never used to place new ones)
ADAPTER_CONTAINERS = (
    "adapters",
    "adapter_fusion_layer",
    "invertible_adapters",
    "loras",
    "refts",
    "prefix_tunings",
    "prompt_tunings",
    "shared_parameters",
)


def site_device_dtype(module: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the model's own first parameter (or buffer) in ``module``;
    adapter modules inside it do not count."""
    named = [*module.named_parameters(recurse=True), *module.named_buffers(recurse=True)]
    for name, t in named:
        if any(part in ADAPTER_CONTAINERS for part in name.split(".")):
            continue
        if t.device.type == "meta":
            return None, None
        return t.device, (t.dtype if t.dtype.is_floating_point else None)
    return None, None


def place_like(new: nn.Module, site: nn.Module) -> nn.Module:
    """Move a newly built module to the device (and floating dtype) of the module it sits in.

    Only ``new`` moves: other adapters, and other shards of a model split over devices,
    stay where they are."""
    device, dtype = site_device_dtype(site)
    if device is not None:
        new.to(device=device, dtype=dtype)
    new.train(site.training)
    return new


class AdapterMethod:
    """Interface of a method family. Subclasses override what they need (see module doc)."""

    name: ClassVar[str] = ""
    # composition blocks the method's layers can execute
    supported_compositions: ClassVar[tuple[type, ...]] = ()
    # the reference's config names this method builds (for the support table in the docs)
    config_names: ClassVar[tuple[str, ...]] = ()

    def supports(self, spec: ArchitectureSpec, config_name: str) -> str | None:
        """None if ``config_name`` works on this architecture, else the reason it does not."""
        return spec.unsupported.get(config_name)

    def attach(self, model: ModelHandle) -> None:
        """Prepare the base model once (swap module classes, register hooks)."""

    def handles(self, config: AdapterConfig) -> bool:
        """Whether this method builds modules for ``config`` (one part of a union)."""
        return False

    def validate(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        """Refuse a config this model cannot take, before any module is built."""

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        """Create the modules of adapter ``name`` (placed with :func:`place_like`)."""

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        """Remove the modules of adapter ``name``."""

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        """The modules of adapter ``name``: ``{"<layer_idx>.<location>": module}``."""
        return {}

    def add_fusion(self, model: ModelHandle, name: str) -> None:
        """Create fusion layers (only methods supporting Fuse)."""

    def delete_fusion(self, model: ModelHandle, name: str) -> None:
        """Remove fusion layers."""

    def validate_setup(self, model: ModelHandle, setup: AdapterCompositionBlock) -> None:
        """Raise CompositionError for a setup this method cannot run."""
        check_supported(setup, self.supported_compositions)

    def refuse_blocks_around_own(self, setup: Any, adapters: dict[str, Any], label: str) -> None:
        """Raise CompositionError for a block outside ``supported_compositions`` that holds one
        of this method's adapters (blocks around only other methods' adapters pass)."""
        if isinstance(setup, str):
            return
        mine = sorted(n for n in setup.flatten() if n in adapters and self.handles(adapters[n]))
        if not mine:
            return
        if not isinstance(setup, self.supported_compositions):
            names = ", ".join(t.__name__ for t in self.supported_compositions)
            raise CompositionError(
                f"{type(setup).__name__} composition is not supported by {label} "
                f"({', '.join(mine)}); supported: {names}."
            )
        for child in setup:
            self.refuse_blocks_around_own(child, adapters, label)

    def merge(self, model: ModelHandle, name: str) -> None:
        """Fold adapter ``name`` into the model's weights."""
        raise AdapterError(f"Adapters of method {self.name!r} cannot be merged.")

    def unmerge(self, model: ModelHandle, name: str) -> None:
        """Undo :meth:`merge`."""
        raise AdapterError(f"Adapters of method {self.name!r} cannot be merged.")

    def pre_save(
        self, model: ModelHandle, name: str, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Adjust the state dict of adapter ``name`` right before it is written."""
        return state

    def pre_load(
        self, model: ModelHandle, name: str, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Adjust a read state dict before it is copied into the model (inverse of pre_save)."""
        return state
