"""Invertible adapters (MAD-X): a NICE or GLOW coupling block on the embedding output.

Stored on the base model as ``invertible_adapters.<name>`` (``F.0.weight`` ... for NICE). The
forward direction runs after the embeddings for the first active adapter; LM heads run the
inverse before their output projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..composition import Stack
from ..configuration import AdapterConfig, BnConfig, ConfigUnion
from ..context import AdapterSetup
from .base import Activation, AdapterMethod, ModelHandle, place_like, resolve


def _subnet(
    dims_in: int, dims_out: int, non_linearity: str, reduction_factor: float
) -> nn.Sequential:
    hidden = int(dims_in // reduction_factor)
    return nn.Sequential(
        nn.Linear(dims_in, hidden), Activation(non_linearity), nn.Linear(hidden, dims_out)
    )


class NICECouplingBlock(nn.Module):
    """Additive coupling: y1 = x1 + F(x2); y2 = x2 + G(y1)."""

    def __init__(self, hidden_size: int, non_linearity: str = "relu", reduction_factor: float = 2):
        super().__init__()
        self.split_len1 = hidden_size // 2
        self.split_len2 = hidden_size - hidden_size // 2
        self.F = _subnet(self.split_len2, self.split_len1, non_linearity, reduction_factor)
        self.G = _subnet(self.split_len1, self.split_len2, non_linearity, reduction_factor)

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[..., : self.split_len1], x[..., self.split_len1 :]
        if not rev:
            y1 = x1 + self.F(x2)
            y2 = x2 + self.G(y1)
        else:
            y2 = x2 - self.G(x1)
            y1 = x1 - self.F(y2)
        return torch.cat((y1, y2), -1)


class GLOWCouplingBlock(nn.Module):
    """Affine coupling with soft-clamped scales; subnets ``s1``/``s2`` as in the reference."""

    def __init__(
        self,
        hidden_size: int,
        non_linearity: str = "relu",
        reduction_factor: float = 2,
        clamp: float = 5.0,
    ):
        super().__init__()
        self.split_len1 = hidden_size // 2
        self.split_len2 = hidden_size - hidden_size // 2
        self.clamp = clamp
        self.s1 = _subnet(self.split_len1, self.split_len2 * 2, non_linearity, reduction_factor)
        self.s2 = _subnet(self.split_len2, self.split_len1 * 2, non_linearity, reduction_factor)

    def _e(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.clamp * 0.636 * torch.atan(s / self.clamp))

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[..., : self.split_len1], x[..., self.split_len1 :]
        n1, n2 = self.split_len1, self.split_len2
        if not rev:
            r2 = self.s2(x2)
            y1 = self._e(r2[..., :n1]) * x1 + r2[..., n1:]
            r1 = self.s1(y1)
            y2 = self._e(r1[..., :n2]) * x2 + r1[..., n2:]
        else:
            r1 = self.s1(x1)
            y2 = (x2 - r1[..., n2:]) / self._e(r1[..., :n2])
            r2 = self.s2(y2)
            y1 = (x1 - r2[..., n1:]) / self._e(r2[..., :n1])
        return torch.cat((y1, y2), -1)


def _inv_config(config: AdapterConfig) -> BnConfig | None:
    parts = config.configs if isinstance(config, ConfigUnion) else [config]
    for c in parts:
        if isinstance(c, BnConfig) and c.inv_adapter:
            return c
    return None


def active_invertible_adapter(base_model: nn.Module) -> nn.Module | None:
    """The invertible adapter of the first active adapter, if it has one."""
    inv = getattr(base_model, "invertible_adapters", None)
    if inv is None or len(inv) == 0:
        return None
    setup = AdapterSetup.get_context_adapter_setup()
    if setup is None:
        setup = base_model.adapters_config.active_setup
    if setup is None:
        return None
    first = setup if isinstance(setup, str) else setup.first()
    return inv[first] if first in inv else None


def _embedding_hook(module: nn.Module, args: Any, output: Any) -> Any:
    adapter = active_invertible_adapter(module.__dict__["_adapters_owner"])
    if adapter is None:
        return output
    if isinstance(output, torch.Tensor):
        return adapter(output)
    return (adapter(output[0]),) + tuple(output[1:])


def _embedding_input_hook(module: nn.Module, args: Any, kwargs: Any) -> Any:
    adapter = active_invertible_adapter(module.__dict__["_adapters_owner"])
    if adapter is None:
        return None
    if args:
        return (adapter(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": adapter(kwargs["hidden_states"])}


class InvertibleMethod(AdapterMethod):
    name = "invertible"
    supported_compositions = (Stack,)
    config_names = ("seq_bn_inv", "double_seq_bn_inv")

    def attach(self, model: ModelHandle) -> None:
        base_model = model.base_model
        if "invertible_adapters" in base_model._modules:
            return
        base_model.invertible_adapters = nn.ModuleDict()
        path, _, mode = model.spec.embeddings.partition(":")
        embeddings = resolve(base_model, path)
        # a plain attribute (not a submodule) so deepcopy maps it to the copied base model
        object.__setattr__(embeddings, "_adapters_owner", base_model)
        if mode == "input":
            embeddings.register_forward_pre_hook(_embedding_input_hook, with_kwargs=True)
        else:
            embeddings.register_forward_hook(_embedding_hook)

    def handles(self, config: AdapterConfig) -> bool:
        return _inv_config(config) is not None

    def validate_setup(self, model: ModelHandle, setup: Any) -> None:
        """Any setup: the invertible adapter of its first adapter runs (as the reference)."""

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        bn = _inv_config(config)
        if bn is None:
            return
        rf = bn.inv_adapter_reduction_factor or 2
        block_cls = NICECouplingBlock if bn.inv_adapter == "nice" else GLOWCouplingBlock
        block = block_cls(model.hidden_size, non_linearity=bn.non_linearity, reduction_factor=rf)
        block.apply(_init_linear)
        path = model.spec.embeddings.partition(":")[0]
        site = resolve(model.base_model, path)
        model.base_model.invertible_adapters[name] = place_like(block, site)

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        inv = getattr(model.base_model, "invertible_adapters", None)
        if inv is not None and name in inv:
            del inv[name]

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        inv = getattr(model.base_model, "invertible_adapters", None)
        if inv is not None and name in inv:
            return {"-1.invertible": inv[name]}
        return {}


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.normal_(0.0, 0.02)
            module.bias.zero_()
