"""Parameterized hypercomplex multiplication layers: the linear layers of Compacter.

A PHM layer computes ``y = x @ H + b`` with ``H = sum_i kron(rule_i, W_i)`` (``phm_dim`` terms),
so an ``in x out`` weight costs ``phm_dim**3 + in*out/phm_dim`` parameters (fewer again with
the low-rank factorisation ``W_i = W_left_i @ W_right_i``). The ``phm_dim x phm_dim`` rules
(and, with ``shared_W_phm``, the ``W`` factors) can be shared by every layer of one adapter:
they then live once in the base model's ``shared_parameters.<adapter>`` (the reference's key:
``bert.shared_parameters.a.phm_rule``) and each layer reads them from there.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configuration import BnConfig
from ..errors import AdapterConfigError


def kronecker(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product over the last two dims: (n, p, q) x (n, r, s) -> (n, pr, qs)."""
    out = a.unsqueeze(-1).unsqueeze(-3) * b.unsqueeze(-2).unsqueeze(-4)
    return out.reshape(*out.shape[:-4], a.shape[-2] * b.shape[-2], a.shape[-1] * b.shape[-1])


def _init_rule(rule: torch.Tensor, config: BnConfig) -> None:
    if config.phm_c_init == "normal":
        rule.normal_(0.0, float(config.phm_init_range or 0.0001))
    elif config.phm_c_init == "uniform":
        rule.uniform_(-1.0, 1.0)
    else:
        raise AdapterConfigError(f"Unknown phm_c_init {config.phm_c_init!r}.")


def _init_w(weights: list[torch.Tensor], config: BnConfig) -> None:
    kind = config.hypercomplex_nonlinearity
    for w in weights:
        for i in range(w.shape[0]):
            if kind == "glorot-uniform":
                nn.init.xavier_uniform_(w[i])
            elif kind == "glorot-normal":
                nn.init.xavier_normal_(w[i])
            elif kind == "normal":
                w[i].normal_(0.0, float(config.phm_init_range or 0.0001))
            else:
                raise AdapterConfigError(f"Unknown hypercomplex_nonlinearity {kind!r}.")


def _w_shapes(config: BnConfig, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
    n = config.phm_dim
    if config.factorized_phm_W:
        rank = int(config.phm_rank or 1)
        return {"W_left": (n, n_in // n, rank), "W_right": (n, rank, n_out // n)}
    return {"W": (n, n_in // n, n_out // n)}


def _rule_shapes(config: BnConfig) -> dict[str, tuple[int, ...]]:
    n = config.phm_dim
    if config.factorized_phm_rule:
        return {"phm_rule_left": (n, n, 1), "phm_rule_right": (n, 1, n)}
    return {"phm_rule": (n, n, n)}


def check_phm_config(config: BnConfig, hidden: int, down: int) -> None:
    """Refuse sizes a PHM layer cannot factor (``phm_dim`` must divide both)."""
    n = int(config.phm_dim)
    if n < 1 or hidden % n or down % n:
        raise AdapterConfigError(
            f"phm_dim={n} must divide the hidden size ({hidden}) and the bottleneck size "
            f"({down}, hidden size / reduction_factor)."
        )


def shared_phm_parameters(config: BnConfig, hidden: int, down: int) -> nn.ParameterDict:
    """The adapter-wide tensors (``shared_parameters.<name>``): rules and/or W factors."""
    params = nn.ParameterDict()
    with torch.no_grad():
        if config.shared_W_phm:
            for pos, (n_in, n_out) in (("down", (hidden, down)), ("up", (down, hidden))):
                ws = {k: torch.empty(s) for k, s in _w_shapes(config, n_in, n_out).items()}
                _init_w(list(ws.values()), config)
                for k, w in ws.items():
                    params[k.replace("W", f"W_{pos}", 1)] = nn.Parameter(w)
        if config.shared_phm_rule:
            for k, s in _rule_shapes(config).items():
                rule = torch.empty(s)
                _init_rule(rule, config)
                params[k] = nn.Parameter(rule, requires_grad=bool(config.learn_phm))
    return params


class PHMLayer(nn.Module):
    """``in_features -> out_features`` as a sum of Kronecker products (see module doc).

    ``position`` ("down" or "up") picks the shared W factors; ``shared`` is the adapter's
    :func:`shared_phm_parameters`, held as a plain reference (saved once, by the base model)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        position: str,
        config: BnConfig,
        shared: nn.ParameterDict | None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.position = position
        self.factorized_phm_W = bool(config.factorized_phm_W)
        self.factorized_phm_rule = bool(config.factorized_phm_rule)
        self.shared_phm_rule = bool(config.shared_phm_rule)
        self.shared_W_phm = bool(config.shared_W_phm)
        if (self.shared_phm_rule or self.shared_W_phm) and shared is None:
            raise AdapterConfigError("A shared PHM layer needs the adapter's shared parameters.")
        self.__dict__["shared"] = shared  # not a submodule: its tensors are saved once
        with torch.no_grad():
            if not self.shared_phm_rule:
                for k, s in _rule_shapes(config).items():
                    rule = torch.empty(s)
                    _init_rule(rule, config)
                    setattr(self, k, nn.Parameter(rule, requires_grad=bool(config.learn_phm)))
            if not self.shared_W_phm:
                ws = {
                    k: torch.empty(s)
                    for k, s in _w_shapes(config, in_features, out_features).items()
                }
                _init_w(list(ws.values()), config)
                for k, w in ws.items():
                    setattr(self, k, nn.Parameter(w))
        self.b = nn.Parameter(torch.zeros(out_features)) if config.phm_bias else None

    def _get(self, key: str, shared: bool) -> torch.Tensor:
        if shared:
            return self.shared[key]  # type: ignore[index]
        return getattr(self, key)

    def weight_matrix(self) -> torch.Tensor:
        """``H`` (in_features x out_features)."""
        s_rule, s_w = self.shared_phm_rule, self.shared_W_phm
        if self.factorized_phm_rule:
            rule = torch.bmm(
                self._get("phm_rule_left", s_rule), self._get("phm_rule_right", s_rule)
            )
        else:
            rule = self._get("phm_rule", s_rule)
        prefix = f"W_{self.position}" if s_w else "W"
        if self.factorized_phm_W:
            w = torch.bmm(self._get(f"{prefix}_left", s_w), self._get(f"{prefix}_right", s_w))
        else:
            w = self._get(prefix, s_w)
        return kronecker(rule, w).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight_matrix())
        return y + self.b if self.b is not None else y
