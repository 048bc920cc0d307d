"""Parameter merging: ``average_adapter`` and ``average_head`` (the reference's semantics).

A new adapter is made from existing ones of the same config (``dropout`` and ``init_weights``
may differ), weight by weight: ``Φ = Σ λᵢ Φᵢ``. This is the reference library's task
arithmetic: weights are normalised to sum to 1 unless ``normalize_weights=False``, and a negative
weight subtracts an adapter ("unlearning"). It works for every method, whatever modules it has,
because an adapter's tensors are found by their key markers (``weights.ADAPTER_KEY_MARKERS``):
bottleneck and invertible adapters, Compacter's shared PHM rule, the LoRA family (VeRA's shared
matrices included, as the reference does), and methods added later.

The LoRA family has two more strategies, as in the reference:

- ``lora_linear_only_negate_b`` (Zhang et al., 2023): ``A = Σ |λᵢ| Aᵢ``, ``B = Σ λᵢ Bᵢ``; other
  tensors (DoRA's magnitude, a gate) linearly.
- ``lora_delta_w_svd``: ``ΔW = Σ λᵢ sᵢ Bᵢ Aᵢ`` per layer (per q/k/v part of a fused
  projection: GPT-2's ``c_attn`` works here, the reference refuses GPT-2), truncated to
  ``svd_rank`` by SVD: ``A = Vₖ``, ``B = Uₖ Sₖ / s`` with the new adapter's scaling
  ``s = alpha / svd_rank``. The reference keeps ``alpha`` with the new rank but does not rescale
  ``B``, so its merged update is off by ``r / svd_rank`` when the ranks differ; here the merged
  adapter's update is the rank-``svd_rank`` approximation of the weighted sum of updates.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .configuration import AdapterConfig, ConfigUnion
from .errors import AdapterConfigError, AdapterError, AdapterNotFoundError
from .methods.lora import lora_configs_of, lora_layers
from .weights import adapter_filter, collect, model_tensors, rename_adapter_keys

if TYPE_CHECKING:
    from .model_mixin import ModelAdaptersMixin

logger = logging.getLogger(__name__)

COMBINE_STRATEGIES = ("linear", "lora_linear_only_negate_b", "lora_delta_w_svd")
# may differ between the adapters averaged (the reference ignores them in its config hash)
_IGNORED_FIELDS = ("dropout", "init_weights")


def _weights(
    names: Sequence[str], weights: Sequence[float] | None, normalize: bool
) -> dict[str, float]:
    if weights is None:
        return {n: 1.0 / len(names) for n in names}
    if len(weights) != len(names):
        raise AdapterConfigError(f"{len(weights)} weights given for {len(names)} adapters.")
    total = float(sum(weights)) if normalize else 1.0
    if total == 0.0:
        raise AdapterConfigError(
            "The weights sum to 0 and cannot be normalised; pass normalize_weights=False."
        )
    return {n: float(w) / total for n, w in zip(names, weights, strict=True)}


def _comparable(config: AdapterConfig) -> Any:
    def strip(d: Any) -> Any:
        if isinstance(d, Mapping):
            return {k: strip(v) for k, v in d.items() if k not in _IGNORED_FIELDS}
        if isinstance(d, list):
            return [strip(v) for v in d]
        return d

    return strip(config.to_dict())


def _common_config(model: ModelAdaptersMixin, names: Sequence[str]) -> AdapterConfig:
    configs = model.adapters_config.adapters
    missing = [n for n in names if n not in configs]
    if missing:
        raise AdapterNotFoundError(f"No adapter named {missing[0]!r} in this model.")
    first = configs[names[0]]
    for name in names[1:]:
        if _comparable(configs[name]) != _comparable(first):
            raise AdapterConfigError(
                f"Cannot average adapters with different configurations: {names[0]!r} and "
                f"{name!r} differ (only dropout and init_weights may)."
            )
    return first


def _renamed(state: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    # a leading dot: keys at the model's top level (shared_parameters.<name>... of a bare
    # model) carry the markers' dot too
    dotted = rename_adapter_keys({"." + k: v for k, v in state.items()}, old, new)
    return {k[1:]: v for k, v in dotted.items()}


def _weighted_sum(
    model: ModelAdaptersMixin, new: str, inputs: dict[str, float], weight_for: Any
) -> dict[str, torch.Tensor]:
    """``{key of adapter new: Σ weight_for(key, λᵢ) · tensorᵢ}`` over the inputs' tensors."""
    total: dict[str, torch.Tensor] = {}
    keys: set[str] | None = None
    for name, lam in inputs.items():
        state = _renamed(collect(model, adapter_filter(name)), name, new)
        if keys is not None and set(state) != keys:
            raise AdapterError(
                f"Adapter {name!r} has other tensors than the first adapter averaged "
                f"({sorted(set(state) ^ keys)[:3]}...): they cannot be averaged."
            )
        keys = set(state)
        for key, value in state.items():
            term = weight_for(key, lam) * value.float()
            total[key] = term if key not in total else total[key] + term
    return total


def average_adapter(
    model: ModelAdaptersMixin,
    adapter_name: str,
    adapter_list: Sequence[str] | Mapping[str, float],
    weights: Sequence[float] | None = None,
    combine_strategy: str = "linear",
    normalize_weights: bool = True,
    overwrite_ok: bool = False,
    set_active: bool = False,
    svd_rank: int | None = None,
) -> None:
    """Add ``adapter_name`` as the weighted combination of ``adapter_list`` (see module doc)."""
    if isinstance(adapter_list, Mapping):
        if weights is not None:
            raise AdapterConfigError("Pass weights either in adapter_list (a dict) or as weights.")
        names, weights = list(adapter_list), list(adapter_list.values())
    else:
        names = list(adapter_list)
    if not names:
        raise AdapterConfigError("No adapters to average: adapter_list is empty.")
    if combine_strategy not in COMBINE_STRATEGIES:
        raise AdapterConfigError(
            f"Unknown combine_strategy {combine_strategy!r}; one of {', '.join(COMBINE_STRATEGIES)}."
        )
    if adapter_name in names:
        raise AdapterConfigError(f"{adapter_name!r} cannot be the average of itself.")
    config = _common_config(model, names)
    inputs = _weights(names, weights, normalize_weights)
    loras = lora_configs_of(config)
    if combine_strategy != "linear":
        if isinstance(config, ConfigUnion) or not loras:
            raise AdapterConfigError(
                f"combine_strategy {combine_strategy!r} is for LoRA adapters (not unions); "
                f"{type(config).__name__} adapters support 'linear'."
            )
        if loras[0].variant in ("vera", "dvora") or loras[0].composition_mode == "scale":
            if combine_strategy == "lora_delta_w_svd":
                raise AdapterConfigError(
                    f"combine_strategy 'lora_delta_w_svd' needs LoRA's A and B matrices; "
                    f"{loras[0].variant} adapters support 'linear'"
                    + (" and 'lora_linear_only_negate_b'." if loras[0].variant == "ia3" else ".")
                )
            if loras[0].variant != "ia3":
                raise AdapterConfigError("VeRA adapters support only combine_strategy 'linear'.")
    if combine_strategy == "lora_delta_w_svd":
        if svd_rank is None or int(svd_rank) < 1:
            raise AdapterConfigError("combine_strategy 'lora_delta_w_svd' needs svd_rank >= 1.")
        config = config.replace(r=int(svd_rank))
    elif svd_rank is not None:
        logger.warning("svd_rank is only used by combine_strategy 'lora_delta_w_svd'; ignored.")

    if combine_strategy == "lora_linear_only_negate_b":

        def weight_for(key: str, lam: float) -> float:
            return abs(lam) if key.endswith(".lora_A") else lam
    else:

        def weight_for(key: str, lam: float) -> float:
            return lam

    if combine_strategy == "lora_delta_w_svd":
        # A and B come from the SVD; everything else (DoRA's magnitude, gates) linearly
        averaged = _weighted_sum(model, adapter_name, inputs, weight_for)
        averaged = {k: v for k, v in averaged.items() if not k.endswith((".lora_A", ".lora_B"))}
    else:
        averaged = _weighted_sum(model, adapter_name, inputs, weight_for)

    model.add_adapter(adapter_name, config, overwrite_ok=overwrite_ok)
    try:
        tensors = model_tensors(model)  # type: ignore[arg-type]
        expected = {k for k in tensors if adapter_filter(adapter_name)(k)}
        if combine_strategy != "lora_delta_w_svd" and set(averaged) != expected:
            raise AdapterError(
                f"The averaged tensors do not fit adapter {adapter_name!r} "
                f"({sorted(set(averaged) ^ expected)[:3]})."
            )
        with torch.no_grad():
            for key, value in averaged.items():
                tensors[key].copy_(value.to(tensors[key].dtype))
            if combine_strategy == "lora_delta_w_svd":
                _svd_merge(model, adapter_name, inputs, config)
    except Exception:
        model.delete_adapter(adapter_name)
        raise
    if set_active:
        model.set_active_adapters(adapter_name)


def _svd_merge(
    model: ModelAdaptersMixin, new: str, inputs: dict[str, float], config: AdapterConfig
) -> None:
    cfg = lora_configs_of(config)[0]
    for layer in lora_layers(model.adapters_handle.base_model):
        if new not in layer.loras:
            continue
        target = layer.loras[new]
        k, n, rows = cfg.r, target.n_parts, target.rows
        delta = None
        for name, lam in inputs.items():
            if name not in layer.loras:
                raise AdapterError(f"Adapter {name!r} is missing at {layer.lora_target.path}.")
            module = layer.loras[name]
            term = lam * module.scaling * module.delta_weight().float()
            delta = term if delta is None else delta + term
        assert delta is not None
        a_new = target.lora_A.view(n, k, target.in_features)
        b_new = target.lora_B.view(n, rows, k)
        a_new.zero_()
        b_new.zero_()
        for g in range(n):
            u, s, vh = torch.linalg.svd(delta[g * rows : (g + 1) * rows], full_matrices=False)
            keep = min(k, s.shape[0])
            a_new[g, :keep] = vh[:keep].to(a_new.dtype)
            b_new[g, :, :keep] = (u[:, :keep] * (s[:keep] / target.scaling)).to(b_new.dtype)


def average_head(
    model: Any,
    head_name: str,
    head_list: Sequence[str] | Mapping[str, float],
    weights: Sequence[float] | None = None,
    normalize_weights: bool = True,
    overwrite_ok: bool = False,
    set_active: bool = False,
) -> None:
    """Add head ``head_name`` as the weighted sum of the heads in ``head_list`` (same config)."""
    heads = getattr(model, "heads", None)
    if heads is None:
        raise AdapterError("This model has no flexible heads to average.")
    if isinstance(head_list, Mapping):
        names, weights = list(head_list), list(head_list.values())
    else:
        names = list(head_list)
    if not names:
        raise AdapterConfigError("No heads to average: head_list is empty.")
    missing = [n for n in names if n not in heads]
    if missing:
        raise AdapterNotFoundError(f"No head named {missing[0]!r} in this model.")
    first = heads[names[0]]
    for name in names[1:]:
        if dict(heads[name].config) != dict(first.config):
            raise AdapterConfigError(
                f"Cannot average heads with different configurations: {names[0]!r} and {name!r}."
            )
    if head_name in heads and not overwrite_ok:
        raise AdapterError(f"A head named {head_name!r} already exists.")
    inputs = _weights(names, weights, normalize_weights)
    new = copy.deepcopy(first)
    new.name = head_name
    with torch.no_grad():
        states = {n: heads[n].state_dict() for n in names}
        for key, param in new.state_dict(keep_vars=True).items():
            if param.is_floating_point():
                param.copy_(sum(lam * states[n][key].float() for n, lam in inputs.items()))
    model.add_prediction_head(new, overwrite_ok=overwrite_ok, set_active=set_active)
