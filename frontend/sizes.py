"""How big an adapter is next to its base model: parameter counts from the config, file sizes.

Only bottleneck adapters (every architecture of the Hub) are counted; the base models' sizes are
the published figures of the checkpoints the Hub's cards name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BaseModel:
    hidden_size: int
    layers: int  # transformer layers that carry adapters (encoder + decoder for seq2seq models)
    params: int


_M = 1_000_000
KNOWN_BASE_MODELS: dict[str, BaseModel] = {
    "bert-base-uncased": BaseModel(768, 12, 110 * _M),
    "bert-base-cased": BaseModel(768, 12, 108 * _M),
    "bert-large-uncased": BaseModel(1024, 24, 340 * _M),
    "bert-large-cased": BaseModel(1024, 24, 333 * _M),
    "bert-base-multilingual-cased": BaseModel(768, 12, 178 * _M),
    "bert-base-multilingual-uncased": BaseModel(768, 12, 167 * _M),
    "aubmindlab/bert-base-arabert": BaseModel(768, 12, 136 * _M),
    "distilbert-base-uncased": BaseModel(768, 6, 66 * _M),
    "distilbert-base-cased": BaseModel(768, 6, 65 * _M),
    "roberta-base": BaseModel(768, 12, 125 * _M),
    "roberta-large": BaseModel(1024, 24, 355 * _M),
    "distilroberta-base": BaseModel(768, 6, 82 * _M),
    "xlm-roberta-base": BaseModel(768, 12, 278 * _M),
    "xlm-roberta-large": BaseModel(1024, 24, 560 * _M),
    "gpt2": BaseModel(768, 12, 124 * _M),
    "gpt2-medium": BaseModel(1024, 24, 355 * _M),
    "facebook/bart-base": BaseModel(768, 12, 139 * _M),
    "facebook/bart-large": BaseModel(1024, 24, 406 * _M),
    "facebook/mbart-large-cc25": BaseModel(1024, 24, 610 * _M),
    "t5-base": BaseModel(768, 24, 223 * _M),
    "t5-small": BaseModel(512, 12, 60 * _M),
}
BYTES_PER_PARAM = 4  # float32 checkpoints


def bottleneck_params(config: dict, hidden_size: int, layers: int) -> int | None:
    """Trainable parameters of a bottleneck adapter config on a model of this width and depth.

    Per adapter layer: down projection h*d + d, up projection d*h + h, with d = h / reduction
    factor; one such layer after attention (mh_adapter) and/or after the FFN (output_adapter), in
    every transformer layer not in leave_out; plus an invertible adapter (NICE) when configured.
    """
    try:
        reduction = float(config.get("reduction_factor") or 0)
    except (TypeError, ValueError):
        return None
    if reduction <= 0 or not hidden_size or not layers:
        return None
    down = int(hidden_size // reduction)
    per_layer = 2 * hidden_size * down + down + hidden_size
    per_block = int(bool(config.get("mh_adapter"))) + int(bool(config.get("output_adapter")))
    leave_out = config.get("leave_out") or []
    kept = max(layers - len({i for i in leave_out if isinstance(i, int) and 0 <= i < layers}), 0)
    total = per_layer * per_block * kept
    if config.get("inv_adapter"):
        half = hidden_size // 2
        inner = int(half // float(config.get("inv_adapter_reduction_factor") or 2))
        # Two coupling functions F and G, each half -> inner -> half.
        total += 2 * (half * inner + inner + inner * half + half)
    return total


def size_comparison(
    model_name: str, config: dict, hidden_size: int | None, file_size: int | None
) -> dict | None:
    """Parameters and bytes of the adapter and of its base model, for the page's chart; None when
    the base model is unknown or the config is not a bottleneck adapter."""
    base = KNOWN_BASE_MODELS.get(model_name)
    if base is None:
        return None
    params = bottleneck_params(config, hidden_size or base.hidden_size, base.layers)
    if not params:
        return None
    adapter_bytes = file_size or params * BYTES_PER_PARAM
    base_bytes = base.params * BYTES_PER_PARAM
    return {
        "hidden_size": hidden_size or base.hidden_size,
        "layers": base.layers,
        "rows": [
            _row("Parameters", params, base.params, "params"),
            _row("File size", adapter_bytes, base_bytes, "bytes", estimated=not file_size),
        ],
    }


def _row(label: str, adapter: int, base: int, unit: str, estimated: bool = False) -> dict:
    return {
        "label": label,
        "adapter": adapter,
        "base": base,
        "unit": unit,
        "estimated": estimated,
        "percent": 100.0 * adapter / base if base else 0.0,
    }
