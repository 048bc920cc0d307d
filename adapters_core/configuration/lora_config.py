"""Configs of the LoRA family (LoRA, IA3, DoRA, VeRA): one config class, as in ``adapters`` 1.3.0.

The reference library writes every member of the family as ``architecture: "lora"`` with the
same fields; which variant a file holds follows from the fields (``composition_mode: "scale"``
is IA3, ``use_dora`` DoRA, a float ``vera_d`` or ``vera_b`` VeRA). The presets below only set
defaults, so a file reads back equal whatever preset wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AdapterConfigError
from .adapter_config import AdapterConfig, register_config

ATTN_MATRICES = ("q", "k", "v", "o")
INIT_WEIGHTS = ("lora", "bert", "ia3", "vera")


@dataclass(kw_only=True, eq=False)
class LoRAConfig(AdapterConfig):
    """Low-rank adaptation (Hu et al., 2021); every field of ``adapters`` 1.3.0 ``LoRAConfig``."""

    architecture = "lora"

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: list[int] = field(default_factory=list)
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    attn_matrices: list[str] = field(default_factory=lambda: ["q", "v"])
    composition_mode: str = "add"
    init_weights: str = "lora"
    init_weights_seed: int | None = None
    use_gating: bool = False
    use_dora: bool = False
    vera_d: float | None = None
    vera_b: float | None = None
    dtype: str | None = None

    def _validate(self) -> None:
        if isinstance(self.leave_out, tuple):
            object.__setattr__(self, "leave_out", list(self.leave_out))
        if isinstance(self.attn_matrices, tuple):
            object.__setattr__(self, "attn_matrices", list(self.attn_matrices))
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise AdapterConfigError(f"r must be a positive integer, got {self.r!r}.")
        if self.composition_mode not in ("add", "scale"):
            raise AdapterConfigError(
                f"Unknown composition_mode {self.composition_mode!r} (expected 'add' or 'scale')."
            )
        if self.composition_mode == "scale":
            if self.r != 1:
                raise AdapterConfigError("composition_mode 'scale' (IA3) needs r == 1.")
            if self.use_dora:
                raise AdapterConfigError("composition_mode 'scale' (IA3) cannot use DoRA.")
            if self.dropout:
                raise AdapterConfigError("composition_mode 'scale' (IA3) has no dropout.")
        if self.init_weights not in INIT_WEIGHTS:
            raise AdapterConfigError(
                f"Unknown init_weights {self.init_weights!r} (expected one of {INIT_WEIGHTS})."
            )
        bad = [m for m in self.attn_matrices if m not in ATTN_MATRICES]
        if bad:
            raise AdapterConfigError(
                f"Unknown attn_matrices {bad} (expected a subset of {list(ATTN_MATRICES)})."
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.dtype is not None and self.dtype not in (
            "float32",
            "float16",
            "bfloat16",
            "float64",
        ):
            raise AdapterConfigError(f"Unknown dtype {self.dtype!r}.")

    @property
    def is_vera(self) -> bool:
        return isinstance(self.vera_d, float | int) or isinstance(self.vera_b, float | int)

    @property
    def variant(self) -> str:
        """``lora``, ``ia3``, ``dora``, ``vera`` or ``dvora`` (VeRA with DoRA)."""
        if self.composition_mode == "scale":
            return "ia3"
        if self.is_vera:
            return "dvora" if self.use_dora else "vera"
        return "dora" if self.use_dora else "lora"


@dataclass(kw_only=True, eq=False)
class IA3Config(LoRAConfig):
    """(IA)^3 (Liu et al., 2022): learned vectors that scale keys, values and the FFN."""

    intermediate_lora: bool = True
    r: int = 1
    alpha: float = 1
    attn_matrices: list[str] = field(default_factory=lambda: ["k", "v"])
    composition_mode: str = "scale"
    init_weights: str = "ia3"


@dataclass(kw_only=True, eq=False)
class DoRAConfig(LoRAConfig):
    """DoRA (Liu et al., 2024): LoRA's direction with a learned magnitude per output row."""

    use_dora: bool = True


@dataclass(kw_only=True, eq=False)
class VeraConfig(LoRAConfig):
    """VeRA (Kopiczko et al., 2024): frozen random A and B shared by all layers, learned vectors."""

    vera_d: float | None = 0.1
    vera_b: float | None = 0.0
    init_weights: str = "vera"


@dataclass(kw_only=True, eq=False)
class DvoRAConfig(VeraConfig):
    """VeRA with DoRA's magnitude."""

    use_dora: bool = True


register_config(
    "lora",
    LoRAConfig,
    presets={
        "lora": LoRAConfig,
        "ia3": IA3Config,
        "dora": DoRAConfig,
        "vera": VeraConfig,
        "dvora": DvoRAConfig,
    },
)
