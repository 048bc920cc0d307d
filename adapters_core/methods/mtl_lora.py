"""MTL-LoRA's per-layer module (a LoRA-family variant) and the ``task_ids`` forward argument.

``x -> x Aᵀ S (Σₖ wₖ Bₖ)ᵀ · alpha / r`` with ``wₖ = softmax(weights / weights_sharpness)``:
``lora_A`` (r, in), ``task_specific.values`` (r: a diagonal, or r x r), ``lora_B``
(n_up_projection, out, r), ``weights`` (n_up_projection), the reference's names and shapes.
The reference sums the n products; mixing the up-projections first is the same linear map with
one product. On a fused QKV projection each part has its own r rows of A, as LoRA's.

A ``MultiTask("a", "b")`` setup sends each example to the adapter its task id names: pass
``task_ids`` (ints indexing the children, or their names) to the forward; a forward pre-hook
moves it from the arguments into the ForwardContext.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..configuration.lora_config import LoRAConfig
from ..context import ForwardContext
from ..errors import AdapterConfigError, AdapterNotFoundError
from .base import AdapterMethod, ModelHandle
from .lora_variants import VARIANTS, LoRA, VeraShared, _generator, init_pair


class TaskSpecificMatrix(nn.Module):
    """``values``: r singular values (a diagonal matrix) or a full r x r matrix."""

    def __init__(self, rank: int, kind: str, dtype: torch.dtype | None) -> None:
        super().__init__()
        shape = (rank,) if kind == "singular_values" else (rank, rank)
        self.values = nn.Parameter(torch.ones(shape, dtype=dtype))
        if kind == "linear":
            with torch.no_grad():
                self.values.copy_(torch.eye(rank, dtype=dtype))

    def forward(self) -> torch.Tensor:
        return torch.diag(self.values) if self.values.dim() == 1 else self.values


class MTLLoRA(LoRA):
    def _build(
        self, config: LoRAConfig, dtype: torch.dtype | None, shared: VeraShared | None
    ) -> None:
        n_up = int(config.n_up_projection)  # type: ignore[attr-defined]
        self.scaling = config.alpha / config.r
        self.lora_A = nn.Parameter(
            torch.zeros(self.r * self.n_parts, self.in_features, dtype=dtype)
        )
        self.lora_B = nn.Parameter(torch.zeros(n_up, self.out_rows, self.r, dtype=dtype))
        init_pair(self.lora_A, self.lora_B, config.init_weights, _generator(config))
        kind = config.task_specific_matrix_type  # type: ignore[attr-defined]
        self.task_specific = TaskSpecificMatrix(self.r, kind, dtype)
        self.weights = nn.Parameter(torch.ones(n_up, dtype=dtype))
        self.weights_sharpness = float(config.weights_sharpness)  # type: ignore[attr-defined]
        self.dora_add = False
        self.fused_add = False

    def mixed_b(self) -> torch.Tensor:
        """Σₖ wₖ Bₖ, (out_rows, r)."""
        w = torch.softmax(self.weights / self.weights_sharpness, dim=0)
        return torch.einsum("k,kor->or", w, self.lora_B)

    def forward(self, hidden: torch.Tensor | None, x: torch.Tensor) -> tuple[Any, Any]:
        h = x if hidden is None else hidden
        if self.lora_dropout is not None:
            h = self.lora_dropout(h)
        if h.dtype != self.lora_A.dtype:
            h = h.to(self.lora_A.dtype)
        s = self.task_specific()
        b = self.mixed_b()
        a = F.linear(h, self.lora_A).unflatten(-1, (self.n_parts, self.r)) @ s
        b = b.view(self.n_parts, self.rows, self.r)
        h = torch.einsum("...nr,npr->...np", a, b).flatten(-2)
        return self._finish(h, x, self.scaling)

    def delta_weight(self) -> torch.Tensor:
        a = self.lora_A.view(self.n_parts, self.r, self.in_features)
        b = self.mixed_b().view(self.n_parts, self.rows, self.r)
        s = self.task_specific()
        return torch.bmm(b @ s.t(), a).reshape(self.out_rows, self.in_features)


VARIANTS["mtl_lora"] = MTLLoRA


def _take_task_ids(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    if "task_ids" not in kwargs:
        return None
    kwargs = dict(kwargs)
    task_ids = kwargs.pop("task_ids")
    ctx = ForwardContext.get_context()
    if ctx is not None:
        ctx.values["task_ids"] = task_ids
    return args, kwargs


class TaskIdsArgument(AdapterMethod):
    """Builds no adapters: lets every model's forward take ``task_ids`` (for ``MultiTask``)."""

    name = "task_ids"

    def attach(self, model: ModelHandle) -> None:
        base = model.base_model
        if not base.__dict__.get("_task_ids_hooked"):
            base.register_forward_pre_hook(_take_task_ids, with_kwargs=True)
            base.__dict__["_task_ids_hooked"] = True


# --- one A/B for several task adapters (the reference's share_parameters) ----------------------

SHARED_CONTAINER = "shared_parameters"
SHARABLE = ("lora_A", "lora_B")


def task_names(adapter_names: Any) -> list[str]:
    """A ``MultiTask`` block, a list, or ``"a,b,c"`` as a list of adapter names."""
    from ..composition import AdapterCompositionBlock

    if isinstance(adapter_names, AdapterCompositionBlock):
        names = [c if isinstance(c, str) else c.last() for c in adapter_names]
    elif isinstance(adapter_names, str):
        names = [n.strip() for n in adapter_names.split(",") if n.strip()]
    else:
        names = list(adapter_names)
    if not names:
        raise AdapterConfigError("share_parameters needs at least one adapter name.")
    return names


def share_parameters(
    model: ModelHandle, names: list[str], shared_name: str, reference: str
) -> None:
    """Give every MTL-LoRA adapter in ``names`` one A and one B per layer, copies of
    ``reference``'s, kept at ``<layer>.shared_parameters.<shared_name>`` (the reference's key)
    and seen by each adapter as its own ``lora_A`` / ``lora_B`` (so its saved file holds them)."""
    from ..configuration.mtl_lora_config import MTLLoRAConfig
    from .lora import lora_layers

    adapters = model.state.adapters
    for n in names:
        if n not in adapters:
            raise AdapterNotFoundError(f"No adapter named {n!r} in this model.")
        if not isinstance(adapters[n], MTLLoRAConfig):
            raise AdapterConfigError(
                f"share_parameters shares MTL-LoRA adapters; {n!r} is {type(adapters[n]).__name__}."
            )
    if reference not in names:
        raise AdapterConfigError(
            f"Reference adapter {reference!r} is not one of the shared adapters {names}."
        )
    if shared_name in adapters:
        raise AdapterConfigError(
            f"The shared parameters cannot be named {shared_name!r}: an adapter has that name "
            "(its saved file would pick them up)."
        )
    layers = [layer for layer in lora_layers(model.base_model) if set(names) <= set(layer.loras)]
    for layer in layers:  # refuse before changing anything
        ref = layer.loras[reference]
        for n in names:
            for p in SHARABLE:
                if getattr(layer.loras[n], p).shape != getattr(ref, p).shape:
                    raise AdapterConfigError(
                        f"Adapters {reference!r} and {n!r} cannot share {p}: shapes "
                        f"{tuple(getattr(ref, p).shape)} and "
                        f"{tuple(getattr(layer.loras[n], p).shape)} at {layer.lora_target.path}."
                    )
    for layer in layers:
        ref = layer.loras[reference]
        params = nn.ParameterDict(
            {
                p: nn.Parameter(
                    getattr(ref, p).detach().clone(), requires_grad=getattr(ref, p).requires_grad
                )
                for p in SHARABLE
            }
        )
        container = layer._modules.get(SHARED_CONTAINER)
        if container is None:
            container = nn.ModuleDict()
            layer.add_module(SHARED_CONTAINER, container)
        container[shared_name] = params
        for n in names:
            for p in SHARABLE:
                setattr(layer.loras[n], p, params[p])


def unshare_parameters(model: ModelHandle, names: list[str], shared_name: str) -> None:
    """Undo :func:`share_parameters`: each adapter keeps its own copy of the shared values."""
    from .lora import lora_layers

    for layer in lora_layers(model.base_model):
        container = layer._modules.get(SHARED_CONTAINER)
        if container is None or shared_name not in container:
            continue
        params = container[shared_name]
        for n in names:
            module = layer.loras[n] if n in layer.loras else None
            for p in SHARABLE:
                if module is not None and getattr(module, p) is params[p]:
                    own = nn.Parameter(params[p].detach().clone())
                    own.requires_grad_(params[p].requires_grad)
                    setattr(module, p, own)
        del container[shared_name]
        if not len(container):
            del layer._modules[SHARED_CONTAINER]


def prune_shared(layer: nn.Module) -> None:
    """Drop shared parameters no adapter of ``layer`` uses any more (after a deletion)."""
    container = layer._modules.get(SHARED_CONTAINER)
    if container is None:
        return
    held = {id(p) for m in layer.loras.values() for p in m.parameters()}  # type: ignore[union-attr]
    for key in list(container.keys()):
        if not any(id(p) in held for p in container[key].parameters()):
            del container[key]
    if not len(container):
        del layer._modules[SHARED_CONTAINER]
