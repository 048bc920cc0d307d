"""Prompt tuning: ``prompt_length`` trained vectors put into the sequence the layers see.

Weights live at ``<base>.prompt_tuning.prompt_tunings.<name>.prompt_embedding.weight`` (the
reference's key). The first adapter of the active setup decides (as the reference).

Where the prompt goes:

- Encoders (the reference's layout, so its files give its outputs): after the embeddings module
  (word, position and type embeddings, norm), so the prompt has no position embedding; the
  attention mask gets ones there. The embeddings module itself still sees the original mask
  (DeBERTa-v2 multiplies its output by it). Rotary models (ModernBERT) get position ids over
  the whole sequence.
- Decoders and encoder-decoders (the reference refuses them): into the token embeddings
  (``inputs_embeds``) of the decoder, or of the encoder, so the prompt takes positions as
  tokens do. The attention mask and given position ids are extended on every forward; the
  prompt is only inserted when the KV cache is empty, so a cached generation step equals a
  full forward over prompt + sequence (greedy ``generate()`` equals greedy decoding by full
  forward passes). An encoder-decoder's decoder sees the encoder's extended mask.

Outputs: the base model's ``last_hidden_state`` loses the prompt positions (decoders and
encoders), so token-level heads (tagging, QA, LM) have the original length. Sequence-level
heads that read the first position read it from the sequence the layers saw: with
``combine="prefix"`` that is the first prompt vector, as in the reference (a BERT pooler too).
An encoder-decoder's ``encoder_last_hidden_state`` keeps the prompt (the decoder attends to it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..composition import AdapterCompositionBlock, Stack
from ..configuration import AdapterConfig, ConfigUnion
from ..configuration.prompt_tuning_config import PromptTuningConfig
from ..context import ForwardContext
from ..errors import AdapterConfigError, CompositionError
from .base import AdapterMethod, ModelHandle, resolve, site_device_dtype
from .reft import _past_length

FIRST_KEY = "prompt_tuning_first"  # ForwardContext value: the first position before stripping


class PromptTuning(nn.Module):
    """One adapter's prompt: ``prompt_embedding`` (an ``nn.Embedding`` of ``prompt_length``)."""

    def __init__(self, config: PromptTuningConfig, dim: int, init_from: torch.Tensor | None):
        super().__init__()
        self.prompt_length = config.prompt_length
        self.insert_at = config.insert_at
        self.prompt_embedding = nn.Embedding(config.prompt_length, dim)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if config.init_weights_seed is not None:
                torch.manual_seed(config.init_weights_seed)
            if init_from is not None:
                self.prompt_embedding.weight.copy_(init_from)
            else:
                scale = config.random_uniform_scale
                nn.init.uniform_(self.prompt_embedding.weight, -scale, scale)

    def combine(self, embedded: torch.Tensor) -> torch.Tensor:
        prompt = self.prompt_embedding.weight.to(embedded.dtype)
        prompt = prompt.unsqueeze(0).expand(embedded.shape[0], -1, -1)
        at = self.insert_at
        return torch.cat([embedded[:, :at], prompt, embedded[:, at:]], dim=1)

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        ones = mask.new_ones(mask.shape[0], self.prompt_length)
        at = self.insert_at
        return torch.cat([mask[:, :at], ones, mask[:, at:]], dim=1)

    def extend_positions(self, positions: torch.Tensor, inserted: bool) -> torch.Tensor:
        n, at = self.prompt_length, self.insert_at
        if not inserted:
            return positions + n
        steps = torch.arange(n, device=positions.device, dtype=positions.dtype)
        start = positions[:, at - 1 : at] + 1 if at else torch.zeros_like(positions[:, :1])
        return torch.cat([positions[:, :at], start + steps, positions[:, at:] + n], dim=1)

    def strip(self, sequence: torch.Tensor) -> torch.Tensor:
        at = self.insert_at
        return torch.cat([sequence[:, :at], sequence[:, at + self.prompt_length :]], dim=1)


class PromptTuningLayer(nn.Module):
    """``<base>.prompt_tuning``: the prompts of every adapter, and the hooks' shared state."""

    def __init__(self, state: Any) -> None:
        super().__init__()
        self.prompt_tunings = nn.ModuleDict()
        object.__setattr__(self, "adapters_state", state)

    def active(self) -> PromptTuning | None:
        if not len(self.prompt_tunings):
            return None
        setup = self.adapters_state.current_setup()
        if setup is None:
            return None
        first = setup if isinstance(setup, str) else setup.first()
        return self.prompt_tunings[first] if first in self.prompt_tunings else None


def _layer_of(module: nn.Module) -> PromptTuningLayer:
    return module.__dict__["_prompt_layer"]


def _mask_arg(kwargs: dict[str, Any], args: tuple, position: int = 1) -> torch.Tensor | None:
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > position and isinstance(args[position], torch.Tensor):
        mask = args[position]
    return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def _input_length(kwargs: dict[str, Any], args: tuple) -> int | None:
    for key in ("input_ids", "inputs_embeds"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[1])
    if args and isinstance(args[0], torch.Tensor):
        return int(args[0].shape[1])
    return None


def _set_mask(args: tuple, kwargs: dict[str, Any], mask: torch.Tensor) -> tuple[tuple, dict]:
    if "attention_mask" in kwargs or len(args) <= 1:
        return args, {**kwargs, "attention_mask": mask}
    return (args[0], mask, *args[2:]), kwargs


# --- encoders: the reference's layout ----------------------------------------------------------


# Kept so that the reference's files give its outputs. When a batch has padding, the reference
# extends the query rows of its 4-D mask as well as the key columns: prompt positions attend to
# every position, padding included (BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa-v2; DeBERTa-v2's
# padding rows also attend to the prompt); on DistilBERT it writes 1 into an additive mask, a
# +1 bias on every attention logit of a prompt key. Without padding the mask is plain ones.
PROMPT_ROWS_SEE_PADDING = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "deberta-v2"})


def _reference_mask(module: nn.Module, prompt: PromptTuning, mask: torch.Tensor) -> torch.Tensor:
    """The extended mask as the reference builds it (see PROMPT_ROWS_SEE_PADDING)."""
    full = prompt.extend_mask(mask)
    rows = slice(prompt.insert_at, prompt.insert_at + prompt.prompt_length)
    model_type = module.config.model_type
    if model_type == "deberta-v2":  # its own multiplicative pair mask
        pair = full[:, None, :] * full[:, :, None]
        pair[:, :, rows] = 1
        pair[:, rows, :] = 1
        return pair
    from transformers.masking_utils import create_bidirectional_mask

    probe = torch.empty(full.shape[0], full.shape[1], 1, dtype=module.dtype, device=full.device)
    four_d = create_bidirectional_mask(
        config=module.config, inputs_embeds=probe, attention_mask=full
    )
    if not isinstance(four_d, torch.Tensor) or four_d.dim() != 4:
        return full
    four_d = four_d.expand(-1, -1, full.shape[1], -1).clone()
    if model_type == "distilbert":
        additive = torch.zeros(four_d.shape, dtype=module.dtype, device=four_d.device)
        if four_d.dtype == torch.bool:
            four_d = additive.masked_fill(~four_d, torch.finfo(module.dtype).min)
        four_d[:, :, :, rows] += 1.0
        four_d[:, :, rows, :] = 1.0
        return four_d
    four_d[:, :, rows, :] = True if four_d.dtype == torch.bool else 0.0
    return four_d


def _encoder_pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    prompt = _layer_of(module).active()
    record = module.__dict__.setdefault("_prompt_forward", [])
    length = _input_length(kwargs, args)
    mask = _mask_arg(kwargs, args)
    record.append((prompt, mask))
    if prompt is None:
        return None
    if mask is not None and mask.shape[1] == length:
        if module.config.model_type in PROMPT_ROWS_SEE_PADDING and not bool(mask.all()):
            extended = _reference_mask(module, prompt, mask)
        else:
            extended = prompt.extend_mask(mask)
        args, kwargs = _set_mask(args, kwargs, extended)
    if module.__dict__.get("_prompt_rotary") and kwargs.get("position_ids") is None and length:
        device = next(module.parameters()).device
        positions = torch.arange(length + prompt.prompt_length, device=device)[None]
        kwargs = {**kwargs, "position_ids": positions}
    return args, kwargs


def _embeddings_pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """The embeddings module keeps the original mask (DeBERTa-v2 multiplies by it)."""
    record = module.__dict__["_prompt_owner"].__dict__.get("_prompt_forward")
    prompt, mask = record[-1] if record else (None, None)
    if prompt is None or not isinstance(kwargs.get("mask"), torch.Tensor):
        return None
    return args, {**kwargs, "mask": mask}


def _embeddings_post(module: nn.Module, args: Any, output: Any) -> Any:
    record = module.__dict__["_prompt_owner"].__dict__.get("_prompt_forward")
    prompt = record[-1][0] if record else None
    if prompt is None:
        return None
    if isinstance(output, torch.Tensor):
        return prompt.combine(output)
    return (prompt.combine(output[0]), *output[1:])


def _strip_post(module: nn.Module, args: Any, kwargs: dict, output: Any) -> Any:
    record = module.__dict__.get("_prompt_forward")
    prompt = record.pop()[0] if record else None
    if prompt is None or output is None:
        return None
    hidden = output[0] if not isinstance(output, torch.Tensor) else output
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        return None
    ctx = ForwardContext.get_context()
    if ctx is not None:
        ctx.values[FIRST_KEY] = hidden[:, 0]
    stripped = prompt.strip(hidden)
    if isinstance(output, torch.Tensor):
        return stripped
    if hasattr(output, "keys"):
        output[next(iter(output.keys()))] = stripped
        return output
    return (stripped, *output[1:])


# --- decoders and encoder-decoders: the prompt in the token embeddings --------------------------


def _tokens_pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Pre-hook of a decoder base model or of an encoder-decoder's encoder."""
    prompt = _layer_of(module).active()
    record = module.__dict__.setdefault("_prompt_forward", [])
    if prompt is None:
        record.append((None, None))
        return None
    kwargs = dict(kwargs)
    if args:  # input_ids positionally
        kwargs.setdefault("input_ids", args[0])
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            kwargs.setdefault("attention_mask", args[1])
        args = ()
    past = _past_length(kwargs)
    ids = kwargs.get("input_ids")
    insert = past == 0 and (ids is not None or kwargs.get("inputs_embeds") is not None)
    if insert:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = module.get_input_embeddings()(ids)
        kwargs["inputs_embeds"] = prompt.combine(embeds)
        kwargs["input_ids"] = None
    length = _input_length(kwargs, ())
    chunk = (length or 0) - (prompt.prompt_length if insert else 0)
    mask = _mask_arg(kwargs, ())
    extend = (
        mask is not None and mask.shape[1] == past - (0 if insert else prompt.prompt_length) + chunk
    )
    if mask is not None and extend:
        kwargs["attention_mask"] = prompt.extend_mask(mask)
    positions = kwargs.get("position_ids")
    if isinstance(positions, torch.Tensor) and positions.dim() == 2 and (extend or insert):
        kwargs["position_ids"] = prompt.extend_positions(positions, insert)
    keep = module.__dict__.get("_prompt_keep")
    record.append((prompt if insert and not keep else None, mask))
    return args, kwargs


def _seq2seq_base_pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """An encoder-decoder: the decoder's cross-attention sees the encoder's extended mask."""
    prompt = _layer_of(module).active()
    if prompt is None:
        return None
    mask = _mask_arg(kwargs, args)
    if mask is None:
        return None
    encoded = kwargs.get("encoder_outputs")
    if encoded is not None:
        hidden = encoded[0] if not isinstance(encoded, torch.Tensor) else encoded
        if hidden.shape[1] != mask.shape[1] + prompt.prompt_length:
            return None
    elif _input_length(kwargs, args) != mask.shape[1]:
        return None
    return _set_mask(args, kwargs, prompt.extend_mask(mask))


def _prompt_configs(config: AdapterConfig) -> list[PromptTuningConfig]:
    parts = config.configs if isinstance(config, ConfigUnion) else [config]
    return [c for c in parts if isinstance(c, PromptTuningConfig)]


class PromptTuningMethod(AdapterMethod):
    """Prompt tuning (the reference's ``architecture: prompt_tuning``)."""

    name = "prompt_tuning"
    supported_compositions = (Stack,)
    config_names = ("prompt_tuning",)

    def handles(self, config: AdapterConfig) -> bool:
        return bool(_prompt_configs(config))

    def _install(self, model: ModelHandle) -> PromptTuningLayer:
        base = model.base_model
        layer = base._modules.get("prompt_tuning")
        if layer is not None:
            return layer
        layer = PromptTuningLayer(model.state)
        base.prompt_tuning = layer
        spec = model.spec
        if spec.kind == "encoder":
            owner = base
            object.__setattr__(owner, "_prompt_layer", layer)
            object.__setattr__(owner, "_prompt_rotary", hasattr(base, "rotary_emb"))
            embeddings = resolve(base, "embeddings")
            object.__setattr__(embeddings, "_prompt_owner", owner)
            owner.register_forward_pre_hook(_encoder_pre, with_kwargs=True)
            embeddings.register_forward_pre_hook(_embeddings_pre, with_kwargs=True)
            embeddings.register_forward_hook(_embeddings_post)
            owner.register_forward_hook(_strip_post, with_kwargs=True, always_call=True)
        elif spec.kind == "decoder":
            object.__setattr__(base, "_prompt_layer", layer)
            base.register_forward_pre_hook(_tokens_pre, with_kwargs=True)
            base.register_forward_hook(_strip_post, with_kwargs=True, always_call=True)
        else:
            encoder = base.get_encoder()
            object.__setattr__(encoder, "_prompt_layer", layer)
            object.__setattr__(base, "_prompt_layer", layer)
            # the encoder's output keeps the prompt: the decoder attends to it
            encoder.__dict__["_prompt_keep"] = True
            encoder.register_forward_pre_hook(_tokens_pre, with_kwargs=True)
            encoder.register_forward_hook(_strip_post, with_kwargs=True, always_call=True)
            base.register_forward_pre_hook(_seq2seq_base_pre, with_kwargs=True)
        return layer

    def validate(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        if model.spec.kind == "encoder" and not hasattr(model.base_model, "embeddings"):
            raise AdapterConfigError(
                f"Prompt tuning needs an embeddings module on {model.spec.model_type}."
            )

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        (cfg,) = _prompt_configs(config)[:1]
        layer = self._install(model)
        base = model.base_model
        words = base.get_input_embeddings()
        if model.spec.kind == "encoder":
            dim = int(getattr(base.config, "embedding_size", None) or model.hidden_size)
        else:
            dim = int(words.weight.shape[1])
        init = _from_string(base, words, cfg) if cfg.prompt_init == "from_string" else None
        prompt = PromptTuning(cfg, dim, init)
        device, dtype = site_device_dtype(words)
        if device is not None:
            prompt.to(device=device, dtype=dtype)
        prompt.train(base.training)
        layer.prompt_tunings[name] = prompt

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        layer = model.base_model._modules.get("prompt_tuning")
        if layer is not None and name in layer.prompt_tunings:
            del layer.prompt_tunings[name]

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        layer = model.base_model._modules.get("prompt_tuning")
        if layer is not None and name in layer.prompt_tunings:
            return {"-1.prompt": layer.prompt_tunings[name]}
        return {}

    def validate_setup(self, model: ModelHandle, setup: AdapterCompositionBlock) -> None:
        super().validate_setup(model, setup)
        names = setup.flatten_ordered() if not isinstance(setup, str) else [setup]
        configs = model.state.adapters
        prompts = [n for n in names if n in configs and self.handles(configs[n])]
        if prompts and (prompts[0] != names[0] or len(prompts) > 1):
            raise CompositionError(
                "A prompt tuning adapter runs only as the first adapter of a setup (as in the "
                f"reference library), and only one per setup: got {names}."
            )


def _from_string(base: nn.Module, words: nn.Module, cfg: PromptTuningConfig) -> torch.Tensor:
    from transformers import AutoTokenizer

    source = getattr(base.config, "tokenizer_name_or_path", None) or base.config._name_or_path
    if not source:
        raise AdapterConfigError(
            "prompt_init='from_string' needs the model's tokenizer: set "
            "model.config.tokenizer_name_or_path."
        )
    ids = AutoTokenizer.from_pretrained(source)(cfg.prompt_init_text)["input_ids"]
    if not ids:
        raise AdapterConfigError(f"prompt_init_text {cfg.prompt_init_text!r} has no tokens.")
    ids = (ids * math.ceil(cfg.prompt_length / len(ids)))[: cfg.prompt_length]
    weight = words.weight
    with torch.no_grad():
        return words(torch.tensor(ids, device=weight.device)).detach().float().clone()
