"""The LoRA family's per-layer modules: LoRA (and DoRA), IA3 and VeRA.

Each module is one adapter at one linear layer. ``forward(hidden, x)`` returns what the adapter
adds (or, for IA3, multiplies) to the layer's output, in the layer's compact row space: for a
fused projection (GPT-2 ``c_attn``, ModernBERT ``Wqkv``) only the rows of the enabled parts
(q, k, v), part by part, as the reference library lays out its weights. The layer
(``lora.py``) pads that to the full output and combines it with the frozen layer's result.

Weight names are those of ``adapters`` 1.3.0 (``lora_A``, ``lora_B``, ``m.weight``,
``vera_D``, ``vera_B``, ``gate``); shapes too, except VeRA's scaling vectors, stored as vectors
(the reference stores them as diagonal matrices: :func:`compact_vera_state` reads those).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..configuration.lora_config import LoRAConfig
from ..errors import AdapterConfigError
from ..kernels import Dropout


def _generator(config: LoRAConfig) -> torch.Generator | None:
    if config.init_weights_seed is None:
        return None
    return torch.Generator().manual_seed(int(config.init_weights_seed))


def _dtype(config: LoRAConfig) -> torch.dtype | None:
    return getattr(torch, config.dtype) if config.dtype else None


def init_pair(a: torch.Tensor, b: torch.Tensor, init: str, generator: Any) -> None:
    """Initialise an (A, B) pair as the reference does for ``init_weights``."""
    with torch.no_grad():
        if init == "lora":
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            b.zero_()
        elif init == "bert":
            a.normal_(0.0, 0.02, generator=generator)
            b.normal_(0.0, 0.02, generator=generator)
        elif init == "ia3":
            a.fill_(1.0)
            b.fill_(1.0)
        elif init == "vera":
            nn.init.kaiming_uniform_(a, generator=generator)
            nn.init.kaiming_uniform_(b, generator=generator)
        else:  # the config validates this; keep a clear error for direct use
            raise AdapterConfigError(f"Unknown init_weights {init!r}.")


class LoRAVariant(nn.Module):
    """Shared behaviour. ``rows`` = output rows per part, ``n_parts`` = fused parts enabled."""

    composition_mode: ClassVar[str] = "add"

    def __init__(
        self,
        in_features: int,
        rows: int,
        n_parts: int,
        config: LoRAConfig,
        gating_heads: int = 1,
        weight_rows: torch.Tensor | None = None,
        shared: VeraShared | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.rows = rows
        self.n_parts = n_parts
        self.r = config.r
        self.use_gating = config.use_gating
        self.use_dora = config.use_dora
        self.lora_dropout = Dropout(p=config.dropout) if config.dropout > 0 else None
        # plain additive LoRA on an unfused layer: one addmm onto the layer's output
        self.fused_add = False
        self.dora_add = False
        if self.use_gating:
            self.gate = nn.Linear(in_features, gating_heads)
            nn.init.normal_(self.gate.weight, std=0.02, generator=_generator(config))
        self._build(config, _dtype(config), shared)
        self._init_magnitude(weight_rows, _dtype(config))

    def _build(
        self, config: LoRAConfig, dtype: torch.dtype | None, shared: VeraShared | None
    ) -> None:
        """Create the variant's own weights."""
        raise NotImplementedError

    @property
    def out_rows(self) -> int:
        return self.rows * self.n_parts

    def _init_magnitude(self, weight_rows: torch.Tensor | None, dtype: torch.dtype | None) -> None:
        # DoRA: the magnitude starts as the norm of each output row of the frozen weight
        if not self.use_dora:
            return
        if weight_rows is None:
            raise AdapterConfigError("DoRA needs the layer's weight to initialise its magnitude.")
        self.m = nn.Linear(1, self.out_rows, bias=False, dtype=dtype)
        with torch.no_grad():
            norm = torch.linalg.norm(weight_rows.detach().float(), dim=1).unsqueeze(1)
            self.m.weight.copy_(norm.to(self.m.weight.dtype))

    def _finish(self, h: torch.Tensor, x: torch.Tensor, scaling: float) -> tuple[Any, Any]:
        if self.use_gating:
            gate = torch.sigmoid(self.gate(x)).mean(dim=1)
            if gate.shape[-1] > 1:  # fused QKV: one gate per part, over that part's rows
                return h * gate.repeat_interleave(self.rows, dim=-1).unsqueeze(1), gate
            gate = gate.unsqueeze(-1)
            return h * gate, gate
        if scaling != 1.0:
            h = h * scaling
        return h, None

    def delta_weight(self) -> torch.Tensor:
        """The unscaled weight update, (out_rows, in_features)."""
        raise NotImplementedError


class LoRA(LoRAVariant):
    """``x -> B A x * alpha / r`` (with DoRA: plus a learned magnitude ``m`` per output row)."""

    def _build(
        self, config: LoRAConfig, dtype: torch.dtype | None, shared: VeraShared | None
    ) -> None:
        self.scaling = config.alpha / config.r
        self.lora_A = nn.Parameter(
            torch.zeros(self.r * self.n_parts, self.in_features, dtype=dtype)
        )
        self.lora_B = nn.Parameter(torch.zeros(self.out_rows, self.r, dtype=dtype))
        init_pair(self.lora_A, self.lora_B, config.init_weights, _generator(config))
        # one product accumulated onto the layer's output (add_to): plain LoRA returns it,
        # DoRA scales it by its magnitude over the norm
        self.dora_add = self.n_parts == 1 and not self.use_gating
        self.fused_add = self.dora_add and not self.use_dora

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out + B A x * scaling`` with the last product accumulated onto ``out``."""
        h = x if self.lora_dropout is None else self.lora_dropout(x)
        dtype = self.lora_A.dtype
        a = F.linear(h.to(dtype), self.lora_A)
        flat = torch.addmm(
            out.reshape(-1, out.shape[-1]).to(dtype),
            a.reshape(-1, a.shape[-1]),
            self.lora_B.t(),
            alpha=self.scaling,
        )
        return flat.view(out.shape).to(out.dtype)

    def forward(self, hidden: torch.Tensor | None, x: torch.Tensor) -> tuple[Any, Any]:
        h = x if hidden is None else hidden
        if self.lora_dropout is not None:
            h = self.lora_dropout(h)
        if h.dtype != self.lora_A.dtype:
            h = h.to(self.lora_A.dtype)
        if self.n_parts == 1:
            h = F.linear(F.linear(h, self.lora_A), self.lora_B)
        else:
            # part g: rows g of B times the r inputs of group g of A (a grouped product)
            a = F.linear(h, self.lora_A).unflatten(-1, (self.n_parts, self.r))
            b = self.lora_B.view(self.n_parts, self.rows, self.r)
            h = torch.einsum("...nr,npr->...np", a, b).flatten(-2)
        return self._finish(h, x, self.scaling)

    def delta_weight(self) -> torch.Tensor:
        if self.n_parts == 1:
            return self.lora_B @ self.lora_A
        a = self.lora_A.view(self.n_parts, self.r, self.in_features)
        b = self.lora_B.view(self.n_parts, self.rows, self.r)
        return torch.bmm(b, a).reshape(self.out_rows, self.in_features)


class IA3(LoRAVariant):
    """``(IA)^3``: the layer's output rows scaled by a learned vector (times ``alpha``)."""

    composition_mode: ClassVar[str] = "scale"

    def _build(
        self, config: LoRAConfig, dtype: torch.dtype | None, shared: VeraShared | None
    ) -> None:
        self.scaling = config.alpha
        self.lora_B = nn.Parameter(torch.zeros(self.out_rows, 1, dtype=dtype))
        with torch.no_grad():
            if config.init_weights == "lora":
                self.lora_B.zero_()
            elif config.init_weights == "bert":
                self.lora_B.normal_(0.0, 0.02, generator=_generator(config))
            elif config.init_weights == "ia3":
                self.lora_B.fill_(1.0)
            else:
                raise AdapterConfigError(
                    f"init_weights {config.init_weights!r} is not available for IA3."
                )

    def forward(self, hidden: torch.Tensor | None, x: torch.Tensor) -> tuple[Any, Any]:
        scale = self.lora_B.view(-1)
        if hidden is None:
            h = scale.expand(*x.shape[:-1], scale.shape[0])
        else:
            h = hidden * scale
        return self._finish(h, x, self.scaling)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B


class VeraShared(nn.Module):
    """VeRA's frozen random matrices, one pair per adapter for the whole model.

    Buffers, not parameters: they are never trained, yet saved (``shared_parameters.<name>.
    lora_A`` / ``lora_B``, the reference's names). Sized for the largest layer they serve; each
    layer uses the top-left block it needs, so projections narrower than the hidden size
    (grouped-query attention) and fused ones work.
    """

    def __init__(self, rank: int, max_in: int, max_rows: int, config: LoRAConfig) -> None:
        super().__init__()
        dtype = _dtype(config)
        a = torch.zeros(rank, max_in, dtype=dtype)
        b = torch.zeros(max_rows, rank, dtype=dtype)
        init_pair(a, b, config.init_weights, _generator(config))
        self.register_buffer("lora_A", a)
        self.register_buffer("lora_B", b)


class Vera(LoRAVariant):
    """VeRA: ``diag(b) B diag(d) A`` with the shared random A and B; trains ``d`` and ``b``.

    ``vera_D`` (r per part) and ``vera_B`` (one per output row) are vectors. A file of the
    reference library stores them as full matrices, diagonal at initialisation but trained as
    full matrices; a non-diagonal one switches this module to the dense product (:meth:`densify`)
    so such files reproduce their outputs exactly.
    """

    def _build(
        self, config: LoRAConfig, dtype: torch.dtype | None, shared: VeraShared | None
    ) -> None:
        if config.composition_mode != "add":
            raise AdapterConfigError("VeRA needs composition_mode 'add'.")
        if shared is None:
            raise AdapterConfigError("VeRA needs its shared matrices.")
        self.scaling = config.alpha / config.r
        self._shared = [shared]  # a plain list: not a submodule, saved once by the model
        d = 0.0 if config.vera_d is None else float(config.vera_d)
        b = 0.0 if config.vera_b is None else float(config.vera_b)
        self.vera_D = nn.Parameter(torch.full((self.r * self.n_parts,), d, dtype=dtype))
        self.vera_B = nn.Parameter(torch.full((self.out_rows,), b, dtype=dtype))

    @property
    def dense(self) -> bool:
        return self.vera_D.dim() == 2

    def _ab(self) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self._shared[0]
        return shared.lora_A[:, : self.in_features], shared.lora_B[: self.rows]

    def densify(self, d: torch.Tensor, b: torch.Tensor) -> None:
        """Switch to full ``vera_D`` (r, r) and ``vera_B`` (rows, rows) matrices."""
        grad = self.vera_D.requires_grad
        like = self.vera_D
        self.vera_D = nn.Parameter(d.to(device=like.device, dtype=like.dtype), requires_grad=grad)
        self.vera_B = nn.Parameter(b.to(device=like.device, dtype=like.dtype), requires_grad=grad)

    def forward(self, hidden: torch.Tensor | None, x: torch.Tensor) -> tuple[Any, Any]:
        h = x if hidden is None else hidden
        if self.lora_dropout is not None:
            h = self.lora_dropout(h)
        lora_a, lora_b = self._ab()
        if self.dense:
            h = h @ torch.t(self.vera_B @ lora_b @ self.vera_D @ lora_a)
        elif self.n_parts == 1:
            h = F.linear(F.linear(h, lora_a) * self.vera_D, lora_b) * self.vera_B
        else:
            a = F.linear(h, lora_a).unsqueeze(-2) * self.vera_D.view(self.n_parts, self.r)
            h = (F.linear(a, lora_b) * self.vera_B.view(self.n_parts, self.rows)).flatten(-2)
        return self._finish(h, x, self.scaling)

    def delta_weight(self) -> torch.Tensor:
        lora_a, lora_b = self._ab()
        if self.dense:
            return self.vera_B @ lora_b @ self.vera_D @ lora_a
        d = self.vera_D.view(self.n_parts, 1, self.r)
        b = self.vera_B.view(self.n_parts, self.rows, 1)
        parts = (b * lora_b.unsqueeze(0) * d) @ lora_a  # (n, rows, in)
        return parts.reshape(self.out_rows, self.in_features)


def compact_vera_state(module: Vera, d: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accept the reference's diagonal-matrix ``vera_D`` / ``vera_B`` for ``module``.

    Diagonal matrices become this library's vectors; anything else switches the module to the
    dense form. Returns the tensors to load under ``vera_D`` / ``vera_B``.
    """
    if d.dim() == 1 and b.dim() == 1:
        return {"vera_D": d, "vera_B": b}
    if d.dim() != 2 or b.dim() != 2 or module.n_parts != 1:
        return {"vera_D": d, "vera_B": b}  # load_strict reports the shape mismatch
    if _is_diagonal(d) and _is_diagonal(b) and not module.dense:
        return {"vera_D": torch.diagonal(d).clone(), "vera_B": torch.diagonal(b).clone()}
    if not module.dense:
        module.densify(torch.diag(module.vera_D.detach()), torch.diag(module.vera_B.detach()))
    return {"vera_D": d, "vera_B": b}


def _is_diagonal(m: torch.Tensor) -> bool:
    return m.shape[0] == m.shape[1] and bool((m - torch.diag(torch.diagonal(m))).eq(0).all())


VARIANTS: dict[str, type[LoRAVariant]] = {
    "lora": LoRA,
    "dora": LoRA,
    "ia3": IA3,
    "vera": Vera,
    "dvora": Vera,
}
