"""What every adapter method family provides to the generic model code.

A method (bottleneck today; LoRA, prefix tuning, ReFT... later) is one object registered in
``methods/__init__.py``. The model mixin calls these hooks; a method only touches the modules
the architecture table names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers.activations import get_activation

if TYPE_CHECKING:
    from ..configuration import AdapterConfig
    from ..model_mixin import ModelAdaptersConfig
    from ..models.spec import ArchitectureSpec


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


class AdapterMethod:
    """Interface of a method family. Subclasses override what they need."""

    name: ClassVar[str] = ""
    # composition blocks the method's layers can execute
    supported_compositions: ClassVar[tuple[type, ...]] = ()

    def attach(
        self, base_model: nn.Module, spec: ArchitectureSpec, state: ModelAdaptersConfig
    ) -> None:
        """Prepare the base model once (swap module classes, register hooks)."""

    def handles(self, config: AdapterConfig) -> bool:
        """Whether this method builds modules for ``config`` (one part of a union)."""
        return False

    def add_adapter(
        self,
        base_model: nn.Module,
        spec: ArchitectureSpec,
        state: ModelAdaptersConfig,
        name: str,
        config: AdapterConfig,
    ) -> None:
        """Create the modules of adapter ``name``."""

    def delete_adapter(self, base_model: nn.Module, spec: ArchitectureSpec, name: str) -> None:
        """Remove the modules of adapter ``name``."""

    def add_fusion(
        self, base_model: nn.Module, spec: ArchitectureSpec, state: ModelAdaptersConfig, name: str
    ) -> None:
        """Create fusion layers (only methods supporting Fuse)."""

    def delete_fusion(self, base_model: nn.Module, spec: ArchitectureSpec, name: str) -> None:
        """Remove fusion layers."""
