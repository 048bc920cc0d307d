"""Flexible-head model classes (``BertAdapterModel``...) built from the architecture tables,
and ``AutoAdapterModel`` which picks one by ``config.model_type``."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, GenerationMixin, PretrainedConfig

from ..context import AdapterSetup, ForwardContext
from ..errors import AdapterError
from ..heads.model_mixin import ModelWithFlexibleHeadsMixin
from . import SPECS, get_spec, import_class
from .spec import ArchitectureSpec


class AdapterModelBase(ModelWithFlexibleHeadsMixin):
    """Shared ``__init__`` and ``forward`` of every ``XAdapterModel`` class."""

    adapters_spec: ArchitectureSpec

    def __init__(self, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # the PreTrainedModel of the architecture
        spec = type(self).adapters_spec
        base_cls = import_class(spec.base_model_class)
        setattr(self, spec.base_model_prefix, base_cls(config))
        self._init_heads()
        self.post_init()  # type: ignore[attr-defined]
        self._init_adapters(spec)
        # a full checkpoint lists its adapters and heads in config.json: rebuild them so that
        # from_pretrained fills their weights
        self._restore_adapters_from_config()
        self._restore_heads_from_config()

    def _restore_heads_from_config(self) -> None:
        from ..heads import HEAD_TYPES

        for name, head_config in (getattr(self.config, "prediction_heads", None) or {}).items():
            if name in self.heads:
                continue
            kwargs = dict(head_config)
            head_type = kwargs.pop("head_type")
            label2id = kwargs.pop("label2id", None)
            if label2id:
                kwargs["id2label"] = {int(i): label for label, i in label2id.items()}
            head = HEAD_TYPES[head_type](self.config, name, **kwargs)
            self.add_prediction_head(head, overwrite_ok=True, set_active=False)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Save the whole model; config.json lists its adapters and heads (as the reference)."""
        self.config.adapters = self.adapters_config.to_dict()
        self.config.prediction_heads = {n: dict(h.config) for n, h in self.heads.items()}
        if kwargs.get("state_dict") is None:
            # LM heads share their projection with the input embeddings; write a copy
            state, seen = self.state_dict(), set()
            for key, tensor in state.items():
                ptr = tensor.untyped_storage().data_ptr()
                if ptr in seen and key.startswith("heads."):
                    state[key] = tensor.clone()
                seen.add(ptr)
            kwargs["state_dict"] = state
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.adapter_base_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.adapter_base_model.set_input_embeddings(value)

    def get_encoder(self) -> nn.Module:
        return self.adapter_base_model.get_encoder()

    def get_decoder(self) -> nn.Module:
        return self.adapter_base_model.get_decoder()

    def get_output_embeddings(self) -> nn.Module | None:
        head = self.heads.get(self._active_head) if isinstance(self._active_head, str) else None
        return head.get_output_embeddings() if head is not None else None

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        head: str | list[str] | None = None,
        output_adapter_gating_scores: bool = False,
        output_adapter_fusion_attentions: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The base model's forward (every argument it takes passes through), then the active
        head(s). Encoder-decoders take ``decoder_input_ids`` (built from ``labels`` by
        shifting when absent, as transformers does); decoders take ``past_key_values``."""
        kwargs.pop("return_dict", None)
        kwargs.pop("num_items_in_batch", None)
        spec = self.adapters_spec
        if (
            spec.is_encoder_decoder
            and labels is not None
            and kwargs.get("decoder_input_ids") is None
            and kwargs.get("decoder_inputs_embeds") is None
        ):
            kwargs["decoder_input_ids"] = self._shift_right(labels)
        base_kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if input_ids is not None:
            base_kwargs["input_ids"] = input_ids
        if attention_mask is not None:
            base_kwargs["attention_mask"] = attention_mask
        context = ForwardContext(output_adapter_fusion_attentions, output_adapter_gating_scores)
        with context:
            outputs = self.adapter_base_model(**base_kwargs)
        head_setup = head or AdapterSetup.get_context_head_setup() or self.active_head
        if not head_setup:
            result = outputs
        else:
            if spec.model_type == "t5" and self._ties_lm_head():
                # as T5ForConditionalGeneration: rescale before a tied output projection
                outputs = _with_first(outputs, outputs[0] * (self.config.d_model**-0.5))
            ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
            head_kwargs: dict[str, Any] = {"input_ids": input_ids}
            if "prompt_tuning_first" in context.values:
                head_kwargs["prompt_first"] = context.values["prompt_tuning_first"]
            if labels is not None:
                head_kwargs["labels"] = labels
            if start_positions is not None:
                head_kwargs["start_positions"] = start_positions
            if end_positions is not None:
                head_kwargs["end_positions"] = end_positions
            mask = attention_mask
            if spec.is_encoder_decoder:
                mask = kwargs.get("decoder_attention_mask")
            result = self.forward_head(
                outputs,
                head_name=head_setup,
                attention_mask=mask,
                input_batch_size=ref.shape[0] if ref is not None else None,
                **head_kwargs,
            )
        if output_adapter_fusion_attentions:
            result["adapter_fusion_attentions"] = context.adapter_fusion_attentions
        if output_adapter_gating_scores:
            result["adapter_gating_scores"] = context.adapter_gating_scores
        return result

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        start = self.config.decoder_start_token_id
        pad = self.config.pad_token_id
        shifted = labels.new_zeros(labels.shape)
        shifted[:, 1:] = labels[:, :-1].clone()
        shifted[:, 0] = start
        return shifted.masked_fill(shifted == -100, pad)


def _with_first(outputs: Any, first: torch.Tensor) -> Any:
    key = next(iter(outputs.keys()))
    outputs[key] = first
    return outputs


def _make_adapter_model_class(spec: ArchitectureSpec) -> type:
    base_cls = import_class(spec.base_model_class)
    pretrained_cls = base_cls.__mro__[1]  # e.g. BertPreTrainedModel
    stem = (
        base_cls.__name__[: -len("Model")]
        if base_cls.__name__.endswith("Model")
        else base_cls.__name__
    )
    bases: tuple[type, ...] = (AdapterModelBase, pretrained_cls)
    if spec.kind != "encoder":
        bases = (AdapterModelBase, pretrained_cls, GenerationMixin)
    return type(
        f"{stem}AdapterModel",
        bases,
        {
            "adapters_spec": spec,
            "__module__": __name__,
            "__doc__": f"{stem} with adapters and flexible prediction heads.",
            "_keys_to_ignore_on_load_unexpected": [
                r"^cls\.",
                r"^lm_head\.",
                r"^classifier\.",
                r"^qa_outputs\.",
            ],
        },
    )


ADAPTER_MODEL_CLASSES: dict[str, type] = {t: _make_adapter_model_class(s) for t, s in SPECS.items()}
BertAdapterModel = ADAPTER_MODEL_CLASSES["bert"]
RobertaAdapterModel = ADAPTER_MODEL_CLASSES["roberta"]
XLMRobertaAdapterModel = ADAPTER_MODEL_CLASSES["xlm-roberta"]


class AutoAdapterModel:
    """Picks the ``XAdapterModel`` class for a checkpoint's ``model_type``."""

    def __init__(self) -> None:
        raise OSError("Use AutoAdapterModel.from_pretrained(...) or .from_config(...).")

    @staticmethod
    def _class_for(config: PretrainedConfig) -> type:
        model_type = getattr(config, "model_type", None)
        if model_type not in ADAPTER_MODEL_CLASSES:
            get_spec(str(model_type))  # raises with the supported list
            raise AdapterError(f"No adapter model class for {model_type!r}.")
        return ADAPTER_MODEL_CLASSES[model_type]

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> Any:
        return cls._class_for(config)(config, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
    ) -> Any:
        config = kwargs.pop("config", None)
        if config is None:
            config_kwargs = {
                k: kwargs[k]
                for k in ("cache_dir", "revision", "local_files_only", "token", "trust_remote_code")
                if k in kwargs
            }
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **config_kwargs)
        model_cls = cls._class_for(config)
        return model_cls.from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )
