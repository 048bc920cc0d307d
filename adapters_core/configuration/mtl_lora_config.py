"""MTL-LoRA (Yang et al., 2024): LoRA with a task-specific r x r matrix and several weighted
up-projections; one adapter per task, routed per example with ``MultiTask`` and ``task_ids``."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdapterConfigError
from .adapter_config import register_config
from .lora_config import LoRAConfig

TASK_MATRIX_TYPES = ("singular_values", "linear")


@dataclass(kw_only=True, eq=False)
class MTLLoRAConfig(LoRAConfig):
    """Every field of ``adapters`` 1.3.0 ``MTLLoRAConfig``: ``n_up_projection`` up-projections
    mixed with softmax weights of temperature ``weights_sharpness``; the task-specific matrix is
    a diagonal (``singular_values``) or a full r x r matrix (``linear``)."""

    architecture = "mtl_lora"

    n_up_projection: int = 1
    task_specific_matrix_type: str = "singular_values"
    weights_sharpness: float = 0.05

    def _validate(self) -> None:
        super()._validate()
        n = self.n_up_projection
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise AdapterConfigError(f"n_up_projection must be a positive integer, got {n!r}.")
        if self.task_specific_matrix_type not in TASK_MATRIX_TYPES:
            raise AdapterConfigError(
                f"Unknown task_specific_matrix_type {self.task_specific_matrix_type!r} "
                f"(expected one of {TASK_MATRIX_TYPES})."
            )
        if not self.weights_sharpness > 0:
            raise AdapterConfigError(
                f"weights_sharpness must be > 0, got {self.weights_sharpness!r}."
            )
        if self.composition_mode != "add" or self.use_dora or self.is_vera:
            raise AdapterConfigError(
                "MTL-LoRA is additive LoRA: composition_mode 'add', no DoRA, no VeRA."
            )

    @property
    def variant(self) -> str:
        return "mtl_lora"


register_config("mtl_lora", MTLLoRAConfig, presets={"mtl_lora": MTLLoRAConfig})
