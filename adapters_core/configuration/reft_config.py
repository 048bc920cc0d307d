"""Configs of ReFT (Wu et al., 2024): LoReFT, NoReFT, DiReFT; one class, as in ``adapters`` 1.3.0.

The reference writes all three as ``architecture: "reft"``. Its ``subtract_projection`` is a
class attribute rather than a field, so a DiReFT file does not say that it is one and reloads
as LoReFT-style arithmetic. Here it is a field, written to ``adapter_config.json``; the
reference sets unknown keys of a file as attributes, so it reads the setting back too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AdapterConfigError
from .adapter_config import AdapterConfig, register_config

DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass(kw_only=True, eq=False)
class ReftConfig(AdapterConfig):
    """Interventions on the hidden states of chosen positions after chosen layers.

    ``layers``: ``"all"`` or a list of layer numbers (numbered as ``leave_out``);
    ``prefix_positions`` / ``suffix_positions``: how many of the first / last non-padding
    positions are intervened on; ``r``: the rank; ``orthogonality``: the projection is kept
    orthogonal (LoReFT); ``tied_weights``: one unit for prefix and suffix positions;
    ``subtract_projection``: subtract the projection of the input (LoReFT, NoReFT; not DiReFT).
    """

    architecture = "reft"

    layers: Any = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = True
    tied_weights: bool = False
    subtract_projection: bool = True
    dropout: float = 0.05
    non_linearity: str | None = None
    dtype: str | None = None
    output_reft: bool = True
    init_weights_seed: int | None = None

    def _validate(self) -> None:
        if isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", list(self.layers))
        if self.layers != "all" and not (
            isinstance(self.layers, list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers)
        ):
            raise AdapterConfigError(
                f"layers must be 'all' or a list of layer numbers, got {self.layers!r}."
            )
        for key in ("prefix_positions", "suffix_positions"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise AdapterConfigError(f"{key} must be an integer >= 0, got {value!r}.")
        if self.prefix_positions == 0 and self.suffix_positions == 0:
            raise AdapterConfigError(
                "ReFT needs prefix_positions or suffix_positions > 0 (both are 0)."
            )
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise AdapterConfigError(f"r must be a positive integer, got {self.r!r}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise AdapterConfigError(f"Unknown dtype {self.dtype!r} (expected one of {DTYPES}).")
        if not self.output_reft:
            raise AdapterConfigError(
                "output_reft=False leaves no place for the intervention (ReFT runs on layer "
                "outputs only)."
            )

    def applies_to(self, layer_idx: int) -> bool:
        return self.layers == "all" or layer_idx in self.layers


@dataclass(kw_only=True, eq=False)
class LoReftConfig(ReftConfig):
    """LoReFT: low-rank linear subspace intervention with an orthogonal projection."""


@dataclass(kw_only=True, eq=False)
class NoReftConfig(ReftConfig):
    """LoReFT without the orthogonality constraint."""

    orthogonality: bool = False


@dataclass(kw_only=True, eq=False)
class DiReftConfig(ReftConfig):
    """NoReFT without subtracting the projection of the input."""

    orthogonality: bool = False
    subtract_projection: bool = False


register_config(
    "reft",
    ReftConfig,
    presets={"loreft": LoReftConfig, "noreft": NoReftConfig, "direft": DiReftConfig},
)
