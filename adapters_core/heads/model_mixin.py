"""Flexible heads on an adapter model: add, activate, run, save and load them."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import loading
from ..composition import AdapterCompositionBlock, BatchSplit, parse_heads_from_composition
from ..context import AdapterSetup
from ..errors import AdapterConfigError, AdapterError, AdapterNotFoundError
from ..methods.invertible import active_invertible_adapter
from ..model_mixin import ModelAdaptersMixin
from ..weights import collect, head_filter, load_strict, rename_prefix_segment
from . import HEAD_TYPES
from .base import MultiHeadOutput, PredictionHead
from .language_modeling import CausalLMHead

logger = logging.getLogger(__name__)

HeadSetup = str | list[str] | BatchSplit | None


class ModelWithFlexibleHeadsMixin(ModelAdaptersMixin):
    """Adds a ``heads`` ModuleDict (keys ``heads.<name>.<i>.weight``) and head management."""

    heads: nn.ModuleDict

    def _init_heads(self) -> None:
        self.heads = nn.ModuleDict()
        object.__setattr__(self, "_active_head", None)

    # --- adding ------------------------------------------------------------------------------

    def add_prediction_head(
        self, head: PredictionHead, overwrite_ok: bool = False, set_active: bool = True
    ) -> None:
        if head.config["head_type"] not in self.adapters_spec.head_types:
            raise AdapterConfigError(
                f"Head type {head.config['head_type']!r} is not supported by {type(self).__name__}."
            )
        if head.name in self.heads and not overwrite_ok:
            raise AdapterError(
                f"A head named {head.name!r} already exists; pass overwrite_ok=True."
            )
        param = next(iter(self.adapter_base_model.parameters()), None)
        if param is not None and param.device.type != "meta":
            dtype = param.dtype if param.dtype.is_floating_point else None
            head.to(device=param.device, dtype=dtype)
        head.train(self.training)  # type: ignore[attr-defined]
        self.heads[head.name] = head
        if isinstance(head, CausalLMHead) and self._ties_lm_head():
            embeddings = self.adapter_base_model.get_input_embeddings()
            output = head.get_output_embeddings()
            if output.weight.shape == embeddings.weight.shape:
                output.weight = embeddings.weight
        if set_active:
            self.active_head = head.name

    def _ties_lm_head(self) -> bool:
        """Whether LM heads share the input embeddings (T5 in transformers 5 says so with
        ``scale_decoder_outputs``; its ``tie_word_embeddings`` is always true)."""
        config = self.config  # type: ignore[attr-defined]
        scale = getattr(config, "scale_decoder_outputs", None)
        if scale is not None:
            return bool(scale)
        return bool(getattr(config, "tie_word_embeddings", True))

    def add_classification_head(
        self,
        head_name: str,
        num_labels: int = 2,
        layers: int = 2,
        activation_function: str | None = "tanh",
        overwrite_ok: bool = False,
        multilabel: bool = False,
        id2label: dict[int, str] | None = None,
        use_pooler: bool = False,
    ) -> None:
        head_type = "multilabel_classification" if multilabel else "classification"
        head = HEAD_TYPES[head_type](
            self.config,
            head_name,
            num_labels=num_labels,
            layers=layers,  # type: ignore[attr-defined]
            activation_function=activation_function,
            id2label=id2label,
            use_pooler=use_pooler,
        )
        self.add_prediction_head(head, overwrite_ok)

    def add_multiple_choice_head(
        self,
        head_name: str,
        num_choices: int = 2,
        layers: int = 2,
        activation_function: str | None = "tanh",
        overwrite_ok: bool = False,
        id2label: dict[int, str] | None = None,
        use_pooler: bool = False,
    ) -> None:
        head = HEAD_TYPES["multiple_choice"](
            self.config,
            head_name,
            num_choices=num_choices,
            layers=layers,  # type: ignore[attr-defined]
            activation_function=activation_function,
            id2label=id2label,
            use_pooler=use_pooler,
        )
        self.add_prediction_head(head, overwrite_ok)

    def add_tagging_head(
        self,
        head_name: str,
        num_labels: int = 2,
        layers: int = 1,
        activation_function: str | None = "tanh",
        overwrite_ok: bool = False,
        id2label: dict[int, str] | None = None,
    ) -> None:
        head = HEAD_TYPES["tagging"](
            self.config,
            head_name,
            num_labels=num_labels,
            layers=layers,  # type: ignore[attr-defined]
            activation_function=activation_function,
            id2label=id2label,
        )
        self.add_prediction_head(head, overwrite_ok)

    def add_qa_head(
        self,
        head_name: str,
        num_labels: int = 2,
        layers: int = 1,
        activation_function: str | None = "tanh",
        overwrite_ok: bool = False,
        id2label: dict[int, str] | None = None,
    ) -> None:
        head = HEAD_TYPES["question_answering"](
            self.config,
            head_name,
            num_labels=num_labels,
            layers=layers,  # type: ignore[attr-defined]
            activation_function=activation_function,
            id2label=id2label,
        )
        self.add_prediction_head(head, overwrite_ok)

    def add_masked_lm_head(
        self,
        head_name: str,
        activation_function: str | None = "gelu",
        layers: int = 2,
        overwrite_ok: bool = False,
    ) -> None:
        head = HEAD_TYPES["masked_lm"](
            self.config,
            head_name,
            layers=layers,
            activation_function=activation_function,  # type: ignore[attr-defined]
        )
        self.add_prediction_head(head, overwrite_ok)

    def add_causal_lm_head(
        self,
        head_name: str,
        activation_function: str | None = "gelu",
        layers: int = 2,
        overwrite_ok: bool = False,
    ) -> None:
        head = HEAD_TYPES["causal_lm"](
            self.config,
            head_name,
            layers=layers,
            activation_function=activation_function,  # type: ignore[attr-defined]
            layer_norm=True,
            bias=True,
        )
        self.add_prediction_head(head, overwrite_ok)

    def add_seq2seq_lm_head(self, head_name: str, overwrite_ok: bool = False) -> None:
        """An LM head on the decoder of an encoder-decoder (tied to the embeddings if the
        model ties them)."""
        head = HEAD_TYPES["seq2seq_lm"](self.config, head_name)
        self.add_prediction_head(head, overwrite_ok)

    def average_head(
        self,
        head_name: str,
        head_list: list[str] | dict[str, float],
        weights: list[float] | None = None,
        normalize_weights: bool = True,
        overwrite_ok: bool = False,
        set_active: bool = False,
    ) -> None:
        """Add a head as the weighted sum of heads of one config (``merging.py``)."""
        from ..merging import average_head

        average_head(
            self, head_name, head_list, weights, normalize_weights, overwrite_ok, set_active
        )

    def delete_head(self, head_name: str) -> None:
        if head_name not in self.heads:
            raise AdapterNotFoundError(f"No head named {head_name!r} in this model.")
        del self.heads[head_name]
        if self._active_head == head_name:
            object.__setattr__(self, "_active_head", None)

    # --- activation ----------------------------------------------------------------------

    @property
    def active_head(self) -> HeadSetup:
        return self._active_head

    @active_head.setter
    def active_head(self, head_setup: HeadSetup) -> None:
        names = _head_names(head_setup)
        missing = [n for n in names if n not in self.heads]
        if missing:
            raise AdapterNotFoundError(
                f"No head named {', '.join(map(repr, missing))} in this model."
            )
        object.__setattr__(self, "_active_head", head_setup)

    def _on_setup_activated(self, setup: AdapterCompositionBlock | None) -> None:
        if setup is None:
            return
        try:
            heads = parse_heads_from_composition(setup, list(self.heads.keys()))
        except AdapterError:
            heads = None
        if heads is not None and all(n in self.heads for n in _head_names(heads)):
            object.__setattr__(self, "_active_head", heads)

    def _unfreeze_heads(self, setup: AdapterCompositionBlock) -> None:
        names = set()
        try:
            derived = parse_heads_from_composition(setup, list(self.heads.keys()))
        except AdapterError:
            derived = None
        names.update(n for n in _head_names(derived) if n in self.heads)
        names.update(n for n in _head_names(self._active_head) if n in self.heads)
        tied = self.adapter_base_model.get_input_embeddings().weight
        embeddings_trained = tied.requires_grad
        for name in names:
            for p in self.heads[name].parameters():
                # a tied LM projection is the input embedding: it trains only with them
                p.requires_grad = p is not tied or embeddings_trained

    # --- forward ---------------------------------------------------------------------------

    def forward_head(
        self,
        base_outputs: Any,
        head_name: HeadSetup = None,
        attention_mask: torch.Tensor | None = None,
        input_batch_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the head(s) on the base model's outputs."""
        head_setup = head_name or AdapterSetup.get_context_head_setup() or self._active_head
        if not head_setup:
            raise AdapterError("No prediction head is active; add one or pass head=...")
        sequence = base_outputs[0]
        pooled = getattr(base_outputs, "pooler_output", None)
        inv = active_invertible_adapter(self.adapter_base_model)
        input_ids = kwargs.pop("input_ids", None)
        # prompt tuning: the first position of the sequence the layers saw (methods/prompt_tuning)
        first = kwargs.pop("prompt_first", None)

        def run(name: str, seq: torch.Tensor, pool: Any, extra: dict[str, Any]) -> Any:
            if name not in self.heads:
                raise AdapterNotFoundError(f"No head named {name!r} in this model.")
            head = self.heads[name]
            cls = self._pool_sequence(seq, attention_mask, input_ids)
            if cls is None and first is not None and first.shape[0] == seq.shape[0]:
                cls = first
            out = head(
                seq,
                pooled_output=pool,
                attention_mask=attention_mask,
                invertible_adapter=inv,
                cls_output=cls,
                **extra,
            )
            for field in (
                "hidden_states",
                "attentions",
                "past_key_values",
                "encoder_last_hidden_state",
            ):
                value = getattr(base_outputs, field, None)
                if value is not None and field in out.__dataclass_fields__:
                    out[field] = value
            return out

        if isinstance(head_setup, str):
            return run(head_setup, sequence, pooled, kwargs)
        if isinstance(head_setup, BatchSplit):
            outputs, start = [], 0
            for name, size in zip(head_setup, head_setup.batch_sizes, strict=True):
                sl = slice(start, start + size)
                start += size
                extra = {
                    k: (v[sl] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()
                }
                outputs.append(
                    run(name, sequence[sl], pooled[sl] if pooled is not None else None, extra)
                )
            return _multi(outputs)
        names = list(head_setup)
        bsz = input_batch_size or sequence.shape[0]
        replicated = sequence.shape[0] == bsz * len(names) and len(names) > 1
        outputs = []
        for i, name in enumerate(names):
            if replicated:
                sl = slice(i * bsz, (i + 1) * bsz)
                outputs.append(
                    run(name, sequence[sl], pooled[sl] if pooled is not None else None, kwargs)
                )
            else:
                outputs.append(run(name, sequence, pooled, kwargs))
        return _multi(outputs)

    def _pool_sequence(
        self, seq: torch.Tensor, attention_mask: torch.Tensor | None, input_ids: Any
    ) -> torch.Tensor | None:
        """The position a sequence-level head reads, per the table's ``pooling``."""
        pooling = self.adapters_spec.pooling
        if pooling == "first" or seq.dim() != 3:
            return None
        bsz, length = seq.shape[:2]
        rows = torch.arange(bsz, device=seq.device)
        if pooling == "eos" and isinstance(input_ids, torch.Tensor):
            eos = getattr(self.config, "eos_token_id", None)  # type: ignore[attr-defined]
            ids = input_ids.repeat(bsz // input_ids.shape[0], 1)
            if ids.shape[1] == length and eos is not None:
                is_eos = ids.eq(eos)
                if bool(is_eos.any(dim=1).all()):
                    pos = torch.arange(length, device=seq.device).expand(bsz, -1)
                    return seq[rows, torch.where(is_eos, pos, -1).max(dim=1).values]
        if attention_mask is not None and attention_mask.shape[-1] == length:
            mask = attention_mask.repeat(bsz // attention_mask.shape[0], 1)
            # last non-padding position (right or left padding alike)
            pos = torch.arange(length, device=seq.device).expand(bsz, -1)
            last = torch.where(mask.bool(), pos, -1).max(dim=1).values.clamp(min=0)
            return seq[rows, last]
        return seq[:, -1]

    # --- saving and loading ------------------------------------------------------------------

    def save_head(
        self,
        save_directory: str | os.PathLike,
        head_name: str,
        use_safetensors: bool = True,
    ) -> None:
        if head_name not in self.heads:
            raise AdapterNotFoundError(f"No head named {head_name!r} in this model.")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        content: dict[str, Any] = {"config": dict(self.heads[head_name].config)}
        content.update(self._file_meta(head_name))
        loading.write_json_config(content, folder / loading.HEAD_CONFIG_NAME)
        state = collect(self, head_filter(head_name, self.adapters_spec.base_model_prefix))
        loading.write_state_dict(
            state, loading.weights_file_for_saving(folder, "head", use_safetensors)
        )

    def save_all_heads(
        self, save_directory: str | os.PathLike, use_safetensors: bool = True
    ) -> None:
        for name in self.heads:
            self.save_head(Path(save_directory) / name, name, use_safetensors=use_safetensors)

    def load_head(
        self,
        save_directory: str | os.PathLike,
        load_as: str | None = None,
        set_active: bool = True,
        **kwargs: Any,
    ) -> str | None:
        """Load a head folder (``head_config.json`` + weights); converts static HF heads."""
        folder = Path(save_directory)
        config_path = folder / loading.HEAD_CONFIG_NAME
        if not config_path.is_file():
            raise AdapterNotFoundError(f"No {loading.HEAD_CONFIG_NAME} in {folder}.")
        saved = loading.read_json_config(config_path)
        path = loading.find_weights_file(folder, "head")
        if path is None:
            raise AdapterNotFoundError(f"No head weights file in {folder}.")
        state = loading.read_state_dict(path)
        head_config = saved.get("config")
        if head_config is None:
            return self._load_static_head(saved, state, load_as, set_active, folder)
        saved_name = saved.get("name") or folder.name
        name = load_as or saved_name
        head_config = dict(head_config)
        head_type = head_config.pop("head_type", None)
        if head_type not in HEAD_TYPES:
            raise AdapterConfigError(f"Unknown head type {head_type!r} in {config_path}.")
        label2id = head_config.pop("label2id", None)
        if label2id:
            head_config["id2label"] = {int(i): label for label, i in label2id.items()}
        if head_type == "multilabel_classification":
            head_type = "multilabel_classification"
        try:
            head = HEAD_TYPES[head_type](self.config, name, **head_config)  # type: ignore[attr-defined]
        except TypeError as exc:
            raise AdapterConfigError(f"Invalid head config in {config_path}: {exc}") from exc
        previous = self.heads[name] if name in self.heads else None
        self.add_prediction_head(head, overwrite_ok=True, set_active=False)
        state = rename_prefix_segment(state, "heads", saved_name, name)
        try:
            load_strict(
                self,
                state,
                head_filter(name, self.adapters_spec.base_model_prefix),
                self.adapters_spec.base_model_prefix,
                f"head {name!r} from {path}",
            )
        except Exception:
            if previous is not None:
                self.heads[name] = previous
            else:
                del self.heads[name]
            raise
        if set_active:
            self.active_head = name
        return name

    def _load_static_head(
        self,
        saved: dict[str, Any],
        state: dict[str, torch.Tensor],
        load_as: str | None,
        set_active: bool,
        folder: Path,
    ) -> str | None:
        static = self.adapters_spec.static_heads.get(str(saved.get("model_class")))
        if static is None or load_as is None:
            logger.warning("Cannot convert the static head in %s to a flexible head.", folder)
            return None
        head_config = dict(static.head_config)
        head_type = head_config.pop("head_type")
        if saved.get("num_labels") is not None:
            head_config["num_labels"] = saved["num_labels"]
        head = HEAD_TYPES[head_type](self.config, load_as, **head_config)  # type: ignore[attr-defined]
        self.add_prediction_head(head, overwrite_ok=True, set_active=False)
        converted = {}
        for key, value in state.items():
            for prefix, index in static.layers.items():
                if key.startswith(prefix + "."):
                    converted[f"heads.{load_as}.{index}.{key[len(prefix) + 1 :]}"] = value
                    break
            else:
                converted[key] = value
        load_strict(
            self,
            converted,
            head_filter(load_as, self.adapters_spec.base_model_prefix),
            self.adapters_spec.base_model_prefix,
            f"static head from {folder}",
        )
        if set_active:
            self.active_head = load_as
        return load_as

    def _save_head_with_adapter(
        self, folder: Path, adapter_name: str, use_safetensors: bool
    ) -> None:
        if adapter_name in self.heads:
            self.save_head(folder, adapter_name, use_safetensors=use_safetensors)

    def _load_head_with_adapter(self, folder: Path, adapter_name: str) -> None:
        self.load_head(folder, load_as=adapter_name, set_active=False)


def _head_names(head_setup: Any) -> list[str]:
    if head_setup is None:
        return []
    if isinstance(head_setup, str):
        return [head_setup]
    if isinstance(head_setup, AdapterCompositionBlock):
        return head_setup.flatten_ordered()
    return list(head_setup)


def _multi(outputs: list[Any]) -> MultiHeadOutput:
    losses = [o.loss for o in outputs if getattr(o, "loss", None) is not None]
    loss = torch.stack(losses).sum() if losses and len(losses) == len(outputs) else None
    return MultiHeadOutput(head_outputs=outputs, loss=loss)
