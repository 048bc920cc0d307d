"""Which state-dict keys belong to an adapter, fusion or head; renaming; strict loading.

Keys are full module paths of the saving model. A file saved from a bare base model has no
``bert.`` prefix and one saved from a model with heads has it; :func:`match_keys` reconciles both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from .errors import AdapterLoadError

# Substrings marking an adapter's modules, one per method family (the reference's filter).
ADAPTER_KEY_MARKERS = (
    "_adapters.{name}.",
    ".adapters.{name}.",
    ".prefix_tunings.{name}.",
    ".prefix_gates.{name}.",
    ".loras.{name}.",
    ".refts.{name}.",
    ".prompt_tunings.{name}.",
    ".shared_parameters.{name}.",
)

KeyFilter = Callable[[str], bool]


def adapter_filter(name: str) -> KeyFilter:
    markers = tuple(m.format(name=name) for m in ADAPTER_KEY_MARKERS)

    def keep(key: str) -> bool:
        dotted = "." + key  # a bare base model's own modules: shared_parameters.<name>...
        return any(m in dotted for m in markers)

    return keep


def fusion_filter(name: str) -> KeyFilter:
    marker = f"adapter_fusion_layer.{name}."
    return lambda key: marker in key


def head_filter(name: str, base_model_prefix: str) -> KeyFilter:
    marker = f"heads.{name}."
    prefix = base_model_prefix + "."
    return lambda key: key.startswith(marker) and not key.startswith(prefix)


def static_head_filter(base_model_prefix: str) -> KeyFilter:
    """Keys of a task-specific HF class's head: everything outside the base model."""
    prefix = base_model_prefix + "."
    return lambda key: not key.startswith(prefix) and not key.startswith("heads.")


def rename_adapter_keys(
    state: Mapping[str, torch.Tensor], old: str, new: str
) -> dict[str, torch.Tensor]:
    if old == new:
        return dict(state)
    pairs = [(m.format(name=old), m.format(name=new)) for m in ADAPTER_KEY_MARKERS]
    pairs.append((f"adapter_fusion_layer.{old}.", f"adapter_fusion_layer.{new}."))
    out = {}
    for key, value in state.items():
        for a, b in pairs:
            if a in key:
                key = key.replace(a, b)
                break
        out[key] = value
    return out


def rename_prefix_segment(
    state: Mapping[str, torch.Tensor], marker: str, old: str, new: str
) -> dict[str, torch.Tensor]:
    """Rename ``<marker>.<old>.`` to ``<marker>.<new>.`` (heads, fusion layers)."""
    a, b = f"{marker}.{old}.", f"{marker}.{new}."
    return {(k.replace(a, b, 1) if a in k else k): v for k, v in state.items()}


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers by full name (shared tensors listed under each name)."""
    return model.state_dict(keep_vars=True)


def collect(model: nn.Module, keep: KeyFilter) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model_tensors(model).items() if keep(k)}


def match_keys(
    loaded: Mapping[str, torch.Tensor], model_keys: Iterable[str], base_model_prefix: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map file keys to model keys, adding or removing the base-model prefix as needed.

    Returns (mapped state, keys that match nothing)."""
    known = set(model_keys)
    prefix = base_model_prefix + "." if base_model_prefix else ""
    mapped: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in loaded.items():
        if key in known:
            target = key
        elif prefix and key.startswith(prefix) and key[len(prefix) :] in known:
            target = key[len(prefix) :]
        elif prefix and prefix + key in known:
            target = prefix + key
        else:
            unmatched.append(key)
            continue
        mapped[target] = value
    return mapped, unmatched


def _short(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(
    model: nn.Module,
    loaded: Mapping[str, torch.Tensor],
    keep: KeyFilter,
    base_model_prefix: str,
    what: str,
) -> None:
    """Copy ``loaded`` into the model tensors selected by ``keep``.

    Raises AdapterLoadError naming every missing, unexpected or mis-shaped key; nothing is
    copied unless everything fits."""
    tensors = model_tensors(model)
    expected = {k: v for k, v in tensors.items() if keep(k)}
    mapped, unmatched = match_keys(loaded, expected.keys(), base_model_prefix)
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(unmatched)
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_short(mismatched)}")
    if problems:
        raise AdapterLoadError(f"Cannot load {what}: " + "; ".join(problems))
    with torch.no_grad():
        for key, value in mapped.items():
            target = expected[key]
            target.copy_(value.to(dtype=target.dtype, device=target.device))
