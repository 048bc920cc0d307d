"""Prefix tuning's config and the unions that contain it (MAM, UniPELT), as in ``adapters`` 1.3.0.

``PrefixTuningConfig`` is written as ``architecture: "prefix_tuning"`` with the reference's
fields; MAM and UniPELT are plain ``ConfigUnion`` objects (``architecture: "union"``), so a file
written by either library reads back equal in the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AdapterConfigError
from .adapter_config import AdapterConfig, ConfigUnion, ParBnConfig, SeqBnConfig, register_config
from .lora_config import LoRAConfig

NON_LINEARITIES = ("tanh", "relu", "gelu", "gelu_new", "swish", "silu", "sigmoid", "leakyrelu")


@dataclass(kw_only=True, eq=False)
class PrefixTuningConfig(AdapterConfig):
    """Prefix tuning (Li and Liang, 2021): learned key/value prefixes in every attention layer.

    ``flat=False`` computes the prefixes from an embedding through a two-layer MLP
    (reparameterisation; ``eject_prefix_tuning`` turns it into the flat parameters);
    ``encoder_prefix`` / ``cross_prefix`` switch the prefixes of an encoder-decoder's encoder
    self-attention and decoder cross-attention on or off.
    """

    architecture = "prefix_tuning"

    encoder_prefix: bool = True
    cross_prefix: bool = True
    leave_out: list[int] = field(default_factory=list)
    flat: bool = False
    prefix_length: int = 30
    bottleneck_size: int = 512
    non_linearity: str = "tanh"
    dropout: float = 0.0
    use_gating: bool = False
    shared_gating: bool = True
    init_weights_seed: int | None = None

    def _validate(self) -> None:
        if isinstance(self.leave_out, tuple):
            object.__setattr__(self, "leave_out", list(self.leave_out))
        for name in ("prefix_length", "bottleneck_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AdapterConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.non_linearity, str) or (
            self.non_linearity.lower() not in NON_LINEARITIES
        ):
            raise AdapterConfigError(
                f"Unknown non_linearity {self.non_linearity!r} (expected one of "
                f"{', '.join(NON_LINEARITIES)})."
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout!r}.")


class MAMConfig(ConfigUnion):
    """Mix-and-Match adapter (He et al., 2021): prefix tuning + a scaled parallel bottleneck."""

    def __init__(
        self,
        prefix_tuning: PrefixTuningConfig | None = None,
        adapter: AdapterConfig | None = None,
    ) -> None:
        super().__init__(
            prefix_tuning or PrefixTuningConfig(bottleneck_size=800),
            adapter or ParBnConfig(),
        )


class UniPELTConfig(ConfigUnion):
    """UniPELT (Mao et al., 2022): LoRA, prefix tuning and a sequential bottleneck, each gated."""

    def __init__(
        self,
        prefix_tuning: PrefixTuningConfig | None = None,
        adapter: AdapterConfig | None = None,
        lora: LoRAConfig | None = None,
    ) -> None:
        parts = [
            prefix_tuning or PrefixTuningConfig(prefix_length=10),
            adapter or SeqBnConfig(reduction_factor=16),
            lora or LoRAConfig(r=8, alpha=2),
        ]
        super().__init__(*[p.replace(use_gating=True) for p in parts])


register_config(
    "prefix_tuning",
    PrefixTuningConfig,
    presets={
        "prefix_tuning": PrefixTuningConfig,
        "prefix_tuning_flat": PrefixTuningConfig(flat=True),
        "mam": MAMConfig(),
        "unipelt": UniPELTConfig(),
    },
)
