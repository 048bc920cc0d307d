"""PEFT's folder format: load a PEFT adapter as the matching adapter here, export LoRA and IA3.

A PEFT folder holds ``adapter_config.json`` with a ``peft_type`` and ``adapter_model.safetensors``
(an ``adapter_model.bin`` is read through the safe weight reader, never a full unpickler). Its
weight keys name the modules PEFT wrapped, relative to the model PEFT wrapped
(``base_model.model.<module path>.lora_A.weight``). Loading maps each module path onto the
linear layers of our architecture table (:class:`~adapters_core.models.spec.LinearSpec`), so
what PEFT's ``target_modules`` selected, whatever the names it used, becomes a ``LoRAConfig``
(``selfattn_lora`` / ``attn_matrices`` / ``intermediate_lora`` / ``output_lora``, with the
layers PEFT left alone in ``leave_out``). Where that config covers a layer PEFT did not adapt
(BART's cross-attention when PEFT took only ``self_attn.q_proj``), the layer gets the neutral
weights (LoRA ``B = 0``, IA3 ``1``), so outputs stay PEFT's.

Per-module ranks and alphas (``rank_pattern``, ``alpha_pattern``, ``use_rslora``) are exact
here: ranks are zero-padded to the largest one and each module's scaling is folded into its
``lora_B``. A fused projection (GPT-2 ``c_attn``) is one LoRA in PEFT and three grouped parts
here: ``A`` is repeated per part, ``B`` split by rows, which is the same product.

Methods register a reader (and optionally a writer) per ``peft_type`` in :data:`PEFT_FORMATS`
(:func:`register_peft_format`); LoRA and IA3 are here, prefix and prompt tuning plug in the
same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import loading
from .configuration.lora_config import IA3Config, LoRAConfig
from .errors import AdapterConfigError, AdapterLoadError, AdapterNotFoundError
from .methods.base import iter_linears
from .methods.lora import lora_layers
from .weight_safety import read_state_dict

if TYPE_CHECKING:
    from .model_mixin import ModelAdaptersMixin
    from .models.spec import LinearSpec

logger = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
PEFT_SAFETENSORS, PEFT_BIN = loading.PEFT_WEIGHTS_NAMES

# gated feed-forward blocks: act(gate(x)) * up(x) feeds down_proj, so scaling down_proj's
# input per channel (PEFT IA3 "feedforward_modules") equals scaling up_proj's output
_FEEDFORWARD_EQUIVALENT = {
    "llama": {"mlp.down_proj": "mlp.up_proj"},
    "mistral": {"mlp.down_proj": "mlp.up_proj"},
    "qwen2": {"mlp.down_proj": "mlp.up_proj"},
}


class PeftFormatError(AdapterConfigError):
    """A PEFT folder this library cannot represent exactly (the message says what and why)."""


@dataclass(frozen=True)
class Site:
    """One linear layer of the architecture table, as found in a model."""

    layer_idx: int
    path: str  # relative to the base model
    spec: LinearSpec
    module: nn.Module


@dataclass(frozen=True)
class PeftFormat:
    """Reader and writer for one ``peft_type``.

    ``load(model, name, peft_config, tensors, leave_out)`` adds adapter ``name`` to the model
    and fills its weights; ``export(model, name)`` returns (PEFT config dict, tensors keyed as
    PEFT names them), None for an adapter of another method, or raises
    :class:`PeftFormatError` for one of its method it cannot write."""

    load: Callable[..., None]
    # None when the adapter is not of this format's method
    export: Callable[..., tuple[dict[str, Any], dict[str, torch.Tensor]] | None] | None = None


PEFT_FORMATS: dict[str, PeftFormat] = {}


def register_peft_format(peft_type: str, fmt: PeftFormat) -> None:
    """Plug a method into PEFT loading / exporting (``peft_type`` as PEFT writes it)."""
    PEFT_FORMATS[peft_type.upper()] = fmt


# ---------------------------------------------------------------------------------------------
# Reading a folder
# ---------------------------------------------------------------------------------------------


def read_peft_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, tensors) of a PEFT folder, read safely."""
    folder = Path(folder)
    config = loading.read_json_config(folder / loading.ADAPTER_CONFIG_NAME)
    if not isinstance(config.get("peft_type"), str):
        raise PeftFormatError(f"{folder}/adapter_config.json: 'peft_type' must be a string.")
    for name in (PEFT_SAFETENSORS, PEFT_BIN):
        if (folder / name).is_file():
            return config, read_state_dict(folder / name)
    raise AdapterNotFoundError(
        f"{folder} holds a PEFT adapter config but no {PEFT_SAFETENSORS} (or {PEFT_BIN})."
    )


def load_peft_adapter(
    model: ModelAdaptersMixin,
    folder: str | os.PathLike,
    load_as: str | None = None,
    set_active: bool = False,
    leave_out: list[int] | None = None,
) -> str:
    """Load the PEFT adapter in ``folder`` into ``model``; returns its name (``load_as`` or the
    folder's name)."""
    folder = Path(folder)
    config, tensors = read_peft_folder(folder)
    peft_type = config["peft_type"].upper()
    fmt = PEFT_FORMATS.get(peft_type)
    if fmt is None:
        known = ", ".join(sorted(PEFT_FORMATS))
        raise PeftFormatError(
            f"{folder}: PEFT adapters of type {peft_type!r} cannot be loaded here "
            f"(supported: {known})."
        )
    _check_common(config, tensors, folder)
    name = load_as or folder.resolve().name
    if name in model.adapters_config.adapters:
        raise AdapterConfigError(
            f"An adapter named {name!r} already exists; delete it or use load_as."
        )
    stripped = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
    fmt.load(model, name, config, stripped, set(leave_out or ()))
    if set_active:
        model.set_active_adapters(name)
    return name


def _check_common(config: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path) -> None:
    bias = config.get("bias", "none")
    if bias not in (None, "none"):
        raise PeftFormatError(
            f"{folder}: PEFT bias={bias!r} trains the wrapped layers' biases, which an adapter "
            "here does not hold; only bias='none' can be loaded."
        )
    if config.get("lora_bias"):
        raise PeftFormatError(
            f"{folder}: PEFT lora_bias=True (a bias on lora_B) has no equivalent."
        )
    to_save = config.get("modules_to_save")
    if to_save:
        raise PeftFormatError(
            f"{folder}: modules_to_save={list(to_save)} holds full trained copies of those modules "
            "(typically a task head), which an adapter here does not carry; load them into the "
            "model separately or save the PEFT adapter without them."
        )
    if config.get("trainable_token_indices"):
        raise PeftFormatError(f"{folder}: PEFT trainable_token_indices has no equivalent here.")


def model_sites(model: ModelAdaptersMixin) -> list[Site]:
    """The table's linear layers in ``model`` with their paths in the base model."""
    handle = model.adapters_handle
    paths = {id(m): n for n, m in handle.base_model.named_modules()}
    return [
        Site(s.idx, paths[id(s.module)], s.spec, s.module)
        for s in iter_linears(handle)
        if id(s.module) in paths
    ]


def match_site(module_path: str, sites: list[Site]) -> Site | None:
    """The site whose base-model path ends ``module_path`` (PEFT may have wrapped a model with
    a head, whose paths carry the base model's prefix)."""
    best = None
    for site in sites:
        if module_path == site.path or module_path.endswith("." + site.path):
            if best is None or len(site.path) > len(best.path):
                best = site
    return best


def split_keys(
    tensors: dict[str, torch.Tensor], suffixes: tuple[str, ...], what: str
) -> dict[str, dict[str, torch.Tensor]]:
    """``{module path: {suffix: tensor}}``; any other key is refused, named."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        suffix = next((s for s in suffixes if key.endswith("." + s)), None)
        if suffix is None:
            raise PeftFormatError(
                f"PEFT {what} weight {key!r} is not one of {', '.join(suffixes)}: "
                "this adapter holds something an adapter here cannot represent."
            )
        out.setdefault(key[: -len(suffix) - 1], {})[suffix] = value
    return out


def resolve_sites(modules: dict[str, Any], sites: list[Site], arch: str) -> dict[str, Site]:
    """Map every PEFT module path onto a table site, or refuse naming the ones that fit none."""
    found: dict[str, Site] = {}
    missing = []
    for path in modules:
        site = match_site(path, sites)
        if site is None:
            missing.append(path)
        else:
            found[path] = site
    if missing:
        listed = sorted({p.rsplit(".", 1)[-1] for p in missing})
        raise PeftFormatError(
            f"PEFT adapted modules that are not among the linear layers adapters wrap on "
            f"{arch} (attention q/k/v/o, FFN intermediate/output): {', '.join(listed)} "
            f"(e.g. {missing[0]!r})."
        )
    return found


def selection_fields(chosen: list[Site], n_layers: int) -> dict[str, Any]:
    """LoRAConfig fields selecting (at least) ``chosen``, leaving out layers without any."""
    attn = sorted(
        {
            m
            for s in chosen
            if s.spec.location in ("selfattn", "crossattn")
            for m in s.spec.matrices
        },
        key="qkvo".index,
    )
    layers = {s.layer_idx for s in chosen}
    return {
        "selfattn_lora": bool(attn),
        "attn_matrices": attn or ["q", "v"],
        "intermediate_lora": any(s.spec.location == "intermediate" for s in chosen),
        "output_lora": any(s.spec.location == "output" for s in chosen),
        "leave_out": [i for i in range(n_layers) if i not in layers],
    }


def _n_layers(model: ModelAdaptersMixin) -> int:
    from .methods.base import iter_layers

    return sum(1 for _ in iter_layers(model.adapters_handle))


def _add_and_fill(
    model: ModelAdaptersMixin,
    name: str,
    config: LoRAConfig,
    fill: Callable[[Site | None, nn.Module, Any], None],
    by_module: dict[int, Site],
) -> None:
    """Add adapter ``name`` and fill every module it created (``fill(site, module, layer)``)."""
    model.add_adapter(name, config)
    try:
        with torch.no_grad():
            for layer in lora_layers(model.adapters_handle.base_model):
                if name in layer.loras:
                    fill(by_module.get(id(layer)), layer.loras[name], layer)
    except Exception:
        model.delete_adapter(name)
        raise


def _pattern_value(patterns: dict[str, Any], path: str, default: Any) -> Any:
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: the first key matching the path's end."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def _copy(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise AdapterLoadError(
            f"{what}: shape {tuple(src.shape)} in the file, {tuple(dst.shape)} in the model."
        )
    dst.copy_(src.to(dtype=dst.dtype, device=dst.device))


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def _load_lora(
    model: ModelAdaptersMixin,
    name: str,
    cfg: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    leave_out: set[int],
) -> None:
    if cfg.get("use_dora"):
        raise PeftFormatError(
            "PEFT DoRA (use_dora=True) is not loaded: PEFT leaves the bias out of the magnitude "
            "scaling and takes the norm of the scaled, detached update, the adapters library's "
            "DoRA does neither, so outputs would differ."
        )
    arch = model.config.model_type
    modules = split_keys(tensors, ("lora_A.weight", "lora_B.weight"), "LoRA")
    found = resolve_sites(modules, model_sites(model), arch)
    found = {p: s for p, s in found.items() if s.layer_idx not in leave_out}
    if not found:
        raise PeftFormatError("The PEFT LoRA adapter adapts no layer left after leave_out.")
    rslora = bool(cfg.get("use_rslora"))
    r0, alpha0 = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))

    def scaling(r: int, alpha: float) -> float:
        return alpha / math.sqrt(r) if rslora else alpha / r

    per_site: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for path, parts in modules.items():
        if path not in found:
            continue
        if set(parts) != {"lora_A.weight", "lora_B.weight"}:
            raise AdapterLoadError(f"PEFT LoRA module {path!r} lacks lora_A or lora_B.")
        a, b = parts["lora_A.weight"], parts["lora_B.weight"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise AdapterLoadError(
                f"PEFT LoRA module {path!r}: lora_A {tuple(a.shape)} and lora_B "
                f"{tuple(b.shape)} are not a rank-r pair."
            )
        r = int(_pattern_value(cfg.get("rank_pattern"), path, r0))
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), path, alpha0))
        if a.shape[0] != r:
            raise AdapterLoadError(
                f"PEFT LoRA module {path!r}: rank {a.shape[0]}, config says {r}."
            )
        per_site[id(found[path].module)] = (a, b, scaling(r, alpha))

    ranks = {a.shape[0] for a, _, _ in per_site.values()}
    scales = {s for _, _, s in per_site.values()}
    big_r = max(ranks)
    if len(scales) == 1 and not rslora and len(ranks) == 1:
        alpha = alpha0 if not cfg.get("alpha_pattern") else next(iter(scales)) * big_r
    else:  # keep one scaling for the whole adapter, fold the others into lora_B
        alpha = next(iter(scales)) * big_r if len(scales) == 1 else float(big_r)
    ours_scaling = alpha / big_r
    fields = selection_fields([found[p] for p in found], _n_layers(model))
    fields["leave_out"] = sorted(set(fields["leave_out"]) | leave_out)
    config = LoRAConfig(
        r=big_r, alpha=alpha, dropout=float(cfg.get("lora_dropout") or 0.0), **fields
    )
    by_module = {id(s.module): s for s in found.values()}

    def fill(site: Site | None, module: nn.Module, layer: Any) -> None:
        module.lora_A.zero_()
        module.lora_B.zero_()
        if site is None:
            return  # covered by the config, not by PEFT: the neutral update
        a, b, s = per_site[id(site.module)]
        n, rows, r = module.n_parts, module.rows, a.shape[0]
        what = f"PEFT LoRA at {site.path}"
        if b.shape[1] != r or a.shape[1] != module.in_features:
            raise AdapterLoadError(f"{what}: lora_A {tuple(a.shape)} does not fit the layer.")
        if b.shape[0] != layer.in_out[1]:
            raise AdapterLoadError(
                f"{what}: lora_B has {b.shape[0]} rows, the layer {layer.in_out[1]} outputs."
            )
        b = b * (s / ours_scaling)
        fused = layer.lora_target.fused
        parts = layer._lora_parts[name]
        a_view = module.lora_A.view(n, big_r, module.in_features)
        b_view = module.lora_B.view(n, rows, big_r)
        for j, part in enumerate(parts):
            g = fused.index(part) if fused else 0
            a_view[j, :r].copy_(a.to(a_view.dtype))
            b_view[j, :, :r].copy_(b[g * rows : (g + 1) * rows].to(b_view.dtype))

    _add_and_fill(model, name, config, fill, by_module)


def _export_lora(model: ModelAdaptersMixin, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    config = model.adapters_config.adapters[name]
    if not isinstance(config, LoRAConfig) or config.variant != "lora" or config.use_gating:
        raise PeftFormatError(
            f"Adapter {name!r} cannot be exported to PEFT's LoRA format: only plain LoRA and "
            "IA3 without gating can (DoRA and VeRA compute differently in PEFT)."
        )
    paths = {id(m): n for n, m in model.named_modules()}
    tensors: dict[str, torch.Tensor] = {}
    targets, rank_pattern, alpha_pattern = [], {}, {}
    conv1d = False
    r = config.r
    for layer in lora_layers(model.adapters_handle.base_model):
        if name not in layer.loras:
            continue
        module, path = layer.loras[name], paths[id(layer)]
        conv1d = conv1d or layer.transposed
        a, b = module.lora_A.detach(), module.lora_B.detach()
        fused, parts = layer.lora_target.fused, layer._lora_parts[name]
        if fused:
            # PEFT: one LoRA over all rows; ours: one rank-r pair per part, block-diagonal B
            n, rows = len(parts), module.rows
            full_b = b.new_zeros(layer.in_out[1], n * r)
            for j, part in enumerate(parts):
                g = fused.index(part)
                full_b[g * rows : (g + 1) * rows, j * r : (j + 1) * r] = b[
                    j * rows : (j + 1) * rows
                ]
            b = full_b
            if n != 1:
                rank_pattern[re.escape(path)] = n * r
                alpha_pattern[re.escape(path)] = config.alpha * n
        targets.append(path)
        tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = a.clone()
        tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = b.clone()
    peft_config = {
        "peft_type": "LORA",
        "task_type": None,
        "r": r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": conv1d,
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": None,
        "layers_to_transform": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    return peft_config, tensors


# ---------------------------------------------------------------------------------------------
# IA3
# ---------------------------------------------------------------------------------------------


def _load_ia3(
    model: ModelAdaptersMixin,
    name: str,
    cfg: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    leave_out: set[int],
) -> None:
    arch = model.config.model_type
    modules = split_keys(tensors, ("ia3_l",), "IA3")
    sites = model_sites(model)
    found = resolve_sites(modules, sites, arch)
    feedforward = cfg.get("feedforward_modules") or []
    if isinstance(feedforward, str):
        ff_match = lambda p: re.fullmatch(feedforward, p) is not None  # noqa: E731
    else:
        ff_match = lambda p: any(p == f or p.endswith("." + f) for f in feedforward)  # noqa: E731
    # output scale per site (several PEFT vectors can land on one site: multiply)
    scales: dict[int, tuple[Site, torch.Tensor]] = {}
    for path, parts in modules.items():
        site, vec = found[path], parts["ia3_l"]
        if ff_match(path):
            equivalent = _FEEDFORWARD_EQUIVALENT.get(arch, {}).get(site.spec.path)
            target = next(
                (s for s in sites if s.layer_idx == site.layer_idx and s.spec.path == equivalent),
                None,
            )
            if target is None:
                raise PeftFormatError(
                    f"PEFT IA3 feed-forward module {path!r} scales the layer's input; IA3 here "
                    f"scales outputs, and on {arch} no layer output is equivalent (feed-forward "
                    "modules load on gated FFNs: Llama, Mistral, Qwen2)."
                )
            site, vec = target, vec.reshape(-1, 1)
        elif vec.dim() != 2 or vec.shape[1] != 1:
            raise AdapterLoadError(f"PEFT IA3 vector at {path!r} has shape {tuple(vec.shape)}.")
        if site.layer_idx in leave_out:
            continue
        prev = scales.get(id(site.module))
        scales[id(site.module)] = (site, vec if prev is None else prev[1] * vec)
    if not scales:
        raise PeftFormatError("The PEFT IA3 adapter adapts no layer left after leave_out.")
    fields = selection_fields([s for s, _ in scales.values()], _n_layers(model))
    fields["leave_out"] = sorted(set(fields["leave_out"]) | leave_out)
    config = IA3Config(**fields)

    def fill(site: Site | None, module: nn.Module, layer: Any) -> None:
        module.lora_B.fill_(1.0)
        if site is None:
            return
        vec = scales[id(site.module)][1].float() / module.scaling
        if vec.shape[0] != layer.in_out[1]:
            raise AdapterLoadError(
                f"PEFT IA3 at {site.path}: {vec.shape[0]} values, the layer has "
                f"{layer.in_out[1]} outputs."
            )
        fused, parts, rows = layer.lora_target.fused, layer._lora_parts[name], module.rows
        out = module.lora_B.view(len(parts) if fused else 1, -1, 1)
        for j, part in enumerate(parts):
            g = fused.index(part) if fused else 0
            out[j].copy_(vec[g * rows : (g + 1) * rows].to(out.dtype))

    by_module = {id(s.module): s for s, _ in scales.values()}
    _add_and_fill(model, name, config, fill, by_module)


def _export_ia3(model: ModelAdaptersMixin, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    config = model.adapters_config.adapters[name]
    if config.use_gating:
        raise PeftFormatError(f"Adapter {name!r} uses gating, which PEFT's IA3 does not have.")
    paths = {id(m): n for n, m in model.named_modules()}
    tensors: dict[str, torch.Tensor] = {}
    targets = []
    conv1d = False
    for layer in lora_layers(model.adapters_handle.base_model):
        if name not in layer.loras:
            continue
        module, path = layer.loras[name], paths[id(layer)]
        conv1d = conv1d or layer.transposed
        vec = module.lora_B.detach().reshape(-1) * module.scaling
        fused, parts, rows = layer.lora_target.fused, layer._lora_parts[name], module.rows
        if fused:  # PEFT scales every row of the fused output: ones where we adapt none
            full = vec.new_ones(layer.in_out[1])
            for j, part in enumerate(parts):
                g = fused.index(part)
                full[g * rows : (g + 1) * rows] = vec[j * rows : (j + 1) * rows]
            vec = full
        targets.append(path)
        tensors[f"{PEFT_PREFIX}{path}.ia3_l"] = vec.reshape(-1, 1).clone()
    peft_config = {
        "peft_type": "IA3",
        "task_type": None,
        "target_modules": targets,
        "feedforward_modules": [],
        "fan_in_fan_out": conv1d,
        "modules_to_save": None,
        "init_ia3_weights": True,
        "inference_mode": True,
    }
    return peft_config, tensors


def _export_lora_family(
    model: ModelAdaptersMixin, name: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    config = model.adapters_config.adapters[name]
    if not isinstance(config, LoRAConfig):
        return None
    if config and config.variant == "ia3":
        return _export_ia3(model, name)
    return _export_lora(model, name)


# ---------------------------------------------------------------------------------------------
# Prompt tuning
# ---------------------------------------------------------------------------------------------


def _load_prompt_tuning(
    model: ModelAdaptersMixin,
    name: str,
    cfg: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    leave_out: set[int],
) -> None:
    """PEFT puts its virtual tokens in front of the token embeddings (``inputs_embeds``), so
    they take positions like tokens; prompt tuning here does the same on decoders. On encoders
    it follows the reference (after the embeddings, no position embedding) and PEFT's
    encoder-decoders prompt both stacks: those are refused."""
    spec = model.adapters_spec
    if not spec.is_decoder:
        raise PeftFormatError(
            f"PEFT prompt tuning on {model.config.model_type} ({spec.kind}) is not loaded: PEFT "
            "adds its virtual tokens before the embeddings' position embeddings and norm"
            + (" and prompts both the encoder and the decoder" if spec.is_encoder_decoder else "")
            + "; prompt tuning here (as the adapters library) does not. Decoders load."
        )
    if set(tensors) != {"prompt_embeddings"}:
        raise PeftFormatError(
            f"PEFT prompt tuning holds {sorted(tensors)[:3]}, expected prompt_embeddings only."
        )
    weight = tensors["prompt_embeddings"]
    n = int(cfg.get("num_virtual_tokens") or 0)
    hidden = model.adapters_handle.hidden_size
    if weight.dim() != 2 or weight.shape[1] != hidden or (n and weight.shape[0] != n):
        raise AdapterLoadError(
            f"PEFT prompt_embeddings {tuple(weight.shape)} do not fit {n} virtual tokens of "
            f"this model's hidden size {hidden}."
        )
    from .configuration import AdapterConfig

    config = AdapterConfig.load(
        {
            "architecture": "prompt_tuning",
            "prompt_length": int(weight.shape[0]),
            "combine": "prefix",
        }
    )
    model.add_adapter(name, config)
    try:
        modules = model.adapters_handle.base_model.prompt_tuning.prompt_tunings
        with torch.no_grad():
            _copy(modules[name].prompt_embedding.weight, weight, "PEFT prompt_embeddings")
    except Exception:
        model.delete_adapter(name)
        raise


register_peft_format("PROMPT_TUNING", PeftFormat(_load_prompt_tuning))


def _refuse_prefix_tuning(
    model: ModelAdaptersMixin, name: str, cfg: dict[str, Any], *_: Any
) -> None:
    raise PeftFormatError(
        "PEFT prefix tuning is not loaded: PEFT hands its prefix to the model as a KV cache, so "
        "the real tokens take positions after the prefix (num_virtual_tokens onward, also under "
        "RoPE), while prefix tuning here, as in the adapters library, keeps their positions "
        "from 0: the same weights give other outputs."
    )


register_peft_format("PREFIX_TUNING", PeftFormat(_refuse_prefix_tuning))
register_peft_format("LORA", PeftFormat(_load_lora, _export_lora_family))
register_peft_format("IA3", PeftFormat(_load_ia3, _export_lora_family))


# ---------------------------------------------------------------------------------------------
# Writing a folder
# ---------------------------------------------------------------------------------------------


def save_peft_adapter(model: ModelAdaptersMixin, folder: str | os.PathLike, name: str) -> None:
    """Write adapter ``name`` as a PEFT folder (``PeftModel.from_pretrained`` reads it).

    Module paths are the saving model's own (a flexible ``BertAdapterModel`` writes
    ``bert.encoder...``, as a ``BertFor...`` class names them)."""
    config = model.adapters_config.adapters[name]
    exporters = [f.export for f in PEFT_FORMATS.values() if f.export is not None]
    result = None
    for export in dict.fromkeys(exporters):  # each writer once
        result = export(model, name)
        if result is not None:
            break
    if result is None:
        raise PeftFormatError(
            f"Adapter {name!r} ({type(config).__name__}) has no PEFT equivalent to export to: "
            "LoRA and IA3 can be exported."
        )
    peft_config, tensors = result
    peft_config["base_model_name_or_path"] = getattr(model.config, "name_or_path", None) or None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / loading.ADAPTER_CONFIG_NAME).write_text(
        json.dumps(peft_config, indent=2, sort_keys=True), encoding="utf-8"
    )
    loading.write_state_dict(tensors, folder / PEFT_SAFETENSORS)
